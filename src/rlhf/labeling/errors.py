"""Errors of the labeling app. Each carries the HTTP status it maps to; all are UserErrors, so the
CLI prints them as one line without a traceback."""

from __future__ import annotations

from rlhf.errors import UserError


class LabelingError(UserError):
    """A request the app refuses; `status` is the HTTP status code the web layer answers with."""

    status: int = 400


class Invalid(LabelingError):
    """The request is well-formed but its content breaks a rule (bounds, ranking shape, ...)."""

    status = 422


class Unauthorized(LabelingError):
    """No token, or a token that matches no one."""

    status = 401


class Forbidden(LabelingError):
    """A valid identity that may not do this (a labeler on an admin route, a failed CSRF check)."""

    status = 403


class NotFound(LabelingError):
    status = 404


class Conflict(LabelingError):
    """The request contradicts stored state (a name taken, a task already answered differently)."""

    status = 409


class TooLarge(LabelingError):
    status = 413


class TooManyAttempts(LabelingError):
    """Too many failed logins from one address; `retry_after` seconds until the next try."""

    status = 429

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"too many failed logins from this address; try again in {retry_after} s")

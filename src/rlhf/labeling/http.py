"""What the app, its JSON API and its pages share about HTTP: the request body limits, the
exception that sends a visitor to the login page, the sentences of the authentication errors,
and the client address failed logins are counted against.

It imports nothing of the labeling app, so `app` (which mounts `api` and `pages`), `api` and
`pages` can all import it at the top.
"""

from __future__ import annotations

from starlette.types import Scope

SMALL_BODY = 256 * 1024  # answers, logins: far above an 8000-character demonstration
LARGE_BODY = 32 * 1024 * 1024  # imports of prompt and ranking files
SMALL_BODY_PREFIXES = ("/api/tasks", "/tasks", "/login", "/logout", "/api/me")

MISSING_TOKEN = "missing token: send the header 'Authorization: Bearer <token>'"
TOO_MANY = "too many failed logins from this address; try again in %d s"
FOR_ADMIN = "this route needs the admin token; labeler tokens cannot use it"
FOR_LABELERS = "this route is for labelers; use a labeler token (admins have no tasks)"


class LoginRequired(Exception):
    """Raised by page handlers when no suitable session exists; answered with a redirect."""


def client_key(scope: Scope) -> str:
    """The address failed logins are counted against."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"

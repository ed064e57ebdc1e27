"""Browser sessions and CSRF protection for the HTML pages.

The JSON API authenticates every request with a bearer token in a header, which a browser never
attaches on its own, so it needs no CSRF defence. The HTML pages log in once and then ride on a
cookie, so every form carries a CSRF token that must equal the one inside the signed session
cookie (a synchronizer token: another site can make the browser send the cookie, but cannot read
the page to learn the token). The cookie is HttpOnly and SameSite=Lax as a second layer.

A session is a small JSON payload signed with HMAC-SHA256. The key is derived from the admin
token, so changing the admin token logs everyone out, and several server processes started with
the same token accept each other's cookies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

COOKIE_NAME = "rlhf_session"
SESSION_SECONDS = 12 * 3600

Role = Literal["anon", "labeler", "admin"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SessionData:
    role: Role = "anon"
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    labeler_id: int | None = None
    token_version: str = ""  # labeler sessions end when the labeler's token changes
    expires: int = field(default_factory=lambda: int(time.time()) + SESSION_SECONDS)
    is_new: bool = field(default=False, compare=False)


class SessionCodec:
    """Signs and verifies session cookies."""

    def __init__(self, secret: str):
        self._key = hmac.new(secret.encode("utf-8"), b"rlhf-labeling-session-v1",
                             hashlib.sha256).digest()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, session: SessionData) -> str:
        data = asdict(session)
        data.pop("is_new")
        payload = _b64(json.dumps(data, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def loads(self, value: str | None) -> SessionData | None:
        """The session in a cookie value, or None if it is missing, forged or expired."""
        if not value or len(value) > 4096 or value.count(".") != 1:
            return None
        payload, signature = value.split(".")
        try:
            if not hmac.compare_digest(signature, self._sign(payload)):
                return None
            data = json.loads(_unb64(payload))
            session = SessionData(**data)
        except (ValueError, TypeError, UnicodeError):
            return None
        if session.expires < time.time() or session.role not in ("anon", "labeler", "admin"):
            return None
        return session


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted secret with the expected one."""
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))

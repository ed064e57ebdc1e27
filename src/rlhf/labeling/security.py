"""Browser sessions and CSRF protection for the HTML pages.

The JSON API authenticates every request with a bearer token in a header, which a browser never
attaches on its own, so it needs no CSRF defence. The HTML pages log in once and then ride on a
cookie, so every form carries a CSRF token that must equal the one inside the signed session
cookie (a synchronizer token: another site can make the browser send the cookie, but cannot read
the page to learn the token). The cookie is HttpOnly and SameSite=Lax as a second layer.

A session is a small JSON payload signed with HMAC-SHA256. The key is a random secret kept in
the database (`Store.session_secret`), so several server processes on one database accept each
other's cookies and nothing about the key can be learnt from the admin token. Each session has a
random id: logging out records it as revoked in the database, so a copied cookie stops working.
Admin sessions carry a digest of the admin token (changing the token logs admins out), labeler
sessions one of the labeler's token hash (rotating it logs the labeler out).

Failed logins are rate limited per client address (LoginLimiter).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

from rlhf.errors import UserError

COOKIE_NAME = "rlhf_session"
SESSION_SECONDS = 12 * 3600
MIN_ADMIN_TOKEN_CHARS = 16

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
    token_version: str = ""  # the session ends when the labeler's (or admin) token changes
    sid: str = field(default_factory=lambda: secrets.token_urlsafe(18))
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


def admin_token_version(admin_token: str) -> str:
    """What an admin session remembers of the admin token: a digest prefix, not the token."""
    return hashlib.sha256(b"rlhf-admin-session:" + admin_token.encode("utf-8")).hexdigest()[:16]


def check_admin_token(token: str) -> str:
    """Refuse admin tokens short enough to guess: at least MIN_ADMIN_TOKEN_CHARS characters, not
    one character repeated."""
    if len(token) < MIN_ADMIN_TOKEN_CHARS or len(set(token)) < 4:
        raise UserError(f"the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
                        "long and not a repeated character (leave it unset to get a random one)",
                        field="admin_token")
    return token


class LoginLimiter:
    """At most `attempts` failed logins per client address in any `window` seconds; further
    attempts from that address are refused (even with a right token) until the window moves on.
    Kept in memory, per server process."""

    def __init__(self, attempts: int = 10, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.attempts, self.window, self.clock = attempts, window, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again, or 0 when it may try now."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if len(times) < self.attempts:
                if not times:
                    self._failures.pop(key, None)
                return 0
            return max(1, int(times[0] + self.window - now + 0.999))

    def failed(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            self._recent(key, now).append(now)
            if len(self._failures) > 100_000:  # bounded memory under a flood of addresses
                stale = [k for k, t in self._failures.items()
                         if not t or t[-1] <= now - self.window]
                for key_ in stale:
                    del self._failures[key_]


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted secret with the expected one."""
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))

"""The labeling web app: `create_app(db_url, admin_token)` returns a FastAPI application.

    /api/...      JSON for programs (simulated labelers, scripts); bearer token in a header
    /login, /tasks/...     server-rendered pages for labelers; cookie session + CSRF token
    /admin/...    server-rendered pages for the admin (log in with the admin token)
    /static/...   one CSS file and one small script; pages work without the script

Every error a client can cause is answered with a 4xx status and a sentence saying what was
wrong (JSON {"error": ...} under /api, an HTML page elsewhere); 500 is left for real bugs.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rlhf.errors import UserError
from rlhf.labeling import api, pages
from rlhf.labeling.errors import LabelingError
from rlhf.labeling.http import (FOR_ADMIN, FOR_LABELERS, LARGE_BODY, MISSING_TOKEN, SMALL_BODY,
                                SMALL_BODY_PREFIXES, TOO_MANY, LoginRequired, client_key)
from rlhf.labeling.records import (FLAGS, KINDS, LIKERT_MAX, LIKERT_MIN, MAX_K, MAX_RESPONSE_CHARS,
                                   MIN_K)
from rlhf.labeling.security import (LoginLimiter, SessionCodec, admin_token_version,
                                    check_admin_token, tokens_equal)
from rlhf.labeling.store import Store

log = logging.getLogger("rlhf.labeling")
HERE = Path(__file__).parent

class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body too large (limit {limit} bytes)")


class BodyLimitMiddleware:
    """Refuse request bodies above a size limit with 413, whether or not Content-Length is sent.
    Answer and login routes get a small limit; admin imports a large one."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = SMALL_BODY if path.startswith(SMALL_BODY_PREFIXES) else LARGE_BODY
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _error_asgi(scope, receive, send, 413,
                              f"request body too large (limit {limit} bytes)")
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _error_asgi(scope, receive, send, 413, str(exc.detail))


class AuthFirstMiddleware:
    """Check the bearer token of /api requests that carry a body before any of it is read, so an
    unauthenticated client costs no body parsing (401 first; 429 after too many bad tokens).
    The identity found is left in the request state for the route's own check."""

    PUBLIC = ("/api/health", "/api/docs", "/api/openapi.json")
    BODYLESS = ("GET", "HEAD", "OPTIONS")
    ADMIN_ONLY = ("/api/projects", "/api/labelers")
    LABELER_ONLY = ("/api/tasks", "/api/me")

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in self.BODYLESS \
                or not scope["path"].startswith("/api/") or scope["path"] in self.PUBLIC:
            await self.app(scope, receive, send)
            return
        from starlette.concurrency import run_in_threadpool

        web = scope["app"]
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            await _error_asgi(scope, receive, send, 401, MISSING_TOKEN,
                              {"WWW-Authenticate": "Bearer"})
            return
        client = client_key(scope)
        wait = web.state.login_limiter.retry_after(client)
        if wait:
            await _error_asgi(scope, receive, send, 429, TOO_MANY % wait,
                              {"Retry-After": str(wait)})
            return
        if tokens_equal(token, web.state.admin_token):
            auth: Any = "admin"
        else:
            auth = await run_in_threadpool(web.state.store.authenticate, token)
            if auth is None:
                web.state.login_limiter.failed(client)
                await _error_asgi(scope, receive, send, 401, "invalid or revoked token",
                                  {"WWW-Authenticate": "Bearer"})
                return
        path = scope["path"]
        if auth != "admin" and path.startswith(self.ADMIN_ONLY):
            await _error_asgi(scope, receive, send, 403, FOR_ADMIN)
            return
        if auth == "admin" and path.startswith(self.LABELER_ONLY):
            await _error_asgi(scope, receive, send, 403, FOR_LABELERS)
            return
        scope.setdefault("state", {})["rlhf_auth"] = (token, auth)
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """Headers for every response: no framing, no MIME sniffing, scripts and styles only from
    this origin (the templates use no inline script or style)."""

    HEADERS = [
        (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; "
                                     b"img-src 'self' data:; form-action 'self'; "
                                     b"frame-ancestors 'none'; base-uri 'none'"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
    ]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # Pages and API answers are per user and may carry a new token or session cookie:
        # never cached (only /static may be).
        no_store = not scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if no_store and not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers + self.HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _error_asgi(scope: Scope, receive: Receive, send: Send, status: int, message: str,
                     headers: dict[str, str] | None = None) -> None:
    response = JSONResponse({"error": message, "status": status}, status_code=status,
                            headers=headers)
    await response(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """A readable sentence from FastAPI's validation errors; malformed JSON is a 400."""
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "invalid JSON")
            return 400, f"malformed JSON body: {detail}"
    parts = []
    for err in errors[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "; ".join(parts) + more


def create_app(db_url: str, admin_token: str | None = None, *, store: Store | None = None,
               login_limiter: LoginLimiter | None = None) -> FastAPI:
    """Build the app on the database at `db_url` (any SQLAlchemy URL; tables are created).

    `admin_token` unlocks /api admin routes and the admin pages; if None a random one is made
    (read it back from `app.state.admin_token`); a given one must be at least 16 characters.
    Session cookies are signed with a random secret kept in the database. Failed logins (page
    and API tokens) are limited per client address by `login_limiter` (default: 10 a minute).
    """
    admin_token = check_admin_token(admin_token) if admin_token else secrets.token_urlsafe(24)
    the_store = store or Store(db_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if store is None:  # a store passed in belongs to the caller
            the_store.close()

    app = FastAPI(title="rlhf labeling", version="1", docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None, lifespan=lifespan)
    app.state.store = the_store
    app.state.admin_token = admin_token
    app.state.admin_token_version = admin_token_version(admin_token)
    app.state.sessions = SessionCodec(the_store.session_secret())
    app.state.login_limiter = login_limiter or LoginLimiter()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(FLAGS=FLAGS, KINDS=KINDS, MIN_K=MIN_K, MAX_K=MAX_K,
                                 MAX_RESPONSE_CHARS=MAX_RESPONSE_CHARS,
                                 LIKERT_MIN=LIKERT_MIN, LIKERT_MAX=LIKERT_MAX)
    app.state.templates = templates

    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AuthFirstMiddleware)  # runs before the body limit: 401 before 413
    app.add_middleware(SecurityHeadersMiddleware)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)

    def error_response(request: Request, status: int, message: str,
                       headers: dict[str, str] | None = None) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "")
        if request.url.path.startswith("/api") or not wants_html:
            return JSONResponse({"error": message, "status": status}, status_code=status,
                                headers=headers)
        return templates.TemplateResponse(request, "error.html",
                                          {"status": status, "message": message,
                                           "session": None}, status_code=status, headers=headers)

    @app.exception_handler(LabelingError)
    async def _labeling_error(request: Request, exc: LabelingError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 429:
            headers = {"Retry-After": str(getattr(exc, "retry_after", 60))}
        return error_response(request, exc.status, str(exc), headers)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> Response:
        return error_response(request, 422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        status, message = _validation_message(exc)
        return error_response(request, status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no page or API route at {request.url.path}"
        return error_response(request, exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal error; the server log has the details")

    return app


def app_from_env() -> Any:
    """uvicorn factory: `uvicorn --factory rlhf.labeling.app:app_from_env` reads RLHF_LABEL_DB
    (default sqlite:///labels.db) and RLHF_ADMIN_TOKEN."""
    import os

    return create_app(os.environ.get("RLHF_LABEL_DB", "sqlite:///labels.db"),
                      os.environ.get("RLHF_ADMIN_TOKEN"))

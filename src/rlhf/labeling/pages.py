"""Server-rendered pages: login, the labeler's queue and one page per task kind (write a
demonstration, rank K responses with ties, rate one response 1-7 with Table 3 metadata), and the
admin's project, labeler and dashboard pages.

Every form is a plain POST carrying the session's CSRF token; pages work with the keyboard and
without JavaScript (the script only adds shortcuts and a live summary of the ranking).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from rlhf.errors import UserError
from rlhf.labeling.api import export_response
from rlhf.labeling.errors import Forbidden, Invalid, LabelingError
from rlhf.labeling.generate import generate_candidates
from rlhf.labeling.http import LARGE_BODY, LoginRequired, client_key
from rlhf.labeling.records import (FLAG_NAMES, LIKERT_MAX, LIKERT_MIN, MAX_K, MAX_OVERLAP, MIN_K,
                                   check_kind, groups_to_ranks, is_ascii_int, parse_int,
                                   parse_records_text)
from rlhf.labeling.security import COOKIE_NAME, SESSION_SECONDS, SessionData, tokens_equal
from rlhf.labeling.store import Store
from rlhf.labeling.tables import LabelerInfo, TaskView

router = APIRouter(include_in_schema=False)
TaskId = Annotated[int, Path(ge=1, le=2**62)]
LETTERS = "ABCDEFGHI"


# -- sessions ---------------------------------------------------------------------------------


def _store(request: Request) -> Store:
    return request.app.state.store


def current_session(request: Request) -> SessionData:
    """The request's valid session, or a fresh anonymous one (sent as a cookie with the page).
    A labeler session whose labeler was deactivated or got a new token counts as none."""
    cached = getattr(request.state, "session", None)
    if cached is not None:
        return cached
    session = request.app.state.sessions.loads(request.cookies.get(COOKIE_NAME))
    if session is not None and session.role == "labeler":
        labeler = _store(request).get_labeler(session.labeler_id or 0)
        if labeler is None or not labeler.active or labeler.token_version != session.token_version:
            session = None
    if session is not None and session.role == "admin" \
            and session.token_version != request.app.state.admin_token_version:
        session = None  # the admin token changed
    if session is not None and session.role != "anon" \
            and _store(request).session_revoked(session.sid):
        session = None  # logged out: a copy of the cookie is no use
    if session is None:
        session = SessionData(is_new=True)
    request.state.session = session
    return session


def _set_cookie(request: Request, response: Response, session: SessionData) -> None:
    response.set_cookie(COOKIE_NAME, request.app.state.sessions.dumps(session),
                        max_age=SESSION_SECONDS, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")


def render(request: Request, template: str, context: dict[str, Any] | None = None,
           status: int = 200) -> Response:
    session = current_session(request)
    ctx = {"session": session, "csrf": session.csrf, **(context or {})}
    response = request.app.state.templates.TemplateResponse(request, template, ctx,
                                                            status_code=status)
    response.headers["Cache-Control"] = "no-store"
    if session.is_new:
        _set_cookie(request, response, session)
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def read_form(request: Request, *, large: bool = False) -> FormData:
    """The posted form, after checking its CSRF token against the session cookie's."""
    form = await request.form(max_part_size=LARGE_BODY if large else 1024 * 1024)
    session = await run_in_threadpool(current_session, request)
    token = form.get("csrf_token")
    if session.is_new or not isinstance(token, str) or not tokens_equal(token, session.csrf):
        raise Forbidden("this form's security token is missing or out of date (CSRF check). "
                        "Reload the page and submit again.")
    return form


def _text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value if isinstance(value, str) else default


def _int(form: FormData, name: str, default: int | None = None, *, lo: int, hi: int) -> int:
    raw = _text(form, name).strip()
    if not raw and default is not None:
        return default
    return parse_int(raw, name, lo=lo, hi=hi)


def require_labeler(request: Request) -> LabelerInfo:
    session = current_session(request)
    if session.role != "labeler":
        raise LoginRequired()
    labeler = _store(request).get_labeler(session.labeler_id or 0)
    assert labeler is not None  # checked by current_session
    return labeler


def require_admin(request: Request) -> None:
    if current_session(request).role != "admin":
        raise LoginRequired()


# -- login ------------------------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    role = current_session(request).role
    return redirect({"labeler": "/tasks", "admin": "/admin"}.get(role, "/login"))


@router.get("/login")
def login_page(request: Request) -> Response:
    return render(request, "login.html")


@router.post("/login")
async def login(request: Request) -> Response:
    limiter = request.app.state.login_limiter
    wait = limiter.retry_after(client_key(request.scope))
    if wait:
        response = render(request, "login.html", {"error": f"Too many failed logins from this "
                                                           f"address; try again in {wait} s."}, 429)
        response.headers["Retry-After"] = str(wait)
        return response
    form = await read_form(request)
    token = _text(form, "token").strip()
    if tokens_equal(token, request.app.state.admin_token):
        session = SessionData(role="admin", token_version=request.app.state.admin_token_version)
        target = "/admin"
    else:
        labeler = await run_in_threadpool(_store(request).authenticate, token)
        if labeler is None:
            limiter.failed(client_key(request.scope))
            return render(request, "login.html", {"error": "That token is not valid."}, 401)
        session = SessionData(role="labeler", labeler_id=labeler.id,
                              token_version=labeler.token_version)
        target = "/tasks"
    response = redirect(target)
    _set_cookie(request, response, session)  # a new session and CSRF token after login
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await read_form(request)
    session = current_session(request)
    if session.role != "anon":  # ended on the server: a copied cookie stops working too
        await run_in_threadpool(_store(request).revoke_session, session.sid, session.expires)
    response = redirect("/login")
    _set_cookie(request, response, SessionData())
    return response


# -- labeler pages ----------------------------------------------------------------------------


@router.get("/tasks")
def task_list(request: Request) -> Response:
    labeler = require_labeler(request)
    store = _store(request)
    return render(request, "tasks.html", {
        "labeler": labeler, "progress": store.labeler_progress(labeler.id),
        "pending": store.tasks_for(labeler.id, status="pending", limit=200),
        "done": store.tasks_for(labeler.id, status="done", limit=200),
        "all_done": request.query_params.get("all_done") == "1",
        "submitted": request.query_params.get("submitted")})


@router.get("/tasks/next")
def next_task(request: Request) -> Response:
    labeler = require_labeler(request)
    pending = _store(request).tasks_for(labeler.id, status="pending", limit=1)
    submitted = request.query_params.get("submitted", "")
    note = f"submitted={submitted}" if is_ascii_int(submitted) else ""
    if pending:
        return redirect(f"/tasks/{pending[0].id}" + (f"?{note}" if note else ""))
    return redirect("/tasks?all_done=1" + (f"&{note}" if note else ""))


def _task_page(request: Request, labeler: LabelerInfo, task: TaskView, *,
               values: dict[str, Any] | None = None, error: str | None = None,
               status: int = 200) -> Response:
    """Render a task; `values` refills the form after a refused submission."""
    answer = task.answer
    if values is None and answer is not None:
        values = _answer_to_values(task, answer)
    progress = _store(request).labeler_progress(labeler.id)
    return render(request, f"task_{task.kind}.html", {
        "task": task, "labeler": labeler, "progress": progress, "values": values or {},
        "error": error, "letters": LETTERS, "k": len(task.responses),
        "submitted": request.query_params.get("submitted")}, status)


def _answer_to_values(task: TaskView, answer: dict[str, Any]) -> dict[str, Any]:
    if task.kind == "demonstration":
        return {"response": answer["response"]}
    if task.kind == "ranking":
        return {"ranks": groups_to_ranks(answer["ranking"], len(task.responses))}
    return {"likert": answer["likert"],
            "flags": [name for name, on in answer["flags"].items() if on]}


@router.get("/tasks/{task_id}")
def task_page(request: Request, task_id: TaskId) -> Response:
    labeler = require_labeler(request)
    task = _store(request).task_for(labeler.id, task_id)
    return _task_page(request, labeler, task)


def _form_answer(task: TaskView, form: FormData) -> tuple[dict[str, Any], dict[str, Any]]:
    """(answer for the store, values to refill the form) from a posted task form."""
    if task.kind == "demonstration":
        text = _text(form, "response")
        return {"response": text}, {"response": text}
    if task.kind == "ranking":
        k = len(task.responses)
        raw = [_text(form, f"rank_{i}").strip() for i in range(k)]
        values = {"ranks": [int(r) if is_ascii_int(r) else None for r in raw]}
        unranked = [LETTERS[i] for i, r in enumerate(raw) if not r]
        if unranked:
            raise _FormError(f"Give every response a rank; missing: {', '.join(unranked)}.", values)
        if not all(is_ascii_int(r) for r in raw):
            raise _FormError("Ranks must be whole numbers written with the digits 0-9.", values)
        return {"ranks": values["ranks"]}, values
    flags = [f for f in form.getlist("flags") if isinstance(f, str)]
    unknown = [f for f in flags if f not in FLAG_NAMES]
    values = {"likert": None, "flags": flags}
    if unknown:
        raise _FormError(f"Unknown metadata label {unknown[0]!r:.40}.", values)
    raw = _text(form, "likert").strip()
    if not is_ascii_int(raw):
        raise _FormError(f"Choose an overall score from {LIKERT_MIN} to {LIKERT_MAX}.", values)
    values["likert"] = int(raw)
    return {"likert": values["likert"],
            "flags": {name: name in flags for name in FLAG_NAMES}}, values


class _FormError(Exception):
    def __init__(self, message: str, values: dict[str, Any]):
        super().__init__(message)
        self.values = values


@router.post("/tasks/{task_id}")
async def submit_task(request: Request, task_id: TaskId) -> Response:
    labeler = await run_in_threadpool(require_labeler, request)  # before reading the body
    form = await read_form(request)
    store = _store(request)
    task = await run_in_threadpool(store.task_for, labeler.id, task_id)
    values: dict[str, Any] = {}
    try:
        answer, values = _form_answer(task, form)
        result = await run_in_threadpool(store.submit, labeler.id, task.id, answer)
    except _FormError as e:
        return await run_in_threadpool(_task_page, request, labeler, task, values=e.values,
                                       error=str(e), status=422)
    except LabelingError as e:
        fresh = await run_in_threadpool(store.task_for, labeler.id, task_id)
        return await run_in_threadpool(_task_page, request, labeler, fresh,
                                       values=values if e.status != 409 else None,
                                       error=str(e), status=e.status)
    return redirect(f"/tasks/next?submitted={result.task_id}")


# -- admin pages ------------------------------------------------------------------------------


@router.get("/admin")
def admin_home(request: Request) -> Response:
    require_admin(request)
    store = _store(request)
    return render(request, "admin_index.html", {"projects": store.list_projects(),
                                                "labelers": store.list_labelers()})


@router.post("/admin/projects")
async def admin_create_project(request: Request) -> Response:
    require_admin(request)
    form = await read_form(request)
    store = _store(request)
    try:
        project = await run_in_threadpool(store.create_project, _text(form, "name").strip(),
                                          _text(form, "description"))
    except LabelingError as e:
        return render(request, "admin_index.html", {
            "projects": await run_in_threadpool(store.list_projects),
            "labelers": await run_in_threadpool(store.list_labelers), "error": str(e),
            "name": _text(form, "name")}, e.status)
    return redirect(f"/admin/projects/{project.name}")


def _project_page(request: Request, name: str, *, message: str | None = None,
                  error: str | None = None, status: int = 200,
                  details: dict[str, Any] | None = None) -> Response:
    store = _store(request)
    return render(request, "admin_project.html", {
        "project": store.get_project(name), "labelers": store.list_labelers(),
        "message": message, "error": error, "details": details}, status)


@router.get("/admin/projects/{name}")
def admin_project(request: Request, name: str) -> Response:
    require_admin(request)
    return _project_page(request, name)


async def _uploaded_text(form: FormData, file_field: str, text_field: str) -> str:
    upload = form.get(file_field)
    if isinstance(upload, UploadFile) and upload.filename:
        raw = await upload.read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Invalid(f"the file is not UTF-8 text (byte {e.start})") from None
    return _text(form, text_field)


async def _admin_action(request: Request, name: str, action) -> Response:
    """Run an admin form's action in a worker thread and show the project page with its result
    (or the error, with the error's status)."""
    require_admin(request)
    form = await read_form(request, large=True)
    try:
        message, details = await action(form)
    except UserError as e:  # LabelingErrors, and UserErrors from loading a checkpoint
        status, error = getattr(e, "status", 422), str(e)
        return await run_in_threadpool(lambda: _project_page(request, name, error=error,
                                                             status=status))
    return await run_in_threadpool(lambda: _project_page(request, name, message=message,
                                                         details=details))


@router.post("/admin/projects/{name}/prompts")
async def admin_import_prompts(request: Request, name: str) -> Response:
    async def action(form: FormData) -> tuple[str, dict[str, Any]]:
        text = await _uploaded_text(form, "file", "records")
        records = parse_records_text(text, "prompts file")
        report = await run_in_threadpool(_store(request).import_prompts, name, records)
        return (f"Imported {report.prompts_added} new prompts ({report.prompts_unchanged} "
                f"already there), {report.candidates_added} candidate responses."), report.to_json()

    return await _admin_action(request, name, action)


@router.post("/admin/projects/{name}/rankings")
async def admin_import_rankings(request: Request, name: str) -> Response:
    async def action(form: FormData) -> tuple[str, dict[str, Any]]:
        text = await _uploaded_text(form, "file", "records")
        records = parse_records_text(text, "rankings file")
        fmt = _text(form, "format", "auto")
        report = await run_in_threadpool(_store(request).import_rankings, name, records, fmt)
        return (f"Imported {report.submissions_added} rankings ({report.submissions_unchanged} "
                f"already there) on {report.tasks_created} new tasks."), report.to_json()

    return await _admin_action(request, name, action)


@router.post("/admin/projects/{name}/generate")
async def admin_generate(request: Request, name: str) -> Response:
    async def action(form: FormData) -> tuple[str, dict[str, Any]]:
        checkpoint = _text(form, "checkpoint").strip()
        if not checkpoint:
            raise Invalid("give the checkpoint folder", field="checkpoint")
        try:
            temperature = float(_text(form, "temperature", "1.0") or 1.0)
        except ValueError:
            raise Invalid("must be a number", field="temperature") from None
        kwargs = dict(k=_int(form, "k", 4, lo=MIN_K, hi=MAX_K),
                      max_new_tokens=_int(form, "max_new_tokens", 64, lo=1, hi=1024),
                      temperature=temperature, seed=_int(form, "seed", 0, lo=0, hi=2**31),
                      regenerate=form.get("regenerate") == "on")
        report = await run_in_threadpool(lambda: generate_candidates(
            _store(request), name, checkpoint, **kwargs))
        skipped = (f" {report.skipped} prompts kept getting empty samples and were skipped."
                   if report.skipped else "")
        return (f"Generated {report.candidates} candidates for {report.prompts} prompts "
                f"(K = {report.k}).{skipped}"), report.to_json()

    return await _admin_action(request, name, action)


@router.post("/admin/projects/{name}/assign")
async def admin_assign(request: Request, name: str) -> Response:
    async def action(form: FormData) -> tuple[str, dict[str, Any]]:
        kind = check_kind(_text(form, "kind"))
        overlap = _int(form, "overlap", 1, lo=1, hi=MAX_OVERLAP)
        chosen = [n for n in form.getlist("labelers") if isinstance(n, str)] or None
        report = await run_in_threadpool(_store(request).assign, name, kind, overlap, chosen,
                                         seed=_int(form, "seed", 0, lo=0, hi=2**31))
        skipped = (f" {len(report.skipped_prompts)} prompts have no candidates yet."
                   if report.skipped_prompts else "")
        return (f"{report.tasks_created} new {kind} tasks ({report.tasks_total} in all); "
                f"{report.assignments_created} new assignments.{skipped}"), report.to_json()

    return await _admin_action(request, name, action)


@router.get("/admin/projects/{name}/dashboard")
def admin_dashboard(request: Request, name: str) -> Response:
    require_admin(request)
    return render(request, "dashboard.html", {"data": _store(request).dashboard(name),
                                              "name": name})


@router.get("/admin/projects/{name}/export/{kind}")
def admin_export(request: Request, name: str, kind: str, skip_invalid: bool = False) -> Response:
    require_admin(request)
    return export_response(_store(request), name, kind, download=True,
                           skip_invalid=skip_invalid)


@router.get("/admin/labelers")
def admin_labelers(request: Request) -> Response:
    require_admin(request)
    return render(request, "admin_labelers.html", {"labelers": _store(request).list_labelers()})


async def _labeler_action(request: Request, action) -> Response:
    require_admin(request)
    form = await read_form(request)
    store = _store(request)
    context: dict[str, Any] = {}
    status = 200
    try:
        labeler, token = await run_in_threadpool(action, form)
        context = {"new_token": token, "new_labeler": labeler.name}
    except LabelingError as e:
        context, status = {"error": str(e), "name": _text(form, "name")}, e.status
    context["labelers"] = await run_in_threadpool(store.list_labelers)
    return render(request, "admin_labelers.html", context, status)


@router.post("/admin/labelers")
async def admin_create_labeler(request: Request) -> Response:
    return await _labeler_action(
        request, lambda form: _store(request).create_labeler(_text(form, "name").strip()))


@router.post("/admin/labelers/{name}/token")
async def admin_rotate_token(request: Request, name: str) -> Response:
    return await _labeler_action(request, lambda form: _store(request).rotate_token(name))

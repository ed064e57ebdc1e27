"""The JSON API under /api. Every route but /api/health needs `Authorization: Bearer <token>`:
the admin token for /api/projects and /api/labelers, a labeler token for /api/me and
/api/tasks. A labeler only ever sees and answers its own tasks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlhf.labeling.errors import Forbidden, Invalid, TooManyAttempts, Unauthorized
from rlhf.labeling.generate import generate_candidates
from rlhf.labeling.http import FOR_ADMIN, FOR_LABELERS, MISSING_TOKEN, client_key
from rlhf.labeling.records import MAX_IMPORT_RECORDS, MAX_K, MAX_OVERLAP, MIN_K, check_unicode
from rlhf.labeling.security import tokens_equal
from rlhf.labeling.store import Store
from rlhf.labeling.tables import LabelerInfo

router = APIRouter(prefix="/api")

EXPORT_KINDS = {"demonstration": "demonstration", "demonstrations": "demonstration",
                "ranking": "ranking", "rankings": "ranking", "rating": "rating",
                "ratings": "rating"}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        """Every string anywhere in a body must be valid Unicode without NUL (a JSON body can
        carry a lone surrogate such as "\\ud800", which nothing can store or export)."""
        if isinstance(data, dict):
            for key, value in data.items():
                check_unicode(value, str(key))
        return data


class ProjectIn(Body):
    name: str
    description: str = ""


class PromptsIn(Body):
    prompts: list[Any] = Field(max_length=MAX_IMPORT_RECORDS)


class RankingsIn(Body):
    records: list[Any] = Field(max_length=MAX_IMPORT_RECORDS)
    format: Literal["auto", "contract", "argilla", "label-studio"] = "auto"


class GenerateIn(Body):
    checkpoint: str = Field(min_length=1, max_length=1000)
    k: int = Field(4, ge=MIN_K, le=MAX_K)
    max_new_tokens: int = Field(64, ge=1, le=1024)
    temperature: float = Field(1.0, gt=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    regenerate: bool = False


class AssignIn(Body):
    kind: Literal["demonstration", "ranking", "rating"]
    overlap: int = Field(1, ge=1, le=MAX_OVERLAP)
    labelers: list[str] | None = Field(None, max_length=1000)
    seed: int = 0


class LabelerIn(Body):
    name: str


class AnswerIn(Body):
    """One answer; which fields apply depends on the task kind (checked by the store):
    demonstration {"response"}; ranking {"ranking": [[best...], ...]} or {"ranks": [1..K each]};
    rating {"likert": 1..7, "flags": {name: bool}}."""

    response: Any = None
    ranking: Any = None
    ranks: Any = None
    likert: Any = None
    flags: Any = None


# -- authentication ---------------------------------------------------------------------------


def get_store(request: Request) -> Store:
    return request.app.state.store


def _bearer(request: Request) -> str:
    wait = request.app.state.login_limiter.retry_after(client_key(request.scope))
    if wait:
        raise TooManyAttempts(wait)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(MISSING_TOKEN)
    return token.strip()


def _checked(request: Request, token: str) -> Any:
    """What the token was found to be by AuthFirstMiddleware ("admin", a LabelerInfo), or None
    when it did not look at this request (bodyless methods)."""
    cached = getattr(request.state, "rlhf_auth", None)
    return cached[1] if cached is not None and cached[0] == token else None


def _failed_token(request: Request) -> None:
    request.app.state.login_limiter.failed(client_key(request.scope))


def require_admin(request: Request) -> None:
    token = _bearer(request)
    checked = _checked(request, token)
    if checked == "admin" or tokens_equal(token, request.app.state.admin_token):
        return
    if checked is not None or get_store(request).authenticate(token) is not None:
        raise Forbidden(FOR_ADMIN)
    _failed_token(request)
    raise Unauthorized("invalid token")


def require_labeler(request: Request) -> LabelerInfo:
    token = _bearer(request)
    checked = _checked(request, token)
    labeler = checked if isinstance(checked, LabelerInfo) else \
        get_store(request).authenticate(token)
    if labeler is not None:
        return labeler
    if tokens_equal(token, request.app.state.admin_token):
        raise Forbidden(FOR_LABELERS)
    _failed_token(request)
    raise Unauthorized("invalid or revoked labeler token")


Admin = Depends(require_admin)
TaskId = Annotated[int, Path(ge=1, le=2**62, description="task id")]


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


# -- admin ------------------------------------------------------------------------------------


@router.get("/projects", dependencies=[Admin])
def list_projects(request: Request) -> dict[str, Any]:
    return {"projects": [p.to_json() for p in get_store(request).list_projects()]}


@router.post("/projects", dependencies=[Admin], status_code=201)
def create_project(request: Request, body: ProjectIn) -> dict[str, Any]:
    return get_store(request).create_project(body.name, body.description).to_json()


@router.get("/projects/{name}", dependencies=[Admin])
def get_project(request: Request, name: str) -> dict[str, Any]:
    return get_store(request).get_project(name).to_json()


@router.post("/projects/{name}/prompts", dependencies=[Admin])
def import_prompts(request: Request, name: str, body: PromptsIn) -> dict[str, Any]:
    """Import prompt records ({"id"?, "prompt", "category"?, "responses"?: [K texts]})."""
    return get_store(request).import_prompts(name, body.prompts).to_json()


@router.post("/projects/{name}/rankings", dependencies=[Admin])
def import_rankings(request: Request, name: str, body: RankingsIn) -> dict[str, Any]:
    """Import finished rankings (our JSONL records, Argilla or Label Studio exports)."""
    return get_store(request).import_rankings(name, body.records, body.format).to_json()


@router.post("/projects/{name}/generate", dependencies=[Admin])
def generate(request: Request, name: str, body: GenerateIn) -> dict[str, Any]:
    """Sample K candidates per prompt from a checkpoint folder on the server's disk."""
    store = get_store(request)
    store.get_project(name)
    return generate_candidates(store, name, body.checkpoint, k=body.k,
                               max_new_tokens=body.max_new_tokens, temperature=body.temperature,
                               top_p=body.top_p, seed=body.seed,
                               regenerate=body.regenerate).to_json()


@router.post("/projects/{name}/tasks", dependencies=[Admin])
def assign(request: Request, name: str, body: AssignIn) -> dict[str, Any]:
    """Create the missing tasks of one kind and assign each to `overlap` labelers."""
    return get_store(request).assign(name, body.kind, body.overlap, body.labelers,
                                     seed=body.seed).to_json()


@router.get("/projects/{name}/dashboard", dependencies=[Admin])
def dashboard(request: Request, name: str) -> dict[str, Any]:
    return get_store(request).dashboard(name)


def export_response(store: Store, project: str, kind: str, *, download: bool = False,
                    skip_invalid: bool = False) -> Response:
    """The records as JSONL. A stored row that cannot be exported is a 409 naming table, id and
    field; with `skip_invalid` it is left out and counted in the X-Skipped-Rows header."""
    if kind not in EXPORT_KINDS:
        raise Invalid(f"unknown record kind {kind!r:.40}; use demonstrations, rankings or ratings",
                      field="kind")
    import json
    import re

    skipped: list = []
    rows = store.export_records(project, EXPORT_KINDS[kind], skip_invalid=skip_invalid,
                                skipped=skipped)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    headers = {"X-Skipped-Rows": str(len(skipped))}
    if download:  # a name stored before names were checked strictly must not break the header
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", project)[:64] or "project"
        filename = f"{safe}-{EXPORT_KINDS[kind]}s.jsonl"
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return Response(body.encode("utf-8"), media_type="application/x-ndjson", headers=headers)


@router.get("/projects/{name}/export/{kind}", dependencies=[Admin])
def export(request: Request, name: str, kind: str, skip_invalid: bool = False) -> Response:
    """The project's records of one kind as JSONL, exactly as `rlhf label export` writes them;
    `skip_invalid=true` leaves out stored rows that cannot be exported (counted in the
    X-Skipped-Rows header) instead of answering 409."""
    return export_response(get_store(request), name, kind, skip_invalid=skip_invalid)


@router.get("/labelers", dependencies=[Admin])
def list_labelers(request: Request) -> dict[str, Any]:
    return {"labelers": [lab.to_json() for lab in get_store(request).list_labelers()]}


@router.post("/labelers", dependencies=[Admin], status_code=201)
def create_labeler(request: Request, body: LabelerIn) -> dict[str, Any]:
    """Create a labeler; the response holds its token, which is not stored and not shown again."""
    labeler, token = get_store(request).create_labeler(body.name)
    return {**labeler.to_json(), "token": token}


@router.post("/labelers/{name}/token", dependencies=[Admin])
def rotate_token(request: Request, name: str) -> dict[str, Any]:
    """Issue a new token for a labeler; the old one stops working at once."""
    labeler, token = get_store(request).rotate_token(name)
    return {**labeler.to_json(), "token": token}


# -- labelers ---------------------------------------------------------------------------------


@router.get("/me")
def me(request: Request, labeler: LabelerInfo = Depends(require_labeler)) -> dict[str, Any]:
    return {**labeler.to_json(), "progress": get_store(request).labeler_progress(labeler.id)}


@router.get("/tasks")
def my_tasks(request: Request, labeler: LabelerInfo = Depends(require_labeler),
             project: str | None = Query(None, max_length=64),
             status: Literal["pending", "done", "all"] = "pending",
             kind: Literal["demonstration", "ranking", "rating"] | None = None,
             limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    """The caller's tasks, oldest first."""
    tasks = get_store(request).tasks_for(labeler.id, project=project, status=status, kind=kind,
                                         limit=limit)
    return {"tasks": [t.to_json() for t in tasks]}


@router.get("/tasks/{task_id}")
def my_task(request: Request, task_id: TaskId,
            labeler: LabelerInfo = Depends(require_labeler)) -> dict[str, Any]:
    return get_store(request).task_for(labeler.id, task_id).to_json()


@router.post("/tasks/{task_id}/submission")
def submit(request: Request, task_id: TaskId, body: AnswerIn,
           labeler: LabelerInfo = Depends(require_labeler)) -> JSONResponse:
    """Answer one of the caller's tasks: 201 when stored, 200 when the identical answer was
    already stored (safe to retry), 409 when a different answer was."""
    answer = body.model_dump(exclude_none=True)
    result = get_store(request).submit(labeler.id, task_id, answer, source="api")
    return JSONResponse(result.to_json(), status_code=201 if result.created else 200)

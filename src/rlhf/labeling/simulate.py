"""Simulated labelers filling the app's queues through the same JSON API people's browsers sit on.

Any object with these methods is a labeler (the Instruction World's `LabelerPool` members are):

    rank(prompt, responses) -> [[best indices], ..., [worst indices]]   (tie groups)
    demonstrate(prompt) -> str
    rate(prompt, response) -> {"likert": 1..7, "flags": {name: bool}}

A round with simulated labelers, in process or against a running server:

    client = TestClient(create_app(db_url, admin_token))        # or "http://127.0.0.1:8000"
    tokens = register_labelers(client, admin_token, pool)       # token -> labeler
    client.post("/api/projects/round-1/tasks", json={"kind": "ranking", "overlap": 2},
                headers={"Authorization": f"Bearer {admin_token}"})
    fill_queues(client, "round-1", tokens)
    store.export_to_dir("round-1", "data/round-1")               # or `rlhf label export`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Union


class LabelerLike(Protocol):
    def rank(self, prompt: str, responses: list[str]) -> list[list[int]]: ...

    def demonstrate(self, prompt: str) -> str: ...

    def rate(self, prompt: str, response: str) -> Mapping[str, Any]: ...


class LabelingClientError(RuntimeError):
    """The server refused a request; carries its status code and message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"labeling server answered {status}: {message}")
        self.status = status


@dataclass
class FillReport:
    submitted: dict[str, int] = field(default_factory=dict)  # labeler -> new submissions
    replayed: int = 0  # answers the server already had (a retried or concurrent fill)

    @property
    def total(self) -> int:
        return sum(self.submitted.values())


class HttpClient(Protocol):
    """What the helpers need from a client: httpx.Client, or FastAPI's TestClient."""

    def get(self, url: str, **kwargs: Any) -> Any: ...

    def post(self, url: str, **kwargs: Any) -> Any: ...


Client = Union[str, HttpClient]


def _open(client: Client) -> tuple[HttpClient, bool]:
    """A client for a base URL (closed by the caller), or the given client object as it is."""
    if isinstance(client, str):
        import httpx  # only needed to reach a server by URL

        return httpx.Client(base_url=client, timeout=60.0), True
    return client, False


def _check(response: Any) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise LabelingClientError(response.status_code, message)
    return response.json()


def _name(labeler: Any, token: str) -> str:
    return str(getattr(labeler, "id", None) or getattr(labeler, "name", None) or token[:12])


def answer_for(labeler: LabelerLike, task: Mapping[str, Any]) -> dict[str, Any]:
    """Ask a labeler for the answer to one task (as GET /api/tasks returns it), in API form.
    Values are converted to plain ints/bools so numpy scalars serialise."""
    prompt, responses = task["prompt"], task["responses"]
    kind = task["kind"]
    if kind == "demonstration":
        return {"response": str(labeler.demonstrate(prompt))}
    if kind == "ranking":
        return {"ranking": [[int(i) for i in group] for group in labeler.rank(prompt, responses)]}
    if kind == "rating":
        out = labeler.rate(prompt, responses[0])
        likert = out["likert"] if isinstance(out, Mapping) else getattr(out, "likert")
        flags = out.get("flags", {}) if isinstance(out, Mapping) else getattr(out, "flags", {})
        return {"likert": int(likert), "flags": {str(k): bool(v) for k, v in dict(flags).items()}}
    raise ValueError(f"unknown task kind {kind!r}")


def fill_queues(client: Client, project: str, labelers: Mapping[str, LabelerLike], *,
                batch_size: int = 100, max_per_labeler: int | None = None) -> FillReport:
    """Let each labeler (keyed by its token) answer all its pending tasks of `project`, through
    GET /api/tasks and POST /api/tasks/{id}/submission. Safe to run again: answered tasks are
    no longer pending, and a replayed answer is counted, not duplicated."""
    http, owned = _open(client)
    report = FillReport()
    try:
        for token, labeler in labelers.items():
            headers = {"Authorization": f"Bearer {token}"}
            name = _name(labeler, token)
            done = 0
            seen: set[int] = set()
            while max_per_labeler is None or done < max_per_labeler:
                tasks = _check(http.get("/api/tasks", headers=headers, params={
                    "project": project, "status": "pending", "limit": batch_size}))["tasks"]
                tasks = [t for t in tasks if t["id"] not in seen]
                if not tasks:
                    break
                for task in tasks:
                    if max_per_labeler is not None and done >= max_per_labeler:
                        break
                    seen.add(task["id"])
                    result = _check(http.post(f"/api/tasks/{task['id']}/submission",
                                              json=answer_for(labeler, task), headers=headers))
                    if result["created"]:
                        report.submitted[name] = report.submitted.get(name, 0) + 1
                    else:
                        report.replayed += 1
                    done += 1
            report.submitted.setdefault(name, 0)
    finally:
        if owned:
            http.close()  # type: ignore[attr-defined]
    return report


def register_labelers(client: Client, admin_token: str, labelers: Iterable[Any]
                      ) -> dict[str, Any]:
    """Create an app labeler named after each labeler's `.id` (issuing a new token if the name
    exists) and return {token: labeler}, ready for `fill_queues`."""
    http, owned = _open(client)
    headers = {"Authorization": f"Bearer {admin_token}"}
    out: dict[str, Any] = {}
    try:
        for labeler in labelers:
            name = str(getattr(labeler, "id"))
            response = http.post("/api/labelers", json={"name": name}, headers=headers)
            if response.status_code == 409:
                response = http.post(f"/api/labelers/{name}/token", headers=headers)
            out[_check(response)["token"]] = labeler
    finally:
        if owned:
            http.close()  # type: ignore[attr-defined]
    return out

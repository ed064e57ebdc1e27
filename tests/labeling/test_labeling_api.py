"""The labeling JSON API through FastAPI's TestClient: every route, the authorisation rules
(admin token, labeler tokens, own tasks only), idempotent submission, and 4xx (never 500) for
bad requests."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rlhf.labeling.app import create_app

ADMIN = "admin-token-for-tests"
A = {"Authorization": f"Bearer {ADMIN}"}
PROMPTS = [
    {"id": "p1", "prompt": "Name a color.", "category": "open_qa",
     "responses": ["Red.", "Blue.", "A color.", "I like turtles."]},
    {"id": "p2", "prompt": "Say hello in French.", "category": "generation"},
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}




@pytest.fixture
def client(db_url):
    with TestClient(create_app(db_url, ADMIN)) as c:
        yield c


@pytest.fixture
def world(client):
    """A project with prompts, two labelers and one task of each kind per prompt for alice."""
    assert client.post("/api/projects", json={"name": "r1"}, headers=A).status_code == 201
    assert client.post("/api/projects/r1/prompts", json={"prompts": PROMPTS},
                       headers=A).status_code == 200
    tokens = {n: client.post("/api/labelers", json={"name": n}, headers=A).json()["token"]
              for n in ("alice", "bob")}
    for kind in ("demonstration", "ranking", "rating"):
        r = client.post("/api/projects/r1/tasks", json={"kind": kind, "overlap": 1,
                                                         "labelers": ["alice"]}, headers=A)
        assert r.status_code == 200, r.text
    return tokens


def alice_task(client, world, kind: str) -> dict:
    tasks = client.get("/api/tasks", params={"kind": kind},
                       headers=bearer(world["alice"])).json()["tasks"]
    return tasks[0]


# -- authorisation ---------------------------------------------------------------------------

ADMIN_ROUTES = [
    ("get", "/api/projects", None),
    ("post", "/api/projects", {"name": "x"}),
    ("get", "/api/projects/r1", None),
    ("post", "/api/projects/r1/prompts", {"prompts": [{"prompt": "q"}]}),
    ("post", "/api/projects/r1/rankings", {"records": []}),
    ("post", "/api/projects/r1/generate", {"checkpoint": "/nonexistent"}),
    ("post", "/api/projects/r1/tasks", {"kind": "ranking"}),
    ("get", "/api/projects/r1/dashboard", None),
    ("get", "/api/projects/r1/export/rankings", None),
    ("get", "/api/labelers", None),
    ("post", "/api/labelers", {"name": "carol"}),
    ("post", "/api/labelers/alice/token", None),
]


@pytest.mark.parametrize("method, path, body", ADMIN_ROUTES)
def test_admin_routes_need_the_admin_token(client, world, method, path, body):
    call = getattr(client, method)
    kwargs = {"json": body} if body is not None else {}
    none = call(path, **kwargs)
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in none.json()["error"]
    assert call(path, headers=bearer("wrong-token"), **kwargs).status_code == 401
    as_labeler = call(path, headers=bearer(world["alice"]), **kwargs)
    assert as_labeler.status_code == 403 and "admin token" in as_labeler.json()["error"]
    assert call(path, headers={"Authorization": "Basic abc"}, **kwargs).status_code == 401


@pytest.mark.parametrize("method, path", [("get", "/api/me"), ("get", "/api/tasks"),
                                          ("get", "/api/tasks/1"),
                                          ("post", "/api/tasks/1/submission")])
def test_labeler_routes_need_a_labeler_token(client, world, method, path):
    kwargs = {"json": {"response": "x"}} if method == "post" else {}
    call = getattr(client, method)
    assert call(path, **kwargs).status_code == 401
    assert call(path, headers=bearer("lbl_forged"), **kwargs).status_code == 401
    admin = call(path, headers=A, **kwargs)
    assert admin.status_code == 403 and "labeler token" in admin.json()["error"]


def test_health_needs_no_token(client):
    assert client.get("/api/health").json() == {"status": "ok"}


def test_a_labeler_sees_and_submits_only_its_own_tasks(client, world):
    task = alice_task(client, world, "demonstration")
    bob = bearer(world["bob"])
    assert client.get("/api/tasks", headers=bob).json() == {"tasks": []}
    seen = client.get(f"/api/tasks/{task['id']}", headers=bob)
    assert seen.status_code == 404 and "not one of your tasks" in seen.json()["error"]
    sent = client.post(f"/api/tasks/{task['id']}/submission", json={"response": "hijack"},
                       headers=bob)
    assert sent.status_code == 404
    assert client.get("/api/tasks/999999", headers=bearer(world["alice"])).status_code == 404
    export = client.get("/api/projects/r1/export/demonstrations", headers=A)
    assert export.text == ""


def test_rotated_token_stops_working(client, world):
    old = world["alice"]
    new = client.post("/api/labelers/alice/token", headers=A).json()["token"]
    assert client.get("/api/me", headers=bearer(old)).status_code == 401
    assert client.get("/api/me", headers=bearer(new)).json()["name"] == "alice"
    assert client.post("/api/labelers/nobody/token", headers=A).status_code == 404


# -- admin routes ----------------------------------------------------------------------------

def test_projects_routes(client, world):
    listed = client.get("/api/projects", headers=A).json()["projects"]
    assert listed[0]["name"] == "r1" and listed[0]["prompts"] == 2
    assert client.get("/api/projects/r1", headers=A).json()["candidates"] == 4
    assert client.post("/api/projects", json={"name": "r1"}, headers=A).status_code == 409
    bad = client.post("/api/projects", json={"name": "no spaces please"}, headers=A)
    assert bad.status_code == 422 and "name" in bad.json()["error"]
    assert client.get("/api/projects/none", headers=A).status_code == 404


def test_prompt_import_errors_are_422_and_atomic(client, world):
    r = client.post("/api/projects/r1/prompts", json={"prompts": [{"prompt": "ok"}, {"x": 1}]},
                    headers=A)
    assert r.status_code == 422 and "record 2" in r.json()["error"]
    r = client.post("/api/projects/r1/prompts",
                    json={"prompts": [{"prompt": "q", "responses": ["a"] * 10}]}, headers=A)
    assert r.status_code == 422 and "2 to 9" in r.json()["error"]
    r = client.post("/api/projects/r1/prompts", json={"prompts": [], "extra": 1}, headers=A)
    assert r.status_code == 422 and "extra" in r.json()["error"]
    r = client.post("/api/projects/r1/prompts", json={"prompts": "nope"}, headers=A)
    assert r.status_code == 422
    assert client.get("/api/projects/r1", headers=A).json()["prompts"] == 2


def test_ranking_import_route(client, world):
    records = [{"prompt": "Name a color.", "id": "p1", "responses": PROMPTS[0]["responses"],
                "ranking": [[1], [0, 2], [3]], "labeler_id": "vendor-7"},
               {"fields": {"prompt": "Pick one", "r1": "this", "r2": "that"},
                "responses": {"ranking": [{"user_id": "argilla-user", "value": ["r2", "r1"]}]}}]
    r = client.post("/api/projects/r1/rankings", json={"records": records}, headers=A)
    assert r.status_code == 200 and r.json()["submissions_added"] == 2
    rows = client.get("/api/projects/r1/export/rankings", headers=A).text.splitlines()
    assert len(rows) == 2 and '"labeler_id": "vendor-7"' in rows[0]
    bad = client.post("/api/projects/r1/rankings",
                      json={"records": [{"prompt": "p", "responses": ["a", "b"],
                                         "ranking": [[0]]}]}, headers=A)
    assert bad.status_code == 422 and "missing [1]" in bad.json()["error"]
    fmt = client.post("/api/projects/r1/rankings", json={"records": [], "format": "csv"},
                      headers=A)
    assert fmt.status_code == 422


def test_task_assignment_route_validation(client, world):
    for body, status in [({"kind": "poem"}, 422), ({"kind": "ranking", "overlap": 0}, 422),
                         ({"kind": "ranking", "overlap": 3}, 422),
                         ({"kind": "ranking", "labelers": ["ghost"]}, 404)]:
        r = client.post("/api/projects/r1/tasks", json=body, headers=A)
        assert r.status_code == status, (body, r.text)
    r = client.post("/api/projects/r1/tasks", json={"kind": "ranking", "overlap": 2}, headers=A)
    assert r.json()["assignments_created"] == 1  # bob joins alice on the one ranking task


def test_labeler_routes(client, world):
    listed = client.get("/api/labelers", headers=A).json()["labelers"]
    assert [lab["name"] for lab in listed] == ["alice", "bob"]
    assert all("token" not in lab and "token_hash" not in lab for lab in listed)
    assert client.post("/api/labelers", json={"name": "alice"}, headers=A).status_code == 409
    assert client.post("/api/labelers", json={"name": ""}, headers=A).status_code == 422


def test_generation_bounds_are_checked_before_loading(client, world):
    for body in ({"checkpoint": "/nonexistent", "k": 10}, {"checkpoint": "/nonexistent", "k": 1},
                 {"checkpoint": "/nonexistent", "max_new_tokens": 0}, {"checkpoint": ""}):
        assert client.post("/api/projects/r1/generate", json=body, headers=A).status_code == 422
    r = client.post("/api/projects/r1/generate", json={"checkpoint": "/nonexistent"}, headers=A)
    assert r.status_code == 422 and "config.json" in r.json()["error"]


def tiny_checkpoint(folder: Path) -> Path:
    """An untrained one-layer GPT-2 with a byte-level BPE trained on a few sentences."""
    import torch

    from rlhf.config import TinyModelConfig
    from rlhf.models import build_tiny_model, train_tokenizer

    text = ["User: Name a color.\nAssistant: Red is a color.", "Say hello in French: bonjour.",
            "The cat sat on the mat and the dog ran near the river."] * 20
    tok = train_tokenizer(text, vocab_size=300)
    torch.manual_seed(0)
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64), tok)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_generate_candidates_from_a_checkpoint(client, world, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    r = client.post("/api/projects/r1/generate",
                    json={"checkpoint": str(ckpt), "k": 4, "max_new_tokens": 6, "seed": 1},
                    headers=A)
    assert r.status_code == 200, r.text
    assert r.json()["prompts"] + r.json()["skipped"] == 1  # only p2 lacked candidates
    total = client.get("/api/projects/r1", headers=A).json()["candidates"]
    assert total == 4 + r.json()["candidates"]
    client.post("/api/projects/r1/tasks", json={"kind": "ranking", "labelers": ["bob"]},
                headers=A)
    [task] = client.get("/api/tasks", headers=bearer(world["bob"])).json()["tasks"]
    assert task["prompt_id"] in ("p1", "p2") and len(task["responses"]) == 4


# -- the labeler's side ----------------------------------------------------------------------

def test_me_and_task_filters(client, world):
    me = client.get("/api/me", headers=bearer(world["alice"])).json()
    assert me["name"] == "alice" and me["progress"] == {"assigned": 7, "done": 0, "pending": 7}
    tasks = client.get("/api/tasks", params={"project": "r1", "limit": 2},
                       headers=bearer(world["alice"])).json()["tasks"]
    assert len(tasks) == 2 and tasks[0]["status"] == "pending" and tasks[0]["answer"] is None
    ranking = alice_task(client, world, "ranking")
    assert ranking["responses"] == PROMPTS[0]["responses"] and ranking["prompt_id"] == "p1"
    for params in ({"limit": 0}, {"limit": 501}, {"status": "weird"}, {"kind": "poem"}):
        assert client.get("/api/tasks", params=params,
                          headers=bearer(world["alice"])).status_code == 422
    other = client.get("/api/tasks", params={"project": "other"}, headers=bearer(world["alice"]))
    assert other.json() == {"tasks": []}


def test_submission_is_idempotent(client, world):
    task = alice_task(client, world, "ranking")
    url, h = f"/api/tasks/{task['id']}/submission", bearer(world["alice"])
    first = client.post(url, json={"ranks": [2, 1, 3, 3]}, headers=h)
    assert first.status_code == 201 and first.json()["created"] is True
    again = client.post(url, json={"ranking": [[1], [0], [2, 3]]}, headers=h)
    assert again.status_code == 200 and again.json() == {**first.json(), "created": False}
    changed = client.post(url, json={"ranks": [1, 2, 3, 4]}, headers=h)
    assert changed.status_code == 409 and "already submitted" in changed.json()["error"]
    done = client.get(f"/api/tasks/{task['id']}", headers=h).json()
    assert done["status"] == "done" and done["answer"] == {"ranking": [[1], [0], [2, 3]]}
    rows = client.get("/api/projects/r1/export/rankings", headers=A).text.splitlines()
    assert len(rows) == 1


@pytest.mark.parametrize("kind, body, status, message", [
    ("ranking", {"ranks": [1, 2, 3]}, 422, "one rank per response"),
    ("ranking", {"ranking": [[0], [1], [2], [3], [4]]}, 422, "out of range"),
    ("ranking", {"ranking": [[0, 1], [1, 2, 3]]}, 422, "more than once"),
    ("ranking", {"response": "text"}, 422, "does not take"),
    ("rating", {"likert": 8}, 422, "1 to 7"),
    ("rating", {"likert": 3, "flags": ["hallucination"]}, 422, "object"),
    ("rating", {"flags": {}}, 422, "needs 'likert'"),
    ("demonstration", {"response": "x" * 8001}, 422, "limit is 8000"),
    ("demonstration", {"response": 42}, 422, "string"),
    ("demonstration", {"answer": "hi"}, 422, "answer"),
])
def test_bad_answers_get_a_clear_4xx(client, world, kind, body, status, message):
    task = alice_task(client, world, kind)
    r = client.post(f"/api/tasks/{task['id']}/submission", json=body,
                    headers=bearer(world["alice"]))
    assert r.status_code == status and message in r.json()["error"], r.text


def test_malformed_and_oversized_bodies(client, world):
    task = alice_task(client, world, "demonstration")
    url, h = f"/api/tasks/{task['id']}/submission", bearer(world["alice"])
    bad_json = client.post(url, content=b'{"response": ', headers={**h, "content-type":
                                                                      "application/json"})
    assert bad_json.status_code == 400 and "malformed JSON" in bad_json.json()["error"]
    not_object = client.post(url, json=["response"], headers=h)
    assert not_object.status_code == 422
    huge = client.post(url, json={"response": "x" * 300_000}, headers=h)
    assert huge.status_code == 413 and "too large" in huge.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b"x" * 10_000

    streamed = client.post(url, content=chunks(), headers={**h, "content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/api/tasks/0/submission", json={"response": "x"},
                       headers=h).status_code == 422
    assert client.post(f"/api/tasks/{10**30}/submission", json={"response": "x"},
                       headers=h).status_code == 422
    assert client.get("/api/tasks/abc", headers=h).status_code == 422


def test_exports_and_dashboard(client, world):
    h = bearer(world["alice"])
    for kind, body in (("demonstration", {"response": "Bonjour !"}),
                       ("ranking", {"ranking": [[1], [0, 2], [3]]}),
                       ("rating", {"likert": 6, "flags": {"follows_instruction": True}})):
        task = alice_task(client, world, kind)
        assert client.post(f"/api/tasks/{task['id']}/submission", json=body,
                           headers=h).status_code == 201
    import json

    demo = json.loads(client.get("/api/projects/r1/export/demonstrations", headers=A).text)
    assert demo == {"prompt": "Name a color.", "response": "Bonjour !", "labeler_id": "alice"}
    rank = client.get("/api/projects/r1/export/ranking", headers=A)
    assert rank.headers["content-type"].startswith("application/x-ndjson")
    assert json.loads(rank.text)["ranking"] == [[1], [0, 2], [3]]
    rate = json.loads(client.get("/api/projects/r1/export/ratings", headers=A).text)
    assert rate["likert"] == 6 and rate["flags"]["follows_instruction"] is True
    assert client.get("/api/projects/r1/export/poems", headers=A).status_code == 422
    assert client.get("/api/projects/zz/export/ratings", headers=A).status_code == 404
    dash = client.get("/api/projects/r1/dashboard", headers=A).json()
    assert dash["labelers"]["alice"]["done"] == 3 and "agreement" in dash
    assert client.get("/api/projects/zz/dashboard", headers=A).status_code == 404


def test_unknown_routes_and_methods_are_4xx(client):
    assert client.get("/api/nothing").status_code == 404
    assert client.delete("/api/projects", headers=A).status_code == 405
    assert client.get("/api/docs").status_code == 200


def test_junk_never_causes_a_500(client, world):
    """Every route, hit with junk bodies and odd paths, answers below 500 (the TestClient would
    raise on a server error)."""
    junk = [b"", b"null", b"[]", b'"x"', b"{}", b'{"name": null}', b'{"records": [1, 2]}',
            b'{"prompts": [null]}', b'{"kind": "ranking", "labelers": [1]}',
            b'{"ranking": [[null]]}', b'{"likert": 5, "flags": {"a": null}}', b"\xff\xfe"]
    paths = [p for _, p, _ in ADMIN_ROUTES] + ["/api/tasks/1/submission", "/api/projects/%00",
                                               "/api/projects/r1/export/%2e%2e"]
    for path in paths:
        for body in junk:
            for headers in (A, bearer(world["alice"])):
                r = client.post(path, content=body,
                                headers={**headers, "content-type": "application/json"})
                assert r.status_code < 500, (path, body, r.text)
                r = client.get(path, headers=headers)
                assert r.status_code < 500, (path, r.text)

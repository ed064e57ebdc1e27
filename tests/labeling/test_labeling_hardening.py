"""Bad input never breaks the labeling data (issue 21 §1): one test per class of bad input found
by trying the app as an adversarial labeler would. Each failed (a 500, a traceback, or a wrong
acceptance) before its fix."""

from __future__ import annotations

import asyncio
import threading
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from rlhf.errors import UserError
from rlhf.labeling.app import create_app
from rlhf.labeling.errors import Invalid
from rlhf.labeling.security import COOKIE_NAME, LoginLimiter, SessionCodec, SessionData
from rlhf.labeling.store import BadRows, Store

ADMIN = "admin-token-for-hardening"
A = {"Authorization": f"Bearer {ADMIN}"}
JSON = {"content-type": "application/json"}
HTML = {"accept": "text/html"}
PROMPTS = [{"id": "p1", "prompt": "Name a color.", "responses": ["Red.", "Blue.", "Green."]},
           {"id": "p2", "prompt": "Say hello."}]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}




@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.create_project("r1")
    s.import_prompts("r1", PROMPTS)
    yield s
    s.close()


@pytest.fixture
def app(store):
    return create_app("unused://", ADMIN, store=store)


@pytest.fixture
def alice(store):
    info, token = store.create_labeler("alice")
    for kind in ("demonstration", "ranking", "rating"):
        store.assign("r1", kind, 1, ["alice"])
    return info, token


def task_of(store: Store, labeler_id: int, kind: str, status: str = "pending") -> int:
    return store.tasks_for(labeler_id, kind=kind, status=status)[0].id


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def login(app, token: str) -> tuple[TestClient, str]:
    c = TestClient(app, headers=HTML, follow_redirects=False)
    r = c.post("/login", data={"token": token, "csrf_token": csrf_of(c.get("/login").text)})
    assert r.status_code == 303, r.text
    return c, csrf_of(c.get(r.headers["location"]).text)


def label_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf.labeling.cli", *args],
                          capture_output=True, text=True, timeout=120)


# -- 1. text that is not valid Unicode ---------------------------------------------------------

LONE = '"a lone surrogate \\ud800 here"'  # JSON text: Python reads it as a str no encoder takes


def test_lone_surrogates_are_refused_everywhere_text_is_accepted(app, store, alice, tmp_path):
    labeler, token = alice
    api = TestClient(app)
    demo = task_of(store, labeler.id, "demonstration")
    bodies = [
        ("/api/projects", A, '{"name": "r2", "description": %s}' % LONE),
        ("/api/projects/r1/prompts", A, '{"prompts": [{"prompt": %s}]}' % LONE),
        ("/api/projects/r1/prompts", A, '{"prompts": [{"prompt": "ok", "tags": [%s]}]}' % LONE),
        ("/api/projects/r1/rankings", A,
         '{"records": [{"prompt": "q", "responses": ["a", %s], "ranking": [0, 1]}]}' % LONE),
        ("/api/labelers", A, '{"name": %s}' % LONE),
        (f"/api/tasks/{demo}/submission", bearer(token), '{"response": %s}' % LONE),
        (f"/api/tasks/{demo}/submission", bearer(token), '{"response": "NUL \\u0000 here"}'),
    ]
    for path, headers, body in bodies:
        r = api.post(path, content=body.encode(), headers={**headers, **JSON})
        assert r.status_code == 422, (path, body, r.text)
        assert "not valid Unicode" in r.text or "NUL" in r.text, r.text
    # the same through the admin form (pasted JSON) and the store (the CLI's path)
    admin, csrf = login(app, ADMIN)
    form = admin.post("/admin/projects/r1/prompts",
                      data={"csrf_token": csrf, "records": '{"prompt": %s}' % LONE})
    assert form.status_code == 422 and "not valid Unicode" in form.text
    with pytest.raises(Invalid, match="not valid Unicode"):
        store.submit(labeler.id, demo, {"response": "x\ud800"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": %s}\n' % LONE, encoding="utf-8")
    out = label_cli("import", str(bad), "--db", store.url, "--project", "r1")
    assert out.returncode == 2 and "not valid Unicode" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert store.get_project("r1").n_prompts == 2
    assert store.export_records("r1", "demonstration") == []


def _corrupt(store: Store, sql: str, **params) -> None:
    """What an old database (before the checks) may hold: written behind the store's back."""
    with store.engine.begin() as conn:
        conn.execute(text(sql), params)


def test_a_bad_stored_row_breaks_neither_reads_nor_export(app, store, alice, tmp_path):
    labeler, token = alice
    demo = task_of(store, labeler.id, "demonstration")
    sub = store.submit(labeler.id, demo, {"response": "fine"}).submission_id
    _corrupt(store, "update submissions set data = :d where id = :i",
             d='{"response": "bad \\ud800 text"}', i=sub)
    h = bearer(token)
    api = TestClient(app)
    # the labeler's reads still work, the bad character shown as U+FFFD
    done = api.get("/api/tasks", params={"status": "done"}, headers=h)
    assert done.status_code == 200 and done.json()["tasks"][0]["answer"] == {
        "response": "bad \ufffd text"}
    assert api.get(f"/api/tasks/{demo}", headers=h).status_code == 200
    page, _ = login(app, token)
    assert page.get(f"/tasks/{demo}").status_code == 200
    # the export names the row, and leaves it out only when asked to
    r = api.get("/api/projects/r1/export/demonstrations", headers=A)
    assert r.status_code == 409
    assert f"table submissions, id {sub}, field data.response: is not valid Unicode" in r.text
    skipped = api.get("/api/projects/r1/export/demonstrations",
                      params={"skip_invalid": "true"}, headers=A)
    assert skipped.status_code == 200 and skipped.text == ""
    assert skipped.headers["x-skipped-rows"] == "1"
    out = tmp_path / "out"
    cli = label_cli("export", "--db", store.url, "--project", "r1", "--out", str(out))
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert f"table submissions, id {sub}, field data.response" in cli.stderr
    assert not out.exists()
    cli = label_cli("export", "--db", store.url, "--project", "r1", "--out", str(out),
                    "--skip-invalid")
    assert cli.returncode == 0, cli.stderr
    assert "skipped 1 stored row" in cli.stderr
    assert (out / "demonstrations.jsonl").read_text() == ""


# -- 2. numbers in forms -----------------------------------------------------------------------

@pytest.mark.parametrize("number", ["²", "①", "٣", "³", "1_0", "+3", "３"])
def test_form_numbers_take_only_ascii_digits(app, store, alice, number):
    labeler, token = alice
    c, csrf = login(app, token)
    rating = task_of(store, labeler.id, "rating")
    r = c.post(f"/tasks/{rating}", data={"csrf_token": csrf, "likert": number})
    assert r.status_code == 422 and "overall score" in r.text
    ranking = task_of(store, labeler.id, "ranking")
    r = c.post(f"/tasks/{ranking}", data={"csrf_token": csrf, "rank_0": number, "rank_1": "2",
                                          "rank_2": "3"})
    assert r.status_code == 422 and "digits 0-9" in r.text
    admin, admin_csrf = login(app, ADMIN)
    r = admin.post("/admin/projects/r1/assign", data={"csrf_token": admin_csrf,
                                                      "kind": "ranking", "overlap": number})
    assert r.status_code == 422 and "digits 0-9" in r.text
    assert store.export_records("r1", "rating") == []
    assert store.export_records("r1", "ranking") == []


# -- 3. malformed Label Studio / Argilla records -----------------------------------------------

LABEL_STUDIO = {"id": 7, "data": {"prompt": "Pick one", "items": [
    {"id": "a", "text": "first"}, {"id": "b", "text": "second"}, {"id": "c", "text": "third"}]},
    "annotations": [{"completed_by": 3, "result": [
        {"type": "ranker", "value": {"ranker": {"rank": ["b", "a", "c"]}}}]}]}
ARGILLA_V2 = {"id": "r9", "fields": {"prompt": "Pick one", "r1": "this", "r2": "that"},
              "responses": {"ranking": [{"user_id": "u1", "value": ["r2", "r1"]}]}}
ARGILLA_V1 = {"fields": {"prompt": "Pick", "r1": "x", "r2": "y"},
              "responses": [{"user_id": "u2", "status": "submitted", "values": {
                  "ranking": {"value": [{"value": "r1", "rank": 2}, {"value": "r2", "rank": 1}]}}}]}
JUNK = [5, "x", None, True, [], {}, [5], [{}], {"a": 5}, 2.5]


def _paths(obj, prefix=()):
    """Every path to a value inside a JSON record."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


def _mutants(record):
    for path in _paths(record):
        for junk in JUNK:
            mutant = copy.deepcopy(record)
            target = mutant
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(junk)
            yield path, junk, mutant


@pytest.mark.parametrize("record", [LABEL_STUDIO, ARGILLA_V2, ARGILLA_V1],
                         ids=["label-studio", "argilla-v2", "argilla-v1"])
def test_malformed_imported_rankings_get_a_422_naming_record_and_field(tmp_path, record):
    store = Store(f"sqlite:///{tmp_path / 'imp.db'}")
    store.create_project("r1")
    with TestClient(create_app("unused://", ADMIN, store=store)) as api:
        ok = api.post("/api/projects/r1/rankings", json={"records": [record]}, headers=A)
        assert ok.status_code == 200, ok.text
        refused = 0
        for path, junk, mutant in _mutants(record):
            r = api.post("/api/projects/r1/rankings", json={"records": [record, mutant]},
                         headers=A)
            assert r.status_code < 500, (path, junk, r.text)  # 200, 409 (a prompt id
            # that now has another text) or 422: never a server error
            if r.status_code == 422:
                refused += 1
                assert "record 2" in r.json()["error"] and "field '" in r.json()["error"], \
                    (path, junk, r.text)
        assert refused > 20
    # the CLI says the same in one line, without a traceback
    mutant = copy.deepcopy(record)
    if "annotations" in mutant:
        mutant["annotations"] = 5
    else:
        mutant["responses"] = 5
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(mutant) + "\n")
    out = label_cli("import", str(path), "--db", store.url, "--project", "r1",
                    "--kind", "rankings")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "record 1" in out.stderr and ("'annotations'" in out.stderr
                                         or "'responses'" in out.stderr), out.stderr
    store.close()


def test_the_admin_form_reports_a_malformed_label_studio_record(app, store):
    admin, csrf = login(app, ADMIN)
    bad = copy.deepcopy(LABEL_STUDIO)
    bad["annotations"][0]["result"][0]["value"] = 5
    r = admin.post("/admin/projects/r1/rankings", data={"csrf_token": csrf,
                                                        "records": json.dumps(bad)})
    assert r.status_code == 422 and "record 1" in r.text
    assert "annotations[0].result[0].value.ranker" in r.text


# -- 4. export with a malformed row: all files or none ------------------------------------------

def test_export_to_dir_changes_no_file_when_a_row_is_bad(store, alice, tmp_path):
    labeler, _ = alice
    out = tmp_path / "export"
    store.submit(labeler.id, task_of(store, labeler.id, "demonstration"), {"response": "one"})
    rating = task_of(store, labeler.id, "rating")
    sub = store.submit(labeler.id, rating, {"likert": 5}).submission_id
    store.export_to_dir("r1", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # new data for the first file, and a rating whose answer lost its score
    store.submit(labeler.id, task_of(store, labeler.id, "demonstration"), {"response": "two"})
    _corrupt(store, "update submissions set data = :d where id = :i",
             d='{"flags": {}}', i=sub)
    with pytest.raises(BadRows, match=f"table submissions, id {sub}, field data.likert"):
        store.export_to_dir("r1", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no file changed
    skipped: list = []
    written = store.export_to_dir("r1", out, skip_invalid=True, skipped=skipped)
    assert [(b.table, b.id, b.field) for b in skipped] == [("submissions", sub, "data.likert")]
    assert written["demonstration"][1] == 2 and written["rating"][1] == 0
    # a task pointing at a candidate that is gone is named too
    _corrupt(store, "update tasks set candidate_ids = :c where id = :i", c="[999999]", i=rating)
    with pytest.raises(BadRows, match=f"table tasks, id {rating}, field candidate_ids"):
        store.export_records("r1", "rating")


# -- 5. names and flags: no trailing newline ---------------------------------------------------

def test_names_and_flags_with_a_trailing_newline_are_refused(app, store, alice):
    labeler, token = alice
    with pytest.raises(Invalid, match="name"):
        store.create_project("p1\n")
    api = TestClient(app)
    assert api.post("/api/labelers", json={"name": "bob\n"}, headers=A).status_code == 422
    assert api.post("/api/projects", json={"name": "r1\n"}, headers=A).status_code == 422
    rating = task_of(store, labeler.id, "rating")
    r = api.post(f"/api/tasks/{rating}/submission",
                 json={"likert": 3, "flags": {"hallucination\n": True}}, headers=bearer(token))
    assert r.status_code == 422 and "lower_snake_case" in r.text
    assert [p.name for p in store.list_projects()] == ["r1"]
    # a name stored before the check cannot break the download's header
    _corrupt(store, "update projects set name = :n where name = 'r1'", n="r1\nX-Evil: 1")
    admin, _ = login(app, ADMIN)
    download = admin.get("/admin/projects/r1%0AX-Evil: 1/export/rankings")
    assert download.status_code == 200 and "x-evil" not in download.headers
    assert download.headers["content-disposition"] == \
        'attachment; filename="r1_X-Evil_1-rankings.jsonl"'


# -- 6. the token before the body ---------------------------------------------------------------

def _post_counting_reads(app, path: str, headers: dict[str, str], size: int) -> tuple[int, int]:
    """POST `size` bytes in 1 MiB chunks straight through ASGI; (status, chunks the app read)."""
    reads = 0
    chunk = b"x" * (1 << 20)
    n_chunks = size // len(chunk)
    status = 0

    async def receive():
        nonlocal reads
        reads += 1
        if reads > n_chunks:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": reads < n_chunks}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "client": ("127.0.0.9", 5000), "server": ("testserver", 80),
             "headers": raw + [(b"content-type", b"application/json"),
                               (b"content-length", str(n_chunks * len(chunk)).encode())]}
    # in a thread of its own: an earlier test (Playwright's sync API) may leave this thread's
    # event loop running, and asyncio.run refuses to start inside one
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(app(scope, receive, send))
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(e)
    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return status, reads


def test_the_token_is_checked_before_a_large_body_is_read(app, store, alice):
    with TestClient(app):  # startup
        for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic abc"}):
            status, reads = _post_counting_reads(app, "/api/projects/r1/prompts", headers,
                                                 30 << 20)
            assert (status, reads) == (401, 0), headers
        # a token on a route not for it: 403, still without reading the body
        status, reads = _post_counting_reads(app, "/api/projects/r1/prompts",
                                             bearer(alice[1]), 30 << 20)
        assert (status, reads) == (403, 0)
        status, reads = _post_counting_reads(app, "/api/tasks/1/submission", A, 30 << 20)
        assert (status, reads) == (403, 0)
        # an admin's upload is read as before
        status, reads = _post_counting_reads(app, "/api/projects/r1/prompts", A, 2 << 20)
        assert status == 400 and reads == 2  # it is not JSON, but it was read


# -- 7. sessions, cached tokens, login attempts, the admin token --------------------------------

def test_logout_ends_the_session_on_the_server(app, alice):
    for token in (alice[1], ADMIN):
        c, csrf = login(app, token)
        home = "/tasks" if token != ADMIN else "/admin"
        copy_ = TestClient(app, headers=HTML, follow_redirects=False)
        copy_.cookies.set(COOKIE_NAME, c.cookies[COOKIE_NAME])
        assert copy_.get(home).status_code == 200
        assert c.post("/logout", data={"csrf_token": csrf}).status_code == 303
        assert copy_.get(home).status_code == 303  # the copied cookie no longer works
        assert copy_.get(home).headers["location"] == "/login"


def test_responses_with_a_new_token_are_not_cached(app, alice):
    api = TestClient(app)
    created = api.post("/api/labelers", json={"name": "carol"}, headers=A)
    rotated = api.post("/api/labelers/carol/token", headers=A)
    assert "token" in created.json() and "token" in rotated.json()
    for r in (created, rotated):
        assert r.headers["cache-control"] == "no-store"
    c = TestClient(app, headers=HTML, follow_redirects=False)
    r = c.post("/login", data={"token": alice[1], "csrf_token": csrf_of(c.get("/login").text)})
    assert "set-cookie" in r.headers and r.headers["cache-control"] == "no-store"
    page = c.post("/admin/labelers", data={"name": "x"})  # not an admin: redirect, no token
    assert page.headers["cache-control"] == "no-store"
    assert "no-store" not in api.get("/static/style.css").headers.get("cache-control", "")


def test_failed_logins_are_rate_limited(store, alice):
    now = [1000.0]
    app = create_app("unused://", ADMIN, store=store,
                     login_limiter=LoginLimiter(attempts=5, window=60, clock=lambda: now[0]))
    c = TestClient(app, headers=HTML, follow_redirects=False)
    csrf = csrf_of(c.get("/login").text)
    for _ in range(5):
        assert c.post("/login", data={"token": "guess", "csrf_token": csrf}).status_code == 401
    locked = c.post("/login", data={"token": alice[1], "csrf_token": csrf})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    api = TestClient(app)
    assert api.get("/api/me", headers=bearer(alice[1])).status_code == 429  # same address
    now[0] += 61
    assert c.post("/login", data={"token": alice[1], "csrf_token": csrf}).status_code == 303
    for _ in range(5):
        assert api.get("/api/me", headers=bearer("lbl_guess")).status_code == 401
    r = api.post("/api/projects", json={"name": "x"}, headers=A)
    assert r.status_code == 429 and "too many failed logins" in r.json()["error"]


def test_short_admin_tokens_are_refused_and_cookies_do_not_derive_from_the_token(store):
    for weak in ("short", "fifteen-chars-x", "a" * 40):
        with pytest.raises(UserError, match="admin token"):
            create_app("unused://", weak, store=store)
    app = create_app("unused://", ADMIN, store=store)
    # a cookie signed with a key derived from the admin token (what a guessed token gave)
    forged = SessionCodec(ADMIN).dumps(SessionData(role="admin"))
    c = TestClient(app, headers=HTML, follow_redirects=False)
    c.cookies.set(COOKIE_NAME, forged)
    assert c.get("/admin").status_code == 303
    # a second server process on the same database accepts the first one's cookies...
    admin, _ = login(app, ADMIN)
    twin = TestClient(create_app("unused://", ADMIN, store=store), headers=HTML,
                      follow_redirects=False)
    twin.cookies.set(COOKIE_NAME, admin.cookies[COOKIE_NAME])
    assert twin.get("/admin").status_code == 200
    # ...and a new admin token logs the admin out
    other = TestClient(create_app("unused://", ADMIN + "-rotated", store=store), headers=HTML,
                       follow_redirects=False)
    other.cookies.set(COOKIE_NAME, admin.cookies[COOKIE_NAME])
    assert other.get("/admin").status_code == 303


# -- 8. all-tied rankings ------------------------------------------------------------------------

def test_training_on_only_all_tied_rankings_says_so(tmp_path):
    from helpers import tiny_lm

    from rlhf.config import Config, RMConfig
    from rlhf.train.reward import train_rm

    store = Store(f"sqlite:///{tmp_path / 'tied.db'}")
    store.create_project("r1")
    store.import_prompts("r1", PROMPTS)
    lab, _ = store.create_labeler("alice")
    store.assign("r1", "ranking", 1)
    task = store.tasks_for(lab.id, kind="ranking")[0].id
    store.submit(lab.id, task, {"ranking": [[0, 1, 2]]})  # "these are equally good"
    written = store.export_to_dir("r1", tmp_path / "export")
    rankings: Path = written["ranking"][0]
    assert json.loads(rankings.read_text())["ranking"] == [[0, 1, 2]]
    cfg = Config(rm=RMConfig(model=str(tiny_lm(tmp_path)), train_file=str(rankings),
                             max_steps=1, batch_size=1, max_length=32))
    with pytest.raises(UserError) as err:
        train_rm(cfg, tmp_path / "rm")
    message = str(err.value)
    assert "tie all their responses" in message and "lower batch_size" not in message
    assert str(rankings) in message
    store.close()



def test_deeply_nested_uploads_are_a_422_not_a_crash(app, tmp_path):
    from rlhf.labeling.records import parse_records_text

    deep = "[" * 100_000 + "]" * 100_000
    for upload in (deep, '{"prompt": "x", "m": %s}' % deep):
        with pytest.raises(Invalid, match="nested too deeply"):
            parse_records_text(upload, "upload")
    admin, csrf = login(app, ADMIN)
    r = admin.post("/admin/projects/r1/prompts", data={"csrf_token": csrf, "records": deep})
    assert r.status_code == 422 and "nested too deeply" in r.text
    nested = '{"prompt": "x", "m": %s}' % ("[" * 30 + "]" * 30)
    r = admin.post("/admin/projects/r1/prompts", data={"csrf_token": csrf, "records": nested})
    assert r.status_code == 422 and "nested deeper than 20 levels" in r.text

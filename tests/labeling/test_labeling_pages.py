"""The server-rendered pages: login, CSRF, the three task pages, the admin pages, and that a
labeler's browser session reaches only its own tasks."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from rlhf.labeling.app import create_app
from rlhf.labeling.store import Store

ADMIN = "admin-token-for-pages"
HTML = {"accept": "text/html"}
PROMPTS = [
    {"id": "p1", "prompt": "Name a <b>color</b>.", "category": "open_qa",
     "responses": ["Red.", "Blue.", "A color.", "<script>alert(1)</script>"]},
    {"id": "p2", "prompt": "Say hello in French."},
]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@pytest.fixture
def setup(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'pages.db'}")
    store.create_project("r1")
    store.import_prompts("r1", PROMPTS)
    alice, alice_token = store.create_labeler("alice")
    _, bob_token = store.create_labeler("bob")
    for kind in ("demonstration", "ranking", "rating"):
        store.assign("r1", kind, 1, ["alice"])
    app = create_app("unused://", ADMIN, store=store)
    yield app, store, {"alice": alice_token, "bob": bob_token}, alice
    store.close()


def browser(app) -> TestClient:
    return TestClient(app, headers=HTML, follow_redirects=False)


def login(app, token: str) -> tuple[TestClient, str]:
    c = browser(app)
    page = c.get("/login")
    assert page.status_code == 200 and "rlhf_session" in page.headers["set-cookie"]
    r = c.post("/login", data={"token": token, "csrf_token": csrf_of(page.text)})
    assert r.status_code == 303, r.text
    landing = c.get(r.headers["location"])
    return c, csrf_of(landing.text)


def task_id(store: Store, labeler_id: int, kind: str) -> int:
    return store.tasks_for(labeler_id, kind=kind)[0].id


# -- login and sessions ----------------------------------------------------------------------

def test_login_sets_a_hardened_session_cookie(setup):
    app, _, tokens, _ = setup
    c = browser(app)
    assert c.get("/").headers["location"] == "/login"
    page = c.get("/login")
    r = c.post("/login", data={"token": tokens["alice"], "csrf_token": csrf_of(page.text)})
    cookie = r.headers["set-cookie"].lower()
    assert r.headers["location"] == "/tasks"
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert c.get("/").headers["location"] == "/tasks"
    assert "Hello, alice" in c.get("/tasks").text


def test_bad_login_and_missing_csrf(setup):
    app, _, tokens, _ = setup
    c = browser(app)
    csrf = csrf_of(c.get("/login").text)
    bad = c.post("/login", data={"token": "wrong", "csrf_token": csrf})
    assert bad.status_code == 401 and "not valid" in bad.text
    no_csrf = c.post("/login", data={"token": tokens["alice"]})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    # a form posted from another site: the browser sends no (or another) session cookie
    fresh = browser(app)
    forged = fresh.post("/login", data={"token": tokens["alice"], "csrf_token": csrf})
    assert forged.status_code == 403


def test_pages_need_a_session(setup):
    app, store, _, alice = setup
    c = browser(app)
    for path in ("/tasks", "/tasks/next", f"/tasks/{task_id(store, alice.id, 'ranking')}",
                 "/admin", "/admin/labelers", "/admin/projects/r1",
                 "/admin/projects/r1/dashboard", "/admin/projects/r1/export/rankings"):
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path


def test_forged_or_tampered_cookies_are_ignored(setup):
    app, _, tokens, _ = setup
    c, _ = login(app, tokens["alice"])
    value = c.cookies["rlhf_session"]
    payload, sig = value.split(".")
    evil = browser(app)
    evil.cookies.set("rlhf_session", payload + "." + sig[::-1])
    assert evil.get("/tasks").status_code == 303
    evil.cookies.set("rlhf_session", "garbage")
    assert evil.get("/tasks").status_code == 303


def test_token_rotation_ends_browser_sessions(setup):
    app, store, tokens, _ = setup
    c, _ = login(app, tokens["alice"])
    assert c.get("/tasks").status_code == 200
    store.rotate_token("alice")
    assert c.get("/tasks").status_code == 303


def test_logout(setup):
    app, _, tokens, _ = setup
    c, csrf = login(app, tokens["alice"])
    assert c.post("/logout", data={}).status_code == 403  # CSRF protected too
    assert c.post("/logout", data={"csrf_token": csrf}).headers["location"] == "/login"
    assert c.get("/tasks").status_code == 303


def test_security_headers(setup):
    app, *_ = setup
    r = browser(app).get("/login")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert browser(app).get("/static/style.css").status_code == 200
    assert browser(app).get("/static/label.js").status_code == 200


# -- labeler pages ---------------------------------------------------------------------------

def test_queue_and_next_task(setup):
    app, store, tokens, alice = setup
    c, _ = login(app, tokens["alice"])
    page = c.get("/tasks").text
    assert "0 of 7 tasks done" in page and 'href="/tasks/next"' in page
    first = store.tasks_for(alice.id)[0].id
    assert c.get("/tasks/next").headers["location"] == f"/tasks/{first}"


def test_ranking_page_submits_ties_and_escapes_text(setup):
    app, store, tokens, alice = setup
    c, _ = login(app, tokens["alice"])
    tid = task_id(store, alice.id, "ranking")
    page = c.get(f"/tasks/{tid}")
    html = page.text
    assert page.status_code == 200 and html.count('<select name="rank_') == 4
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert "Name a &lt;b&gt;color&lt;/b&gt;." in html
    csrf = csrf_of(html)
    missing = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "rank_0": "1", "rank_1": "2"})
    assert missing.status_code == 422 and "missing: C, D" in missing.text
    assert 'value="2" selected' in missing.text  # the form keeps what was entered
    forged = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, **{f"rank_{i}": "9"
                                                                   for i in range(4)}})
    assert forged.status_code == 422 and "whole numbers 1..4" in forged.text
    ok = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "rank_0": "2", "rank_1": "1",
                                       "rank_2": "3", "rank_3": "2"})
    assert ok.status_code == 303 and ok.headers["location"] == f"/tasks/next?submitted={tid}"
    [row] = store.export_records("r1", "ranking")
    assert row["ranking"] == [[1], [0, 3], [2]] and row["labeler_id"] == "alice"
    # the done task shows the answer read-only; posting it again is idempotent
    done = c.get(f"/tasks/{tid}").text
    assert "You have submitted this task" in done and "disabled" in done
    again = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "rank_0": "2", "rank_1": "1",
                                          "rank_2": "3", "rank_3": "2"})
    assert again.status_code == 303 and len(store.export_records("r1", "ranking")) == 1
    changed = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "rank_0": "1", "rank_1": "2",
                                            "rank_2": "3", "rank_3": "4"})
    assert changed.status_code == 409 and "already submitted" in changed.text


def test_ranking_post_needs_csrf(setup):
    app, store, tokens, alice = setup
    c, _ = login(app, tokens["alice"])
    tid = task_id(store, alice.id, "ranking")
    r = c.post(f"/tasks/{tid}", data={"csrf_token": "guess", "rank_0": "1", "rank_1": "2",
                                      "rank_2": "3", "rank_3": "4"})
    assert r.status_code == 403 and store.export_records("r1", "ranking") == []


def test_demonstration_page(setup):
    app, store, tokens, alice = setup
    c, _ = login(app, tokens["alice"])
    tid = task_id(store, alice.id, "demonstration")
    html = c.get(f"/tasks/{tid}").text
    assert '<textarea id="response" name="response"' in html and 'maxlength="8000"' in html
    csrf = csrf_of(html)
    assert c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "response": "  "}).status_code == 422
    long = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "response": "y" * 8001})
    assert long.status_code == 422 and "limit is 8000" in long.text
    ok = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "response": "Red.\r\nOr blue."})
    assert ok.status_code == 303
    assert store.export_records("r1", "demonstration")[0]["response"] == "Red.\nOr blue."


def test_rating_page_with_table3_flags(setup):
    app, store, tokens, alice = setup
    c, _ = login(app, tokens["alice"])
    tid = task_id(store, alice.id, "rating")
    html = c.get(f"/tasks/{tid}").text
    assert html.count('type="radio" name="likert"') == 7
    assert html.count('type="checkbox" name="flags"') == 12
    assert "Appropriate for a customer assistant" in html and "Hallucination" in html
    csrf = csrf_of(html)
    no_score = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "flags": "hallucination"})
    assert no_score.status_code == 422 and "overall score" in no_score.text
    assert re.search(r'value="hallucination"\s+checked', no_score.text)  # kept on the form
    bad_flag = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "likert": "3", "flags": "zzz"})
    assert bad_flag.status_code == 422
    out_of_range = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "likert": "9"})
    assert out_of_range.status_code == 422 and "1 to 7" in out_of_range.text
    ok = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "likert": "5",
                                       "flags": ["follows_instruction", "hallucination"]})
    assert ok.status_code == 303
    [row] = store.export_records("r1", "rating")
    assert row["likert"] == 5 and row["flags"]["follows_instruction"] is True
    assert row["flags"]["hallucination"] is True and row["flags"]["harmful_compliance"] is False


def test_other_labelers_tasks_are_invisible(setup):
    app, store, tokens, alice = setup
    c, csrf = login(app, tokens["bob"])
    tid = task_id(store, alice.id, "demonstration")
    assert c.get(f"/tasks/{tid}").status_code == 404
    r = c.post(f"/tasks/{tid}", data={"csrf_token": csrf, "response": "mine now"})
    assert r.status_code == 404 and store.export_records("r1", "demonstration") == []
    assert c.get("/tasks/next").headers["location"] == "/tasks?all_done=1"
    assert c.get("/admin").status_code == 303  # a labeler session is not an admin session
    assert c.get("/tasks/0").status_code == 422


# -- admin pages -----------------------------------------------------------------------------

def test_admin_project_workflow(setup):
    app, store, tokens, _ = setup
    c, csrf = login(app, ADMIN)
    assert "r1" in c.get("/admin").text
    created = c.post("/admin/projects", data={"csrf_token": csrf, "name": "r2"})
    assert created.headers["location"] == "/admin/projects/r2"
    dup = c.post("/admin/projects", data={"csrf_token": csrf, "name": "r2"})
    assert dup.status_code == 409 and "already exists" in dup.text
    lines = "\n".join(json.dumps(p) for p in PROMPTS)
    up = c.post("/admin/projects/r2/prompts", data={"csrf_token": csrf},
                files={"file": ("prompts.jsonl", lines.encode(), "application/json")})
    assert up.status_code == 200 and "Imported 2 new prompts" in up.text
    pasted = c.post("/admin/projects/r2/prompts", data={"csrf_token": csrf,
                                                        "records": '{"prompt": "Third"}'})
    assert "Imported 1 new prompts" in pasted.text
    broken = c.post("/admin/projects/r2/prompts", data={"csrf_token": csrf,
                                                        "records": '{"prompt": '})
    assert broken.status_code == 422 and "line 1: malformed JSON" in broken.text
    assign = c.post("/admin/projects/r2/assign", data={"csrf_token": csrf, "kind": "ranking",
                                                       "overlap": "2"})
    assert assign.status_code == 200 and "1 new ranking tasks" in assign.text
    too_many = c.post("/admin/projects/r2/assign", data={"csrf_token": csrf, "kind": "ranking",
                                                         "overlap": "3"})
    assert too_many.status_code == 422 and "needs at least 3 labelers" in too_many.text
    pick = c.post("/admin/projects/r2/assign", data={"csrf_token": csrf, "kind": "demonstration",
                                                     "overlap": "1", "labelers": ["bob"]})
    assert "3 new demonstration tasks" in pick.text
    assert store.dashboard("r2")["labelers"]["bob"]["assigned"] == 4
    gen = c.post("/admin/projects/r2/generate", data={"csrf_token": csrf, "checkpoint": "/no"})
    assert gen.status_code == 422 and "config.json" in gen.text
    ranks = c.post("/admin/projects/r2/rankings", data={
        "csrf_token": csrf, "format": "auto", "records": json.dumps(
            {"prompt": "Third", "chosen": "good", "rejected": "bad", "labeler_id": "ext"})})
    assert ranks.status_code == 200 and "Imported 1 rankings" in ranks.text
    no_csrf = c.post("/admin/projects/r2/assign", data={"kind": "ranking", "overlap": "1"})
    assert no_csrf.status_code == 403
    dash = c.get("/admin/projects/r2/dashboard")
    assert dash.status_code == 200 and "ranking agreement" in dash.text and "bob" in dash.text
    export = c.get("/admin/projects/r2/export/rankings")
    assert "attachment" in export.headers["content-disposition"]
    assert json.loads(export.text)["labeler_id"] == "ext"
    assert c.get("/admin/projects/none").status_code == 404


def test_admin_labeler_pages_show_a_token_once(setup):
    app, store, _, _ = setup
    c, csrf = login(app, ADMIN)
    r = c.post("/admin/labelers", data={"csrf_token": csrf, "name": "carol"})
    token = re.search(r'<code id="new-token">([^<]+)</code>', r.text).group(1)
    assert store.authenticate(token).name == "carol"
    listing = c.get("/admin/labelers").text
    assert "carol" in listing and token not in listing
    rotated = c.post("/admin/labelers/carol/token", data={"csrf_token": csrf})
    new = re.search(r'<code id="new-token">([^<]+)</code>', rotated.text).group(1)
    assert new != token and store.authenticate(token) is None
    dup = c.post("/admin/labelers", data={"csrf_token": csrf, "name": "carol"})
    assert dup.status_code == 409
    assert c.post("/admin/labelers/ghost/token", data={"csrf_token": csrf}).status_code == 404


def test_error_pages_are_html_for_browsers(setup):
    app, *_ = setup
    r = browser(app).get("/no/such/page")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "no page or API route" in r.text


def test_junk_forms_never_cause_a_500(setup):
    """Every page route, posted junk with a valid session and CSRF token, answers below 500."""
    app, store, tokens, alice = setup
    admin, admin_csrf = login(app, ADMIN)
    labeler, labeler_csrf = login(app, tokens["alice"])
    tid = task_id(store, alice.id, "rating")
    forms = [{}, {"name": ""}, {"name": "x" * 500}, {"kind": "x", "overlap": "-1"},
             {"overlap": "1e9", "kind": "ranking", "seed": "abc"}, {"records": "[1, 2"},
             {"records": "[]"}, {"records": "null"}, {"records": '{"prompt": 5}'},
             {"checkpoint": "/etc", "k": "x"}, {"k": "99", "checkpoint": "/"},
             {"temperature": "nan", "checkpoint": "/"}, {"format": "nope", "records": "{}"},
             {"likert": "-3"}, {"likert": "٣"}, {"rank_0": "1"}, {"response": "\x00"},
             {"flags": "follows_instruction", "likert": "7.5"}, {"token": "x" * 5000}]
    admin_paths = ["/admin/projects", "/admin/projects/r1/prompts", "/admin/projects/r1/rankings",
                   "/admin/projects/r1/generate", "/admin/projects/r1/assign", "/admin/labelers",
                   "/admin/labelers/bob/token", "/admin/projects/missing/assign"]
    for form in forms:
        for path in admin_paths:
            r = admin.post(path, data={**form, "csrf_token": admin_csrf})
            assert r.status_code < 500, (path, form, r.text[:300])
        for path in (f"/tasks/{tid}", "/tasks/999", "/login"):
            r = labeler.post(path, data={**form, "csrf_token": labeler_csrf})
            assert r.status_code < 500, (path, form, r.text[:300])
    assert admin.get("/admin").status_code == 200 and labeler.get("/tasks").status_code == 200
    broken = admin.post("/admin/projects/r1/prompts", content=b"--xyz\r\ngarbage",
                        headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert 400 <= broken.status_code < 500
    binary = admin.post("/admin/projects/r1/prompts", data={"csrf_token": admin_csrf},
                        files={"file": ("p.jsonl", b"\xff\xfe\x00bad", "application/json")})
    assert binary.status_code == 422 and "not UTF-8" in binary.text

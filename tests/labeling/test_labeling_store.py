"""The labeling store: transactions, assignment with overlap, idempotent submissions, exports in
the exact CONTRACTS.md shapes, imported rankings and the dashboard. Every test runs on SQLite and
on PostgreSQL (skipped, saying why, where no server is available)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from rlhf.labeling.errors import Conflict, Invalid, NotFound
from rlhf.labeling.store import Store, hash_token
from rlhf.labeling.testing import NoDatabase, count, temporary_database

PROMPTS = [
    {"id": "p1", "prompt": "Name a color.", "category": "open_qa",
     "responses": ["Red.", "Blue.", "A color.", "I like turtles."]},
    {"id": "p2", "prompt": "Say hello in French.", "category": "generation",
     "responses": ["Bonjour.", "Hello.", "Salut !", "Bonjour, ça va ?"]},
    {"id": "p3", "prompt": "Summarize: the cat sat.", "category": "summarization"},
]




@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.create_project("round1")
    s.import_prompts("round1", PROMPTS)
    yield s
    s.close()


def test_prompt_import_is_idempotent_and_atomic(store):
    again = store.import_prompts("round1", PROMPTS)
    assert (again.prompts_added, again.prompts_unchanged, again.candidates_added) == (0, 3, 0)
    with pytest.raises(Conflict, match="different text"):
        store.import_prompts("round1", [{"id": "p1", "prompt": "Changed."}])
    # a bad record anywhere aborts the whole import: nothing from it is stored
    with pytest.raises(Invalid, match="record 2"):
        store.import_prompts("round1", [{"id": "new", "prompt": "ok"}, {"id": "bad"}])
    assert store.get_project("round1").n_prompts == 3
    with pytest.raises(NotFound):
        store.import_prompts("nope", PROMPTS)


def test_project_names_are_unique_and_checked(store):
    with pytest.raises(Conflict):
        store.create_project("round1")
    with pytest.raises(Invalid):
        store.create_project("has space")
    assert [p.name for p in store.list_projects()] == ["round1"]


def test_tokens_are_stored_hashed(store):
    info, token = store.create_labeler("alice")
    assert store.authenticate(token) == info and store.authenticate(token + "x") is None
    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("select name, token_hash from labelers"))]
    assert rows == [("alice", hash_token(token))] and token not in repr(rows)
    _, new = store.rotate_token("alice")
    assert store.authenticate(token) is None and store.authenticate(new).name == "alice"
    with pytest.raises(Conflict):
        store.create_labeler("alice")


def test_assignment_overlap_balance_and_top_up(store):
    names = [store.create_labeler(n)[0].name for n in ("a", "b", "c")]
    rep = store.assign("round1", "ranking", overlap=2)
    assert (rep.tasks_created, rep.assignments_created) == (2, 4)
    assert rep.skipped_prompts == ["p3"]  # no candidates to rank
    again = store.assign("round1", "ranking", overlap=2)
    assert (again.tasks_created, again.assignments_created) == (0, 0)
    more = store.assign("round1", "ranking", overlap=3)
    assert more.assignments_created == 2
    load = store.dashboard("round1")["labelers"]
    assert {n: load[n]["assigned"] for n in names} == {"a": 2, "b": 2, "c": 2}
    with pytest.raises(Invalid, match="overlap 4 needs at least 4 labelers"):
        store.assign("round1", "ranking", overlap=4)
    with pytest.raises(NotFound, match="zed"):
        store.assign("round1", "ranking", overlap=1, labelers=["zed"])
    with pytest.raises(Invalid, match="kind"):
        store.assign("round1", "poetry", overlap=1)


def test_rating_tasks_cover_each_candidate_and_demos_each_prompt(store):
    store.create_labeler("a")
    assert store.assign("round1", "rating", 1).tasks_created == 8
    assert store.assign("round1", "demonstration", 1).tasks_created == 3


def test_submission_is_idempotent_and_final(store):
    alice, _ = store.create_labeler("alice")
    bob, _ = store.create_labeler("bob")
    store.assign("round1", "ranking", 1, labelers=["alice"])
    task = store.tasks_for(alice.id)[0]
    first = store.submit(alice.id, task.id, {"ranking": [[1], [0, 3], [2]]})
    replay = store.submit(alice.id, task.id, {"ranks": [2, 1, 3, 2]})  # same ranking, other form
    assert first.created and not replay.created and replay.submission_id == first.submission_id
    with pytest.raises(Conflict, match="already submitted"):
        store.submit(alice.id, task.id, {"ranking": [[0], [1, 2, 3]]})
    with pytest.raises(NotFound, match="not one of your tasks"):
        store.submit(bob.id, task.id, {"ranking": [[1], [0, 3], [2]]})
    with pytest.raises(NotFound):
        store.task_for(bob.id, task.id)
    assert task.id not in [t.id for t in store.tasks_for(alice.id)]
    [done] = store.tasks_for(alice.id, status="done")
    assert done.id == task.id and done.answer == {"ranking": [[1], [0, 3], [2]]}


def test_concurrent_identical_submissions_store_one_row(store):
    alice, _ = store.create_labeler("alice")
    store.assign("round1", "demonstration", 1)
    task = store.tasks_for(alice.id)[0]
    results, errors = [], []

    def worker():
        try:
            results.append(store.submit(alice.id, task.id, {"response": "Blue."}))
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sum(r.created for r in results) == 1
    assert count(store.engine, "select count(*) from submissions") == 1


def test_exports_have_exactly_the_contract_fields(store):
    alice, _ = store.create_labeler("alice")
    for kind in ("demonstration", "ranking", "rating"):
        store.assign("round1", kind, 1)
    for task in store.tasks_for(alice.id, limit=100):
        answer = {"demonstration": {"response": "An answer."},
                  "ranking": {"ranking": [[2], [0, 3], [1]]},
                  "rating": {"likert": 4, "flags": {"hallucination": True}}}[task.kind]
        store.submit(alice.id, task.id, answer)
    demos = store.export_records("round1", "demonstration")
    ranks = store.export_records("round1", "ranking")
    rates = store.export_records("round1", "rating")
    assert len(demos) == 3 and set(demos[0]) == {"prompt", "response", "labeler_id"}
    assert demos[0] == {"prompt": "Name a color.", "response": "An answer.", "labeler_id": "alice"}
    assert len(ranks) == 2 and set(ranks[0]) == {"prompt", "responses", "ranking", "labeler_id"}
    assert ranks[0]["responses"] == PROMPTS[0]["responses"]
    assert ranks[0]["ranking"] == [[2], [0, 3], [1]]
    assert len(rates) == 8 and set(rates[0]) == {"prompt", "response", "likert", "flags",
                                                 "labeler_id"}
    assert rates[0]["flags"]["hallucination"] is True
    assert rates[0]["flags"]["appropriate_for_customer"] is False


def test_export_to_dir_writes_three_files(store, tmp_path):
    written = store.export_to_dir("round1", tmp_path / "out")
    assert {p.name for p, _ in written.values()} == {"demonstrations.jsonl", "rankings.jsonl",
                                                     "ratings.jsonl"}
    assert all(n == 0 and p.exists() for p, n in written.values())
    with pytest.raises(NotFound):
        store.export_to_dir("missing", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_imported_rankings_share_tasks_and_feed_agreement(store):
    records = [
        {"id": "p1", "prompt": "Name a color.", "responses": PROMPTS[0]["responses"],
         "ranking": [[1], [0], [2], [3]], "labeler_id": "ext-1"},
        {"id": "p1", "prompt": "Name a color.", "responses": PROMPTS[0]["responses"],
         "ranking": [[0], [1], [2], [3]], "labeler_id": "ext-2"},
        {"prompt": "New prompt", "chosen": "yes", "rejected": "no", "labeler_id": "ext-1"},
    ]
    rep = store.import_rankings("round1", records)
    assert (rep.tasks_created, rep.submissions_added, rep.labelers_created) == (2, 3, 2)
    assert rep.candidates_added == 2  # p1 reuses its existing candidate batch
    again = store.import_rankings("round1", records)
    assert (again.submissions_added, again.submissions_unchanged) == (0, 3)
    ag = store.dashboard("round1")["agreement"]["ranking"]
    assert ag["tasks_with_overlap"] == 1 and ag["comparisons"] == 6
    assert ag["agreement"] == pytest.approx(5 / 6, abs=1e-4)
    imported = {lab.name: lab for lab in store.list_labelers()}
    assert not imported["ext-1"].can_log_in
    assert len(store.export_records("round1", "ranking")) == 3


def test_dashboard_progress(store):
    a, _ = store.create_labeler("a")
    store.create_labeler("b")
    store.assign("round1", "demonstration", 2)
    store.submit(a.id, store.tasks_for(a.id)[0].id, {"response": "x"})
    dash = store.dashboard("round1")
    assert dash["kinds"]["demonstration"] == {"tasks": 3, "assigned": 6, "submissions": 1,
                                              "complete": 0}
    assert dash["labelers"]["a"]["done"] == 1 and dash["labelers"]["b"]["pending"] == 3


def test_candidate_batches_and_generation_queue(store):
    assert [k for k, _ in store.prompts_for_generation("round1")] == ["p3"]
    store.add_candidates("round1", {"p3": ["The cat sat.", "A cat."]}, source="test")
    assert store.prompts_for_generation("round1") == []
    assert len(store.prompts_for_generation("round1", regenerate=True)) == 3
    # a new batch for p1 makes new ranking tasks use it
    store.add_candidates("round1", {"p1": ["Green.", "Teal.", "Cyan."]}, source="policy-2")
    alice, _ = store.create_labeler("alice")
    store.assign("round1", "ranking", 1)
    tasks = {t.prompt_id: t for t in store.tasks_for(alice.id)}
    assert tasks["p1"].responses == ["Green.", "Teal.", "Cyan."]
    with pytest.raises(Invalid, match="2 to 9"):
        store.add_candidates("round1", {"p1": ["only one"]}, source="x")
    with pytest.raises(NotFound):
        store.add_candidates("round1", {"nope": ["a", "b"]}, source="x")


def test_in_memory_database_works(tmp_path):
    s = Store("sqlite://")
    s.create_project("m")
    assert s.get_project("m").name == "m"


def test_postgres_variants_skip_only_where_no_server_was_promised(monkeypatch, tmp_path):
    from rlhf.labeling.testing import DatabaseRequired

    monkeypatch.delenv("RLHF_TEST_PG_URL", raising=False)
    monkeypatch.delenv("RLHF_TEST_PG_REQUIRED", raising=False)
    with pytest.raises(NoDatabase, match="RLHF_TEST_PG_URL is not set"):
        with temporary_database("postgresql", tmp_path):
            pass
    monkeypatch.setenv("RLHF_TEST_PG_REQUIRED", "1")  # .ci/run started a server
    with pytest.raises(DatabaseRequired, match="promised"):
        with temporary_database("postgresql", tmp_path):
            pass


def _race(n: int, fn) -> tuple[list, list]:
    """Run fn(i) in n threads released together; (results, exceptions)."""
    barrier = threading.Barrier(n)
    results, errors = [], []

    def worker(i):
        barrier.wait()
        try:
            results.append(fn(i))
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_writers_of_the_same_names_get_a_conflict_not_a_crash(store):
    """On PostgreSQL writers run concurrently, so two may pass the "does it exist?" check and
    meet the unique constraint; the loser is retried and then sees the winner's row."""
    for attempt in range(3):
        results, errors = _race(6, lambda i: store.create_labeler(f"same{attempt}"))
        assert len(results) == 1 and len(errors) == 5, errors
        assert all(isinstance(e, Conflict) for e in errors), errors
        results, errors = _race(6, lambda i: store.create_project(f"proj{attempt}"))
        assert len(results) == 1 and all(isinstance(e, Conflict) for e in errors), errors
        fresh = [{"id": f"c{attempt}-{j}", "prompt": f"Concurrent {attempt}.{j}",
                  "responses": ["a", "b"]} for j in range(20)]
        results, errors = _race(4, lambda i: store.import_prompts("round1", fresh))
        assert not errors, errors
        assert sum(r.prompts_added for r in results) == 20
        assert sum(r.candidates_added for r in results) == 40

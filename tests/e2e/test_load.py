"""Load test against a real uvicorn server on loopback: concurrent labelers submit through the
JSON API (every 10th answer is sent twice, as a retrying client would); afterwards the database
holds exactly one row per (task, labeler): none lost, none duplicated. Prints latency figures.
"""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time

import httpx

from e2e_support import live_server

ADMIN = "load-admin-token-0123"


def _setup(url: str, n_labelers: int, n_tasks: int) -> list[str]:
    """A project whose every task (half rankings of K = 4, half demonstrations) is assigned to
    every labeler, so each labeler has `n_tasks` tasks."""
    h = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, headers=h, timeout=60) as c:
        assert c.post("/api/projects", json={"name": "load"}).status_code == 201
        n_prompts = n_tasks // 2
        prompts = [{"id": f"q{i}", "prompt": f"Question {i}?",
                    "responses": [f"answer {i}.{j}" for j in range(4)]} for i in range(n_prompts)]
        assert c.post("/api/projects/load/prompts", json={"prompts": prompts}).status_code == 200
        tokens = [c.post("/api/labelers", json={"name": f"lab{i:02d}"}).json()["token"]
                  for i in range(n_labelers)]
        for kind in ("ranking", "demonstration"):
            r = c.post("/api/projects/load/tasks", json={"kind": kind, "overlap": n_labelers})
            assert r.status_code == 200 and r.json()["tasks_total"] == n_prompts
    return tokens


def _labeler(url: str, token: str, expected: int, barrier: threading.Barrier,
             latencies: list[float], failures: list[str]) -> None:
    h = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=h, timeout=60) as c:
        tasks = c.get("/api/tasks", params={"limit": 500}).json()["tasks"]
        if len(tasks) != expected:
            failures.append(f"expected {expected} tasks, got {len(tasks)}")
            barrier.abort()
            return
        barrier.wait()
        for n, task in enumerate(tasks):
            body = ({"ranking": [[n % 4], [i for i in range(4) if i != n % 4]]}
                    if task["kind"] == "ranking" else {"response": f"answer to {task['id']}"})
            for attempt in range(2 if n % 10 == 0 else 1):  # every 10th answer is replayed
                t0 = time.perf_counter()
                r = c.post(f"/api/tasks/{task['id']}/submission", json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != (201 if attempt == 0 else 200):
                    failures.append(f"task {task['id']} attempt {attempt}: {r.status_code} "
                                    f"{r.text[:200]}")


def run_load(tmp_path, n_labelers: int, per_labeler: int, capsys) -> None:
    db_file = tmp_path / "load.db"
    with live_server(f"sqlite:///{db_file}", ADMIN, tmp_path / "server.log") as url:
        tokens = _setup(url, n_labelers, per_labeler)
        latencies: list[float] = []
        failures: list[str] = []
        barrier = threading.Barrier(n_labelers)
        threads = [threading.Thread(target=_labeler, args=(url, t, per_labeler, barrier,
                                                           latencies, failures))
                   for t in tokens]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        wall = time.perf_counter() - t0
        assert not any(t.is_alive() for t in threads), "labeler threads did not finish"
    assert not failures, failures[:5]

    con = sqlite3.connect(db_file)
    rows = con.execute("select count(*) from submissions").fetchone()[0]
    distinct = con.execute("select count(*) from (select distinct task_id, labeler_id "
                           "from submissions)").fetchone()[0]
    unanswered = con.execute("select count(*) from assignments a left join submissions s on "
                             "s.task_id = a.task_id and s.labeler_id = a.labeler_id "
                             "where s.id is null").fetchone()[0]
    con.close()
    expected = n_labelers * per_labeler
    lost, duplicated = expected - distinct, rows - distinct
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    with capsys.disabled():
        print(f"\nload test: {n_labelers} labelers x {per_labeler} submissions "
              f"(+{len(latencies) - expected} replays) in {wall:.1f} s = "
              f"{len(latencies) / wall:.0f} req/s; latency p50 {1000 * p50:.1f} ms, "
              f"p95 {1000 * p95:.1f} ms, max {1000 * ordered[-1]:.1f} ms; "
              f"rows {rows}, lost {lost}, duplicated {duplicated}")
    assert (rows, lost, duplicated, unanswered) == (expected, 0, 0, 0)


def test_load_20_labelers_x_100(tmp_path, capsys):
    """About 15 s on two CPU cores, so it runs by default (no slow marker)."""
    run_load(tmp_path, n_labelers=20, per_labeler=100, capsys=capsys)


def test_simulated_labelers_by_url(tmp_path):
    """fill_queues and register_labelers given a base URL talk to a real server over HTTP."""
    from rlhf.labeling.simulate import fill_queues, register_labelers

    class Shortest:
        def __init__(self, id: str):
            self.id = id

        def rank(self, prompt, responses):
            return [[i] for i in sorted(range(len(responses)), key=lambda i: len(responses[i]))]

        def demonstrate(self, prompt):
            return "A short answer."

        def rate(self, prompt, response):
            return {"likert": 4, "flags": {}}

    with live_server(f"sqlite:///{tmp_path / 'sim.db'}", ADMIN, tmp_path / "server.log") as url:
        h = {"Authorization": f"Bearer {ADMIN}"}
        httpx.post(f"{url}/api/projects", json={"name": "load"}, headers=h).raise_for_status()
        prompts = [{"prompt": f"Question {i}?", "responses": ["a", "bbb", "cc"]} for i in range(3)]
        httpx.post(f"{url}/api/projects/load/prompts", json={"prompts": prompts},
                   headers=h).raise_for_status()
        tokens = register_labelers(url, ADMIN, [Shortest("s1"), Shortest("s2")])
        for kind in ("ranking", "demonstration"):
            httpx.post(f"{url}/api/projects/load/tasks", json={"kind": kind, "overlap": 2},
                       headers=h).raise_for_status()
        report = fill_queues(url, "load", tokens)
        assert report.submitted == {"s1": 6, "s2": 6}
        dash = httpx.get(f"{url}/api/projects/load/dashboard", headers=h).json()
        assert dash["agreement"]["ranking"]["agreement"] == 1.0

"""A load test of the labeling app: `rlhf label serve` (uvicorn) in a subprocess on loopback, and
concurrent labelers submitting through the JSON API (every 10th answer sent twice, as a retrying
client would). Afterwards the database must hold exactly one row per (task, labeler): none lost,
none duplicated. Used by tests/e2e/test_load.py and benchmarks/labeling_load.py.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx

from rlhf.labeling.testing import count

ADMIN = "load-admin-token-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(db_url: str, admin_token: str, log_path: Path,
                startup_timeout: float = 60.0) -> Iterator[str]:
    """`rlhf label serve` (uvicorn) in a subprocess on a free loopback port; yields its URL."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rlhf.labeling.cli", "serve", "--db", db_url, "--host",
           "127.0.0.1", "--port", str(port), "--admin-token", admin_token, "--log-level",
           "warning"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/api/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _setup(url: str, n_labelers: int, n_tasks: int) -> list[str]:
    """A project whose every task (half rankings of K = 4, half demonstrations) is assigned to
    every labeler, so each labeler has `n_tasks` tasks."""
    h = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, headers=h, timeout=60) as c:
        c.post("/api/projects", json={"name": "load"}).raise_for_status()
        n_prompts = n_tasks // 2
        prompts = [{"id": f"q{i}", "prompt": f"Question {i}?",
                    "responses": [f"answer {i}.{j}" for j in range(4)]} for i in range(n_prompts)]
        c.post("/api/projects/load/prompts", json={"prompts": prompts}).raise_for_status()
        tokens = [c.post("/api/labelers", json={"name": f"lab{i:02d}"}).json()["token"]
                  for i in range(n_labelers)]
        for kind in ("ranking", "demonstration"):
            r = c.post("/api/projects/load/tasks", json={"kind": kind, "overlap": n_labelers})
            r.raise_for_status()
            if r.json()["tasks_total"] != n_prompts:
                raise RuntimeError(f"expected {n_prompts} {kind} tasks, got {r.json()}")
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
                try:
                    r = c.post(f"/api/tasks/{task['id']}/submission", json=body)
                except httpx.HTTPError as e:
                    failures.append(f"task {task['id']} attempt {attempt}: {e!r}")
                    continue
                finally:
                    latencies.append(time.perf_counter() - t0)
                if r.status_code != (201 if attempt == 0 else 200):
                    failures.append(f"task {task['id']} attempt {attempt}: {r.status_code} "
                                    f"{r.text[:200]}")


def run_load(db_url: str, folder: Path, n_labelers: int = 20, per_labeler: int = 100
             ) -> dict[str, Any]:
    """Serve `db_url` (an empty database), let `n_labelers` threads each answer `per_labeler`
    tasks at once, and return the figures: latency p50/p95/max in ms, requests per second, and
    rows, lost, duplicated and unanswered counted in the database afterwards."""
    with live_server(db_url, ADMIN, Path(folder) / "server.log") as url:
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
        if any(t.is_alive() for t in threads):
            failures.append("labeler threads did not finish within 300 s")
    rows = count(db_url, "select count(*) from submissions")
    distinct = count(db_url, "select count(*) from (select distinct task_id, labeler_id "
                             "from submissions) d")
    unanswered = count(db_url, "select count(*) from assignments a left join submissions s on "
                               "s.task_id = a.task_id and s.labeler_id = a.labeler_id "
                               "where s.id is null")
    expected = n_labelers * per_labeler
    ordered = sorted(latencies) or [float("nan")]
    return {"labelers": n_labelers, "submissions_per_labeler": per_labeler,
            "requests": len(latencies), "replays": len(latencies) - expected,
            "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max_ms": round(1000 * ordered[-1], 1), "rows": rows, "expected_rows": expected,
            "lost": expected - distinct, "duplicated": rows - distinct,
            "unanswered": unanswered, "failures": failures[:5], "n_failures": len(failures)}


def describe(backend: str, r: dict[str, Any]) -> str:
    return (f"load test on {backend}: {r['labelers']} labelers x {r['submissions_per_labeler']} "
            f"submissions (+{r['replays']} replays) in {r['wall_s']:.1f} s = "
            f"{r['requests_per_s']:.0f} req/s; latency p50 {r['p50_ms']:.1f} ms, "
            f"p95 {r['p95_ms']:.1f} ms, max {r['max_ms']:.1f} ms; rows {r['rows']}, "
            f"lost {r['lost']}, duplicated {r['duplicated']}")

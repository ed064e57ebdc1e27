"""Load test against a real uvicorn server on loopback, on SQLite and on PostgreSQL (skipped,
saying why, where no server is available): 20 labelers submit 100 answers each at once through
the JSON API (every 10th answer is sent twice, as a retrying client would); afterwards the
database holds exactly one row per (task, labeler): none lost, none duplicated. Prints latency
figures (benchmarks/labeling_load.py records them as JSON).
"""

from __future__ import annotations

import httpx
import pytest

from e2e_support import live_server
from rlhf.labeling.loadtest import ADMIN, describe, run_load
from rlhf.labeling.testing import BACKENDS, NoDatabase, temporary_database


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    try:
        with temporary_database(request.param, tmp_path, "load") as url:
            yield request.param, url
    except NoDatabase as e:
        pytest.skip(str(e))


def test_load_20_labelers_x_100(db, tmp_path, capsys):
    """About 15 s on two CPU cores per database, so it runs by default (no slow marker)."""
    backend, url = db
    result = run_load(url, tmp_path, n_labelers=20, per_labeler=100)
    with capsys.disabled():
        print("\n" + describe(backend, result))
    assert not result["failures"], result["failures"]
    assert (result["rows"], result["lost"], result["duplicated"], result["unanswered"]) == \
        (2000, 0, 0, 0)


def test_simulated_labelers_by_url(db, tmp_path):
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

    _, db_url = db
    with live_server(db_url, ADMIN, tmp_path / "server.log") as url:
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

"""Simulated labelers fill the app's queues through the JSON API, and `rlhf label ...` commands
move data in and out of the store."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rlhf.labeling.app import create_app
from rlhf.labeling.cli import app as cli
from rlhf.labeling.simulate import (LabelingClientError, answer_for, fill_queues,
                                    register_labelers)

ADMIN = "admin-token-for-sim"
A = {"Authorization": f"Bearer {ADMIN}"}
PROMPTS = [{"id": f"q{i}", "prompt": f"Write {i} words.", "category": "generation",
            "responses": ["two words", "one", "two again", "three words here"]}
           for i in range(1, 4)]


class FakeLabeler:
    """Prefers shorter responses, ties equal lengths; numpy-like ints are fine too."""

    def __init__(self, id: str, likert: int = 5):
        self.id, self.likert = id, likert

    def rank(self, prompt, responses):
        order = sorted(set(len(r) for r in responses))
        return [[i for i, r in enumerate(responses) if len(r) == n] for n in order]

    def demonstrate(self, prompt):
        return f"{self.id} answers: {prompt}"

    def rate(self, prompt, response):
        return {"likert": self.likert, "flags": {"follows_instruction": True,
                                                 "hallucination": False}}


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(f"sqlite:///{tmp_path / 'sim.db'}", ADMIN)) as c:
        c.post("/api/projects", json={"name": "sim"}, headers=A)
        c.post("/api/projects/sim/prompts", json={"prompts": PROMPTS}, headers=A)
        yield c


def test_fill_queues_with_duck_typed_labelers(client):
    pool = [FakeLabeler("sim-a", 5), FakeLabeler("sim-b", 6)]
    tokens = register_labelers(client, ADMIN, pool)
    assert sorted(lab.id for lab in tokens.values()) == ["sim-a", "sim-b"]
    for kind in ("demonstration", "ranking", "rating"):
        r = client.post("/api/projects/sim/tasks", json={"kind": kind, "overlap": 2}, headers=A)
        assert r.status_code == 200
    report = fill_queues(client, "sim", tokens)
    # 3 demonstrations + 3 rankings + 12 ratings, each by both labelers
    assert report.submitted == {"sim-a": 18, "sim-b": 18} and report.total == 36
    assert fill_queues(client, "sim", tokens).total == 0  # nothing left: safe to rerun
    dash = client.get("/api/projects/sim/dashboard", headers=A).json()
    assert dash["agreement"]["ranking"]["agreement"] == 1.0
    assert dash["agreement"]["rating"]["likert_within_1"] == 1.0
    rankings = [json.loads(x) for x in
                client.get("/api/projects/sim/export/rankings", headers=A).text.splitlines()]
    assert len(rankings) == 6 and rankings[0]["ranking"] == [[1], [0, 2], [3]]
    assert {r["labeler_id"] for r in rankings} == {"sim-a", "sim-b"}


def test_register_twice_issues_new_tokens(client):
    first = register_labelers(client, ADMIN, [FakeLabeler("x")])
    second = register_labelers(client, ADMIN, [FakeLabeler("x")])
    assert set(first) != set(second)
    assert client.get("/api/me", headers={"Authorization": f"Bearer {list(first)[0]}"}
                      ).status_code == 401


def test_limits_and_errors(client):
    tokens = register_labelers(client, ADMIN, [FakeLabeler("solo")])
    client.post("/api/projects/sim/tasks", json={"kind": "rating"}, headers=A)
    assert fill_queues(client, "sim", tokens, max_per_labeler=5, batch_size=2).total == 5
    with pytest.raises(LabelingClientError, match="401"):
        fill_queues(client, "sim", {"bad-token": FakeLabeler("z")})

    class Broken(FakeLabeler):
        def rate(self, prompt, response):
            return {"likert": 9, "flags": {}}

    with pytest.raises(LabelingClientError, match="422"):
        fill_queues(client, "sim", {next(iter(tokens)): Broken("solo")})


def test_answer_for_converts_scalars():
    class NumpyLike(int):
        pass

    class L(FakeLabeler):
        def rank(self, prompt, responses):
            return [[NumpyLike(1)], (NumpyLike(0),)]

    out = answer_for(L("n"), {"kind": "ranking", "prompt": "p", "responses": ["a", "b"]})
    assert out == {"ranking": [[1], [0]]} and type(out["ranking"][0][0]) is int
    with pytest.raises(ValueError):
        answer_for(L("n"), {"kind": "poem", "prompt": "p", "responses": []})


# -- CLI -------------------------------------------------------------------------------------

def test_cli_round_trip(tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    run = CliRunner().invoke
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    assert run(cli, ["create-project", "c1", "--db", db]).exit_code == 0
    r = run(cli, ["import", str(prompts), "--db", db, "--project", "c1"])
    assert r.exit_code == 0 and '"prompts_added": 3' in r.output
    r = run(cli, ["add-labeler", "ann", "--db", db])
    token = r.output.strip().split()[-1]
    assert token.startswith("lbl_")
    r = run(cli, ["assign", "--db", db, "--project", "c1", "--kind", "ranking", "--overlap", "1"])
    assert r.exit_code == 0 and '"tasks_created": 3' in r.output
    rankings = tmp_path / "ext.jsonl"
    rankings.write_text(json.dumps({"prompt": "Extra", "chosen": "a", "rejected": "b",
                                    "labeler_id": "ext"}) + "\n")
    r = run(cli, ["import", str(rankings), "--db", db, "--project", "c2", "--create"])
    assert r.exit_code == 0 and "imported rankings" in r.output
    r = run(cli, ["export", "--db", db, "--project", "c2", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0
    assert json.loads((tmp_path / "out" / "rankings.jsonl").read_text())["labeler_id"] == "ext"
    assert (tmp_path / "out" / "demonstrations.jsonl").read_text() == ""
    r = run(cli, ["dashboard", "--db", db, "--project", "c1"])
    assert json.loads(r.output)["labelers"]["ann"]["pending"] == 3


def test_cli_errors_are_user_errors(tmp_path):
    from rlhf.errors import UserError

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    r = CliRunner().invoke(cli, ["export", "--db", db, "--project", "nope", "--out",
                                 str(tmp_path)])
    assert r.exit_code != 0 and isinstance(r.exception, UserError)
    r = CliRunner().invoke(cli, ["import", str(tmp_path / "missing.jsonl"), "--db", db,
                                 "--project", "x"])
    assert isinstance(r.exception, UserError) and "not found" in str(r.exception)
    assert CliRunner().invoke(cli, ["serve", "--help"]).exit_code == 0

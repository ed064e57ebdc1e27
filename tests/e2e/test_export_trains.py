"""The exported files are what the trainers read: the readers accept them, and one SFT step and
one reward-model step run on them (no browser needed; the browser test repeats this on data a
person entered through the pages)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from e2e_support import tiny_checkpoint, train_one_rm_step, train_one_sft_step
from rlhf.labeling.cli import app as cli
from rlhf.labeling.store import Store

PROMPTS = [{"id": "c1", "prompt": "Name a color.", "category": "open_qa",
            "responses": ["Red.", "Blue is a color.", "I like turtles.", "Colors."]},
           {"id": "c2", "prompt": "Say hello in French.", "category": "generation",
            "responses": ["Bonjour.", "Hello.", "Salut !", "Bonjour, ça va ?"]}]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    db = f"sqlite:///{tmp / 'labels.db'}"
    store = Store(db)
    store.create_project("round1")
    store.import_prompts("round1", PROMPTS)
    ann, _ = store.create_labeler("ann")
    for kind in ("demonstration", "ranking", "rating"):
        store.assign("round1", kind, 1)
    answers = {"demonstration": {"response": "A clear and friendly answer."},
               "ranking": {"ranks": [2, 1, 4, 2]},
               "rating": {"likert": 6, "flags": {"follows_instruction": True}}}
    for task in store.tasks_for(ann.id, limit=100):
        store.submit(ann.id, task.id, answers[task.kind])
    store.close()
    result = CliRunner().invoke(cli, ["export", "--db", db, "--project", "round1", "--out",
                                      str(tmp / "out")])
    assert result.exit_code == 0, result.output
    return tmp / "out"


def test_export_files_follow_the_contract(exported):
    demos = [json.loads(x) for x in (exported / "demonstrations.jsonl").read_text().splitlines()]
    ranks = [json.loads(x) for x in (exported / "rankings.jsonl").read_text().splitlines()]
    rates = [json.loads(x) for x in (exported / "ratings.jsonl").read_text().splitlines()]
    assert len(demos) == 2 and len(ranks) == 2 and len(rates) == 8
    assert all(set(d) == {"prompt", "response", "labeler_id"} for d in demos)
    assert ranks[0]["ranking"] == [[1], [0, 3], [2]] and ranks[0]["labeler_id"] == "ann"
    assert rates[0]["likert"] == 6 and rates[0]["flags"]["follows_instruction"] is True


def test_readers_accept_the_export(exported):
    sft_data = pytest.importorskip("rlhf.data.sft")
    rank_data = pytest.importorskip("rlhf.data.rankings")
    demos = sft_data.load_demonstrations(exported / "demonstrations.jsonl")
    assert demos[0].prompt == "Name a color." and demos[0].labeler_id == "ann"
    ranks = rank_data.load_rankings(exported / "rankings.jsonl")
    assert ranks[0].k == 4 and ranks[0].ranking == [[1], [0, 3], [2]]
    assert ranks[0].labeler_id == "ann"


def test_one_sft_step_and_one_rm_step_on_the_export(exported, tmp_path):
    pytest.importorskip("rlhf.train.sft")
    pytest.importorskip("rlhf.train.reward")
    model = tiny_checkpoint(tmp_path / "tiny")
    sft = train_one_sft_step(model, exported / "demonstrations.jsonl", tmp_path / "sft")
    assert sft["steps"] == 1 and math.isfinite(sft["final_train_loss"])
    rm = train_one_rm_step(tmp_path / "sft" / "final", exported / "rankings.jsonl",
                           tmp_path / "rm")
    assert rm["steps"] == 1 and math.isfinite(rm["final_train_loss"])
    assert rm["final_train_accuracy"] is not None

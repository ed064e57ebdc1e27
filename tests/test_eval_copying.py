"""The copy probe (rlhf.eval.copying): cases that need copying, and an accuracy that a perfect
copier maxes out and a model that ignores its context does not."""

from __future__ import annotations

import json

from types import SimpleNamespace

import pytest
import torch

from helpers import tiny_lm

from rlhf.eval.copying import DETAILS, SHAPES, copy_accuracy, copy_cases, copy_probe
from rlhf.eval.report import summary_text
from rlhf.models import train_tokenizer
from rlhf.world.universe import Universe


class InductionOracle(torch.nn.Module):
    """Predicts the token that followed the last earlier occurrence of the current token."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, **kw):
        b, t = input_ids.shape
        same = input_ids[:, :, None] == input_ids[:, None, :]                 # [B, t, j]
        earlier = torch.ones(t, t, dtype=torch.bool).tril(-1)
        pos = torch.arange(1, t + 1)
        j = ((same & earlier) * pos).argmax(-1)                               # last j < t
        found = (same & earlier).any(-1)
        nxt = input_ids.gather(1, (j + 1).clamp(max=t - 1))
        pred = torch.where(found, nxt, torch.zeros_like(nxt))
        return SimpleNamespace(logits=torch.nn.functional.one_hot(pred, self.vocab).float())


class Constant(InductionOracle):
    def forward(self, input_ids, attention_mask, **kw):
        pred = torch.full_like(input_ids, 5)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(pred, self.vocab).float())


@pytest.fixture(scope="module")
def setup():
    u = Universe(0)
    cases = copy_cases(u, 20, seed=3)
    tok = train_tokenizer([c["prefix"] + " " + c["answer"] for c in copy_cases(u, 300)], 1000)
    return cases, tok


def test_cases_ask_for_a_detail_stated_earlier(setup):
    cases, _ = setup
    assert len(cases) == 20 * len(SHAPES) * len(DETAILS)
    for c in cases:
        assert c["answer"] in c["prefix"]                        # it can be copied ...
        assert not c["prefix"].rstrip().endswith(c["answer"])    # ... and is the next word
        assert c["answer"] in DETAILS[c["detail"]]
    chat = [c for c in cases if c["shape"] == "chat"]
    assert all(c["prefix"].startswith("User: Summarize") and "\nAssistant:" in c["prefix"]
               for c in chat)
    assert copy_cases(Universe(0), 20, seed=3) == cases          # seeded


def test_a_perfect_copier_scores_one_and_a_context_blind_model_chance_or_less(setup):
    cases, tok = setup
    # batch_size 7 mixes prefix lengths in a batch: padding must not shift what is read
    top = copy_accuracy(InductionOracle(len(tok)), tok, cases, batch_size=7)
    assert top["accuracy"] == 1.0
    assert all(top[s][d] == 1.0 for s in SHAPES for d in DETAILS)
    low = copy_accuracy(Constant(len(tok)), tok, cases, batch_size=7)
    assert low["accuracy"] == 0.0 and low["n"] == len(cases)
    assert low["chance"]["number"] == pytest.approx(1 / len(DETAILS["number"]), abs=1e-4)


def test_copy_probe_loads_each_path_once_and_the_summary_reports_it(tmp_path):
    path = str(tiny_lm(tmp_path))
    res = copy_probe({"base": path, "base_again": path}, Universe(0), n=4, seed=1)
    assert res["n_cases"] == 4 * len(SHAPES) * len(DETAILS)
    assert res["models"]["base"] is res["models"]["base_again"]
    assert 0.0 <= res["models"]["base"]["chat"]["number"] <= 1.0
    text = summary_text({"models": {}, "copying": res})
    assert "Copies a detail from its context" in text and "base_again" in text


def test_copy_formation_benchmark_tracks_the_probe_through_pretraining(tmp_path):
    import importlib.util
    from pathlib import Path

    from helpers import write_corpus

    path = Path(__file__).parents[1] / "benchmarks" / "copy_formation.py"
    spec = importlib.util.spec_from_file_location("copy_formation", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    corpus = write_corpus(tmp_path / "c.txt", 100)
    out = bench.main(["--config", str(path.parents[1] / "configs" / "quick.yaml"),
                      "--corpus", str(corpus), "--every", "2", "--n", "2",
                      "--set", "pretrain.max_steps=5", "--set", "pretrain.epochs=50", "--set", "pretrain.model.n_layer=1",
                      "--set", "pretrain.model.vocab_size=300",
                      "--out", str(tmp_path / "cf.json")])
    assert [c["step"] for c in out["curve"]] == [2, 4, 5]
    keys = {f"{s}/{d}" for s in SHAPES for d in DETAILS}
    assert all(keys <= set(c) and all(0.0 <= c[k] <= 1.0 for k in keys) for c in out["curve"])
    assert set(out["first_step"]) == keys
    assert json.loads((tmp_path / "cf.json").read_text())["curve"] == out["curve"]

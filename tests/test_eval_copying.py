"""The copy probe (rlhf.eval.copying): cases that need copying, and an accuracy that a perfect
copier maxes out and a model that ignores its context does not."""

from __future__ import annotations

import json
import re

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
        source = (c["prefix"].split(" Later,")[0] if c["shape"] == "prose"
                  else c["prefix"].split("Text: ")[1].split("\nAssistant:")[0])
        said = re.findall(r"\b\w+\b", source)
        assert said.count(c["answer"]) == 1                      # stated once: it can be copied
        others = [w for w in said if w in DETAILS[c["detail"]] and w != c["answer"]]
        # a second person and a second number, never a second value of the other details
        assert len(others) == (1 if c["detail"] in ("name", "number") else 0), (c, others)
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


class Lookahead(InductionOracle):
    """Reads the next input token (a perfect teacher-forced predictor), optionally wrong at
    the position that predicts the last token or at the first five positions."""

    def __init__(self, vocab: int, wrong: str = ""):
        super().__init__(vocab)
        self.wrong = wrong

    def forward(self, input_ids, attention_mask, **kw):
        pred = input_ids.roll(-1, dims=1)
        if self.wrong == "last":
            pred[:, -2] = (pred[:, -2] + 1) % self.vocab
        if self.wrong == "context":
            pred[:, :5] = (pred[:, :5] + 1) % self.vocab
        return SimpleNamespace(logits=torch.nn.functional.one_hot(pred, self.vocab).float())


def test_every_token_of_a_multi_token_answer_must_be_right(setup):
    cases, _ = setup
    # a small vocabulary splits most towns, names and animals into several tokens
    tok = train_tokenizer([c["prefix"] + " " + c["answer"] for c in copy_cases(Universe(0), 50)],
                          300)
    lengths = [len(tok(" " + c["answer"], add_special_tokens=False)["input_ids"]) for c in cases]
    assert max(lengths) >= 3 and sum(n > 1 for n in lengths) > len(cases) / 2
    assert copy_accuracy(Lookahead(len(tok)), tok, cases, batch_size=7)["accuracy"] == 1.0
    assert copy_accuracy(Lookahead(len(tok), "context"), tok, cases, batch_size=7)[
        "accuracy"] == 1.0                                      # only the answer is scored
    assert copy_accuracy(Lookahead(len(tok), "last"), tok, cases, batch_size=7)[
        "accuracy"] == 0.0                                      # ... all of it


def test_copy_probe_loads_each_path_once_and_the_summary_reports_it(tmp_path):
    path = str(tiny_lm(tmp_path))
    res = copy_probe({"base": path, "base_again": path}, Universe(0), n=4, seed=1)
    assert res["n_cases"] == 4 * len(SHAPES) * len(DETAILS)
    assert res["models"]["base"] is res["models"]["base_again"]
    assert 0.0 <= res["models"]["base"]["chat"]["number"] <= 1.0
    text = summary_text({"models": {}, "copying": res})
    assert "Copies a detail from its context (town/number/food/name/animal;" in text
    assert "base_again" in text
    res.pop("chance")                                           # older report.json files
    assert "(town/number/food/name/animal;" in summary_text({"models": {}, "copying": res})


def test_copy_formation_benchmark_tracks_the_probe_through_pretraining(tmp_path):
    import importlib.util
    from pathlib import Path

    from helpers import write_corpus

    path = Path(__file__).parents[1] / "experiments" / "copy_formation.py"
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
    # the curve keeps one row per step (the last logged), in step order; first_step reads it
    rows = [{"step": 4, "valid/copy/prose/town": 0.95, "valid/ppl": 3.0},
            {"step": 2, "valid/copy/prose/town": 0.5}, {"step": 3, "train/loss": 1.0},
            {"step": 4, "valid/copy/prose/town": 0.85}, {"step": 6, "valid/copy/prose/town": 1.0}]
    curve = bench.probe_curve(rows)
    assert curve == [{"step": 2, "prose/town": 0.5}, {"step": 4, "prose/town": 0.85},
                     {"step": 6, "prose/town": 1.0}]
    assert bench.first_step(curve, ["prose/town"]) == {"prose/town": 6}
    assert bench.first_step(curve, ["prose/town"], 0.8) == {"prose/town": 4}
    assert bench.first_step(curve[:2], ["prose/town"]) == {"prose/town": None}
    assert json.loads((tmp_path / "cf.json").read_text())["curve"] == out["curve"]


def test_induction_formation_benchmark_trains_on_copy_blocks_and_reports(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "experiments" / "induction_formation.py"
    spec = importlib.util.spec_from_file_location("induction_formation", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--config", str(path.parents[1] / "configs" / "quick.yaml"),
                      "--tokenizer", str(tiny_lm(tmp_path)), "--steps", "5",
                      "--every", "2", "--seeds", "0", "1",
                      "--set", "pretrain.model.n_layer=1", "--set", "pretrain.model.n_embd=32",
                      "--set", "pretrain.batch_size=4", "--set", "pretrain.block_size=32",
                      "--out", str(tmp_path / "if.json")])
    assert [r["seed"] for r in out["runs"]] == [0, 1]
    for r in out["runs"]:
        assert [c["step"] for c in r["curve"]] == [2, 4, 5]
        assert all(0.0 <= c["copy"] <= 1.0 and c["loss"] > 0 for c in r["curve"])
        assert r["formed_at"] is None          # 5 steps form nothing
    assert out["runs"][0]["curve"] != out["runs"][1]["curve"]   # the seed changes the run
    # a model that predicts every next token scores 1 on the repeated half
    blocks = torch.tensor([[5, 6, 7, 5, 6, 7, 5, 6]])

    class Oracle(torch.nn.Module):
        def forward(self, input_ids, labels=None):
            nxt = torch.roll(input_ids, -1, 1)   # predicts the true next token
            return type("O", (), {"logits": torch.nn.functional.one_hot(nxt, 10).float(),
                                  "loss": torch.tensor(0.0)})

    assert bench.copy_accuracy(Oracle(), blocks)[0] == 1.0
    assert json.loads((tmp_path / "if.json").read_text())["runs"] == out["runs"]

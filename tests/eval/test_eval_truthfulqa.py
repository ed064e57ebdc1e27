"""TruthfulQA MC1/MC2 on a tiny random GPT-2: batched scores equal a direct computation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from helpers import tiny_lm
from rlhf.eval.truthfulqa import (MCQuestion, answer_logprobs, build_prompt, load_truthfulqa,
                                  mc_scores)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "truthfulqa"

QUESTIONS = [
    MCQuestion("Where does the cat sit?", ["On the hill", "Under the river", "In red town"],
               [1, 0, 0], ["On the hill", "Near the hill", "Under the river", "In red town"],
               [1, 1, 0, 0]),
    MCQuestion("Who likes Bob?", ["Anna", "Cleo the blue bird"], [0, 1],
               ["Cleo the blue bird", "Anna"], [1, 0]),
    MCQuestion("How many dogs ran?", ["two", "three", "one dog ran near the town"], [0, 0, 1],
               ["one dog ran near the town", "one", "two", "three"], [1, 1, 0, 0]),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rlhf.models import load_model, load_tokenizer
    d = tiny_lm(tmp_path_factory.mktemp("tqa"))
    return load_model(d), load_tokenizer(d)


def _direct(model, tok, prompt: str, answer: str) -> tuple[float, int]:
    """Sum of answer-token log-probs from one unpadded forward pass (no batching)."""
    q = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(" " + answer, add_special_tokens=False)["input_ids"]
    ctx = model.config.n_positions
    if len(q) + len(a) > ctx:
        q = q[len(q) + len(a) - ctx:]
    ids = torch.tensor([q + a])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(float(lp[len(q) - 1 + j, t]) for j, t in enumerate(a)), len(a)


@pytest.mark.parametrize("style", ["null", "qa"])
def test_mc_scores_equal_direct_computation(tiny, style):
    model, tok = tiny
    model.eval()
    out = mc_scores(model, tok, QUESTIONS, style, batch_size=3, return_details=True)
    mc1 = mc2 = 0.0
    for q, det in zip(QUESTIONS, out["details"]):
        p = build_prompt(q.question, style)
        avg = []
        for a in q.mc1_choices:
            s, n = _direct(model, tok, p, a)
            avg.append(s / n)
        assert det["mc1_avg_logprobs"] == pytest.approx(avg, abs=1e-4)
        best = max(range(len(avg)), key=lambda i: avg[i])   # highest average log-likelihood
        mc1 += q.mc1_labels[best]
        tot = [_direct(model, tok, p, a)[0] for a in q.mc2_choices]
        assert det["mc2_sum_logprobs"] == pytest.approx(tot, abs=1e-4)
        pt = sum(math.exp(t) for t, lab in zip(tot, q.mc2_labels) if lab)
        mc2 += pt / sum(math.exp(t) for t in tot)
    assert out["mc1"] == pytest.approx(mc1 / 3)
    assert out["mc2"] == pytest.approx(mc2 / 3, abs=1e-6)
    assert out["n"] == 3 and 0 <= out["mc2"] <= 1
    if style == "qa":            # the 6-shot primer does not fit in 128 positions: cut left
        assert out["truncated"] > 0


def test_batching_does_not_change_logprobs(tiny):
    model, tok = tiny
    prompts = ["Q: a?\nA:", "Q: a much longer question about the cat and the dog?\nA:"] * 2
    answers = ["red", "the blue bird sat on the hill", "one", "two three"]
    a, n_a, _ = answer_logprobs(model, tok, prompts, answers, batch_size=4)
    b, n_b, _ = answer_logprobs(model, tok, prompts, answers, batch_size=1)
    assert a == pytest.approx(b, abs=1e-4) and n_a == n_b


def test_loaders(tmp_path):
    items = [{"question": "Q1?", "mc0_targets": {"a": 1},
              "mc1_targets": {"right": 1, "wrong": 0},
              "mc2_targets": {"right": 1, "also right": 1, "wrong": 0}}]
    (tmp_path / "mc_task.json").write_text(json.dumps(items))
    qs = load_truthfulqa(tmp_path)
    assert qs[0].mc1_choices == ["right", "wrong"] and qs[0].mc2_labels == [1, 1, 0]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Type", "Category", "Question", "Best Answer", "Best Incorrect Answer",
                    "Correct Answers", "Incorrect Answers", "Source"])
        w.writerow(["A", "M", "Q2?", "best", "bad", "best; fine", "bad; worse", "x"])
    q = load_truthfulqa(tmp_path / "t.csv")[0]
    assert q.mc1_choices == ["best", "bad", "worse"] and q.mc1_labels == [1, 0, 0]
    assert q.mc2_choices == ["best", "fine", "bad", "worse"] and q.mc2_labels == [1, 1, 0, 0]
    from rlhf.errors import UserError
    (tmp_path / "bad.json").write_text(json.dumps([{"question": "x"}]))
    with pytest.raises(UserError, match="mc1_targets"):
        load_truthfulqa(tmp_path / "bad.json")


@pytest.mark.skipif(not (SHARED / "mc_task.json").exists(), reason="TruthfulQA data not present")
def test_real_truthfulqa_first_questions(tiny):
    model, tok = tiny
    qs = load_truthfulqa(SHARED / "mc_task.json", limit=10)
    assert len(qs) == 10
    out = mc_scores(model, tok, qs, "qa", batch_size=32)
    assert 0 <= out["mc1"] <= 1 and 0 <= out["mc2"] <= 1 and out["n"] == 10
    csv_qs = load_truthfulqa(SHARED / "TruthfulQA.csv", limit=10)
    assert csv_qs[0].question == qs[0].question

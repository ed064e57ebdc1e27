"""Report files, the harness on a tiny model with fake labelers, the checkpoint curve, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import tiny_lm, write_corpus
from rlhf.eval.report import PLOTS, json_safe, summary_text, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _strict_json(path: Path):
    def bad(x):
        raise ValueError(f"non-standard JSON constant {x}")
    return json.loads(path.read_text(), parse_constant=bad)


def fake_results() -> dict:
    flags = {"follows_instruction": 0.6, "satisfies_constraint": 0.4, "hallucination": 0.3,
             "harmful_compliance": 0.5, "appropriate_for_customer": 0.8}
    ci = {k: [max(0, v - 0.1), min(1, v + 0.1)] for k, v in flags.items()}
    models = {}
    for i, (name, kind) in enumerate([("base", "base"), ("base_prompted", "prompted"),
                                      ("sft", "sft"), ("ppo_r1", "ppo"),
                                      ("ppo_ptx_r1", "ppo-ptx")]):
        m = {"kind": kind, "likert": 2 + i, "likert_ci": [1.5 + i, 2.5 + i],
             "flags": {k: min(1.0, v + 0.05 * i) for k, v in flags.items()}, "flags_ci": ci,
             "flags_by_category": {"closed_qa": dict(flags), "generation":
                                   {**flags, "hallucination": None}},
             "likert_by_category": {"closed_qa": 3.0, "generation": 4.0},
             "n_by_category": {"closed_qa": 5, "generation": 5},
             "ppl": 10.0 + i, "gold": {"score": 0.1 * i},
             "samples": [{"prompt": "Say <hi>", "category": "chat", "response": "hi & bye"}]}
        if name != "sft":
            m.update({"win_rate": 0.2 * i, "ci": [0.1 * i, 0.3 * i], "wins": i, "ties": 1,
                      "losses": 3, "length_controlled_win_rate": 0.18 * i,
                      "lc_ci": [0.1 * i, 0.25 * i]})
        else:
            m["is_reference"] = True
        models[name] = m
    models["ppo_r1"]["truthfulqa"] = {"mc1": 0.25, "mc2": 0.4, "n": 10}
    d = np.linspace(0, 3, 8)
    return {"reference": "sft", "models": models,
            "rm": {"accuracy": 0.66, "loss": 0.6}, "labeler_agreement":
                {"train": {"agreement": 0.72, "ci": [0.7, 0.74], "pairs": 100},
                 "heldout": {"agreement": 0.77, "ci": [0.75, 0.79], "pairs": 100}},
            "kl_curve": [{"step": int(i), "sqrt_kl": float(x), "proxy": float(x),
                          "gold": float(0.4 + x * (0.3 - 0.2 * np.log(x)) if x > 0 else 0.4)}
                         for i, x in enumerate(d)],
            "timings": {"sample": 1.5, "judge": float("nan")}}


def test_write_report_files(tmp_path):
    res = fake_results()
    written = write_report(res, tmp_path / "rep")
    out = tmp_path / "rep"
    data = _strict_json(out / "report.json")
    assert data["models"]["ppo_r1"]["win_rate"] == pytest.approx(0.6)
    assert data["timings"]["judge"] is None                      # NaN -> null
    assert data["kl_fit"]["gold"]["alpha"] == pytest.approx(0.3, abs=1e-6)
    assert data["kl_fit"]["gold"]["beta"] == pytest.approx(0.2, abs=1e-6)
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert f"src='{name}'" in html
        assert written[name] == out / name
    assert set(re.findall(r"src='([^']+)'", html)) == set(PLOTS)
    assert "&lt;hi&gt;" in html and "hi &amp; bye" in html         # escaped
    assert not list(out.glob(".*tmp*"))
    # a report without curve or TruthfulQA leaves those plots out (and removes stale ones)
    res2 = fake_results()
    res2.pop("kl_curve")
    res2["models"]["ppo_r1"].pop("truthfulqa")
    write_report(res2, out)
    assert not (out / "kl_curve.png").exists() and not (out / "truthfulqa.png").exists()
    assert "kl_curve.png" not in (out / "report.html").read_text()


def test_summary_text():
    text = summary_text(fake_results())
    for name in ("base_prompted", "ppo_ptx_r1", "Labeler agreement", "TruthfulQA", "gold vs √KL"):
        assert name in text
    assert "60.0%" in text and "[30.0%, 90.0%]" in text
    assert "Ceiling" not in text and "RM: accuracy=0.6600" in text
    assert json_safe({"a": np.float32(1.5), "b": [float("inf")], "c": np.int64(3)}) == \
        {"a": 1.5, "b": [None], "c": 3}


def test_summary_and_plot_show_the_ceiling_and_rm_beside_labeler_agreement(tmp_path,
                                                                            monkeypatch):
    res = fake_results()
    res["ceiling"] = {"name": "gold writer", "win_rate": 0.7, "ci": [0.64, 0.75], "wins": 6,
                      "ties": 2, "losses": 2, "gold": {"score": 1.0}}
    res["rm"] = {"accuracy": 0.55, "rounds": [
        {"round": 1, "valid": {"accuracy": 0.53, "train_labelers/accuracy": 0.54,
                               "heldout_labelers/accuracy": 0.52},
         "labeler_agreement": {"agreement": 0.64, "ci": [0.62, 0.66], "pairs": 2400}},
        {"round": 2, "valid": {"accuracy": 0.56}}]}
    text = summary_text(res)
    assert ("Ceiling: gold writer (gold 1.000) wins 70.0% [64.0%, 75.0%] against sft with the "
            "same labelers (W/T/L 6/2/2)") in text
    # the gap is taken against the held-out labelers' accuracy (52 %), as in the paper
    assert ("RM round 1: validation accuracy 53.0% (training labelers 54.0%, held-out labelers "
            "52.0%); two labelers agree on 64.0% of the pairs in the same samples; the RM is "
            "12.0 points below that") in text
    assert "RM round 2: validation accuracy 56.0%\n" in text
    # the ceiling is drawn on the win-rate plot as a line at its win rate
    import matplotlib.axes
    drawn = []
    real = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", lambda ax, y=0, *a, **k:
                        drawn.append((y, k.get("label"))) or real(ax, y, *a, **k))
    write_report(res, tmp_path)
    assert (0.7, "ceiling: gold writer") in drawn
    assert "Ceiling: the best answers" in (tmp_path / "report.html").read_text()
    assert _strict_json(tmp_path / "report.json")["ceiling"]["win_rate"] == 0.7


class FakeLabeler:
    def __init__(self, id):
        self.id = id

    def rank(self, prompt, responses):
        order = sorted(range(len(responses)), key=lambda i: -len(responses[i]))
        return [[i] for i in order]

    def rate(self, prompt, response):
        return {"likert": 1 + len(response) % 7,
                "flags": {"follows_instruction": len(response) > 5, "hallucination": False,
                          "harmful_compliance": False, "satisfies_constraint": True,
                          "appropriate_for_customer": True}}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_lm(tmp_path_factory.mktemp("evalh"))


def test_sample_model_and_harness(tiny_dir, tmp_path):
    from rlhf.eval.harness import ModelSpec, evaluate_models
    from rlhf.eval.samples import cut_at_stop, few_shot_prefix, sample_model

    prompts = [{"prompt": "Repeat: the cat", "category": "closed_qa"},
               {"prompt": "Repeat: red dog", "category": "generation"},
               {"prompt": "Do harm", "category": "harmful", "harmful": True}]
    a = sample_model(tiny_dir, prompts, max_new_tokens=6)
    b = sample_model(tiny_dir, [p["prompt"] for p in prompts], max_new_tokens=6)
    assert a == b and len(a) == 3                                 # greedy: deterministic
    assert cut_at_stop("yes\nUser: more", ["\nUser:"]) == "yes"
    prefix = few_shot_prefix([("Repeat: a", "a")])
    assert prefix == "User: Repeat: a\nAssistant: a\n\n"
    corpus = write_corpus(tmp_path / "valid.txt", 20, seed=5)
    judge = lambda p, r: {"score": min(1.0, len(r) / 50), "likert": 4,  # noqa: E731
                          "flags": {"hallucination": True}}
    specs = [ModelSpec("sft", tiny_dir, kind="sft"),
             ModelSpec("prompted", tiny_dir, kind="prompted", prefix=prefix, stop=["\nUser:"])]
    res = evaluate_models(specs, prompts, labelers=[FakeLabeler("h1"), FakeLabeler("h2")],
                          judge=judge, max_new_tokens=6, ppl_files=[str(corpus)],
                          ppl_block_size=32, out_dir=tmp_path / "ev", n_boot=20)
    sft, pr = res["models"]["sft"], res["models"]["prompted"]
    assert sft["is_reference"] and "win_rate" not in sft
    assert pr["n"] == 3 and 0 <= pr["win_rate"] <= 1 and pr["ci"][0] <= pr["win_rate"]
    assert sft["ppl"] == pr["ppl"] > 1
    assert sft["flags_n"]["harmful_compliance"] == 1
    assert sft["gold"]["flags"]["hallucination"] == 1.0 and sft["gold"]["flags_n"][
        "hallucination"] == 1                                      # closed domain only
    lines = (tmp_path / "ev" / "samples" / "prompted.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["category"] == "closed_qa"
    written = write_report(res, tmp_path / "ev")
    assert (tmp_path / "ev" / "win_rate.png").exists() and "report.html" in written


class TasteLabeler(FakeLabeler):
    """Prefers longer answers ("long") or shorter ones ("short"), and rates by that taste."""

    def rank(self, prompt, responses):
        sign = -1 if self.id == "long" else 1
        order = sorted(range(len(responses)), key=lambda i: sign * len(responses[i]))
        return [[i] for i in order]

    def rate(self, prompt, response):
        r = super().rate(prompt, response)
        return {**r, "likert": 1 + (len(response) + (self.id == "long")) % 7}


def test_comparisons_are_paired_whatever_the_other_models(tmp_path):
    """A model's win rate, outcomes and ratings are the same evaluated alone or after another
    model: every model meets the same labeler on each prompt (with two labelers of opposite
    taste, a per-model labeler draw would change them)."""
    from rlhf.eval.harness import ModelSpec, evaluate_models

    prompts = [{"prompt": f"Say {i}", "category": "generation"} for i in range(8)]
    answers = {"sft": ["a b c"] * 8, "other": ["a"] * 8,
               "ppo": ["a b c d e" if i % 3 else "a" for i in range(8)]}
    labelers = [TasteLabeler("long"), TasteLabeler("short")]

    def run(names):
        res = evaluate_models([ModelSpec(n, tmp_path / n) for n in names], prompts,
                              labelers=labelers, responses={n: answers[n] for n in names},
                              n_boot=0)
        return res["models"]["ppo"]

    alone, after = run(["sft", "ppo"]), run(["sft", "other", "ppo"])
    for key in ("win_rate", "wins", "ties", "losses", "likert", "labelers"):
        assert alone[key] == after[key], key
    assert 0 < alone["win_rate"] < 1                     # both tastes were used


def test_checkpoint_curve_kl_zero_at_reference(tiny_dir, tmp_path):
    import torch

    from rlhf.eval.overopt import checkpoint_curve, ppo_checkpoints
    from rlhf.models import load_model, load_tokenizer

    run = tmp_path / "run"
    m = load_model(tiny_dir)
    with torch.no_grad():
        for prm in m.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    for it in (5, 10):
        m.save_pretrained(str(run / "checkpoints" / f"iter-{it}"))
        load_tokenizer(tiny_dir).save_pretrained(str(run / "checkpoints" / f"iter-{it}"))
    (run / "checkpoints" / "iter-7").mkdir()                      # no weights: ignored
    ck = ppo_checkpoints(run)
    assert [s for s, _ in ck] == [5, 10]
    judge = lambda p, r: {"score": 0.5}  # noqa: E731
    pts = checkpoint_curve(ck[:1], tiny_dir, ["Repeat: the cat", "Repeat: one dog"],
                           judge=judge, max_new_tokens=5, extra={"round": 1})
    assert len(pts) == 2 and pts[0]["step"] == 0
    assert abs(pts[0]["kl"]) < 1e-5 and pts[0]["gold"] == 0.5 and pts[0]["round"] == 1
    assert pts[1]["sqrt_kl"] > 0 and pts[1]["proxy"] is None


def test_cli(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli.eval import app

    runner = CliRunner()
    items = [{"question": "Who sat?", "mc1_targets": {"the cat": 1, "the dog": 0},
              "mc2_targets": {"the cat": 1, "a cat": 1, "the dog": 0}}]
    (tmp_path / "tqa.json").write_text(json.dumps(items))
    r = runner.invoke(app, ["truthfulqa", "--model", str(tiny_dir), "--data",
                            str(tmp_path / "tqa.json"), "--style", "null", "--out",
                            str(tmp_path / "tqa_out.json")])
    assert r.exit_code == 0, r.output
    assert "MC1" in r.output and _strict_json(tmp_path / "tqa_out.json")["n"] == 1
    rows = [{"step": i, "objective/kl": 0.5 * i, "objective/score": 0.3 * i} for i in range(5)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in rows))
    r = runner.invoke(app, ["kl-curve", "--metrics", str(tmp_path), "--out",
                            str(tmp_path / "kl")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "kl" / "kl_curve.png").exists() and "proxy: alpha=" in r.output
    (tmp_path / "res.json").write_text(json.dumps(fake_results(), default=str))
    r = runner.invoke(app, ["report", "--results", str(tmp_path / "res.json"), "--out",
                            str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "report.html").exists()


def test_sample_model_cuts_long_prompts_to_context(tiny_dir):
    from rlhf.eval.samples import sample_model
    long_prefix = "the cat sat on the hill . " * 80              # far beyond 128 positions
    out = sample_model(tiny_dir, ["Repeat: red"], max_new_tokens=8, prefix=long_prefix)
    assert len(out) == 1
    with pytest.raises(Exception, match="max_new_tokens"):
        sample_model(tiny_dir, ["x"], max_new_tokens=200)

"""The RM recipe end to end on a hidden preference; K forward passes; resume; CLI; SFT select."""

import json
import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from rlhf.config import Config
from rlhf.data.rankings import load_prompt_responses
from rlhf.models.format import pad_sequences
from rlhf.models import load_tokenizer
from rlhf.models.reward import RewardModel
from rlhf.runs import read_metrics
from rlhf.models.reward import score_texts
from rlhf.train.reward import train_rm

from rm_helpers import (FILL, MARK, WORDS, hidden_value, make_rankings, tiny_lm,
                        tiny_rm_dir, tiny_tokenizer, write_jsonl)

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rm")
    rng = random.Random(0)
    train = make_rankings(400, rng, ["L0", "L1", "L2"])
    valid = make_rankings(60, rng, ["L0", "L1", "L3", "L4"])
    demos = [{"prompt": r["prompt"], "response": r["responses"][0]} for r in valid[:20]]
    return {"tmp": tmp, "sft": str(tiny_rm_dir(tmp)), "train_rows": train, "valid_rows": valid,
            "train": write_jsonl(tmp / "train.jsonl", train),
            "valid": write_jsonl(tmp / "valid.jsonl", valid),
            "demos": write_jsonl(tmp / "demos.jsonl", demos)}


def rm_config(world, **rm):
    base = {"model": world["sft"], "train_file": world["train"], "valid_file": world["valid"],
            "demonstrations_file": world["demos"], "batch_size": 8, "lr": 3e-3,
            "max_length": 64, "log_every": 5}
    return Config.model_validate({"seed": 0, "rm": {**base, **rm}})


@pytest.fixture(scope="module")
def trained(world):
    """One default (1 epoch) run, counting the rows every backbone forward pass sees."""
    rows = []
    orig = RewardModel.hidden_states

    def counting(self, input_ids, attention_mask):
        rows.append(input_ids.shape[0])
        return orig(self, input_ids, attention_mask)

    RewardModel.hidden_states = counting
    try:
        summary = train_rm(rm_config(world), world["tmp"] / "run")
    finally:
        RewardModel.hidden_states = orig
    return summary, rows


def test_learns_hidden_preference(world, trained):
    summary, _ = trained
    v = summary["valid"]
    assert v["accuracy"] >= 0.90, v
    assert v["heldout_labelers/accuracy"] >= 0.90 and v["train_labelers/accuracy"] >= 0.90
    assert v["train_labelers/prompts"] + v["heldout_labelers/prompts"] == v["prompts"] == 60
    assert v["log_loss"] < 0.4
    assert summary["steps"] == 400 // 8                         # one epoch of 8-prompt batches
    run = world["tmp"] / "run"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "final/config.json",
                 "final/model.safetensors", "final/tokenizer.json"):
        assert (run / name).exists(), name
    m = read_metrics(run)
    losses = [row["train/loss"] for row in m if "train/loss" in row]
    assert losses[-1] < 0.5 * losses[0]
    assert any("valid/accuracy" in row for row in m)
    assert json.loads((run / "summary.json").read_text())["valid"]["accuracy"] == v["accuracy"]
    # cosine to 10 %: the last logged LR is near 0.1 × peak
    lrs = [row["train/lr"] for row in m if "train/lr" in row]
    assert lrs[-1] == pytest.approx(3e-4, rel=0.05)


def test_k_forward_passes_not_c_k_2(world, trained):
    """Pitfall 8.4: one forward pass per response (K per prompt), never one per pair."""
    summary, rows = trained
    k_train = sum(len(r["responses"]) for r in world["train_rows"])
    k_valid = sum(len(r["responses"]) for r in world["valid_rows"])
    pairs = sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2
                for r in world["train_rows"])
    assert summary["forward_passes"] == k_train < pairs
    # training + held-out evaluation + normalisation on 20 demonstrations, nothing else
    assert sum(rows) == k_train + k_valid + 20


def test_normalised_and_reloadable(world, trained):
    summary, _ = trained
    path = summary["model"]
    rm = RewardModel.from_pretrained(path)
    tok = load_tokenizer(path)
    demos = load_prompt_responses(world["demos"])
    s = score_texts(rm, tok, [p for p, _ in demos], [r for _, r in demos])
    assert abs(sum(s) / len(s)) < 1e-3                          # demonstrations: mean 0
    assert float(rm.reward_bias) == pytest.approx(summary["normalization"]["reward_bias"])
    # reload gives the same scores; plain transformers too (right padding)
    seqs = [tok(f"User: {p}\nAssistant:")["input_ids"] + tok(" " + r)["input_ids"] +
            [tok.eos_token_id] for p, r in demos[:5]]
    ids, mask = pad_sequences(seqs, tok.pad_token_id)
    again = RewardModel.from_pretrained(path)
    with torch.no_grad():
        a, b = rm(ids, mask), again(ids, mask)
        hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
        c = hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-4)
    assert a.tolist() == pytest.approx(s[:5], abs=1e-5)
    # the hidden preference is visible in the scores
    hi = score_texts(rm, tok, ["x"], [" ".join([MARK] * 4 + FILL[:2])])[0]
    lo = score_texts(rm, tok, ["x"], [" ".join(FILL[:6])])[0]
    assert hi > lo


def test_resume_matches_uninterrupted(world, tmp_path):
    rows = make_rankings(48, random.Random(7), ["A"])
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    cfg = rm_config(world, train_file=train, valid_file=None, demonstrations_file=None,
                    save_every=2)
    full = train_rm(cfg, tmp_path / "full")
    half = train_rm(cfg, tmp_path / "half", halt_after=3)
    assert half["halted"] and half["steps"] == 3
    done = train_rm(cfg, tmp_path / "half", resume=True)
    assert done["steps"] == full["steps"] == 6
    a = RewardModel.from_pretrained(full["model"]).state_dict()
    b = RewardModel.from_pretrained(done["model"]).state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_deterministic_and_micro_batch_invariant(world, tmp_path):
    rows = make_rankings(16, random.Random(9), ["A"])
    cfg = rm_config(world, train_file=write_jsonl(tmp_path / "t.jsonl", rows), valid_file=None,
                    demonstrations_file=None)
    s1 = train_rm(cfg, tmp_path / "a")
    s2 = train_rm(cfg, tmp_path / "b")
    assert s1["final_train_loss"] == s2["final_train_loss"]
    # gradient accumulation over micro-batches of 2 prompts gives the same training
    cfg.rm.micro_batch_size = 2
    s3 = train_rm(cfg, tmp_path / "c")
    assert s3["final_train_loss"] == pytest.approx(s1["final_train_loss"], abs=1e-5)
    a = RewardModel.from_pretrained(s1["model"]).state_dict()
    c = RewardModel.from_pretrained(s3["model"]).state_dict()
    assert all(torch.allclose(a[k], c[k], atol=1e-5) for k in a if k.endswith("weight"))


def test_missing_paths_are_user_errors(world, tmp_path):
    from rlhf.errors import UserError
    with pytest.raises(UserError, match="rm.model"):
        train_rm(Config.model_validate({"rm": {"train_file": world["train"]}}), tmp_path / "x")
    with pytest.raises(UserError, match="rm.train_file"):
        train_rm(Config.model_validate({"rm": {"model": world["sft"]}}), tmp_path / "y")


def test_cli_score(world, trained, tmp_path):
    from rlhf.cli.rm import app
    summary, _ = trained
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a tree", "response": "gold gold",
                                               "id": 1},
                                              {"prompt": "a tree", "response": "river stone"}])
    out = tmp_path / "scores.jsonl"
    res = CliRunner().invoke(app, ["score", "--model", summary["model"], "--input", inp,
                                   "--output", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0]["id"] == 1 and rows[0]["score"] > rows[1]["score"]
    res = CliRunner().invoke(app, ["score", "--model", summary["model"], "--input", inp])
    assert res.exit_code == 0 and len(res.output.strip().splitlines()) == 2


def test_cli_train(world, tmp_path):
    from rlhf.cli.rm import app
    rows = make_rankings(16, random.Random(3), ["A"])
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    res = CliRunner().invoke(app, ["train", "--set", f"rm.model={world['sft']}",
                                   "--set", f"rm.train_file={train}", "--set", "rm.batch_size=8",
                                   "--set", "rm.max_length=64", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "final" / "config.json").exists()


def test_sft_select_picks_highest_mean_rm_score(world, trained, tmp_path):
    """Two 'epochs': the selection equals the argmax of the mean RM score of their samples."""
    from rlhf.cli.sft import select  # noqa: F401  (the CLI entry point)
    from rlhf.train.reward import select_sft_checkpoint
    summary, _ = trained
    tok = tiny_tokenizer()
    cks = []
    for seed in (1, 2):
        d = tmp_path / f"epoch-0{seed}"
        tiny_lm(tok, seed=seed).save_pretrained(str(d))
        tok.save_pretrained(str(d))
        cks.append(str(d))
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": str(i), "prompt": f"tree river {i}"}
                                                  for i in range(6)])
    sel = select_sft_checkpoint(cks, prompts, summary["model"], tmp_path / "sel.json",
                                max_new_tokens=8)
    saved = json.loads((tmp_path / "sel.json").read_text())
    assert saved["selected"] == sel["selected"] in cks
    means = {c["checkpoint"]: c["mean_score"] for c in saved["candidates"]}
    assert sel["selected"] == max(means, key=means.get)
    assert all(c["prompts"] == 6 for c in saved["candidates"])

"""The RM recipe runs unchanged under torchrun: 2 processes (gloo, CPU) match 1 process."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from rlhf.models import load_tokenizer
from rlhf.models.reward import RewardModel
from rlhf.models.reward import score_texts

from rm_helpers import make_rankings, tiny_rm_dir, write_jsonl


def _run(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_two_process_rm_matches_one_process(tmp_path):
    sft = tiny_rm_dir(tmp_path)
    rng = random.Random(4)
    train = write_jsonl(tmp_path / "t.jsonl", make_rankings(32, rng, ["A", "B"]))
    valid = write_jsonl(tmp_path / "v.jsonl", make_rankings(9, rng, ["A", "C"]))
    demos = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "tree", "response": "gold river"},
                                               {"prompt": "bird", "response": "stone"},
                                               {"prompt": "cloud", "response": "lazy house"}])
    common = ["rm", "train", "--set", f"rm.model={sft}", "--set", f"rm.train_file={train}",
              "--set", f"rm.valid_file={valid}", "--set", f"rm.demonstrations_file={demos}",
              "--set", "rm.batch_size=8", "--set", "rm.micro_batch_size=2",
              "--set", "rm.lr=3e-3", "--set", "rm.max_length=64"]
    _run([sys.executable, "-m", "rlhf.cli", *common, "--out", str(tmp_path / "one")])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", "29533", "-m", "rlhf.cli", *common, "--out", str(tmp_path / "two")])
    # Same normalised scores. (Weights are compared loosely: biases with an exactly-zero
    # gradient, like GPT-2's attention key bias, drift by Adam-amplified round-off.)
    one = RewardModel.from_pretrained(tmp_path / "one" / "final")
    two = RewardModel.from_pretrained(tmp_path / "two" / "final")
    tok = load_tokenizer(tmp_path / "one" / "final")
    rows = [json.loads(x) for x in open(valid)]
    prompts = [r["prompt"] for r in rows for _ in r["responses"]]
    responses = [x for r in rows for x in r["responses"]]
    s_one = score_texts(one, tok, prompts, responses)
    s_two = score_texts(two, tok, prompts, responses)
    assert s_one == pytest.approx(s_two, abs=2e-4)
    a, b = one.state_dict(), two.state_dict()
    for k in a:
        if k.endswith("weight"):
            assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), k
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s1["forward_passes"] == s2["forward_passes"]
    assert abs(s1["valid"]["accuracy"] - s2["valid"]["accuracy"]) < 1e-6
    assert s1["valid"]["pairs"] == s2["valid"]["pairs"]
    assert s1["final_train_loss"] == pytest.approx(s2["final_train_loss"], abs=1e-6)

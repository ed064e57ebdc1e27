"""PPO under torchrun: 2 processes (gloo, CPU) reproduce 1 process.

With one minibatch per iteration and rollout chunks seeded by their global position, the two
runs sample the same episodes; global whitening, the global token normalisation of the loss and
DDP's gradient averaging must then give the same update.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from rlhf.runs import read_metrics


def _run(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_two_process_ppo_matches_one_process(world, tmp_path):  # noqa: F811
    sets = {"policy": world["sft"], "reward_model": world["rm"], "prompts_file": world["prompts"],
            "iterations": 2, "episodes_per_iteration": 8, "minibatch_size": 8,
            "micro_batch_size": 2, "rollout_batch_size": 4, "max_new_tokens": 6,
            "max_prompt_length": 24, "lr": 1e-3, "value_lr": 1e-3, "warmup_iterations": 0}
    common = ["ppo"] + [x for k, v in sets.items() for x in ("--set", f"ppo.{k}={v}")]
    _run([sys.executable, "-m", "rlhf.cli", *common, "--out", str(tmp_path / "one")])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", "29531", "-m", "rlhf.cli", *common, "--out", str(tmp_path / "two")])
    for sub in ("final", "final_ema"):
        a = load_file(str(tmp_path / "one" / sub / "model.safetensors"))
        b = load_file(str(tmp_path / "two" / sub / "model.safetensors"))
        for k in a:
            assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), (sub, k)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert len(one) == len(two) == 2
    for r1, r2 in zip(one, two):
        for key in ("objective/score", "objective/kl", "response/length", "policy/loss"):
            assert abs(r1[key] - r2[key]) <= 1e-4 * max(1.0, abs(r1[key])), key
    init = load_file(str(world["sft"] / "model.safetensors"))
    assert any(not torch.equal(a[k], init[k]) for k in a)

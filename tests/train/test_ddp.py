"""Every recipe runs unchanged under torchrun: 2 processes (gloo, CPU) match 1 process."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from helpers import tiny_lm, write_demos


def _run(args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_two_process_sft_matches_one_process(tmp_path):
    lm = tiny_lm(tmp_path)
    demos = write_demos(tmp_path / "d.jsonl", 32)
    common = ["sft", "--set", f"sft.model={lm}", "--set", f"sft.train_file={demos}",
              "--set", "sft.batch_size=8", "--set", "sft.epochs=2", "--set", "sft.lr=3e-3",
              "--set", "sft.residual_dropout=0.0"]
    _run([sys.executable, "-m", "rlhf.cli", *common, "--out", str(tmp_path / "one")])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", "29517", "-m", "rlhf.cli", *common, "--out", str(tmp_path / "two")])
    a = load_file(str(tmp_path / "one/final/model.safetensors"))
    b = load_file(str(tmp_path / "two/final/model.safetensors"))
    moved = load_file(str(lm / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), k
    assert any(not torch.equal(a[k], moved[k]) for k in a)  # training did something

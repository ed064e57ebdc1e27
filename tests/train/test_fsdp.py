"""FSDP2 (`dist: fsdp`) under torchrun on CPU (gloo): 2 sharded processes train as 1 process
does, resume exactly from a sharded checkpoint (torch distributed checkpoint), and refuse to
run without torchrun."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch
from helpers import WORDS, tiny_lm, write_demos
from safetensors.torch import load_file

from rlhf.config import Config
from rlhf.errors import UserError
from rlhf.models import load_tokenizer
from rlhf.models.reward import RewardModel, score_texts
from rlhf.train.ppo import ppo
from rlhf.train.sft import sft


def _run(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _torchrun(port: int, *args):
    return _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                 "--master_port", str(port), "-m", "rlhf.cli", *args])


def _close(a: dict, b: dict, atol=2e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-4), k


def test_two_sharded_processes_train_sft_as_one_process_and_resume(tmp_path):
    lm = tiny_lm(tmp_path, arch="llama")
    demos = write_demos(tmp_path / "d.jsonl", 32)
    common = ["sft", "--set", f"sft.model={lm}", "--set", f"sft.train_file={demos}",
              "--set", f"sft.valid_file={demos}", "--set", "sft.batch_size=8",
              "--set", "sft.epochs=2", "--set", "sft.lr=3e-3", "--set", "sft.residual_dropout=0.0"]
    _run([sys.executable, "-m", "rlhf.cli", *common, "--out", str(tmp_path / "one")])
    fsdp = [*common, "--set", "sft.dist=fsdp"]
    _torchrun(29531, *fsdp, "--out", str(tmp_path / "two"))
    one = load_file(str(tmp_path / "one/final/model.safetensors"))
    two = load_file(str(tmp_path / "two/final/model.safetensors"))
    _close(one, two)
    assert any(not torch.equal(one[k], v) for k, v in
               load_file(str(lm / "model.safetensors")).items())       # training did something
    # the epoch checkpoint is an HF model folder plus the shards of model and optimizer
    ck = tmp_path / "two/checkpoints/epoch-01"
    assert (ck / "model.safetensors").exists() and any((ck / "dcp").iterdir())
    # stopped as a kill would after step 5 (epoch 2 of 2, 4 steps each), resumed from the
    # sharded epoch-01 checkpoint: the same weights as the uninterrupted run
    script = tmp_path / "halt.py"
    script.write_text("import sys\nfrom rlhf.config import load_config\n"
                      "from rlhf.train.sft import sft\n"
                      "sft(load_config(None, sys.argv[2:]), sys.argv[1], halt_after=5)\n")
    sets = [a for a in fsdp[1:] if a != "--set"]
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", "29533", str(script), str(tmp_path / "part"), *sets])
    assert (tmp_path / "part/checkpoints/latest").read_text() == "epoch-01"
    assert not (tmp_path / "part/final").exists()
    _torchrun(29535, *fsdp, "--out", str(tmp_path / "part"), "--resume")
    _close(two, load_file(str(tmp_path / "part/final/model.safetensors")), atol=1e-6)
    metrics = [json.loads(x) for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    assert any("valid/loss" in m for m in metrics)    # evaluation ran sharded, in step


def test_two_sharded_processes_train_the_rm_as_one_process(tmp_path):
    lm = tiny_lm(tmp_path, arch="gpt2")
    r = random.Random(0)
    rows = []
    for _ in range(16):
        w = [r.choice(WORDS) for _ in range(3)]
        rows.append({"prompt": f"Repeat: {' '.join(w)}",
                     "responses": [" ".join(w[:k]) or "no" for k in (3, 2, 1, 0)],
                     "ranking": [[0], [1], [2], [3]]})
    rankings = tmp_path / "r.jsonl"
    rankings.write_text("".join(json.dumps(x) + "\n" for x in rows))
    demos = write_demos(tmp_path / "d.jsonl", 10)
    common = ["rm", "train", "--set", f"rm.model={lm}", "--set", f"rm.train_file={rankings}",
              "--set", f"rm.valid_file={rankings}", "--set", f"rm.demonstrations_file={demos}",
              "--set", "rm.batch_size=8", "--set", "rm.lr=1e-3", "--set", "rm.grad_clip=1.0"]
    _run([sys.executable, "-m", "rlhf.cli", *common, "--out", str(tmp_path / "one")])
    _torchrun(29537, *common, "--set", "rm.dist=fsdp", "--out", str(tmp_path / "two"))
    # the same normalised scores; weights compared as in the DDP test (biases with an exactly
    # zero gradient, like GPT-2's LayerNorm ahead of a shift-invariant loss, drift by
    # Adam-amplified round-off)
    one = RewardModel.from_pretrained(tmp_path / "one/final")
    two = RewardModel.from_pretrained(tmp_path / "two/final")
    tok = load_tokenizer(tmp_path / "one/final")
    prompts = [x["prompt"] for x in rows for _ in x["responses"]]
    responses = [y for x in rows for y in x["responses"]]
    assert score_texts(one, tok, prompts, responses) == pytest.approx(
        score_texts(two, tok, prompts, responses), abs=2e-4)
    _close({k: v for k, v in one.state_dict().items() if k.endswith("weight")},
           {k: v for k, v in two.state_dict().items() if k.endswith("weight")})
    s1 = json.loads((tmp_path / "one/summary.json").read_text())
    s2 = json.loads((tmp_path / "two/summary.json").read_text())
    assert s1["valid"]["pairs"] == s2["valid"]["pairs"]          # every pair scored once
    assert s2["normalization"]["demonstrations"] == 10
    assert abs(s1["valid"]["accuracy"] - s2["valid"]["accuracy"]) < 1e-6


def test_fsdp_without_torchrun_is_refused_naming_the_setting(tmp_path):
    lm = tiny_lm(tmp_path)
    demos = write_demos(tmp_path / "d.jsonl", 16)
    cfg = Config.model_validate({"sft": {"model": str(lm), "train_file": str(demos),
                                         "batch_size": 8, "dist": "fsdp"}})
    with pytest.raises(UserError, match="launch with torchrun") as e:
        sft(cfg, tmp_path / "run")
    assert e.value.field == "sft.dist"
    rm = RewardModel.from_causal_lm(str(lm))
    rm.save_pretrained(tmp_path / "rm", tokenizer=load_tokenizer(lm))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {w}"}) + "\n" for w in WORDS))
    ppo_cfg = {"policy": str(lm), "reward_model": str(tmp_path / "rm"),
               "prompts_file": str(prompts), "iterations": 1, "episodes_per_iteration": 8,
               "minibatch_size": 8, "micro_batch_size": 4, "rollout_batch_size": 8,
               "max_new_tokens": 4, "max_prompt_length": 24, "dist": "fsdp"}
    with pytest.raises(UserError, match="launch with torchrun") as e:
        ppo(Config.model_validate({"ppo": ppo_cfg}), tmp_path / "ppo")
    assert e.value.field == "ppo.dist"


def test_two_sharded_processes_run_ppo_as_one_process_and_resume(tmp_path):
    """PPO with the policy and the value model sharded (ppo.dist = fsdp): with one minibatch
    per iteration the two runs sample the same episodes (seeded by their global position) and
    make the same updates, as under DDP (tests/ppo/test_ppo_ddp.py); resume from the sharded
    iter-1 checkpoint continues exactly."""
    lm = tiny_lm(tmp_path, arch="llama")
    rm = RewardModel.from_causal_lm(str(lm))
    rm.save_pretrained(tmp_path / "rm", tokenizer=load_tokenizer(lm))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {w}"}) + "\n" for w in WORDS))
    sets = [f"ppo.policy={lm}", f"ppo.reward_model={tmp_path / 'rm'}",
            f"ppo.prompts_file={prompts}", "ppo.iterations=3", "ppo.episodes_per_iteration=8",
            "ppo.minibatch_size=8", "ppo.micro_batch_size=2", "ppo.rollout_batch_size=4",
            "ppo.max_new_tokens=6", "ppo.max_prompt_length=24", "ppo.lr=1e-3",
            "ppo.value_lr=1e-3", "ppo.warmup_iterations=0", "ppo.save_every=1",
            "ppo.keep_checkpoints=0"]
    args = [x for s in sets for x in ("--set", s)]
    _run([sys.executable, "-m", "rlhf.cli", "ppo", *args, "--out", str(tmp_path / "one")])
    fsdp = [*args, "--set", "ppo.dist=fsdp"]
    _torchrun(29541, "ppo", *fsdp, "--out", str(tmp_path / "two"))
    one = load_file(str(tmp_path / "one/final/model.safetensors"))
    two = load_file(str(tmp_path / "two/final/model.safetensors"))
    _close(one, two)
    _close(load_file(str(tmp_path / "one/final_ema/model.safetensors")),
           load_file(str(tmp_path / "two/final_ema/model.safetensors")))
    assert any(not torch.equal(one[k], v) for k, v in
               load_file(str(lm / "model.safetensors")).items())       # training did something
    assert any((tmp_path / "two/checkpoints/iter-000001/dcp").iterdir())
    script = tmp_path / "halt.py"
    script.write_text("import sys\nfrom rlhf.config import load_config\n"
                      "from rlhf.train.ppo import ppo\n"
                      "ppo(load_config(None, sys.argv[2:]), sys.argv[1], halt_after=1)\n")
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", "29543", str(script), str(tmp_path / "part"), *sets, "ppo.dist=fsdp"])
    assert not (tmp_path / "part/final").exists()
    _torchrun(29545, "ppo", *fsdp, "--out", str(tmp_path / "part"), "--resume")
    _close(two, load_file(str(tmp_path / "part/final/model.safetensors")), atol=1e-6)

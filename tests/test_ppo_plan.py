"""The PPO batch plan (validated before launch, printed) and the `rlhf ppo` command line."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from rlhf.config import PPOConfig
from rlhf.errors import UserError
from rlhf.train.ppo.plan import PPOPlan


def test_paper_defaults_plan():
    """App. C.4: 512 episodes, minibatch 64, 1 epoch -> 8 steps/iteration, 500 it., 4,000 steps."""
    plan = PPOPlan.from_config(PPOConfig()).validate(context_length=2048)
    assert plan.steps_per_iteration == 8 and plan.total_steps == 4000
    assert plan.total_episodes == 256_000 and plan.micro_batches_per_minibatch == 8
    text = plan.describe()
    for piece in ("512 prompts -> 512 completions", "32,768 generated tokens",
                  "8 minibatches of 64 episodes = 8 optimizer steps per iteration",
                  "8 micro-batches of 8", "500 iterations = 256,000 episodes, 4,000 optimizer",
                  "ptx          : off"):
        assert piece in text, piece


def test_ptx_and_world_size_in_the_plan():
    plan = PPOPlan.from_config(PPOConfig(gamma_ptx=27.8), world_size=4).validate()
    assert plan.minibatch_per_rank == 16 and plan.episodes_per_rank == 128
    assert plan.ptx_blocks_per_minibatch == 512 and plan.ptx_micro_batches == 16
    assert "512 blocks (65,536 tokens) per minibatch" in plan.describe()


@pytest.mark.parametrize("over, ws, expect", [
    ({"episodes_per_iteration": 500}, 1,
     r"episodes_per_iteration \(500\) is not divisible by ppo.minibatch_size \(64\).*448 or 512"
     r".*50 or 100"),
    ({"micro_batch_size": 6}, 1, r"per-process minibatch .* = 64\) is not divisible by "
                                 r"ppo.micro_batch_size \(6\).*4 or 8"),
    ({"minibatch_size": 64}, 3, r"minibatch_size \(64\) is not divisible by the number of "
                                r"processes \(3\)"),
    ({"micro_batch_size": 16}, 8, r"64 / 8 processes = 8\) is not divisible by "
                                  r"ppo.micro_batch_size \(16\)"),
    ({"minibatch_size": 1024}, 1, r"larger than ppo.episodes_per_iteration"),
    ({"ppo_epochs": 0}, 1, r"ppo.ppo_epochs must be at least 1"),
    ({"gamma_ptx": 1.0, "ptx_ratio": 0}, 1, r"ptx_ratio must be at least 1"),
    ({"iterations": 5, "critic_warmup_iterations": 5}, 1,
     r"critic_warmup_iterations \(5\) must be at least 0 and less than ppo.iterations \(5\)"),
    ({"critic_warmup_iterations": 2, "value_model": "shared"}, 1,
     r"critic_warmup_iterations needs ppo.value_model: separate"),
])
def test_inconsistent_plans_say_what_to_change(over, ws, expect):
    with pytest.raises(UserError, match=expect):
        PPOPlan.from_config(PPOConfig(**over), ws).validate()


def test_critic_warmup_in_the_plan():
    plan = PPOPlan.from_config(PPOConfig(iterations=30, critic_warmup_iterations=5)).validate()
    assert plan.policy_iterations == 25
    assert [plan.policy_frozen(i) for i in (0, 4, 5, 29)] == [True, True, False, False]
    assert "the first 5 iterations train only the value model; the policy trains in the " \
        "other 25" in plan.describe()


def test_context_length_is_checked():
    with pytest.raises(UserError, match=r"192\) \+ ppo.max_new_tokens \(64\) = 256 exceeds"):
        PPOPlan.from_config(PPOConfig()).validate(context_length=128)


def test_every_problem_is_reported_at_once():
    errs = PPOPlan.from_config(PPOConfig(episodes_per_iteration=100, micro_batch_size=7)).problems()
    assert len(errs) == 2


def _app():
    from rlhf.cli import app
    return app


def test_cli_plan_prints_the_plan(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"ppo": {"episodes_per_iteration": 128}}))
    r = CliRunner().invoke(_app(), ["ppo", "plan", "--config", str(cfg), "-n", "2"])
    assert r.exit_code == 0, r.output
    assert "PPO batch plan (2 processes)" in r.output and "2 minibatches of 64" in r.output
    r = CliRunner().invoke(_app(), ["ppo", "plan", "--set", "ppo.micro_batch_size=7"])
    assert r.exit_code != 0 and "micro_batch_size" in str(r.exception)


def test_cli_trains_with_config_and_out(tmp_path):
    """`rlhf ppo --config x.yaml --out run` with a reward function given by file path."""
    from helpers import WORDS, tiny_lm
    lm = tiny_lm(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Say {w}" for w in WORDS))
    judge = tmp_path / "judge.py"
    judge.write_text("def score(prompts, responses):\n"
                     "    return [len(r) / 10 for r in responses]\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"ppo": {
        "policy": str(lm), "reward_fn": f"{judge}:score", "prompts_file": str(prompts),
        "iterations": 1, "episodes_per_iteration": 4, "minibatch_size": 4, "micro_batch_size": 2,
        "rollout_batch_size": 4, "max_new_tokens": 4, "max_prompt_length": 32}}))
    r = CliRunner().invoke(_app(), ["ppo", "--config", str(cfg), "--out", str(tmp_path / "run"),
                                    "--set", "ppo.lr=1e-4"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "run folder:" in r.output and "final_score" in r.output
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["iterations"] == 1 and (tmp_path / "run/final/config.json").exists()
    assert yaml.safe_load((tmp_path / "run/config.yaml").read_text())["ppo"]["lr"] == 1e-4

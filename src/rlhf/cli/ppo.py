"""`rlhf ppo` (train the policy with PPO / PPO-ptx) and `rlhf ppo plan` (show the batch and
memory plans)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import (DeviceMemoryOpt, OutOpt, ResumeOpt, SetOpt, WorldSizeOpt, load_run_config,
                      print_summary)

app = typer.Typer(help="Step 3: PPO / PPO-ptx against a reward model or a reward function.",
                  invoke_without_command=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (uses the `ppo` section).")


@app.callback()
def ppo(ctx: typer.Context, config: Optional[Path] = ConfigOpt,
        set_: Optional[list[str]] = SetOpt,
        out: Optional[Path] = OutOpt, resume: bool = ResumeOpt):
    """Train the policy (`rlhf ppo --config x.yaml --out run`). The reward is `ppo.reward_model`
    (an RM folder) or `ppo.reward_fn` ('package.module:function' or 'file.py:function', called
    with lists of prompts and responses). Writes OUT/final, OUT/final_ema, OUT/value."""
    if ctx.invoked_subcommand is not None:
        return
    from rlhf.train.ppo import ppo as run

    cfg, out_dir = load_run_config(config, set_, out)
    summary = run(cfg, out_dir, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:      # under torchrun, one process reports
        return
    print_summary(summary, out_dir, ("model", "model_ema", "value_model", "iterations",
                                     "episodes", "first_score", "final_score", "final_kl"),
                  short_floats=True)


@app.command("plan")
def plan(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt,
         world_size: int = WorldSizeOpt, device_memory: Optional[str] = DeviceMemoryOpt):
    """Validate and print the batch plan (prompts, completions, tokens, optimizer steps), then
    the memory per device of the policy, reference, reward and value models and the rollout
    (read from the models' config.json; nothing is loaded). With --device-memory, refuse a plan
    that does not fit, naming the setting to change."""
    from rlhf.train.memory_plan import memory_report, model_context_length
    from rlhf.train.ppo.plan import PPOPlan

    cfg, _ = load_run_config(config, set_, None, need_out=False)
    batch = PPOPlan.from_config(cfg.ppo, world_size)
    if not cfg.ppo.policy and device_memory is None:
        typer.echo(batch.validate().describe())
        typer.echo("memory plan: set ppo.policy (a model folder) to see it")
        return
    typer.echo(batch.validate(model_context_length(cfg.ppo.policy, "ppo.policy")).describe())
    typer.echo(memory_report(cfg, "ppo", world_size, device_memory))

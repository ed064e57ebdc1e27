"""`rlhf ppo` (train the policy with PPO / PPO-ptx) and `rlhf ppo plan` (show the batch plan)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import OutOpt, ResumeOpt, SetOpt, load_run_config, print_summary

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
         world_size: int = typer.Option(1, "--world-size", "-n",
                                        help="Number of processes the run will use.")):
    """Validate and print the batch plan (prompts, completions, tokens, optimizer steps)."""
    from rlhf.train.ppo.plan import PPOPlan

    cfg, _ = load_run_config(config, set_, None, need_out=False)
    typer.echo(PPOPlan.from_config(cfg.ppo, world_size).validate().describe())

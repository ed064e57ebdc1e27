"""`rlhf ppo` (train the policy with PPO / PPO-ptx) and `rlhf ppo plan` (show the batch plan)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from rlhf.errors import UserError

app = typer.Typer(help="Step 3: PPO / PPO-ptx against a reward model or a reward function.",
                  invoke_without_command=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (uses the `ppo` section).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a field: --set ppo.lr=1e-5 (repeat).")


def _cfg(config: Optional[Path], overrides: Optional[list[str]], out: Optional[Path],
         need_out: bool = True):
    from rlhf.config import load_config
    cfg = load_config(config, overrides or [])
    out_dir = out or (Path(cfg.out) if cfg.out else None)
    if out_dir is None and need_out:
        raise UserError("say where the run goes: --out DIR (or `out:` in the config)")
    return cfg, out_dir


@app.callback()
def ppo(ctx: typer.Context, config: Optional[Path] = ConfigOpt,
        set_: Optional[list[str]] = SetOpt,
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder."),
        resume: bool = typer.Option(False, "--resume",
                                    help="Continue from the newest checkpoint in --out.")):
    """Train the policy (`rlhf ppo --config x.yaml --out run`). The reward is `ppo.reward_model`
    (an RM folder) or `ppo.reward_fn` ('package.module:function' or 'file.py:function', called
    with lists of prompts and responses). Writes OUT/final, OUT/final_ema, OUT/value."""
    if ctx.invoked_subcommand is not None:
        return
    from rlhf.train.ppo import ppo as run
    cfg, out_dir = _cfg(config, set_, out)
    summary = run(cfg, out_dir, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:      # under torchrun, one process reports
        return
    typer.echo(f"run folder: {out_dir}")
    for k in ("model", "model_ema", "value_model", "iterations", "episodes", "first_score",
              "final_score", "final_kl"):
        if summary.get(k) is not None:
            v = summary[k]
            typer.echo(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")


@app.command("plan")
def plan(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt,
         world_size: int = typer.Option(1, "--world-size", "-n",
                                        help="Number of processes the run will use.")):
    """Validate and print the batch plan (prompts, completions, tokens, optimizer steps)."""
    from rlhf.train.ppo_plan import PPOPlan
    cfg, _ = _cfg(config, set_, None, need_out=False)
    typer.echo(PPOPlan.from_config(cfg.ppo, world_size).validate().describe())

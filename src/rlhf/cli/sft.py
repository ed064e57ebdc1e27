"""`rlhf sft` (train on demonstrations), `rlhf sft plan` (the memory per device) and
`rlhf sft select` (pick an epoch by RM score)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import (ConfigOpt, DeviceMemoryOpt, OutOpt, ResumeOpt, SetOpt, WorldSizeOpt,
                      load_run_config, print_summary)
from rlhf.config import DEFAULT_TEMPLATE

app = typer.Typer(help="Step 1: supervised fine-tuning on demonstrations.",
                  invoke_without_command=True)


@app.callback()
def sft(ctx: typer.Context, config: Optional[Path] = ConfigOpt,
        set_: Optional[list[str]] = SetOpt, out: Optional[Path] = OutOpt,
        resume: bool = ResumeOpt):
    """Train SFT (`rlhf sft --config ...`), or pick an epoch (`rlhf sft select ...`)."""
    if ctx.invoked_subcommand is not None:
        return
    from rlhf.train.sft import sft as run

    cfg, out_dir = load_run_config(config, set_, out)
    print_summary(run(cfg, out_dir, resume=resume), out_dir,
                  ("model", "valid_ppl", "final_train_loss", "steps"))


@app.command("plan")
def plan(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt,
         world_size: int = WorldSizeOpt, device_memory: Optional[str] = DeviceMemoryOpt):
    """Print the memory per device of one training step of `sft.model` (read from its
    config.json; nothing is loaded). With --device-memory, refuse a plan that does not fit,
    naming the setting to change."""
    from rlhf.train.memory_plan import memory_report

    cfg, _ = load_run_config(config, set_, None, need_out=False)
    typer.echo(memory_report(cfg, "sft", world_size, device_memory))


@app.command("select")
def select(
        checkpoints: list[Path] = typer.Argument(..., help="SFT checkpoints, e.g. "
                                                 "run/checkpoints/epoch-*"),
        prompts: Path = typer.Option(..., "--prompts", "-p", help="Validation prompts JSONL."),
        reward_model: Path = typer.Option(..., "--reward-model", "--rm", help="RM folder."),
        out: Path = typer.Option(Path("sft_selection.json"), "--out", "-o",
                                 help="Selection JSON."),
        n_prompts: Optional[int] = typer.Option(None, "--n-prompts"),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
        temperature: float = typer.Option(1.0, "--temperature"),
        template: str = typer.Option(DEFAULT_TEMPLATE, "--template"),
        seed: int = typer.Option(0, "--seed")):
    """Pick the SFT epoch whose samples get the highest mean RM score (paper §3.5).

    One sample per validation prompt per checkpoint, scored by the reward model; the selection
    is written as JSON.
    """
    from rlhf.train.reward import select_sft_checkpoint

    sel = select_sft_checkpoint(checkpoints, prompts, reward_model, out, n_prompts=n_prompts,
                                max_new_tokens=max_new_tokens, temperature=temperature,
                                template=template, seed=seed)
    for c in sel["candidates"]:
        mark = "*" if c["checkpoint"] == sel["selected"] else " "
        typer.echo(f"{mark} {c['mean_score']:+.4f}  {c['checkpoint']}")
    typer.echo(f"selected: {sel['selected']} -> {out}")

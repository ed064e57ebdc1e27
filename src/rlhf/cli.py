"""The `rlhf` command line: one Typer app; every command has --help.

Each training command takes `--config FILE.yaml` (all sections, see configs/) and any number of
`--set section.key=value` overrides, and writes one run folder (`--out`).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from rlhf.errors import UserError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(help="InstructGPT end to end: pretrain, SFT, reward model, PPO, evaluation, "
                       "labeling app and the Instruction World.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (sections: pretrain, sft, "
                         "rm, ppo, eval, seed).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a field: --set sft.lr=1e-5 (repeat).")
ResumeOpt = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out.")


def _cfg(config: Optional[Path], overrides: Optional[list[str]], out: Optional[Path]):
    from rlhf.config import load_config
    cfg = load_config(config, overrides or [])
    out_dir = out or (Path(cfg.out) if cfg.out else None)
    if out_dir is None:
        raise UserError("say where the run goes: --out DIR (or `out:` in the config)")
    return cfg, out_dir


def _print_summary(summary: dict, out_dir: Path) -> None:
    typer.echo(f"run folder: {out_dir}")
    for k in ("model", "valid_ppl", "final_train_loss", "steps"):
        if k in summary:
            typer.echo(f"  {k}: {summary[k]}")


@app.command()
def pretrain(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt,
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder."),
             resume: bool = ResumeOpt):
    """Causal-LM pretraining on plain text (packed blocks); reports held-out perplexity."""
    from rlhf.train.pretrain import pretrain as run
    cfg, out_dir = _cfg(config, set_, out)
    _print_summary(run(cfg, out_dir, resume=resume), out_dir)


sft_app = typer.Typer(help="Step 1: supervised fine-tuning on demonstrations.",
                      invoke_without_command=True)
app.add_typer(sft_app, name="sft")


@sft_app.callback()
def sft(ctx: typer.Context, config: Optional[Path] = ConfigOpt,
        set_: Optional[list[str]] = SetOpt,
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder."),
        resume: bool = ResumeOpt):
    """Train SFT (`rlhf sft --config ...`), or pick an epoch (`rlhf sft select ...`)."""
    if ctx.invoked_subcommand is not None:
        return
    from rlhf.train.sft import sft as run
    cfg, out_dir = _cfg(config, set_, out)
    _print_summary(run(cfg, out_dir, resume=resume), out_dir)


def _mount(module: str, name: str, attr: str = "app") -> None:
    """Mount a command group that lives in its own module (skipped if not installed)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("rlhf"):
            return
        raise
    app.add_typer(getattr(mod, attr), name=name)


def _mount_sft_select() -> None:
    try:
        from rlhf.commands.rm import sft_select_command
    except ImportError:
        return
    sft_app.command("select")(sft_select_command)


_mount("rlhf.commands.rm", "rm")
_mount_sft_select()
_mount("rlhf.commands.ppo", "ppo", "app")
_mount("rlhf.commands.eval", "eval")
_mount("rlhf.world.cli", "world")
_mount("rlhf.labeling.cli", "label")
_mount("rlhf.commands.pipeline", "pipeline")


def main() -> None:
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: the last complete checkpoint is intact; rerun with --resume",
                   err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

"""The `rlhf` command line: one Typer app; every command has --help.

Each training command takes `--config FILE.yaml` (all sections, see configs/) and any number of
`--set section.key=value` overrides, and writes one run folder (`--out`). One module per command
group; `load_run_config` is the one config loader they share. Commands import the recipes they
run inside the command, so that `rlhf --help` does not load torch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from rlhf.config import Config, load_config
from rlhf.errors import UserError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (sections: seed, pretrain, "
                         "sft, rm, ppo, eval, pipeline).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a field: --set sft.lr=1e-5 (repeat).")
OutOpt = typer.Option(None, "--out", "-o", help="Run folder.")
ResumeOpt = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out.")
WorldSizeOpt = typer.Option(1, "--world-size", "-n", help="Number of processes the run will use.")
DeviceMemoryOpt = typer.Option(None, "--device-memory", help="Memory of one device (e.g. 80GB, "
                               "24GiB): refuse a plan that does not fit, naming the setting to "
                               "change.")


def load_run_config(config: Optional[Path], overrides: Optional[list[str]],
                    out: Optional[Path], need_out: bool = True) -> tuple[Config, Optional[Path]]:
    """The validated config (file + `--set` overrides) and the run folder: `--out`, else the
    config's `out:`. Refuses a missing run folder when the command writes one."""
    cfg = load_config(config, overrides or [])
    out_dir = out or (Path(cfg.out) if cfg.out else None)
    if out_dir is None and need_out:
        raise UserError("say where the run goes: --out DIR (or `out:` in the config)")
    return cfg, out_dir


def print_summary(summary: dict, out_dir: Path, keys: tuple[str, ...],
                  short_floats: bool = False) -> None:
    """The run folder and the summary's `keys` that are present, one per line."""
    typer.echo(f"run folder: {out_dir}")
    for k in keys:
        if summary.get(k) is not None:
            v = summary[k]
            typer.echo(f"  {k}: {v:.4g}" if short_floats and isinstance(v, float)
                       else f"  {k}: {v}")


app = typer.Typer(help="InstructGPT end to end: pretrain, SFT, reward model, PPO, evaluation, "
                       "labeling app and the Instruction World.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

# the command groups (imported after the shared options above, which they use)
from rlhf.cli import eval as eval_cli  # noqa: E402
from rlhf.cli import pipeline as pipeline_cli  # noqa: E402
from rlhf.cli import ppo as ppo_cli  # noqa: E402
from rlhf.cli import pretrain as pretrain_cli  # noqa: E402
from rlhf.cli import rm as rm_cli  # noqa: E402
from rlhf.cli import sft as sft_cli  # noqa: E402
from rlhf.labeling import cli as label_cli  # noqa: E402
from rlhf.world import cli as world_cli  # noqa: E402

app.command("pretrain")(pretrain_cli.pretrain)
app.add_typer(sft_cli.app, name="sft")
app.add_typer(rm_cli.app, name="rm")
app.add_typer(ppo_cli.app, name="ppo")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(world_cli.app, name="world")
app.add_typer(label_cli.app, name="label")
app.add_typer(pipeline_cli.app, name="pipeline")


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

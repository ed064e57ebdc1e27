"""`rlhf pipeline`: the whole InstructGPT loop on the Instruction World, evaluated."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import SetOpt, load_run_config

app = typer.Typer(help="Run the whole loop: world -> pretrain -> SFT -> (comparisons -> RM -> "
                       "PPO/PPO-ptx) x rounds -> evaluation -> report.",
                  invoke_without_command=True)


@app.callback()
def pipeline(config: Path = typer.Option(..., "--config", "-c", help="YAML config, e.g. "
                                         "configs/demo.yaml or configs/quick.yaml."),
             set_: Optional[list[str]] = SetOpt,
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder.")):
    """Each stage is skipped when its output is complete: rerun to resume."""
    from rlhf.pipeline import run_pipeline

    cfg, out_dir = load_run_config(config, set_, out)
    summary = run_pipeline(cfg, out_dir)  # the evaluation prints its own text summary
    typer.echo(f"report: {summary['eval'].get('report_html', Path(out_dir) / 'eval')}")
    typer.echo(f"all numbers: {summary['eval'].get('report_json', '')}")

"""`rlhf rm train`, `rlhf rm plan` (the memory per device) and `rlhf rm score`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import (ConfigOpt, DeviceMemoryOpt, OutOpt, ResumeOpt, SetOpt, WorldSizeOpt,
                      load_run_config, print_summary)
from rlhf.config import DEFAULT_TEMPLATE

app = typer.Typer(help="Step 2: the reward model from K-way rankings.", no_args_is_help=True)


@app.command("train")
def train(config: Optional[Path] = typer.Option(None, "--config", "-c",
                                                help="YAML config (uses the `rm` section)."),
          set_: Optional[list[str]] = typer.Option(None, "--set", "-s",
                                                   help="Override a field: --set rm.lr=1e-5"),
          out: Optional[Path] = OutOpt, resume: bool = ResumeOpt):
    """Train a reward model on K-way rankings; normalise on demonstrations; model in OUT/final.

    All comparisons of a prompt form one batch element (K forward passes), ties are dropped,
    1 epoch by default; held-out accuracy and log loss are split by training/held-out labelers.
    """
    from rlhf.train.reward import train_rm

    cfg, out_dir = load_run_config(config, set_, out)
    summary = train_rm(cfg, out_dir, resume=resume)
    print_summary(summary, out_dir, ("model", "steps", "final_train_loss", "final_train_accuracy"))
    for k, v in (summary.get("valid") or {}).items():
        typer.echo(f"  valid/{k}: {v}")
    if "normalization" in summary:
        typer.echo(f"  reward_bias: {summary['normalization']['reward_bias']:.6g}")


@app.command("plan")
def plan(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt,
         world_size: int = WorldSizeOpt, device_memory: Optional[str] = DeviceMemoryOpt):
    """Print the memory per device of one training step of the reward model from `rm.model`
    (read from its config.json; nothing is loaded). With --device-memory, refuse a plan that
    does not fit, naming the setting to change."""
    from rlhf.train.memory_plan import memory_report

    cfg, _ = load_run_config(config, set_, None, need_out=False)
    typer.echo(memory_report(cfg, "rm", world_size, device_memory))


@app.command("score")
def score(model: Path = typer.Option(..., "--model", "-m", help="Reward model folder."),
          input: Path = typer.Option(..., "--input", "-i",
                                     help="JSONL of {prompt, response} (or chat messages)."),
          output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                help="JSONL out (default: stdout)."),
          template: str = typer.Option(DEFAULT_TEMPLATE, "--template"),
          max_length: Optional[int] = typer.Option(None, "--max-length"),
          batch_size: int = typer.Option(32, "--batch-size"),
          raw: bool = typer.Option(False, "--raw", help="Leave out the normalisation bias.")):
    """Score (prompt, response) pairs; writes each record with an added `score`."""
    import json

    from rlhf.data.rankings import load_prompt_responses
    from rlhf.io import read_jsonl, write_jsonl_atomic
    from rlhf.models import load_tokenizer
    from rlhf.models.reward import RewardModel, score_texts

    pairs = load_prompt_responses(input)
    rm = RewardModel.from_pretrained(model)
    tok = load_tokenizer(model)
    scores = score_texts(rm, tok, [p for p, _ in pairs], [r for _, r in pairs], batch_size,
                         template, max_length, raw=raw)
    rows = [{**obj, "score": s} for (_, obj), s in zip(read_jsonl(input), scores)]
    if output is None:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
    else:
        write_jsonl_atomic(output, rows)
        typer.echo(f"{len(rows)} scores -> {output} (mean {sum(scores) / len(scores):.4f})")

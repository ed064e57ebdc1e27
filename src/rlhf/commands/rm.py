"""`rlhf rm train`, `rlhf rm score` and `rlhf sft select` (mounted by rlhf.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlhf.errors import UserError

app = typer.Typer(help="Step 2: the reward model from K-way rankings.", no_args_is_help=True)


@app.command("train")
def train(config: Optional[Path] = typer.Option(None, "--config", "-c",
                                                help="YAML config (uses the `rm` section)."),
          set_: Optional[list[str]] = typer.Option(None, "--set", "-s",
                                                   help="Override a field: --set rm.lr=1e-5"),
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder."),
          resume: bool = typer.Option(False, "--resume",
                                      help="Continue from the newest checkpoint in --out.")):
    """Train a reward model on K-way rankings; normalise on demonstrations; model in OUT/final.

    All comparisons of a prompt form one batch element (K forward passes), ties are dropped,
    1 epoch by default; held-out accuracy and log loss are split by training/held-out labelers.
    """
    from rlhf.config import load_config
    from rlhf.train.reward import train_rm

    cfg = load_config(config, set_ or [])
    out_dir = out or (Path(cfg.out) if cfg.out else None)
    if out_dir is None:
        raise UserError("say where the run goes: --out DIR (or `out:` in the config)")
    summary = train_rm(cfg, out_dir, resume=resume)
    typer.echo(f"run folder: {out_dir}")
    for k in ("model", "steps", "final_train_loss", "final_train_accuracy"):
        if k in summary:
            typer.echo(f"  {k}: {summary[k]}")
    for k, v in (summary.get("valid") or {}).items():
        typer.echo(f"  valid/{k}: {v}")
    if "normalization" in summary:
        typer.echo(f"  reward_bias: {summary['normalization']['reward_bias']:.6g}")


@app.command("score")
def score(model: Path = typer.Option(..., "--model", "-m", help="Reward model folder."),
          input: Path = typer.Option(..., "--input", "-i",
                                     help="JSONL of {prompt, response} (or chat messages)."),
          output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                help="JSONL out (default: stdout)."),
          template: str = typer.Option("User: {prompt}\nAssistant:", "--template"),
          max_length: Optional[int] = typer.Option(None, "--max-length"),
          batch_size: int = typer.Option(32, "--batch-size"),
          raw: bool = typer.Option(False, "--raw", help="Leave out the normalisation bias.")):
    """Score (prompt, response) pairs; writes each record with an added `score`."""
    import json

    from rlhf.data.rankings import load_prompt_responses
    from rlhf.io import read_jsonl, write_jsonl_atomic
    from rlhf.models import load_tokenizer
    from rlhf.models.reward import RewardModel
    from rlhf.train.reward import score_texts

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


def sft_select_command(
        checkpoints: list[Path] = typer.Argument(..., help="SFT checkpoints, e.g. "
                                                 "run/checkpoints/epoch-*"),
        prompts: Path = typer.Option(..., "--prompts", "-p", help="Validation prompts JSONL."),
        reward_model: Path = typer.Option(..., "--reward-model", "--rm", help="RM folder."),
        out: Path = typer.Option(Path("sft_selection.json"), "--out", "-o",
                                 help="Selection JSON."),
        n_prompts: Optional[int] = typer.Option(None, "--n-prompts"),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
        temperature: float = typer.Option(1.0, "--temperature"),
        template: str = typer.Option("User: {prompt}\nAssistant:", "--template"),
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

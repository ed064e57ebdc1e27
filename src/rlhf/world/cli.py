"""`rlhf world ...`: build a world to disk and print its statistics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from rlhf.world.prompts import CATEGORIES, SPLITS
from rlhf.world.stats import world_stats
from rlhf.world.world import WorldSizes, build_world

app = typer.Typer(help="The Instruction World: a synthetic world with prompts, a gold judge and "
                       "simulated labelers.", no_args_is_help=True)
_D = WorldSizes()


@app.command()
def build(
    out: Path = typer.Option(..., "--out", help="Directory to write (replaced atomically)."),
    seed: int = typer.Option(0, help="Seed: the same seed writes byte-identical files."),
    pretrain_tokens: int = typer.Option(_D.n_pretrain_tokens, help="Pretraining words."),
    valid_tokens: int = typer.Option(_D.n_valid_tokens, help="Held-out prose words."),
    sft: int = typer.Option(_D.n_sft, help="SFT prompts (each gets one demonstration)."),
    sft_valid: int = typer.Option(_D.n_sft_valid, help="SFT validation prompts."),
    rm: int = typer.Option(_D.n_rm, help="Reward-model prompts."),
    ppo: int = typer.Option(_D.n_ppo, help="PPO prompts."),
    test: int = typer.Option(_D.n_test, help="Test prompts."),
    labelers: int = typer.Option(_D.n_labelers, help="Simulated labelers."),
    heldout: Optional[int] = typer.Option(None, help="How many of them are held out "
                                                      "(default: a quarter)."),
    noise: Optional[float] = typer.Option(None, help=f"Labeler noise (default {_D.noise})."),
    slip_rate: Optional[float] = typer.Option(
        None, help=f"Demonstration slip rate (default {_D.slip_rate})."),
) -> None:
    """Write corpus, prompt splits, demonstrations and few-shot prefix to --out."""
    start = time.perf_counter()
    summary = build_world(out, seed=seed, n_pretrain_tokens=pretrain_tokens,
                          n_valid_tokens=valid_tokens, n_sft=sft, n_sft_valid=sft_valid, n_rm=rm,
                          n_ppo=ppo, n_test=test, n_labelers=labelers, n_heldout=heldout,
                          noise=noise, slip_rate=slip_rate)
    prompts = ", ".join(f"{k} {v}" for k, v in summary["prompts"].items())
    typer.echo(f"Built world (seed {seed}) in {out} in {time.perf_counter() - start:.1f} s")
    typer.echo(f"  pretraining words: {summary['pretrain_tokens']['train']:,} train, "
               f"{summary['pretrain_tokens']['valid']:,} valid")
    typer.echo(f"  prompts: {prompts}")
    labelers_ = summary["labelers"]
    typer.echo(f"  demonstrations: {sum(summary['demonstrations'].values())}; labelers: "
               f"{len(labelers_['train'])} train, {len(labelers_['heldout'])} held out")


@app.command()
def stats(
    directory: Path = typer.Argument(..., help="A directory written by `rlhf world build`."),
    agreement_prompts: int = typer.Option(200, help="Prompts used to measure labeler agreement."),
) -> None:
    """Print the category mix, token counts, demonstration quality and labeler agreement."""
    s = world_stats(directory, n_agreement_prompts=agreement_prompts)
    typer.echo(f"World {directory} (seed {s['seed']}); tokens are whitespace-separated words\n")
    header = f"{'category':<16}" + "".join(f"{sp:>10}" for sp in SPLITS)
    typer.echo(header)
    for cat in CATEGORIES:
        typer.echo(f"{cat:<16}" + "".join(f"{s['categories'][sp][cat]:>10}" for sp in SPLITS))
    totals = (sum(s["categories"][sp].values()) for sp in SPLITS)
    typer.echo(f"{'total':<16}" + "".join(f"{t:>10}" for t in totals))
    typer.echo(f"{'words/prompt':<16}" + "".join(f"{s['prompt_words'][sp]:>10.1f}"
                                                 for sp in SPLITS))
    typer.echo("")
    for name, t in s["pretrain"].items():
        typer.echo(f"pretrain/{name}.txt: {t['tokens']:,} words, {t['documents']:,} documents, "
                   f"{t['vocabulary']} distinct words")
    for split, d in s["demonstrations"].items():
        typer.echo(f"demonstrations/{split}.jsonl: {d['count']} demos, {d['mean_words']:.1f} words "
                   f"on average, mean gold score {d['mean_gold_score']:.3f}, "
                   f"{100 * d['below_0.95']:.1f}% below 0.95")
    a = s["agreement"]
    typer.echo(f"\nlabeler agreement on {a['prompts']} prompts x {a['samples_per_prompt']} "
               f"policy-like samples (ties left out; paper: 72.6% train, 77.3% held-out):")
    for name in ("train", "heldout"):
        if name in a:
            m = a[name]
            typer.echo(f"  {name:<8} {100 * m['rate']:.1f}%  (ties {100 * m['tie_rate']:.1f}%, "
                       f"{m['judgements']:,} paired judgements)")

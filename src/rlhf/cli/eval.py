"""`rlhf eval ...`: TruthfulQA, perplexity, model comparison by held-out labelers, the
reward-vs-√KL curve and the HTML report (mounted by rlhf.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rlhf.errors import UserError

app = typer.Typer(help="Evaluation: win rate against SFT by held-out labelers, Likert and "
                       "metadata, alignment tax, TruthfulQA, over-optimisation curve, report.",
                  no_args_is_help=True)


def _named(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise UserError(f"{flag} takes NAME=PATH, got '{item}'", field=flag)
        name, path = item.split("=", 1)
        if not name.strip() or not path.strip():
            raise UserError(f"{flag} takes NAME=PATH, got '{item}'", field=flag)
        out.append((name.strip(), path.strip()))
    return out


def _write_or_print(obj: dict, out: Optional[Path]) -> None:
    from rlhf.eval.report import json_safe
    from rlhf.io import write_json_atomic
    if out is None:
        typer.echo(json.dumps(json_safe(obj), indent=2))
    else:
        write_json_atomic(out, json_safe(obj))
        typer.echo(f"-> {out}")


@app.command("truthfulqa")
def truthfulqa(model: Path = typer.Option(..., "--model", "-m", help="HF causal LM folder."),
               data: Path = typer.Option(..., "--data", "-d", help="mc_task.json, TruthfulQA.csv "
                                         "or a folder holding one."),
               style: str = typer.Option("qa", "--style", help="qa | instruction_qa | null | "
                                         "chat"),
               limit: Optional[int] = typer.Option(None, "--limit", help="First N questions."),
               batch_size: int = typer.Option(16, "--batch-size"),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON out.")):
    """TruthfulQA MC1 / MC2 by log-likelihood (InstructGPT App. D)."""
    from rlhf.eval.truthfulqa import evaluate_truthfulqa
    res = evaluate_truthfulqa(model, data, style, limit=limit, batch_size=batch_size)
    typer.echo(f"MC1 {res['mc1']:.4f}  MC2 {res['mc2']:.4f}  (n={res['n']}, style={style}, "
               f"truncated prompts: {res['truncated']})")
    if out is not None:
        _write_or_print(res, out)


@app.command("perplexity")
def perplexity(model: Path = typer.Option(..., "--model", "-m"),
               data: list[Path] = typer.Option(..., "--data", "-d", help="Text files (repeat)."),
               block_size: Optional[int] = typer.Option(None, "--block-size"),
               max_tokens: Optional[int] = typer.Option(None, "--max-tokens")):
    """Perplexity on held-out pretraining text (the alignment-tax metric)."""
    from rlhf.eval.samples import model_perplexity
    ppl = model_perplexity(model, [str(d) for d in data], block_size=block_size,
                           max_tokens=max_tokens)
    typer.echo(f"perplexity {ppl:.4f}")


@app.command("compare")
def compare(model: list[str] = typer.Option(..., "--model", "-m",
                                            help="NAME=PATH of a model to evaluate (repeat); "
                                                 "one must be the --reference."),
            prompted: list[str] = typer.Option(None, "--prompted",
                                               help="NAME=PATH of a base model prompted with "
                                                    "few-shot examples (repeat)."),
            reference: str = typer.Option("sft", "--reference", "-r"),
            world: Path = typer.Option(..., "--world", "-w",
                                       help="Instruction World folder (labelers and judge)."),
            prompts: Optional[Path] = typer.Option(None, "--prompts", "-p",
                                                   help="Prompt records JSONL (default: the "
                                                        "world's --split)."),
            split: str = typer.Option("test", "--split"),
            n_prompts: Optional[int] = typer.Option(None, "--n-prompts"),
            fewshot: Optional[Path] = typer.Option(None, "--fewshot",
                                                   help="Few-shot prefix text for --prompted "
                                                        "(default: WORLD/fewshot.txt)."),
            n_labelers: int = typer.Option(40, "--n-labelers"),
            ppl_data: list[Path] = typer.Option(None, "--ppl-data",
                                                help="Held-out pretraining text (repeat)."),
            ppl_max_tokens: Optional[int] = typer.Option(None, "--ppl-max-tokens"),
            reward_model: Optional[Path] = typer.Option(None, "--reward-model"),
            tqa: Optional[Path] = typer.Option(None, "--truthfulqa",
                                               help="TruthfulQA file for MC1/MC2."),
            tqa_limit: Optional[int] = typer.Option(None, "--truthfulqa-limit"),
            max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
            temperature: float = typer.Option(0.0, "--temperature"),
            seed: int = typer.Option(0, "--seed"),
            out: Path = typer.Option(..., "--out", "-o", help="Report folder.")):
    """Win rate against the reference (95% CI, length-controlled), Likert and metadata by the
    world's held-out labelers, gold scores, perplexity; writes report.html/json + PNGs."""
    from rlhf.eval.harness import ModelSpec, evaluate_models, world_closed_domain
    from rlhf.eval.report import summary_text, write_report
    from rlhf.io import read_jsonl
    from rlhf.world import LabelerPool, World

    w = World.load(world)
    pool = LabelerPool(w, n=n_labelers, seed=seed)
    recs = [obj for _, obj in read_jsonl(prompts)] if prompts else list(w.prompts(split))
    recs = recs[:n_prompts] if n_prompts else recs
    specs = [ModelSpec(n, p, kind=n) for n, p in _named(model, "--model")]
    pr = _named(prompted, "--prompted")
    if pr:
        fs = fewshot or (world / "fewshot.txt")
        if not Path(fs).exists():
            raise UserError("few-shot prefix file not found (give --fewshot)", path=str(fs))
        prefix = Path(fs).read_text(encoding="utf-8")
        specs += [ModelSpec(n, p, kind="prompted", prefix=prefix, stop=["\nUser:"])
                  for n, p in pr]
    questions = None
    if tqa is not None:
        from rlhf.eval.truthfulqa import load_truthfulqa
        questions = load_truthfulqa(tqa, tqa_limit)
    results = evaluate_models(specs, recs, labelers=pool.heldout_labelers, judge=w.judge,
                              reference=reference, max_new_tokens=max_new_tokens,
                              temperature=temperature, ppl_files=[str(x) for x in ppl_data or []],
                              ppl_max_tokens=ppl_max_tokens, reward_model=reward_model,
                              truthfulqa=questions, closed_domain=world_closed_domain(),
                              seed=seed, out_dir=out)
    write_report(results, out)
    typer.echo(summary_text(results))
    typer.echo(f"report: {out / 'report.html'}")


@app.command("kl-curve")
def kl_curve(metrics: Path = typer.Option(..., "--metrics",
                                          help="PPO run folder or its metrics.jsonl."),
             kl_key: str = typer.Option("objective/kl", "--kl-key"),
             proxy_key: str = typer.Option("objective/score", "--proxy-key"),
             gold_key: str = typer.Option("gold/score", "--gold-key"),
             out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNG + JSON.")):
    """Proxy (and gold, when logged) score against √KL with Gao et al.'s RL fit."""
    from rlhf.eval.overopt import fit_kl_curve, kl_curve_from_metrics, plot_reward_vs_kl
    pts = kl_curve_from_metrics(metrics, kl_key=kl_key, proxy_key=proxy_key, gold_key=gold_key)
    if not pts:
        raise UserError(f"no rows with '{kl_key}'", path=str(metrics))
    fits = fit_kl_curve(pts)
    out.mkdir(parents=True, exist_ok=True)
    plot_reward_vs_kl(pts, out / "kl_curve.png", fits=fits)
    _write_or_print({"kl_curve": pts, "kl_fit": fits}, out / "kl_curve.json")
    for k, f in fits.items():
        if f and f.get("alpha") is not None:
            typer.echo(f"{k}: alpha={f['alpha']:.4g} beta={f['beta']:.4g} rmse={f['rmse']:.3g}")


@app.command("report")
def report(results: Path = typer.Option(..., "--results", help="A results/report JSON."),
           out: Path = typer.Option(..., "--out", "-o", help="Report folder.")):
    """(Re)write report.html, report.json and the PNGs from a results JSON."""
    from rlhf.eval.report import summary_text, write_report
    if not results.exists():
        raise UserError("results file not found", path=str(results))
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"malformed JSON ({e.msg})", path=str(results), line=e.lineno) from None
    write_report(data, out)
    typer.echo(summary_text(data))
    typer.echo(f"report: {out / 'report.html'}")

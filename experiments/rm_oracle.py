"""Oracle RM: is the reward model limited by the labelers' noise or by what it can learn?

    .venv/bin/python experiments/rm_oracle.py --run runs/demo [--round 1]
        [--epochs 1 --epochs 3] [--set rm.lr=3e-4 ...] [--out experiments/results/rm_oracle.json]

For round r of a finished pipeline run, trains the reward model as the pipeline did (same SFT
start, same samples, the run's `rm` settings), once per (rankings, epochs):

- `labelers`: the training labelers' rankings (what the pipeline trained on);
- `gold`: the same samples ranked by the world's gold judge (no noise, no length bias, no
  misclicks; equal gold scores tie).

Every RM is scored on the round's validation samples two ways: pairwise accuracy against the
labelers' rankings (the pipeline's figure; ties in RM score count half) and against the gold
judge's order (pairs with equal gold scores left out). The gold judge's own accuracy against the
labelers' rankings is printed as the ceiling that noise leaves. If the RM trained on gold
rankings is no better than the one trained on the labelers', the noise is not what holds it back.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # for _bench
from _bench import write_result  # noqa: E402


def gold_labeler(world):
    """A labeler who perceives the gold score exactly: no noise, no length bias, no misclicks;
    equal gold scores tie. Its `rank` is the gold judge's ranking."""
    from rlhf.world import Labeler, LabelerTraits

    return Labeler(world, "gold", LabelerTraits(noise=0.0, length_bias=0.0, sloppiness=0.0,
                                                slip_rate=0.0, tie_threshold=1e-9))


def rerank(labeler, src: Path, dst: Path) -> Path:
    """`src` rankings with every ranking replaced by `labeler`'s."""
    from rlhf.io import read_jsonl, write_jsonl_atomic

    rows = [r for _, r in read_jsonl(src)]
    for r in rows:
        r["ranking"], r["labeler_id"] = labeler.rank(r["prompt"], r["responses"]), labeler.id
    write_jsonl_atomic(dst, rows)
    return dst


def pair_accuracy(rows: list[dict], scores: list[list[float]]) -> dict:
    """Share of the rankings' strict pairs that `scores` order the same way (ties count half)."""
    import torch

    from rlhf.rl.ranking import pair_stats, preference_matrix

    pref = preference_matrix([r["ranking"] for r in rows])
    padded = torch.zeros(pref.shape[:2])        # padding slots are in no pair
    for b, s in enumerate(scores):
        padded[b, :len(s)] = torch.tensor(s)
    st = pair_stats(padded, pref)
    n = int(st["n_pairs"])
    return {"accuracy": float(st["correct"]) / n if n else None, "pairs": n}


def rm_scores(rm_path: str, rows: list[dict], template: str) -> list[list[float]]:
    from rlhf.models import load_tokenizer
    from rlhf.models.reward import RewardModel
    from rlhf.models.reward import score_texts

    rm, tok = RewardModel.from_pretrained(rm_path), load_tokenizer(rm_path)
    flat = score_texts(rm, tok, [r["prompt"] for r in rows for _ in r["responses"]],
                       [x for r in rows for x in r["responses"]], 32, template)
    out, k = [], 0
    for r in rows:
        out.append(flat[k:k + len(r["responses"])])
        k += len(r["responses"])
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished pipeline run folder")
    ap.add_argument("--round", type=int, default=1)
    ap.add_argument("--epochs", action="append", type=int,
                    help="RM epochs per run (default: the run's rm.epochs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides for every run, e.g. rm.lr=3e-4")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder for the RM runs (default: RUN/rm_oracle)")
    ap.add_argument("--out", type=Path, default=Path("experiments/results/rm_oracle.json"))
    args = ap.parse_args(argv)

    from rlhf.config import load_config
    from rlhf.io import read_jsonl
    from rlhf.pipeline import with_sections
    from rlhf.train.reward import train_rm
    from rlhf.world import World

    rm_dir = args.run / f"r{args.round}_rm"
    if not (rm_dir / "DONE").exists():
        ap.error(f"{rm_dir} is not a finished RM stage")
    cfg = load_config(rm_dir / "config.yaml", args.set)
    world = World.load(args.run / "world/data")
    work = args.work or args.run / "rm_oracle"
    gold = gold_labeler(world)
    train = Path(cfg.rm.train_file)
    sources = {"labelers": train, "gold": rerank(gold, train, work / "train_gold.jsonl")}
    valid_rows = [r for _, r in read_jsonl(cfg.rm.valid_file)]
    gold_rows = [{**r, "ranking": gold.rank(r["prompt"], r["responses"])} for r in valid_rows]
    # the gold judge against the labelers: what noise leaves for any RM
    gold_scores = [world.gold_reward([r["prompt"]] * len(r["responses"]), r["responses"])
                   for r in valid_rows]
    ceiling = pair_accuracy(valid_rows, gold_scores)

    runs = []
    for source, file in sources.items():
        for ep in args.epochs or [cfg.rm.epochs]:
            name = f"{source}_{ep}ep"
            c = with_sections(cfg, rm={"train_file": str(file), "epochs": ep,
                                   "demonstrations_file": None})
            t0 = time.time()
            s = train_rm(c, work / name)
            scores = rm_scores(s["model"], valid_rows, cfg.rm.prompt_template)
            runs.append({"name": name, "rankings": source, "epochs": ep, "steps": s["steps"],
                         "vs_labelers": s["valid"]["accuracy"],
                         "vs_labelers_log_loss": s["valid"]["log_loss"],
                         "vs_gold": pair_accuracy(gold_rows, scores)["accuracy"],
                         "wall_s": round(time.time() - t0, 1)})

    print(f"Oracle RM, round {args.round} of {args.run} ({len(valid_rows)} validation prompts, "
          f"{ceiling['pairs']} labeler pairs; overrides: {args.set or 'none'})")
    print(f"  gold judge vs the labelers' rankings: {ceiling['accuracy']:.1%} (the noise ceiling)")
    print(f"  {'trained on':10s} {'epochs':>6s} {'steps':>6s} {'vs labelers':>11s} "
          f"{'log loss':>8s} {'vs gold':>8s} {'wall':>6s}")
    for r in runs:
        print(f"  {r['rankings']:10s} {r['epochs']:6d} {r['steps']:6d} {r['vs_labelers']:11.1%} "
              f"{r['vs_labelers_log_loss']:8.4f} {r['vs_gold']:8.1%} {r['wall_s']:5.0f}s")
    result = {"run": str(args.run), "config": cfg.model_dump(mode="json"),
              "round": args.round, "overrides": args.set,
              "gold_vs_labelers": ceiling, "runs": runs}
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()

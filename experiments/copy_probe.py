"""Copy probe: can the models of a pipeline run copy a detail from their context?

    .venv/bin/python experiments/copy_probe.py --run runs/demo [--model NAME=PATH ...]
        [--n 100] [--out experiments/results/copy_probe.json]

Probes the run's base model (pretrain/final), its SFT model and its last PPO / PPO-ptx policies
(or any HF causal LMs given with --model) with rlhf.eval.copying: a source text states a town, a
number, a food, a person met and the animals seen; where the continuation restates each,
greedy decoding must reproduce it, every token of it. A model at chance cannot summarise, answer
from, or rewrite a text without inventing details (closed-domain hallucination), and a few-shot
prompt cannot help it.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # for _bench
from _bench import write_result  # noqa: E402


def run_models(run: Path) -> dict[str, str]:
    models = {"base": str(run / "pretrain" / "final")}
    summary = run / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        models["sft"] = s["sft"]
        for r in s.get("rounds", []):
            for key in ("ppo", "ppo_ptx"):
                if r.get(key):
                    models[f"{key}_r{r['round']}"] = r[key]
    return models


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a pipeline run folder (runs/demo)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--n", type=int, default=100, help="stories (x 2 shapes x 5 details)")
    ap.add_argument("--seed", type=int, default=0, help="world seed and case stream")
    ap.add_argument("--out", type=Path, default=Path("experiments/results/copy_probe.json"))
    args = ap.parse_args(argv)

    from rlhf.eval.copying import DETAILS, SHAPES, copy_probe
    from rlhf.world.universe import Universe

    models = run_models(args.run) if args.run else {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep:
            ap.error(f"--model wants NAME=PATH, got {item!r}")
        models[name] = path
    if not models:
        ap.error("give --run or --model")
    t0 = time.time()
    probe = copy_probe(models, Universe(args.seed), n=args.n, seed=args.seed)
    seconds = round(time.time() - t0, 2)
    print(f"{'model':14s} {'all':>6s} " + " ".join(f"{s + '/' + d:>{len(s) + 7}}"
                                                  for s in SHAPES for d in DETAILS))
    for name, res in probe["models"].items():
        print(f"{name:14s} {res['accuracy']:6.3f} " + " ".join(
            f"{res[s][d]:{len(s) + 7}.3f}" for s in SHAPES for d in DETAILS))
    print("chance:", ", ".join(f"{d} {c:.3f}" for d, c in probe["chance"].items()))
    out = {"benchmark": "copy_probe", **probe, "seed": args.seed, "seconds": seconds,
           "run": str(args.run) if args.run else None, "paths": models}
    write_result(args.out, out)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

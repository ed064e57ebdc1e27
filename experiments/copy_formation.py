"""Copy formation: when (if ever) does pretraining teach the base model to copy from its context?

    .venv/bin/python experiments/copy_formation.py [--config configs/demo.yaml]
        [--set pretrain.model.arch=llama ...] [--corpus FILE ...] [--every 100] [--n 20]
        [--out experiments/results/copy_formation.json]

Runs the pipeline's own pretraining (`rlhf.train.pretrain`, the config's `pretrain` section, on
the config's Instruction World corpus unless --corpus is given) and measures the copy probe
(`rlhf.eval.copying`) every --every steps through its `probe` hook. Copying a detail stated
earlier in the text is what every closed-domain task needs, and in small models it appears
abruptly (an induction head forms), so the figure that matters is the first step at which each
detail is copied (accuracy >= 0.9); the script prints the curve and that step per detail and
writes JSON. Use it to compare corpora, architectures and schedules before a full pipeline run.
One process (not under torchrun); chat-shape cases use the config's `ppo.prompt_template`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # for _bench
from _bench import write_result  # noqa: E402

THRESHOLD = 0.9


def first_step(curve: list[dict], keys: list[str], threshold: float = THRESHOLD) -> dict:
    """{key: the first step whose value is >= threshold, or None} over a step-sorted curve."""
    return {k: next((c["step"] for c in curve if c[k] >= threshold), None) for k in keys}


def probe_curve(rows: list[dict]) -> list[dict]:
    """metrics.jsonl rows -> [{"step", "<shape>/<detail>": accuracy, ["ppl"]}], one per step
    (the last row logged for a step wins), sorted by step."""
    by_step: dict[int, dict] = {}
    for r in rows:
        copy = {k[len("valid/copy/"):]: v for k, v in r.items() if k.startswith("valid/copy/")}
        if copy:
            by_step[r["step"]] = {"step": r["step"], **copy,
                                  **({"ppl": r["valid/ppl"]} if "valid/ppl" in r else {})}
    return [by_step[s] for s in sorted(by_step)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="config override, e.g. pretrain.lr=5e-3")
    ap.add_argument("--corpus", action="append", default=[], metavar="FILE",
                    help="pretraining text (default: the config's world corpus)")
    ap.add_argument("--every", type=int, default=100, help="probe every N optimizer steps")
    ap.add_argument("--n", type=int, default=20, help="stories (x 2 shapes x 5 details)")
    ap.add_argument("--keep", type=Path, help="keep the pretraining run here")
    ap.add_argument("--out", type=Path, default=Path("experiments/results/copy_formation.json"))
    args = ap.parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        ap.error("runs in one process: start it with python, not torchrun")

    from rlhf.config import load_config
    from rlhf.eval.copying import DETAILS, SHAPES, copy_accuracy, copy_cases
    from rlhf.runs import read_metrics
    from rlhf.train.pretrain import pretrain
    from rlhf.world.universe import Universe
    from rlhf.world.world import build_world

    cfg = load_config(args.config, args.overrides + [f"pretrain.eval_every={args.every}"])
    tmp = tempfile.TemporaryDirectory(prefix="copy_formation_")
    work = args.keep or Path(tmp.name)
    files, valid = [str(f) for f in args.corpus], []
    if not files:
        build_world(work / "world", seed=cfg.seed, n_labelers=cfg.pipeline.n_labelers,
                    **cfg.pipeline.world)
        files, valid = [str(work / "world/pretrain/train.txt")], [
            str(work / "world/pretrain/valid.txt")]
    cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(
        update={"train_files": files, "valid_files": valid})})
    cases = copy_cases(Universe(cfg.seed), args.n, seed=cfg.seed,
                       template=cfg.ppo.prompt_template)

    def probe(model, tokenizer) -> dict:
        res = copy_accuracy(model, tokenizer, cases)
        return {f"copy/{s}/{d}": res[s][d] for s in SHAPES for d in DETAILS}

    t0 = time.time()
    summary = pretrain(cfg, work / "pretrain", probe=probe)
    seconds = round(time.time() - t0, 1)
    curve = probe_curve(read_metrics(work / "pretrain"))
    keys = [f"{s}/{d}" for s in SHAPES for d in DETAILS]
    first = first_step(curve, keys)
    print(f"{'step':>6s} " + " ".join(f"{k:>{len(k)}}" for k in keys))
    for c in curve:
        print(f"{c['step']:6d} " + " ".join(f"{c[k]:{len(k)}.2f}" for k in keys))
    print(f"first step at >= {THRESHOLD}: " + ", ".join(f"{k} {first[k]}" for k in keys))
    out = {"benchmark": "copy_formation", "config": str(args.config),
           "overrides": args.overrides, "corpus": args.corpus or "world", "every": args.every,
           "n_cases": len(cases), "threshold": THRESHOLD, "first_step": first, "curve": curve,
           "steps": summary["steps"], "seconds": seconds,
           "chance": {d: round(1 / len(v), 4) for d, v in DETAILS.items()}}
    write_result(args.out, out)
    tmp.cleanup()
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

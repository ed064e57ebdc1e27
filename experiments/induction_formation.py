"""Induction formation: after how many steps of synthetic copy blocks can the base model copy?

    .venv/bin/python experiments/induction_formation.py [--config configs/demo.yaml]
        [--set pretrain.model.arch=gpt2 ...] [--steps 1200] [--seeds 0 1] [--tokenizer DIR]
        [--out experiments/results/induction_formation.json]

Trains the config's tiny model from scratch on `rlhf.data.text.repeat_blocks` (random tokens,
then the same span again from a random offset) with the pretraining recipe's own induction
warm-up (`rlhf.train.pretrain.copy_warmup`: the `pretrain` section's optimiser, constant LR
after its warm-up), and every --every steps measures greedy copy accuracy on the second half of
64 held-out blocks, which lies wholly in the repeated part, and their loss. Induction heads form abruptly after a
plateau, so the figure that matters is the first step at which that accuracy reaches 0.9; it
says how many `copy_warmup_steps` a model needs. The tokenizer (only its size and special tokens
matter) is --tokenizer, or one trained on the config's world corpus. One process; writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # for _bench
from _bench import write_result  # noqa: E402

THRESHOLD = 0.9


@torch.no_grad()
def copy_accuracy(model, blocks: torch.Tensor) -> tuple[float, float]:
    """(greedy next-token accuracy over the second half of each block, all of it repeated;
    mean next-token loss over the whole blocks)."""
    was_training = model.training
    model.eval()
    out = model(input_ids=blocks, labels=blocks)
    model.train(was_training)
    half = blocks.shape[1] // 2
    pred = out.logits.argmax(-1)
    return float((pred[:, half - 1:-1] == blocks[:, half:]).float().mean()), float(out.loss)


def run_seed(cfg, tokenizer, seed: int, steps: int, every: int, work: Path) -> dict:
    """The recipe's own warm-up (`rlhf.train.pretrain.copy_warmup`) on `steps` batches of copy
    blocks, measured every `every` steps and at the end on 64 held-out copy blocks."""
    from rlhf.data.text import repeat_blocks
    from rlhf.models import build_tiny_model
    from rlhf.train.pretrain import copy_warmup, plain_token_ids

    p = cfg.pretrain.model_copy(update={"save_every": 0})   # no step checkpoints
    torch.manual_seed(seed)
    model = build_tiny_model(p.model, tokenizer)
    ids = plain_token_ids(tokenizer)
    blocks = repeat_blocks(steps * p.batch_size, p.block_size, ids,
                           torch.Generator().manual_seed(seed))
    held_out = repeat_blocks(64, p.block_size, ids, torch.Generator().manual_seed(10_000 + seed))
    curve, t0 = [], time.time()

    def measure(step: int) -> dict:
        acc, loss = copy_accuracy(model, held_out)
        curve.append({"step": step, "loss": round(loss, 4), "copy": round(acc, 4)})
        print(f"seed {seed} step {step:5d} held-out loss {loss:.3f} copy {acc:.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)
        return {"copy/accuracy": acc, "copy/loss": loss}

    copy_warmup(model, tokenizer, p, blocks, seed, work / f"seed-{seed}", resume=False,
                on_eval=measure, eval_every=every)
    measure(steps)                              # fit evaluates before the last step only
    formed = next((c["step"] for c in curve if c["copy"] >= THRESHOLD), None)
    return {"seed": seed, "formed_at": formed, "curve": curve,
            "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="config override, e.g. pretrain.model.arch=gpt2")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--tokenizer", type=Path, help="tokenizer dir (default: trained here)")
    ap.add_argument("--out", type=Path,
                    default=Path("experiments/results/induction_formation.json"))
    args = ap.parse_args(argv)

    from rlhf.config import load_config
    from rlhf.data.text import read_documents
    from rlhf.models import load_tokenizer, train_tokenizer
    from rlhf.world.world import build_world

    cfg = load_config(args.config, args.overrides)
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        with tempfile.TemporaryDirectory(prefix="induction_") as tmp:
            build_world(Path(tmp) / "world", seed=cfg.seed, n_labelers=cfg.pipeline.n_labelers,
                        **cfg.pipeline.world)
            tokenizer = train_tokenizer(read_documents([f"{tmp}/world/pretrain/train.txt"]),
                                        cfg.pretrain.model.vocab_size)
    with tempfile.TemporaryDirectory(prefix="induction_runs_") as work:
        runs = [run_seed(cfg, tokenizer, s, args.steps, args.every, Path(work))
                for s in args.seeds]
    for r in runs:
        print(f"seed {r['seed']}: copy accuracy >= {THRESHOLD} first at step {r['formed_at']} "
              f"({r['seconds']} s for {args.steps} steps)")
    out = {"benchmark": "induction_formation", "config": str(args.config),
           "overrides": args.overrides, "arch": cfg.pretrain.model.arch, "steps": args.steps,
           "threshold": THRESHOLD, "runs": runs}
    write_result(args.out, out)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

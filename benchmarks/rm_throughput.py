"""Reward-model training throughput: `train_rm` against a bare forward+backward of the same RM.

    .venv/bin/python benchmarks/rm_throughput.py [--out benchmarks/results/rm_throughput.json]

Also called by benchmarks/train_throughput.py as `rm_throughput(tmp, model_dir)`.

The bare loop is the floor the recipe can reach: the same backbone + scalar head, the same
collated batches (all K responses of the micro-batch's prompts in one padded forward), a plain
scalar loss (sum of scores), AdamW, nothing else: no position ids from the mask, no Eq. 1, no
metrics, logging, scheduling, checkpointing or normalisation. Target: recipe ≥ 85 % of bare.
Tokens are non-pad tokens fed to the model (prompt + response, K per prompt). Both sides count
from the end of their first (warm-up) step; each side reports its best of `repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch


def write_rankings(path: Path, n: int, k_range=(4, 9), seed: int = 1,
                   words_per_response: int = 40) -> Path:
    r = random.Random(seed)
    words = [f"w{i}" for i in range(600)]
    with open(path, "w") as f:
        for _ in range(n):
            k = r.randint(*k_range)
            p = " ".join(r.choice(words) for _ in range(20))
            rs = [" ".join(r.choice(words) for _ in range(words_per_response)) for _ in range(k)]
            order = list(range(k))
            r.shuffle(order)
            f.write(json.dumps({"prompt": p, "responses": rs,
                                "ranking": [[i] for i in order]}) + "\n")
    return path


def bare_rm_loop(rm, batches, steps: int) -> float:
    """tokens/s of backbone forward + head at the last token + backward + AdamW."""
    from rlhf.models.reward import last_token_index
    opt = torch.optim.AdamW([p for p in rm.parameters() if p.requires_grad], lr=1e-5,
                            betas=(0.9, 0.95))
    rm.train()
    tokens, t0 = 0, None
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()  # the first step warms up allocators
        for b in batches[i % len(batches)]:
            h = rm.backbone(input_ids=b["input_ids"],
                            attention_mask=b["attention_mask"]).last_hidden_state
            idx = last_token_index(b["attention_mask"])
            rm.head(h[torch.arange(h.shape[0]), idx]).sum().backward()
            if i >= 1:
                tokens += int(b["attention_mask"].sum())
        opt.step()
        opt.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - t0)


def rm_throughput(tmp: Path, model_dir: Path, steps: int = 12, batch: int = 16,
                  micro: int = 4, max_length: int = 256, repeats: int = 2) -> dict:
    """Run `train_rm` for `steps` optimizer steps and the bare loop on the same batches,
    alternating `repeats` times; each side reports its best run (the machine is shared)."""
    from rlhf.config import load_config
    from rlhf.data.rankings import collate_rankings, encode_rankings, load_rankings
    from rlhf.models import load_tokenizer
    from rlhf.models.reward import RewardModel
    from rlhf.runs import read_metrics
    from rlhf.train.reward import train_rm

    tmp = Path(tmp)
    data = write_rankings(tmp / "rm_rankings.jsonl", batch * steps)
    cfg = load_config(overrides=[f"rm.model={model_dir}", f"rm.train_file={data}",
                                 f"rm.batch_size={batch}", f"rm.micro_batch_size={micro}",
                                 f"rm.max_length={max_length}", "rm.log_every=1"])
    tok = load_tokenizer(model_dir)
    enc = encode_rankings(tok, load_rankings(data), max_length, cfg.rm.prompt_template)
    batches = [[collate_rankings(enc[s * batch + m * micro: s * batch + (m + 1) * micro],
                                 tok.pad_token_id) for m in range(batch // micro)]
               for s in range(steps)]
    recipe, bare, walls = [], [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        summary = train_rm(cfg, tmp / f"rm_run{i}")
        walls.append(time.perf_counter() - t0)
        rows = [r for r in read_metrics(tmp / f"rm_run{i}") if "train/tokens_per_s" in r]
        recipe.append(rows[-1]["train/tokens_per_s"])
        rm = RewardModel.from_causal_lm(model_dir)
        rm.head.bias.requires_grad_(False)          # as in the recipe
        bare.append(bare_rm_loop(rm, batches, steps))
    seqs = sum(int(b["input_ids"].shape[0]) for step in batches for b in step)
    return {"recipe_tokens_per_s": round(max(recipe), 1), "bare_tokens_per_s": round(max(bare), 1),
            "ratio": round(max(recipe) / max(bare), 3),
            "runs": {"recipe": [round(x, 1) for x in recipe], "bare": [round(x, 1) for x in bare]},
            "steps": steps, "batch_size": batch, "micro_batch_size": micro,
            "prompts": batch * steps, "forward_passes": summary["forward_passes"],
            "sequences_in_bare_loop": seqs,
            "recipe_wall_s_incl_setup_and_save": round(min(walls), 2)}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_throughput import build_model_dir  # the lead's benchmark model (4 × 128)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/rm_throughput.json")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = rm_throughput(tmp, build_model_dir(tmp), steps=args.steps,
                            repeats=args.repeats)
    res["threads"] = args.threads
    print(f"rm   recipe {res['recipe_tokens_per_s']:9.1f} tok/s   bare "
          f"{res['bare_tokens_per_s']:9.1f} tok/s   ratio {res['ratio']:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Training throughput: each recipe against a bare forward+backward loop on the same model/batch.

    .venv/bin/python benchmarks/train_throughput.py [--out benchmarks/results/train_throughput.json]

The bare loop is the floor a recipe can reach: the same model, the same batches, AdamW, and
nothing else (no masking, logging, scheduling or checkpointing). Target: recipe ≥ 85 % of it.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model_dir(tmp: Path, vocab: int = 2048) -> Path:
    from rlhf.config import TinyModelConfig
    from rlhf.models import build_tiny_model, train_tokenizer
    r = random.Random(0)
    words = [f"w{i}" for i in range(600)]
    texts = [" ".join(r.choice(words) for _ in range(40)) for _ in range(3000)]
    tok = train_tokenizer(texts, vocab)
    torch.manual_seed(0)
    model = build_tiny_model(TinyModelConfig(n_layer=4, n_head=4, n_embd=128, n_positions=256), tok)
    out = tmp / "model"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def write_demos(path: Path, n: int, words_per_response: int = 40) -> Path:
    r = random.Random(1)
    words = [f"w{i}" for i in range(600)]
    with open(path, "w") as f:
        for _ in range(n):
            p = " ".join(r.choice(words) for _ in range(20))
            a = " ".join(r.choice(words) for _ in range(words_per_response))
            f.write(json.dumps({"prompt": p, "response": a}) + "\n")
    return path


def bare_loop(model, batches, steps: int) -> float:
    """tokens/s of forward + backward + AdamW on exactly these batches."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    model.train()
    tokens, t0 = 0, None
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()  # the first step warms up allocators
        for b in batches[i % len(batches)]:
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                        labels=b["input_ids"])
            out.loss.backward()
            if i >= 1:
                tokens += int(b["attention_mask"].sum())
        opt.step()
        opt.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - t0)


def sft_throughput(tmp: Path, model_dir: Path, steps: int, batch: int, micro: int) -> dict:
    from rlhf.config import load_config
    from rlhf.data.sft import collate, encode_all, load_demonstrations
    from rlhf.models import load_model, load_tokenizer
    from rlhf.runs import read_metrics
    from rlhf.train.sft import sft
    demos = write_demos(tmp / "demos.jsonl", batch * (steps + 1))
    cfg = load_config(overrides=[f"sft.model={model_dir}", f"sft.train_file={demos}",
                                 f"sft.batch_size={batch}", f"sft.micro_batch_size={micro}",
                                 "sft.epochs=1", "sft.log_every=1", "sft.residual_dropout=0.2"])
    t0 = time.perf_counter()
    sft(cfg, tmp / "sft_run")
    wall = time.perf_counter() - t0
    rows = [r for r in read_metrics(tmp / "sft_run") if "train/tokens_per_s" in r]
    recipe_tps = rows[-1]["train/tokens_per_s"]
    tok = load_tokenizer(model_dir)
    examples = encode_all(tok, load_demonstrations(demos), 256, cfg.sft.prompt_template, False)
    batches = [[collate(examples[s * batch + m * micro: s * batch + (m + 1) * micro],
                        tok.pad_token_id) for m in range(batch // micro)] for s in range(steps)]
    model = load_model(model_dir)
    from rlhf.models import set_dropout
    set_dropout(model, 0.2)
    bare_tps = bare_loop(model, batches, steps)
    return {"recipe_tokens_per_s": round(recipe_tps, 1), "bare_tokens_per_s": round(bare_tps, 1),
            "ratio": round(recipe_tps / bare_tps, 3), "steps": steps, "batch_size": batch,
            "micro_batch_size": micro, "recipe_wall_s_incl_setup_and_saves": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/train_throughput.json")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {"machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                           "torch": torch.__version__, "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model_dir = build_model_dir(tmp)
        results["model_params"] = sum(p.numel() for p in
                                      __import__("rlhf.models", fromlist=["load_model"])
                                      .load_model(model_dir).parameters())
        results["sft"] = sft_throughput(tmp, model_dir, args.steps, batch=16, micro=8)
        try:
            from rm_throughput import rm_throughput  # benchmarks/rm_throughput.py
        except ImportError:
            rm_throughput = None
        if rm_throughput is not None:
            results["rm"] = rm_throughput(tmp, model_dir)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    for name in ("sft", "rm"):
        if name in results:
            r = results[name]
            print(f"{name:4s} recipe {r['recipe_tokens_per_s']:9.1f} tok/s   bare "
                  f"{r['bare_tokens_per_s']:9.1f} tok/s   ratio {r['ratio']:.3f}")
    print(f"peak RSS {results['peak_rss_mb']} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()

"""Statistics of a built world: category mix, token counts, demonstration quality and the
measured agreement of the simulated labelers."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from rlhf.io import read_jsonl
from rlhf.world.corpus import count_tokens
from rlhf.world.labelers import measure_agreement
from rlhf.world.prompts import CATEGORIES, SPLITS
from rlhf.world.samples import policy_samples
from rlhf.world.world import World


def world_stats(directory: str | Path, n_agreement_prompts: int = 200,
                samples_per_prompt: int = 4) -> dict[str, Any]:
    """Everything `rlhf world stats` prints, as a dict."""
    directory = Path(directory)
    world = World.load(directory)
    out: dict[str, Any] = {"seed": world.seed, "categories": {}, "prompt_words": {}}
    for split in SPLITS:
        records = world.prompts(split)
        counts = Counter(r["category"] for r in records)
        out["categories"][split] = {c: counts.get(c, 0) for c in CATEGORIES}
        out["prompt_words"][split] = _mean(count_tokens(r["prompt"]) for r in records)
    out["pretrain"] = {name: _text_stats(directory / "pretrain" / f"{name}.txt")
                       for name in ("train", "valid")}
    out["demonstrations"] = {
        split: _demo_stats(world, directory / "demonstrations" / f"{split}.jsonl")
        for split in ("sft", "sft_valid")}
    out["agreement"] = _agreement(world, n_agreement_prompts, samples_per_prompt)
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _text_stats(path: Path) -> dict[str, int]:
    text = path.read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n") if d.strip()]
    vocab = {w.strip(".,!?\"'").lower() for w in text.split()}
    return {"tokens": count_tokens(text), "documents": len(docs), "vocabulary": len(vocab)}


def _demo_stats(world: World, path: Path) -> dict[str, float]:
    scores, lengths = [], []
    for _, row in read_jsonl(path):
        scores.append(world.judge(row["prompt"], row["response"]).score)
        lengths.append(count_tokens(row["response"]))
    return {"count": len(scores), "mean_words": _mean(lengths), "mean_gold_score": _mean(scores),
            "below_0.95": _mean(s < 0.95 for s in scores)}


def _agreement(world: World, n_prompts: int, k: int) -> dict[str, Any]:
    records = (world.prompts("rm") or world.prompts("test"))[:n_prompts]
    rng = random.Random(f"agreement:{world.seed}")
    samples = [policy_samples(world.universe, r, rng, k) for r in records]
    pool = world.labeler_pool()
    result: dict[str, Any] = {"prompts": len(records), "samples_per_prompt": k}
    for name, labelers in (("train", pool.train_labelers), ("heldout", pool.heldout_labelers)):
        if len(labelers) >= 2 and records:
            a = measure_agreement(labelers, records, samples)
            result[name] = {"rate": a.rate, "tie_rate": a.tie_rate, "judgements": a.n_judgements}
    return result

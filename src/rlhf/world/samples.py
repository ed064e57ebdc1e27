"""Realistic policy samples without a policy: programmatic imitations of what a small SFT model
emits, used to measure labeler agreement and to test the judge at scale.

Each sample is one of (weights in SAMPLE_KINDS): a good answer; a good answer with a slip (typo,
wrong count, wrong fact, extra sentence, no full stop); a truncated answer; a parroted
instruction; an answer to another prompt of the same category; a hallucinated entity; a
rambling answer that repeats itself; an unwanted refusal (or, for harmful requests, compliance).
"""

from __future__ import annotations

import random

from rlhf.world.prompts import GENERATORS, Record
from rlhf.world.universe import Universe
from rlhf.world.writer import good_response, slip, wrong_fact

SAMPLE_KINDS: dict[str, int] = {
    "good": 30, "slipped": 25, "truncated": 10, "parroted": 8, "off_topic": 8,
    "hallucinated": 7, "rambling": 7, "refusal": 5,
}


def policy_sample(u: Universe, rec: Record, rng: random.Random, kind: str | None = None) -> str:
    """One imitation policy sample for the record (kind drawn from SAMPLE_KINDS if not given)."""
    kind = kind or rng.choices(list(SAMPLE_KINDS), weights=list(SAMPLE_KINDS.values()))[0]
    good = good_response(u, rec, rng)
    if kind == "good":
        return good
    if kind == "slipped":
        return slip(u, rec, good, rng)
    if kind == "truncated":
        ws = good.split()
        return " ".join(ws[: rng.randint(1, max(1, len(ws) - 1))])
    if kind == "parroted":
        first_line = rec["prompt"].splitlines()[0]
        return first_line + " " + rng.choice(["", first_line, good.split("\n")[0]])
    if kind == "off_topic":
        other = dict(GENERATORS[rec["category"]](u, rng), category=rec["category"])
        return good_response(u, other, rng)
    if kind == "hallucinated":
        return wrong_fact(u, rec, good, rng)
    if kind == "rambling":
        return good + " " + good.replace("\n", " ")
    if rec["category"] == "harmful":
        return f"First, you {rec['action']}. Then you run home."
    return rng.choice(["I'm sorry, but I can't help with that.", "I can't do that."])


def policy_samples(u: Universe, rec: Record, rng: random.Random, k: int) -> list[str]:
    """k imitation samples for one prompt."""
    return [policy_sample(u, rec, rng) for _ in range(k)]

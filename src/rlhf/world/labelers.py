"""Simulated labelers: the gold judge seen through one person's noise and habits.

A labeler perceives a response's quality as

    perceived = gold score + length_bias * tanh((words - 15) / 15) + noise * N(0, 1)

where the Gaussian draw is seeded by (labeler id, prompt, response): the same labeler judging
the same response twice sees the same thing, and every run is reproducible. On top of that:

- rank(prompt, responses): sort by perceived score, best first; neighbours closer than
  `tie_threshold` share a tie group; with probability `sloppiness` two adjacent groups are
  swapped (a misclick). Output is the Ranking format of docs/CONTRACTS.md.
- compare(prompt, a, b) = rank of two: +1 when a is preferred, -1 when b is, 0 for a tie.
- rate(prompt, response): Likert from the perceived score; the gold flags, each flipped with
  probability sloppiness / 2.
- demonstrate(prompt): the gold writer's answer in this labeler's own phrasing, with one slip
  (rlhf.world.writer.slip) at the labeler's slip rate, and this person's writing habits
  (rlhf.world.writer.chatty, rlhf.world.writer.aside) at their own rates.

Writing habits model a property of real demonstration data: people write in mixed styles (some
greet and sign off, some add a fact they know), while the same people, ranking, consistently
prefer the plain answer the gold judge scores best. Judging is easier than writing: the premise
of steps 2 and 3. Each labeler's habit rate is the pool's mean rate times U(0, 2), drawn from a
generator of its own, so a pool with habits has exactly the traits of the pool without.

The pool's default noise was tuned so two training labelers agree about 72.6% of the time on
pairs of realistic policy samples (rlhf.world.samples), the paper's inter-annotator agreement.
`agreement_rate` measures it: over every prompt, every pair of its samples and every pair of
labelers, the share of pairs both labelers order strictly (ties are left out) that they order
the same way.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from rlhf.data.records import RATING_FLAGS
from rlhf.world.judge import Judgement, likert_of
from rlhf.world.prompts import Record
from rlhf.world.universe import Universe
from rlhf.world.writer import aside, chatty, good_response, slip

DEFAULT_NOISE = 0.19
DEFAULT_SLIP_RATE = 0.12
DEFAULT_TIE_THRESHOLD = 0.02


@dataclass(frozen=True)
class LabelerTraits:
    noise: float          # std of the Gaussian added to each perceived score
    length_bias: float    # + prefers long answers, - short ones (score units at the extremes)
    sloppiness: float     # probability of a random adjacent swap per ranking
    slip_rate: float      # probability that a demonstration carries a slip
    tie_threshold: float  # perceived scores closer than this are tied
    chatty: float = 0.0   # probability that a demonstration greets and/or signs off
    aside: float = 0.0    # probability that a demonstration adds an unasked fact at the end


class GoldJudge(Protocol):
    """What a labeler needs of the world (rlhf.world.World is one): the prompt record of a
    prompt, the gold judge's verdict on a response, and the universe the gold writer draws on."""

    universe: Universe

    def record(self, prompt: str | dict) -> Record: ...

    def judge(self, prompt: str | dict, response: str) -> Judgement: ...


def _rng(*parts: Any) -> random.Random:
    """A generator seeded by the parts (string seeds are hashed with SHA-512: stable)."""
    return random.Random("\x1f".join(str(p) for p in parts))


class Labeler:
    """One simulated person. `world` supplies the gold judge and prompt records."""

    def __init__(self, world: GoldJudge, labeler_id: str, traits: LabelerTraits,
                 heldout: bool = False):
        self.world = world
        self.id = labeler_id
        self.traits = traits
        self.heldout = heldout

    def __repr__(self) -> str:
        return f"Labeler({self.id!r}, heldout={self.heldout}, {self.traits})"

    def perceived(self, prompt: str | dict, response: str) -> float:
        """This labeler's (noisy, biased) sense of a response's quality."""
        rec = self.world.record(prompt)
        gold = self.world.judge(rec, response).score
        n_words = len(response.split())
        bias = self.traits.length_bias * math.tanh((n_words - 15) / 15)
        noise = _rng("perceive", self.id, rec["prompt"], response).gauss(0.0, self.traits.noise)
        return gold + bias + noise

    def rank(self, prompt: str | dict, responses: Sequence[str]) -> list[list[int]]:
        """Tie groups of response indices, best to worst (every index exactly once)."""
        if not responses:
            return []
        scores = [self.perceived(prompt, r) for r in responses]
        order = sorted(range(len(responses)), key=lambda i: (-scores[i], i))
        groups: list[list[int]] = [[order[0]]]
        for prev, i in zip(order, order[1:]):
            if scores[prev] - scores[i] < self.traits.tie_threshold:
                groups[-1].append(i)
            else:
                groups.append([i])
        rng = _rng("sloppy", self.id, self.world.record(prompt)["prompt"], *responses)
        if len(groups) > 1 and rng.random() < self.traits.sloppiness:
            j = rng.randrange(len(groups) - 1)
            groups[j], groups[j + 1] = groups[j + 1], groups[j]
        return [sorted(g) for g in groups]

    def compare(self, prompt: str | dict, a: str, b: str) -> int:
        """+1 if a is preferred, -1 if b is, 0 for a tie."""
        groups = self.rank(prompt, [a, b])
        if len(groups) == 1:
            return 0
        return 1 if groups[0] == [0] else -1

    def rate(self, prompt: str | dict, response: str) -> dict[str, Any]:
        """{"likert": 1..7, "flags": {name: bool}} as this labeler would fill the form."""
        rec = self.world.record(prompt)
        gold = self.world.judge(rec, response)
        rng = _rng("rate", self.id, rec["prompt"], response)
        flags = {name: (not gold.flags[name]) if rng.random() < self.traits.sloppiness / 2
                 else gold.flags[name] for name in RATING_FLAGS}
        return {"likert": likert_of(self.perceived(rec, response)), "flags": flags}

    def demonstrate(self, prompt: str | dict) -> str:
        """A good answer in this labeler's phrasing; at the slip rate, with one slip."""
        rec = self.world.record(prompt)
        rng = _rng("demo", self.id, rec["prompt"])
        answer = good_response(self.world.universe, rec, rng)
        if rng.random() < self.traits.slip_rate:
            answer = slip(self.world.universe, rec, answer, rng)
        if rec["category"] != "harmful":                 # a refusal keeps its form
            habit = _rng("habit", self.id, rec["prompt"])  # its own stream: rates 0 = no habits
            if habit.random() < self.traits.chatty:
                answer = chatty(rec, answer, habit)
            if habit.random() < self.traits.aside:
                answer = aside(self.world.universe, rec, answer, habit)
        return answer


def default_heldout(n: int) -> int:
    """A quarter of the pool is held out by default (10 of 40), at least one when n >= 2."""
    return max(1, n // 4) if n >= 2 else 0


class LabelerPool:
    """`n` labelers with seeded traits; the last `n_heldout` (default: a quarter) are held out
    for evaluation, the others are training labelers."""

    def __init__(self, world: GoldJudge, n: int = 40, n_heldout: int | None = None,
                 seed: int = 0, *, noise: float = DEFAULT_NOISE,
                 slip_rate: float = DEFAULT_SLIP_RATE,
                 tie_threshold: float = DEFAULT_TIE_THRESHOLD, chatty_rate: float = 0.0,
                 aside_rate: float = 0.0):
        if n_heldout is None:
            n_heldout = default_heldout(n)
        if not 0 <= n_heldout < n:
            raise ValueError(f"need 0 <= n_heldout < n, got n={n}, n_heldout={n_heldout}")
        rng = random.Random(f"labelers:{seed}")
        habits = random.Random(f"habits:{seed}")   # apart, so the other traits never change
        self.labelers: list[Labeler] = []
        for i in range(n):
            traits = LabelerTraits(
                noise=noise * rng.uniform(0.7, 1.3),
                length_bias=rng.gauss(0.0, 0.04),
                sloppiness=rng.uniform(0.0, 0.08),
                slip_rate=min(1.0, slip_rate * rng.uniform(0.5, 1.5)),
                tie_threshold=tie_threshold,
                chatty=min(1.0, chatty_rate * habits.uniform(0.0, 2.0)),
                aside=min(1.0, aside_rate * habits.uniform(0.0, 2.0)),
            )
            self.labelers.append(Labeler(world, f"sim-{i:02d}", traits, heldout=i >= n - n_heldout))

    @property
    def train_labelers(self) -> list[Labeler]:
        return [lab for lab in self.labelers if not lab.heldout]

    @property
    def heldout_labelers(self) -> list[Labeler]:
        return [lab for lab in self.labelers if lab.heldout]

    def get(self, labeler_id: str) -> Labeler:
        for lab in self.labelers:
            if lab.id == labeler_id:
                return lab
        raise KeyError(labeler_id)


@dataclass(frozen=True)
class Agreement:
    rate: float          # share of strictly-ordered pair judgements on which two labelers agree
    n_judgements: int    # (labeler pair, response pair) cases where both gave a strict order
    tie_rate: float      # share of single comparisons that were ties


def measure_agreement(labelers: Sequence[Labeler], prompts: Sequence[str | dict],
                      samples: Sequence[Sequence[str]]) -> Agreement:
    """Inter-labeler agreement over every pair of samples of every prompt (see module doc)."""
    if len(labelers) < 2:
        raise ValueError("agreement needs at least two labelers")
    votes: list[list[int]] = [[] for _ in labelers]  # per labeler, one vote per response pair
    for prompt, responses in zip(prompts, samples, strict=True):
        for a, b in itertools.combinations(range(len(responses)), 2):
            for k, lab in enumerate(labelers):
                votes[k].append(lab.compare(prompt, responses[a], responses[b]))
    agree = total = 0
    for va, vb in itertools.combinations(votes, 2):
        for x, y in zip(va, vb):
            if x and y:
                total += 1
                agree += x == y
    n_votes = sum(len(v) for v in votes)
    ties = sum(v.count(0) for v in votes)
    return Agreement(rate=agree / total if total else float("nan"), n_judgements=total,
                     tie_rate=ties / n_votes if n_votes else 0.0)


def agreement_rate(labelers: Sequence[Labeler], prompts: Sequence[str | dict],
                   samples: Sequence[Sequence[str]]) -> float:
    """Share of strictly-ordered comparisons on which two labelers agree (ties left out)."""
    return measure_agreement(labelers, prompts, samples).rate

"""The reward-model ranking loss (InstructGPT Eq. 1) and its metrics: pure tensor math, no I/O.

    loss(θ) = −1/C(K,2) · E_(x, y_w, y_l)~D [ log σ( r_θ(x, y_w) − r_θ(x, y_l) ) ]

A *ranking* lists tie groups best to worst, e.g. ``[[2], [0, 3], [1]]``. Every pair of responses
in different groups is one comparison (winner = the better group); pairs inside a group are ties
and are dropped (paper App. C.2). All comparisons of one prompt form ONE batch element (§3.5,
footnote 5): its loss is the mean over its comparisons, and the batch loss is the mean over
elements, so a prompt with K = 9 weighs as much as one with K = 4. Scores come from K forward
passes (one per response), never C(K,2).

`−log σ(x)` is computed as `softplus(−x)`: exact and stable; a zero score gap gives log 2.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Ranking = Sequence[Sequence[int]]


def ranking_pairs(ranking: Ranking) -> list[tuple[int, int]]:
    """All (winner, loser) index pairs of a ranking; pairs within a tie group are dropped."""
    pairs = []
    for g, group in enumerate(ranking):
        for worse in ranking[g + 1:]:
            for w in group:
                for lo in worse:
                    pairs.append((int(w), int(lo)))
    return pairs


def ranking_agreement(a: Ranking, b: Ranking) -> tuple[int, int]:
    """(agreeing pairs, comparable pairs) between two rankings of the same responses: a pair is
    comparable when both rankings order it strictly (a tie on either side drops it, as ties are
    dropped from RM training), and agrees when both put the same response first."""
    first, second = set(ranking_pairs(a)), set(ranking_pairs(b))
    agree = len(first & second)
    return agree, agree + sum((lo, w) in second for w, lo in first)


def preference_matrix(rankings: Sequence[Ranking], k_max: int | None = None) -> Tensor:
    """[B, Kmax, Kmax] float matrix P with P[b, w, l] = 1 when response w beats l in element b."""
    k_max = k_max or max((max((i for g in r for i in g), default=-1) + 1 for r in rankings),
                         default=0)
    pref = torch.zeros(len(rankings), k_max, k_max)
    for b, r in enumerate(rankings):
        for w, lo in ranking_pairs(r):
            pref[b, w, lo] = 1.0
    return pref


def _pair_losses(scores: Tensor, pref: Tensor) -> tuple[Tensor, Tensor]:
    """([B, K, K] −log σ(s_w − s_l) masked by pref, [B] number of comparisons per element)."""
    s = scores.float()
    gap = s.unsqueeze(-1) - s.unsqueeze(-2)                # gap[b, w, l] = s_w − s_l
    pref = pref.to(s.device, s.dtype)
    losses = torch.where(pref > 0, F.softplus(-gap), torch.zeros_like(gap)) * pref
    return losses, pref.sum((-1, -2))


def batched_ranking_loss(scores: Tensor, pref: Tensor, *, reduction: str = "mean") -> Tensor:
    """Eq. 1 over a batch of prompts.

    scores: [B, Kmax] (padding slots are ignored: they appear in no pair of `pref`);
    pref:   [B, Kmax, Kmax] from `preference_matrix`.
    Per element: mean over its non-tied comparisons (the paper's 1/C(K,2) when there are no
    ties). reduction "mean": mean over elements with at least one comparison; "sum": their sum
    (for gradient accumulation, divide by the global element count yourself); "none": [B]
    (elements without comparisons give 0).
    """
    losses, n_pairs = _pair_losses(scores, pref)
    per_elem = losses.sum((-1, -2)) / n_pairs.clamp(min=1)
    if reduction == "none":
        return per_elem
    if reduction == "sum":
        return per_elem.sum()
    n_valid = (n_pairs > 0).sum().clamp(min=1)
    return per_elem.sum() / n_valid


def pair_stats(scores: Tensor, pref: Tensor) -> dict[str, Tensor]:
    """Sums over all comparisons (flat, for metrics and all-reduce across ranks).

    correct: 1 when s_w > s_l, 0.5 when s_w == s_l (a tied score is a coin flip), 0 otherwise;
    log_loss: −log σ(s_w − s_l); n_pairs: number of comparisons; n_elements: elements with ≥ 1
    comparison.
    """
    with torch.no_grad():
        s = scores.float()
        gap = s.unsqueeze(-1) - s.unsqueeze(-2)
        pref = pref.to(s.device, s.dtype)
        correct = ((gap > 0).to(s.dtype) + 0.5 * (gap == 0).to(s.dtype)) * pref
        losses, n_pairs = _pair_losses(s, pref)
        return {"correct": correct.sum(), "log_loss": losses.sum(), "n_pairs": n_pairs.sum(),
                "n_elements": (n_pairs > 0).sum().to(s.dtype)}

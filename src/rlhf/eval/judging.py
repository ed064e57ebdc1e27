"""Human-style evaluation with held-out (simulated) labelers, as in InstructGPT §3.6 / Fig. 1, 4.

Everything here is duck-typed, so the Instruction World, people's labels or fakes all work:

- a *labeler* has `.id`, `.rank(prompt, responses) -> list[list[int]]` (tie groups, best first)
  and `.rate(prompt, response) -> {"likert": 1..7, "flags": {name: bool}}`;
- a *judge* is a callable `judge(prompt, response)` returning an object (or dict) with
  `score` (gold score in [0, 1]), `likert` and `flags`.

`prompts` are whatever the labelers take: prompt strings or prompt records ({"prompt",
"category", "harmful", ...}). Categories are read from records when not given.

Assignment of labelers: comparison i goes to labeler `labelers[(i + offset) % L]` (round robin,
`assignment="round_robin"`, offset = seed) or to a seeded random labeler
(`assignment="random"`). The two answers are shown in a seeded random order, so a labeler's
position bias cannot favour either model. Every comparison is judged once (like the paper, where
most comparisons had one labeler).

Metadata scopes (Fig. 4): `hallucination` is counted only over closed-domain categories
(`closed_domain`; by default DEFAULT_CLOSED_DOMAIN: closed_qa, summarization, extract; the
Instruction World's judge counts rewrite too, and its callers pass
rlhf.eval.harness.world_closed_domain()), `harmful_compliance` only over harmful prompts
(record["harmful"], or category "harmful"); other flags over every prompt. A flag a labeler
leaves as None is not counted.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from rlhf.data.records import RATING_FLAGS
from rlhf.eval.stats import length_controlled_win_rate, normal_ci, wilson_interval, win_rate_ci
from rlhf.rl.ranking import ranking_agreement

# The closed-domain categories (answers must stay within the given input) when a caller names
# none. The Instruction World's are rlhf.world.CLOSED_DOMAIN (these and rewrite).
DEFAULT_CLOSED_DOMAIN: frozenset[str] = frozenset({"closed_qa", "summarization", "extract"})
HARMFUL_CATEGORY = "harmful"


def n_words(text: str) -> int:
    return len(text.split())


def prompt_text(p: Any) -> str:
    return p["prompt"] if isinstance(p, dict) else str(p)


def _categories(prompts: Sequence, categories: Sequence[str] | None) -> list[str]:
    if categories is not None:
        if len(categories) != len(prompts):
            raise ValueError("categories and prompts differ in length")
        return [str(c) for c in categories]
    return [str(p.get("category", "all")) if isinstance(p, dict) else "all" for p in prompts]


def _harmful(prompts: Sequence, cats: Sequence[str], harmful: Sequence[bool] | None) -> list[bool]:
    if harmful is not None:
        return [bool(h) for h in harmful]
    out = []
    for p, c in zip(prompts, cats):
        h = p.get("harmful") if isinstance(p, dict) else None
        out.append(bool(h) if h is not None else c == HARMFUL_CATEGORY)
    return out


def _assign(n: int, labelers: Sequence, assignment: str, seed: int) -> list:
    if not labelers:
        raise ValueError("no labelers given")
    if assignment == "round_robin":
        return [labelers[(i + seed) % len(labelers)] for i in range(n)]
    if assignment == "random":
        r = random.Random(seed)
        return [labelers[r.randrange(len(labelers))] for _ in range(n)]
    raise ValueError(f"unknown assignment {assignment!r} (round_robin | random)")


def _field(obj: Any, name: str, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


# --------------------------------------------------------------------------- win rate
def summarize_outcomes(outcomes: Sequence[float], len_model: Sequence[int],
                       len_ref: Sequence[int], *, categories: Sequence[str] | None = None,
                       ci_method: str = "wilson", seed: int = 0, n_boot: int = 200) -> dict:
    """Win-rate summary of outcomes in {0, 0.5, 1} (model vs reference)."""
    o = list(outcomes)
    wins, ties = sum(x == 1.0 for x in o), sum(x == 0.5 for x in o)
    losses = len(o) - wins - ties
    rate, lo, hi = win_rate_ci(wins, ties, losses, ci_method)
    out: dict[str, Any] = {"win_rate": rate, "ci_low": lo, "ci_high": hi, "ci": [lo, hi],
                           "ci_method": ci_method, "n": len(o), "wins": wins, "ties": ties,
                           "losses": losses,
                           "mean_length": float(np.mean(len_model)) if o else None,
                           "ref_mean_length": float(np.mean(len_ref)) if o else None}
    lc = length_controlled_win_rate(o, len_model, len_ref, seed=seed, n_boot=n_boot)
    out.update({"length_controlled_win_rate": lc["lc_win_rate"], **lc})
    if categories is not None:
        by: dict[str, list[float]] = defaultdict(list)
        for c, x in zip(categories, o):
            by[c].append(x)
        out["win_rate_by_category"] = {c: sum(v) / len(v) for c, v in sorted(by.items())}
    return out


def compare_to_reference(prompts: Sequence, responses: Sequence[str],
                         ref_responses: Sequence[str], labelers: Sequence, *,
                         categories: Sequence[str] | None = None,
                         assignment: str = "round_robin", seed: int = 0,
                         ci_method: str = "wilson", n_boot: int = 200,
                         return_outcomes: bool = False) -> dict:
    """Win rate of `responses` against `ref_responses` (e.g. the SFT model's), each comparison
    judged by one labeler through `labeler.rank(prompt, [x, y])` with a seeded random order.

    Returns {"win_rate", "ci_low", "ci_high", "ci", "ci_method", "n", "wins", "ties", "losses",
    "length_controlled_win_rate" (= "lc_win_rate"), "lc_ci", "lc_slope",
    "length_matched_win_rate", "length_matched_n", "length_matched_ci", "mean_length",
    "ref_mean_length", "win_rate_by_category", "labelers": {id: n}} (+ "outcomes")."""
    if not (len(prompts) == len(responses) == len(ref_responses)):
        raise ValueError("prompts, responses and ref_responses differ in length")
    cats = _categories(prompts, categories)
    who = _assign(len(prompts), labelers, assignment, seed)
    order = random.Random(seed + 1)
    outcomes: list[float] = []
    used: dict[str, int] = defaultdict(int)
    for p, a, b, lab in zip(prompts, responses, ref_responses, who):
        swap = order.random() < 0.5
        groups = lab.rank(p, [b, a] if swap else [a, b])
        mine = 1 if swap else 0
        level = {i: g for g, grp in enumerate(groups) for i in grp}
        la, lb = level[mine], level[1 - mine]
        outcomes.append(1.0 if la < lb else 0.5 if la == lb else 0.0)
        used[str(_field(lab, "id", "?"))] += 1
    out = summarize_outcomes(outcomes, [n_words(r) for r in responses],
                             [n_words(r) for r in ref_responses], categories=cats,
                             ci_method=ci_method, seed=seed, n_boot=n_boot)
    out["labelers"] = dict(sorted(used.items()))
    if return_outcomes:
        out["outcomes"] = outcomes
    return out


def compare_by_judge(prompts: Sequence, responses: Sequence[str], ref_responses: Sequence[str],
                     judge: Callable, *, categories: Sequence[str] | None = None,
                     eps: float = 1e-9, ci_method: str = "wilson", seed: int = 0,
                     n_boot: int = 200) -> dict:
    """The same summary with the noiseless gold judge: win if score > ref score (+eps), tie if
    equal within eps."""
    cats = _categories(prompts, categories)
    outcomes = []
    for p, a, b in zip(prompts, responses, ref_responses):
        sa, sb = float(_field(judge(p, a), "score")), float(_field(judge(p, b), "score"))
        outcomes.append(1.0 if sa > sb + eps else 0.0 if sb > sa + eps else 0.5)
    return summarize_outcomes(outcomes, [n_words(r) for r in responses],
                              [n_words(r) for r in ref_responses], categories=cats,
                              ci_method=ci_method, seed=seed, n_boot=n_boot)


# --------------------------------------------------------------------------- Likert + metadata
def flag_applies(flag: str, category: str, harmful: bool,
                 closed_domain: Iterable[str] = DEFAULT_CLOSED_DOMAIN) -> bool:
    if flag == "hallucination":
        return category in set(closed_domain)
    if flag == "harmful_compliance":
        return harmful
    return True


def aggregate_ratings(ratings: Sequence[dict], categories: Sequence[str],
                      harmful: Sequence[bool], *,
                      closed_domain: Iterable[str] = DEFAULT_CLOSED_DOMAIN) -> dict:
    """Aggregate per-response {"likert", "flags"} (see `rate_responses` for the output)."""
    closed = set(closed_domain)
    likert = [float(r["likert"]) for r in ratings if r.get("likert") is not None]
    m, lo, hi = normal_ci(likert, clip=(1.0, 7.0))
    names = list(RATING_FLAGS) + sorted({k for r in ratings for k in (r.get("flags") or {})} -
                                        set(RATING_FLAGS))
    counts: dict[str, list[int]] = {f: [0, 0] for f in names}
    by_cat: dict[str, dict[str, list[int]]] = defaultdict(lambda: {f: [0, 0] for f in names})
    lik_cat: dict[str, list[float]] = defaultdict(list)
    n_cat: dict[str, int] = defaultdict(int)
    for r, c, h in zip(ratings, categories, harmful):
        n_cat[c] += 1
        if r.get("likert") is not None:
            lik_cat[c].append(float(r["likert"]))
        for f, v in (r.get("flags") or {}).items():
            if v is None or not flag_applies(f, c, h, closed):
                continue
            for box in (counts[f], by_cat[c][f]):
                box[0] += bool(v)
                box[1] += 1

    def rate(k_n):
        return k_n[0] / k_n[1] if k_n[1] else None

    return {
        "likert": m if likert else None,
        "likert_ci": [lo, hi] if likert else [None, None],
        "n_rated": len(ratings),
        "flags": {f: rate(counts[f]) for f in names},
        "flags_ci": {f: list(wilson_interval(*counts[f])) if counts[f][1] else [None, None]
                     for f in names},
        "flags_n": {f: counts[f][1] for f in names},
        "flags_by_category": {c: {f: rate(by_cat[c][f]) for f in names} for c in sorted(n_cat)},
        "likert_by_category": {c: (sum(v) / len(v) if v else None)
                               for c, v in ((c, lik_cat[c]) for c in sorted(n_cat))},
        "n_by_category": dict(sorted(n_cat.items())),
    }


def rate_responses(prompts: Sequence, categories: Sequence[str] | None,
                   responses: Sequence[str], labelers: Sequence, *,
                   harmful: Sequence[bool] | None = None, assignment: str = "round_robin",
                   seed: int = 0, closed_domain: Iterable[str] = DEFAULT_CLOSED_DOMAIN) -> dict:
    """Likert and metadata from held-out labelers (`labeler.rate(prompt, response)`), one rating
    per response.

    Returns {"likert": mean, "likert_ci": [lo, hi] (normal approx.), "n_rated",
    "flags": {flag: rate | None}, "flags_ci": {flag: [lo, hi]} (Wilson), "flags_n": {flag: n},
    "flags_by_category": {cat: {flag: rate | None}}, "likert_by_category": {cat: mean},
    "n_by_category": {cat: n}}. A rate is None where the flag never applies."""
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length")
    cats = _categories(prompts, categories)
    harm = _harmful(prompts, cats, harmful)
    who = _assign(len(prompts), labelers, assignment, seed)
    ratings = [dict(lab.rate(p, r)) for p, r, lab in zip(prompts, responses, who)]
    return aggregate_ratings(ratings, cats, harm, closed_domain=closed_domain)


def judge_responses(prompts: Sequence, responses: Sequence[str], judge: Callable, *,
                    categories: Sequence[str] | None = None,
                    harmful: Sequence[bool] | None = None,
                    closed_domain: Iterable[str] = DEFAULT_CLOSED_DOMAIN) -> dict:
    """The gold judge's view: {"score", "score_ci", "score_by_category"} plus everything
    `rate_responses` returns, from the judge's own Likert and flags."""
    cats = _categories(prompts, categories)
    harm = _harmful(prompts, cats, harmful)
    js = [judge(p, r) for p, r in zip(prompts, responses)]
    scores = [float(_field(j, "score")) for j in js]
    ratings = [{"likert": _field(j, "likert"), "flags": dict(_field(j, "flags") or {})}
               for j in js]
    out = aggregate_ratings(ratings, cats, harm, closed_domain=closed_domain)
    m, lo, hi = normal_ci(scores, clip=(0.0, 1.0))
    by: dict[str, list[float]] = defaultdict(list)
    for c, s in zip(cats, scores):
        by[c].append(s)
    out.update({"score": m if scores else None, "score_ci": [lo, hi] if scores else [None, None],
                "score_by_category": {c: sum(v) / len(v) for c, v in sorted(by.items())}})
    return out


# --------------------------------------------------------------------------- agreement
def labeler_agreement(prompts: Sequence, responses: Sequence[Sequence[str]],
                      labelers: Sequence, *, seed: int = 0) -> dict:
    """Inter-labeler agreement like the paper's §3.4 (≈73 %): for each prompt, two different
    labelers (seeded) rank the same K responses; over response pairs both ordered strictly, the
    fraction ordered the same way. Returns {"agreement", "ci": [lo, hi] (Wilson), "pairs",
    "prompts"}."""
    if len(labelers) < 2:
        raise ValueError("agreement needs at least two labelers")
    r = random.Random(seed)
    agree = total = 0
    for p, resp in zip(prompts, responses):
        if len(resp) < 2:
            continue
        a, b = r.sample(range(len(labelers)), 2)
        x, y = ranking_agreement(labelers[a].rank(p, list(resp)), labelers[b].rank(p, list(resp)))
        agree += x
        total += y
    return _agreement(agree, total, len(prompts))


def paired_agreement(first: Sequence[dict], second: Sequence[dict]) -> dict:
    """Agreement between two rankings of the same samples, row by row: e.g. the training
    labeler's and a held-out labeler's ranking of each RM validation prompt. This is the rate a
    reward model's held-out accuracy is compared with (paper §4.1: the RM predicts held-out
    labelers' preferences about as well as they agree with each other), measured on the same
    comparisons. Rows are Ranking records ({"prompt", "responses", "ranking"}) and must pair up:
    same prompt, same responses. Over response pairs both rankings order strictly, the share
    ordered the same way. Returns {"agreement", "ci": [lo, hi] (Wilson), "pairs", "prompts"}."""
    if len(first) != len(second):
        raise ValueError(f"the two rankings have {len(first)} and {len(second)} rows")
    agree = total = 0
    for i, (a, b) in enumerate(zip(first, second)):
        if a["prompt"] != b["prompt"] or a["responses"] != b["responses"]:
            raise ValueError(f"row {i + 1}: the two rankings are of different samples")
        x, y = ranking_agreement(a["ranking"], b["ranking"])
        agree += x
        total += y
    return _agreement(agree, total, len(first))


def _agreement(agree: int, total: int, prompts: int) -> dict:
    """The agreement record both measures return: rate (None without pairs), Wilson CI, counts."""
    lo, hi = wilson_interval(agree, total)
    return {"agreement": agree / total if total else None, "ci": [lo, hi], "pairs": total,
            "prompts": prompts}

"""Inter-labeler agreement on tasks answered by several labelers (pure functions, no I/O).

Rankings are compared the way the InstructGPT paper reports agreement (about 73% between
training labelers): over every pair of responses that *both* labelers ordered strictly, the
fraction ordered the same way. Pairs that either labeler tied are left out, as ties are left out
of reward-model training. Ratings are compared on the Likert score (exact, within one point) and
on each metadata flag.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any, Iterable, Mapping

from rlhf.rl.ranking import ranking_agreement


def _rate(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def agreement_report(submissions: Iterable[tuple[int, str, str, Mapping[str, Any]]]
                     ) -> dict[str, Any]:
    """Agreement over (task id, kind, labeler name, stored answer) rows; only tasks answered by
    at least two labelers count."""
    by_task: dict[tuple[int, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for task_id, kind, labeler, data in submissions:
        by_task[(task_id, kind)][labeler] = data

    rank_agree = rank_total = rank_tasks = 0
    rank_by: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rate_pairs = rate_tasks = exact = within1 = 0
    abs_diff = 0
    flag_agree: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rate_by: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    for (_, kind), answers in by_task.items():
        if len(answers) < 2:
            continue
        pairs = list(combinations(sorted(answers), 2))
        if kind == "ranking":
            rank_tasks += 1
            for x, y in pairs:
                agree, total = ranking_agreement(answers[x]["ranking"], answers[y]["ranking"])
                rank_agree += agree
                rank_total += total
                for name in (x, y):
                    rank_by[name][0] += agree
                    rank_by[name][1] += total
        elif kind == "rating":
            rate_tasks += 1
            for x, y in pairs:
                a, b = answers[x], answers[y]
                diff = abs(a["likert"] - b["likert"])
                rate_pairs += 1
                exact += diff == 0
                within1 += diff <= 1
                abs_diff += diff
                for name in (x, y):
                    rate_by[name][0] += diff <= 1
                    rate_by[name][1] += 1
                for flag in set(a["flags"]) & set(b["flags"]):
                    flag_agree[flag][0] += a["flags"][flag] == b["flags"][flag]
                    flag_agree[flag][1] += 1

    return {
        "ranking": {
            "tasks_with_overlap": rank_tasks,
            "comparisons": rank_total,
            "agreement": _rate(rank_agree, rank_total),
            "by_labeler": {name: {"comparisons": t, "agreement": _rate(a, t)}
                           for name, (a, t) in sorted(rank_by.items())},
        },
        "rating": {
            "tasks_with_overlap": rate_tasks,
            "pairs": rate_pairs,
            "likert_exact": _rate(exact, rate_pairs),
            "likert_within_1": _rate(within1, rate_pairs),
            "likert_mean_abs_diff": _rate(abs_diff, rate_pairs),
            "flags": {flag: _rate(a, t) for flag, (a, t) in sorted(flag_agree.items())},
            "by_labeler": {name: {"pairs": t, "likert_within_1": _rate(a, t)}
                           for name, (a, t) in sorted(rate_by.items())},
        },
    }

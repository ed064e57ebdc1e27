"""Evaluation statistics and judging with fake labelers (pure Python / numpy, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf.eval.judging import (compare_by_judge, compare_to_reference, judge_responses,
                               labeler_agreement, paired_agreement, rate_responses)
from rlhf.eval.overopt import fit_gao, fit_kl_curve, gao_curve, kl_curve_from_metrics
from rlhf.eval.stats import (fit_logistic, length_controlled_win_rate, normal_ci,
                             wilson_interval, win_rate_ci)


# --------------------------------------------------------------------------- CI math
def test_wilson_hand_worked_7_wins_2_ties_1_loss():
    # p = (7 + 2/2) / 10 = 0.8, z = 1.96: centre = (0.8 + z²/20) / (1 + z²/10) = 0.716741,
    # half = z·sqrt(0.8·0.2/10 + z²/400) / (1 + z²/10) = 0.226579
    rate, lo, hi = win_rate_ci(7, 2, 1)
    assert rate == pytest.approx(0.8)
    assert lo == pytest.approx(0.490162, abs=1e-6)
    assert hi == pytest.approx(0.943318, abs=1e-6)
    assert (lo, hi) == pytest.approx(wilson_interval(8.0, 10))


def test_normal_ci_hand_worked_and_clipped():
    # outcomes 1×7, 0.5×2, 0×1: mean 0.8, sample var = (7·0.04 + 2·0.09 + 0.64) / 9 = 0.12222
    # half width = 1.96·sqrt(0.12222/10) = 0.216682 -> [0.583318, 1.016682] clipped to 1
    rate, lo, hi = win_rate_ci(7, 2, 1, method="normal")
    assert rate == pytest.approx(0.8)
    assert lo == pytest.approx(0.8 - 0.2166822, abs=1e-6)
    assert hi == 1.0
    m, lo2, hi2 = normal_ci([1, 2, 3, 4])
    assert m == 2.5 and hi2 - m == pytest.approx(1.959964 * math.sqrt(5 / 3 / 4), abs=1e-5)


def test_ties_count_half():
    assert win_rate_ci(0, 10, 0)[0] == 0.5
    assert win_rate_ci(3, 2, 5)[0] == pytest.approx(0.4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


# --------------------------------------------------------------------------- fakes
class LengthLabeler:
    """Prefers the longer response; equal word counts tie."""

    def __init__(self, id):
        self.id = id
        self.calls = 0

    def rank(self, prompt, responses):
        self.calls += 1
        by = {}
        for i, r in enumerate(responses):
            by.setdefault(-len(r.split()), []).append(i)
        return [by[k] for k in sorted(by)]

    def rate(self, prompt, response):
        return RATINGS[response]


RATINGS = {
    "good": {"likert": 6, "flags": {"follows_instruction": True, "satisfies_constraint": True,
                                    "hallucination": False, "harmful_compliance": False,
                                    "appropriate_for_customer": True}},
    "bad": {"likert": 2, "flags": {"follows_instruction": False, "satisfies_constraint": False,
                                   "hallucination": True, "harmful_compliance": True,
                                   "appropriate_for_customer": False}},
}


def test_compare_counts_ties_half_and_round_robin():
    labs = [LengthLabeler("a"), LengthLabeler("b"), LengthLabeler("c")]
    mine = ["x x x", "x", "x x", "x x x x", "x x", "x"]
    ref = ["x", "x x", "x x", "x", "x", "x"]
    out = compare_to_reference([f"p{i}" for i in range(6)], mine, ref, labs, n_boot=0,
                               return_outcomes=True)
    # wins: 0, 3, 4; ties: 2, 5; loss: 1
    assert (out["wins"], out["ties"], out["losses"], out["n"]) == (3, 2, 1, 6)
    assert out["outcomes"] == [1.0, 0.0, 0.5, 1.0, 1.0, 0.5]
    assert out["win_rate"] == pytest.approx(4 / 6)
    assert out["ci"] == [out["ci_low"], out["ci_high"]]
    assert [x.calls for x in labs] == [2, 2, 2]
    assert out["labelers"] == {"a": 2, "b": 2, "c": 2}
    rnd = compare_to_reference(["p"] * 6, mine, ref, labs, assignment="random", seed=3, n_boot=0)
    assert rnd["win_rate"] == out["win_rate"]  # order shown to the labeler does not matter


def test_length_controlled_win_rate_removes_length_inflation():
    rng = np.random.default_rng(0)
    n = 600
    ref_len = rng.integers(5, 40, n)
    x = rng.normal(0.6, 0.4, n)                      # the model answers ~1.8x longer
    len_model = np.maximum(1, np.round((1 + ref_len) * np.exp(x) - 1)).astype(int)
    xr = np.log1p(len_model) - np.log1p(ref_len)
    p = 1 / (1 + np.exp(-(0.0 + 3.0 * xr)))          # quality equal; labelers like length
    y = (rng.random(n) < p).astype(float)
    lc = length_controlled_win_rate(y, len_model, ref_len, n_boot=100)
    assert y.mean() > 0.75                            # raw win rate inflated by length
    assert abs(lc["lc_win_rate"] - 0.5) < 0.08
    assert lc["lc_ci"][0] < 0.5 < lc["lc_ci"][1]
    assert lc["lc_slope"] > 1.5
    # a model that is better at equal length keeps its win rate
    x2 = rng.normal(0.0, 0.3, n)
    lm2 = np.maximum(1, np.round((1 + ref_len) * np.exp(x2) - 1)).astype(int)
    y2 = (rng.random(n) < 1 / (1 + np.exp(-1.0))).astype(float)
    lc2 = length_controlled_win_rate(y2, lm2, ref_len, n_boot=0)
    assert abs(lc2["lc_win_rate"] - y2.mean()) < 0.04
    assert lc2["length_matched_n"] > n / 2


def test_length_controlled_through_compare_with_length_loving_labelers():
    labs = [LengthLabeler(i) for i in range(4)]
    rng = np.random.default_rng(1)
    ref = [" ".join(["w"] * int(k)) for k in rng.integers(3, 20, 200)]
    mine = [r + " w w w" if i % 5 else r for i, r in enumerate(ref)]  # padded, else equal
    out = compare_to_reference(["p"] * 200, mine, ref, labs, n_boot=50)
    assert out["win_rate"] == pytest.approx(0.8 + 0.2 / 2)   # longer wins, equal ties
    assert out["length_controlled_win_rate"] < out["win_rate"] - 0.2
    assert out["length_matched_win_rate"] is not None


def test_logistic_fit_recovers_parameters():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(0.7 - 1.2 * x)))).astype(float)
    t0, t1 = fit_logistic(x, y, l2=0.0)
    assert t0 == pytest.approx(0.7, abs=0.1) and t1 == pytest.approx(-1.2, abs=0.1)


def test_rates_per_category_and_scopes():
    prompts = [{"prompt": "a", "category": "closed_qa"}, {"prompt": "b", "category": "closed_qa"},
               {"prompt": "c", "category": "generation"},
               {"prompt": "d", "category": "harmful", "harmful": True},
               {"prompt": "e", "category": "generation"}]
    resp = ["good", "bad", "bad", "bad", "good"]
    out = rate_responses(prompts, None, resp, [LengthLabeler("z")])
    assert out["likert"] == pytest.approx((6 + 2 + 2 + 2 + 6) / 5)
    assert out["likert_ci"][0] < out["likert"] < out["likert_ci"][1]
    f = out["flags"]
    assert f["follows_instruction"] == pytest.approx(2 / 5)
    assert f["hallucination"] == pytest.approx(1 / 2) and out["flags_n"]["hallucination"] == 2
    assert f["harmful_compliance"] == 1.0 and out["flags_n"]["harmful_compliance"] == 1
    by = out["flags_by_category"]
    assert by["generation"]["hallucination"] is None          # open domain: not counted
    assert by["generation"]["harmful_compliance"] is None
    assert by["generation"]["appropriate_for_customer"] == 0.5
    assert by["closed_qa"]["satisfies_constraint"] == 0.5
    assert out["n_by_category"] == {"closed_qa": 2, "generation": 2, "harmful": 1}
    assert out["likert_by_category"]["generation"] == 4.0
    lo, hi = out["flags_ci"]["follows_instruction"]
    assert (lo, hi) == pytest.approx(wilson_interval(2, 5))
    # explicit categories and a custom closed domain
    out2 = rate_responses(["a", "b", "c"], ["x", "y", "y"], ["bad", "bad", "good"],
                          [LengthLabeler("z")], closed_domain={"y"})
    assert out2["flags"]["hallucination"] == 0.5
    assert out2["flags"]["harmful_compliance"] is None


def test_gold_judge_views():
    def judge(p, r):
        return {"score": 0.9 if r == "good" else 0.1, **RATINGS[r]}
    prompts = [{"prompt": "a", "category": "closed_qa"}, {"prompt": "b", "category": "chat"}]
    g = judge_responses(prompts, ["good", "bad"], judge)
    assert g["score"] == pytest.approx(0.5) and g["flags"]["hallucination"] == 0.0
    assert g["score_by_category"] == {"chat": 0.1, "closed_qa": 0.9}
    w = compare_by_judge(prompts, ["good", "good"], ["bad", "good"], judge, n_boot=0)
    assert (w["wins"], w["ties"], w["losses"]) == (1, 1, 0)


def test_labeler_agreement():
    class Fixed:
        def __init__(self, id, rev):
            self.id, self.rev = id, rev

        def rank(self, p, rs):
            order = sorted(range(len(rs)), key=lambda i: rs[i], reverse=self.rev)
            return [[i] for i in order]
    resp = [["a", "b", "c"], ["x", "y"]]
    assert labeler_agreement(["p", "q"], resp, [Fixed(1, False), Fixed(2, False)])[
        "agreement"] == 1.0
    out = labeler_agreement(["p", "q"], resp, [Fixed(1, False), Fixed(2, True)])
    assert out["agreement"] == 0.0 and out["pairs"] == 4


def test_paired_agreement_counts_pairs_both_rankings_order():
    row = {"prompt": "p", "responses": ["a", "b", "c"]}
    first = [{**row, "ranking": [[0], [1], [2]]}, {**row, "ranking": [[0, 1], [2]]}]
    second = [{**row, "ranking": [[1], [0], [2]]}, {**row, "ranking": [[0], [1], [2]]}]
    out = paired_agreement(first, second)
    # row 1: (0,1) disagree, (0,2) and (1,2) agree; row 2: (0,1) tied in the first, left out
    assert out["pairs"] == 5 and out["agreement"] == pytest.approx(4 / 5)
    assert out["prompts"] == 2 and out["ci"][0] < 0.8 < out["ci"][1]
    with pytest.raises(ValueError, match="row 2"):
        paired_agreement(first, [second[0], {**second[1], "responses": ["a", "b", "d"]}])
    with pytest.raises(ValueError, match="rows"):
        paired_agreement(first, second[:1])


# --------------------------------------------------------------------------- Gao fit
@pytest.mark.parametrize("form", ["rl", "bon"])
def test_gao_fit_recovers_alpha_beta(form):
    d = np.linspace(0, 6, 25)
    r = 0.3 + gao_curve(d, 1.3, 0.45, form)
    f = fit_gao(d, r, form=form)
    assert f["alpha"] == pytest.approx(1.3, abs=1e-8) and f["beta"] == pytest.approx(0.45, abs=1e-8)
    assert f["baseline"] == pytest.approx(0.3) and f["rmse"] < 1e-8
    rng = np.random.default_rng(0)
    noisy = fit_gao(d, r + rng.normal(0, 0.02, d.size), form=form)
    assert noisy["alpha"] == pytest.approx(1.3, abs=0.1)
    assert noisy["beta"] == pytest.approx(0.45, abs=0.1)


def test_kl_curve_from_metrics_and_fit():
    rows = [{"step": 0, "objective/kl": 0.0, "objective/score": 0.0, "gold/score": 0.4},
            {"step": 1, "ppo/loss": 1.0},
            {"step": 2, "objective/kl": 1.0, "objective/score": 1.0, "gold/score": 0.5},
            {"step": 3, "objective/kl": 4.0, "objective/score": 1.6, "gold/score": 0.45}]
    pts = kl_curve_from_metrics(rows)
    assert [p["sqrt_kl"] for p in pts] == [0.0, 1.0, 2.0]
    fits = fit_kl_curve(pts)
    assert fits["gold"]["baseline"] == 0.4 and fits["proxy"]["n"] == 3
    tuples = fit_kl_curve([(0.0, 0.0, 0.4), (1.0, 1.0, 0.5), (2.0, 1.6, 0.45)])
    assert tuples["gold"]["alpha"] == pytest.approx(fits["gold"]["alpha"])

"""Confidence intervals and the length-controlled win rate (pure numpy, no I/O).

Choices (documented here, used everywhere in `rlhf.eval`):

- **Win rate** is the mean of per-comparison outcomes in {0, 0.5, 1} (loss, tie, win): ties count
  half. Its 95 % CI is the **Wilson score interval** for a proportion p̂ = (wins + ties/2) / n.
  Wilson stays inside [0, 1] and behaves well for small n and p̂ near 0 or 1. With ties it is
  slightly conservative: a tie contributes variance 0 around 0.5 instead of the Bernoulli 0.25,
  so the true variance of the mean is p̂(1 − p̂)/n − ties/(4n²) ≤ the Wilson/Bernoulli one.
  `normal_ci` (mean ± z·s/√n with the sample std of the outcomes) is the alternative.
- **Rates of binary flags** use the Wilson interval too.
- **Mean Likert** uses the normal approximation mean ± z·s/√n (sample std, ddof = 1).
- **Length-controlled win rate** (spec §8.16): a logistic regression of the outcome on the
  log length ratio x = log((1 + len_model) / (1 + len_reference)) (lengths in words),
      P(model wins) = σ(θ0 + θ1·x),
  fitted by penalised Newton/IRLS with fractional targets (a tie is the target 0.5) and a small
  L2 penalty (0.01) on θ1 only (so a perfectly length-separated sample still has a finite fit). The
  length-controlled win rate is σ(θ0): the predicted win rate of an equally long answer. This is
  the idea of AlpacaEval's length-controlled win rate, reduced to one covariate. Its CI is a
  percentile bootstrap over comparisons. When the model is longer in (nearly) every comparison,
  σ(θ0) extrapolates to an equal length the data never shows; read it with the simpler
  companion, the **length-matched win rate**: the raw win rate over the comparisons whose
  lengths are within a factor of 1.25 (`length_matched_n` says how many there were).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes / n (successes may be fractional,
    e.g. wins + ties / 2). n = 0 gives (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def normal_ci(values: Sequence[float], z: float = Z95,
              clip: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(mean, low, high) with mean ± z·s/√n (sample std, ddof = 1); one value gives a zero-width
    interval, none gives NaNs. `clip` bounds the interval (e.g. (0, 1) or (1, 7))."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    lo, hi = m - z * se, m + z * se
    if clip is not None:
        lo, hi = max(clip[0], lo), min(clip[1], hi)
    return m, lo, hi


def win_rate_ci(wins: int, ties: int, losses: int, method: str = "wilson",
                z: float = Z95) -> tuple[float, float, float]:
    """(win rate with ties counted half, low, high)."""
    n = wins + ties + losses
    if n == 0:
        return float("nan"), 0.0, 1.0
    rate = (wins + 0.5 * ties) / n
    if method == "wilson":
        lo, hi = wilson_interval(wins + 0.5 * ties, n, z)
        return rate, lo, hi
    if method == "normal":
        _, lo, hi = normal_ci([1.0] * wins + [0.5] * ties + [0.0] * losses, z, clip=(0.0, 1.0))
        return rate, lo, hi
    raise ValueError(f"unknown CI method {method!r} (wilson | normal)")


def bootstrap_ci(values: Sequence, stat, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of stat(resampled values) (values: array, rows are resampled)."""
    v = np.asarray(values)
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    stats = np.array([stat(v[i]) for i in idx], dtype=np.float64)
    a = (1 - level) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


# --------------------------------------------------------------------------- length control
def log_length_ratio(len_model: Sequence[float], len_ref: Sequence[float]) -> np.ndarray:
    return np.log1p(np.asarray(len_model, dtype=np.float64)) - \
        np.log1p(np.asarray(len_ref, dtype=np.float64))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 0.01,
                 iters: int = 50) -> tuple[float, float]:
    """(θ0, θ1) of P(y = 1 | x) = σ(θ0 + θ1·x) with fractional y in [0, 1], by Newton's method on
    the cross-entropy + (l2 / 2)·θ1² (the intercept is not penalised)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    X = np.stack([np.ones_like(x), x], axis=1)
    theta = np.zeros(2)
    pen = np.array([0.0, l2])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ theta, -30, 30)))
        grad = X.T @ (p - y) + pen * theta
        w = np.maximum(p * (1 - p), 1e-9)
        hess = (X * w[:, None]).T @ X + np.diag(pen) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def _lc_rate(rows: np.ndarray, l2: float) -> float:
    x, y = rows[:, 0], rows[:, 1]
    if np.ptp(x) == 0:  # no length variation: nothing to control for
        return float(y.mean())
    t0, _ = fit_logistic(x, y, l2)
    return 1.0 / (1.0 + math.exp(-t0))


def length_controlled_win_rate(outcomes: Sequence[float], len_model: Sequence[float],
                               len_ref: Sequence[float], *, l2: float = 0.01,
                               n_boot: int = 200, seed: int = 0,
                               match_ratio: float = 1.25) -> dict:
    """Length-controlled and length-matched win rates (see the module docstring).

    Returns {"lc_win_rate", "lc_ci": [lo, hi], "lc_slope" (θ1: log-odds per unit log length
    ratio), "length_matched_win_rate" (None if no pair matches), "length_matched_n",
    "length_matched_ci"}."""
    y = np.asarray(outcomes, dtype=np.float64)
    if y.size == 0:
        return {"lc_win_rate": None, "lc_ci": [None, None], "lc_slope": None,
                "length_matched_win_rate": None, "length_matched_n": 0,
                "length_matched_ci": [None, None]}
    x = log_length_ratio(len_model, len_ref)
    rows = np.stack([x, y], axis=1)
    lc = _lc_rate(rows, l2)
    slope = fit_logistic(x, y, l2)[1] if np.ptp(x) > 0 else 0.0
    lo, hi = bootstrap_ci(rows, lambda r: _lc_rate(r, l2), n_boot=n_boot, seed=seed) \
        if n_boot > 0 else (lc, lc)
    matched = np.abs(np.log(np.maximum(np.asarray(len_model, float), 1) /
                            np.maximum(np.asarray(len_ref, float), 1))) <= math.log(match_ratio)
    ym = y[matched]
    if ym.size:
        wins, ties = int((ym == 1).sum()), int((ym == 0.5).sum())
        m_rate, m_lo, m_hi = win_rate_ci(wins, ties, int(ym.size) - wins - ties)
    else:
        m_rate, m_lo, m_hi = None, None, None
    return {"lc_win_rate": lc, "lc_ci": [lo, hi], "lc_slope": slope,
            "length_matched_win_rate": m_rate, "length_matched_n": int(ym.size),
            "length_matched_ci": [m_lo, m_hi]}

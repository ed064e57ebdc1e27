"""Statistics over the valid tokens of a padded batch.

Every function takes a tensor ``x`` and a ``mask`` of the same shape (bool or 0/1; 1 = valid
token). Invalid positions never enter a result, even when they hold ``inf`` or ``nan``: they are
selected away with ``torch.where`` before any arithmetic, so they also receive zero gradient.

Variance is the *population* variance (divide by N, as TF ``tf.nn.moments`` does), spec 7.14.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _valid(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Return (x with invalid entries set to 0, bool mask)."""
    m = mask.bool()
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)), m


def _count(m: Tensor, dim: int | None, keepdim: bool, dtype: torch.dtype) -> Tensor:
    n = m.sum() if dim is None else m.sum(dim=dim, keepdim=keepdim)
    return n.to(dtype)


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Sum over valid entries: ``Σ_i m_i·x_i`` (over all entries, or along ``dim``)."""
    xv, _ = _valid(x, mask)
    return xv.sum() if dim is None else xv.sum(dim=dim, keepdim=keepdim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Mean over valid entries: ``Σ_i m_i·x_i / Σ_i m_i``.

    A slice with no valid entry has mean 0 (not nan), with zero gradient.
    """
    xv, m = _valid(x, mask)
    s = xv.sum() if dim is None else xv.sum(dim=dim, keepdim=keepdim)
    n = _count(m, dim, keepdim, s.dtype)
    return torch.where(n > 0, s / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(s))


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = False) -> Tensor:
    """Variance over all valid entries.

    ``μ = masked_mean(x)``, ``Var = Σ m_i (x_i − μ)² / N`` with ``N = Σ m_i`` (population, the
    default, spec 7.14), or ``/ (N − 1)`` when ``unbiased=True`` (Bessel; needs N ≥ 2).
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.bool().sum()
        if int(n) < 2:
            raise ValueError(f"unbiased masked_var needs at least 2 valid entries, got {int(n)}")
        var = var * (n / (n - 1))
    return var


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8,
           all_reduce_sum: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Whiten over the valid entries (spec 7.14 advantages, 7.15 rewards).

    ``x̂_i = (x_i − μ) / sqrt(σ² + eps)``, with μ, σ² the masked mean and population variance.
    With ``shift_mean=False`` the mean is restored: ``x̂_i = (x_i − μ)/sqrt(σ² + eps) + μ``
    (scale only, as [LMHP] reward whitening). Invalid positions are returned as 0.

    ``all_reduce_sum`` (e.g. `rlhf.dist.all_reduce_sum` under torchrun) takes μ and σ² over the
    valid entries of every process: the sums are reduced in float64, so N processes whiten
    exactly as one process holding all their rows would (up to rounding).
    """
    if all_reduce_sum is None:
        mean = masked_mean(x, mask)
        var = masked_var(x, mask)
    else:
        m = mask.bool()
        xv = torch.where(m, x, torch.zeros_like(x)).double()
        s = all_reduce_sum(torch.stack([xv.sum(), m.sum().double()]))
        n = s[1].clamp(min=1)
        mean64 = s[0] / n
        dev = torch.where(m, x.double() - mean64, torch.zeros_like(xv))
        mean, var = mean64.to(x.dtype), (all_reduce_sum((dev ** 2).sum()) / n).to(x.dtype)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return _valid(out, mask)[0]


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """Fraction of the returns' variance the value function explains, over valid tokens.

    ``EV = 1 − Var[R − V] / Var[R]`` (population variances). 1 is perfect, 0 is no better than
    a constant, negative is worse. ``nan`` when ``Var[R] = 0``.
    """
    var_r = masked_var(returns, mask)
    var_res = masked_var(returns - values, mask)
    return torch.where(var_r > 0, 1 - var_res / torch.where(var_r > 0, var_r, torch.ones_like(var_r)),
                       torch.full_like(var_r, float("nan")))

"""PPO losses (Schulman et al. 2017) and the PPO-ptx language-model term, spec 7.16, 7.17, 7.28.

All means are over the valid tokens of the whole minibatch (``masked_mean``), so post-EOS
positions change neither a loss nor its gradient (spec 7.20, pitfall 8.9). Stats are detached
0-d tensors (call ``.item()`` when logging; no device sync here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf.rl.logprobs import logprobs_from_logits
from rlhf.rl.masked import _valid, masked_mean


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_range: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate policy loss (PPO Eq. 7, negated for minimisation), spec 7.17.

    ``ρ_t = exp(log π_t − log π_old_t)``,
    ``L = mean_valid[ max(−A_t·ρ_t, −A_t·clip(ρ_t, 1 − ε, 1 + ε)) ]``.

    Stats: ``clipfrac = mean_valid[1(−A·clip(ρ) > −A·ρ)]`` (the clipped branch is active),
    ``approx_kl = ½·mean_valid[(log π − log π_old)²]``, ``ratio_mean``, ``ratio_max`` (valid only).
    """
    log_ratio, m = _valid(logprobs - old_logprobs, mask)  # 0 off-mask: no overflow, no grad leak
    advantages = _valid(advantages, m)[0]
    ratio = torch.exp(log_ratio)
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(pg_unclipped, pg_clipped), m)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_clipped > pg_unclipped).to(ratio.dtype), m),
            "approx_kl": 0.5 * masked_mean(log_ratio**2, m),
            "ratio_mean": masked_mean(ratio, m),
            "ratio_max": torch.where(m, ratio, torch.full_like(ratio, -torch.inf)).max(),
        }
    return loss, stats


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range_value: float | None = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss, spec 7.16 ([LMHP] ``loss``, PPO37).

    ``V_clip = V_old + clip(V − V_old, −ε, ε)``,
    ``L = ½·mean_valid[ max((V − R)², (V_clip − R)²) ]``; with ``clip_range_value=None``,
    ``L = ½·mean_valid[(V − R)²]``. Multiply by vf_coef (0.1 in [LMHP]) when the loss is shared.

    Stats: ``clipfrac = mean_valid[1((V_clip − R)² > (V − R)²)]``, ``error = mean_valid[(V − R)²]``.
    """
    # Zero every input off-mask first, so even inf/nan there cannot reach the loss or a gradient.
    values, m = _valid(values, mask)
    old_values, returns = _valid(old_values, m)[0], _valid(returns, m)[0]
    loss_unclipped = (values - returns) ** 2
    if clip_range_value is None:
        loss_clipped = loss_unclipped
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
        loss_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), m)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((loss_clipped > loss_unclipped).to(values.dtype), m),
            "error": masked_mean(loss_unclipped, m),
        }
    return loss, stats


def lm_nll(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Mean negative log-likelihood per valid token (the PPO-ptx pretraining term, spec 7.28).

    ``L = −Σ_t m_t·log softmax(logits_t)[y_t] / Σ_t m_t``. ``logits [B, T, V]`` and ``labels
    [B, T]`` are aligned (logits at t score label t: pass ``logits[:, :-1]``, ``ids[:, 1:]``).
    Labels at invalid positions may hold anything (e.g. −100). The objective adds ``γ·(−L)``;
    the caller scales this loss by γ (27.8 in the paper).
    """
    m = mask.bool()
    safe_labels = torch.where(m, labels, torch.zeros_like(labels))
    return -masked_mean(logprobs_from_logits(logits, safe_labels), m)

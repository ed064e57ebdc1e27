"""Generalised Advantage Estimation (Schulman et al. 2016), spec 4 and 7.13.

The episode is one response (a bandit with per-token KL rewards). The response ends at its last
valid token, so the value after it is 0 (no bootstrap).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf.rl.masked import _valid


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    gae_lambda: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Advantages and returns by the backward GAE recursion, per row of ``[B, T]`` tensors.

    With ``m_t`` the mask (``m_T = 0``) and invalid rewards/values read as 0:

        δ_t = r_t + γ·m_{t+1}·V_{t+1} − V_t
        A_t = m_t·(δ_t + γ·λ·m_{t+1}·A_{t+1})
        R_t = A_t + V_t    (on valid tokens; 0 elsewhere)

    ``mask`` is a prefix mask (valid tokens first); an invalid position ends the episode.
    The paper uses γ = 1; λ is unspecified ([LMHP]/[N+] 0.95, [AF] 1.0). A loop over time,
    vectorised over the batch. Returns ``(advantages, returns)``, both ``[B, T]``, no grad.
    """
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, mask "
                         f"{tuple(mask.shape)} must all be the same [B, T] shape")
    with torch.no_grad():
        r, m = _valid(rewards, mask)
        v, _ = _valid(values.to(r.dtype), mask)
        mf = m.to(r.dtype)
        B, T = r.shape
        advantages = torch.zeros_like(r)
        next_value = torch.zeros(B, dtype=r.dtype, device=r.device)  # m_{t+1}·V_{t+1}
        next_adv = torch.zeros(B, dtype=r.dtype, device=r.device)  # m_{t+1}·A_{t+1}
        for t in reversed(range(T)):
            delta = r[:, t] + gamma * next_value - v[:, t]
            a_t = mf[:, t] * (delta + gamma * gae_lambda * next_adv)
            advantages[:, t] = a_t
            next_value, next_adv = v[:, t], a_t  # both already 0 where m_t = 0
        returns = (advantages + v) * mf
    return advantages, returns

"""KL penalty: per-token estimators, the shaped per-token reward, and β controllers.

Paper Eq. 2: ``R(x, y) = r_θ(x, y) − β·log(π^RL(y|x) / π^SFT(y|x))``. Implemented per token
(spec 4, 7.11, [LMHP] ``compute_rewards``): with ``d_t = log π(y_t) − log π_ref(y_t)``,

    non_score_reward_t = −β·k(d_t)                (every valid response token)
    reward_t           = non_score_reward_t + 1[t = last valid]·r_θ(x, y)

Estimators of ``KL(π‖π_ref)`` from samples ``y ~ π`` (Schulman, "Approximating KL divergence"):
``k1 = d`` (unbiased, per-token can be < 0; the paper's), ``k2 = d²/2``, ``k3 = (e^{−d} − 1) + d``
(unbiased, ≥ 0).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rlhf.rl.logprobs import last_valid_index
from rlhf.rl.masked import _valid

KLEstimator = Literal["k1", "k2", "k3"]


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``k1 = log π − log π_ref`` (the sampled log-ratio; [LMHP], [IGPT])."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``k2 = ½·(log π − log π_ref)²`` (biased, ≥ 0, low variance)."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``k3 = (r − 1) − log r`` with ``r = π_ref/π = exp(−d)``, i.e. ``e^{−d} − 1 + d`` (unbiased, ≥ 0)."""
    d = logprobs - ref_logprobs
    return torch.expm1(-d) + d


_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token KL estimate ``k(d_t)`` with the named estimator (``"k1"``, ``"k2"``, ``"k3"``)."""
    try:
        fn = _ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {sorted(_ESTIMATORS)}") from None
    return fn(logprobs, ref_logprobs)


def compute_rewards(
    score: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    beta_kl: float | Tensor,
    clamp_kl: bool = False,
    estimator: KLEstimator = "k1",
) -> tuple[Tensor, Tensor, Tensor]:
    """Shaped per-token rewards for PPO (paper Eq. 2, spec 7.11, 7.20).

    ``kl_t = m_t·k(log π_t − log π_ref_t)`` (clamped at ≥ 0 if ``clamp_kl``, the [AF] option),
    ``non_score_reward_t = −β·kl_t``, ``rewards_t = non_score_reward_t + 1[t = t_last]·score``
    where ``t_last`` is the last valid token of the row (its EOS, or the last token when truncated).
    All three are 0 at invalid positions. So ``Σ_t rewards_t = score − β·Σ_t m_t·kl_t``.

    Args:
        score: RM score per sequence ``[B]``.
        logprobs, ref_logprobs: ``[B, T]`` log-probs of the sampled response tokens.
        mask: ``[B, T]`` valid-token mask; every row needs at least one valid token.
        beta_kl: β (float or 0-d tensor).
    Returns:
        ``(rewards, non_score_reward, kl)``, each ``[B, T]``.
    """
    if score.shape != mask.shape[:1]:
        raise ValueError(f"score must have shape [B]={tuple(mask.shape[:1])}, got {tuple(score.shape)}")
    kl = kl_per_token(logprobs, ref_logprobs, estimator)
    if clamp_kl:
        kl = kl.clamp(min=0)
    kl, m = _valid(kl, mask)
    non_score_reward = -beta_kl * kl
    last = last_valid_index(m)
    if bool((last < 0).any()):
        raise ValueError("compute_rewards: a response has no valid token, so its score has nowhere to go")
    at_last = torch.nn.functional.one_hot(last, num_classes=m.shape[-1]).bool()
    rewards = non_score_reward + torch.where(at_last, score.to(kl.dtype).unsqueeze(-1), 0.0)
    return rewards, non_score_reward, kl


class FixedKLController:
    """Constant β (the paper's choice: β = 0.02, App. C.4). ``update`` does nothing."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        """No-op; returns β."""
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional β controller of Ziegler et al. 2019 ([LMHP] ``AdaptiveKLController``, spec 7.12).

    ``e = clip(KL / KL_target − 1, −0.2, 0.2)``, ``β ← β·(1 + e·n_steps / horizon)``,
    where ``n_steps`` is the number of episodes since the last update and ``horizon`` is in
    episodes (10,000 in [LMHP]).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got target={target}, horizon={horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Apply one controller step with the measured KL; returns the new β."""
        e = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + e * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])

"""Optimizer, weight EMA and LR-schedule multipliers for the RL step (spec 1, 4, 7.22, 7.23).

Schedules return a multiplier of the peak LR for a 0-based optimizer step, so they plug into
``torch.optim.lr_scheduler.LambdaLR(opt, lambda s: constant_with_warmup(s, 10))``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn


class TFAdam(torch.optim.Optimizer):
    """Adam with TensorFlow's ε placement (spec 7.23, [LMHP] ``utils/core.py`` eps=1e-5).

    For step t = 1, 2, ...::

        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        lr_t = lr·sqrt(1 − β2^t) / (1 − β1^t)
        θ ← θ − lr_t·m / (sqrt(v) + ε̂)

    ε̂ is added to the *uncorrected* √v, unlike ``torch.optim.Adam`` (ε added to √v̂); the two
    agree only when ε̂ = ε·sqrt(1 − β2^t). Defaults: β = (0.9, 0.95) ([IGPT] App. C), ε̂ = 1e-5
    ([LMHP]). No weight decay (none in [IGPT]/[LMHP]).
    """

    def __init__(self, params: Iterable, lr: float = 1e-5, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-5):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid TFAdam hyper-parameters lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("TFAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                lr_t = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr_t)
        return loss


class EMA:
    """Exponential moving average of a model's floating-point parameters ([IGPT] App. C.4: 0.992).

    ``θ̄ ← d·θ̄ + (1 − d)·θ`` on every ``update(model)``; ``θ̄`` starts at the model's weights.
    The shadow copy is kept in float32 (a bf16 shadow would lose the (1 − d)·Δθ increments).
    """

    def __init__(self, model: nn.Module, decay: float = 0.992):
        if not 0 <= decay <= 1:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {
            name: p.detach().to(torch.float32, copy=True)
            for name, p in model.named_parameters() if p.is_floating_point()
        }

    def _params(self, model: nn.Module) -> Iterator[tuple[str, Tensor]]:
        params = dict(model.named_parameters())
        missing = set(self.shadow) - set(params)
        if missing:
            raise KeyError(f"EMA: model lacks parameters {sorted(missing)[:5]}")
        for name in self.shadow:
            yield name, params[name]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``θ̄ ← d·θ̄ + (1 − d)·θ`` for every tracked parameter."""
        for name, p in self._params(model):
            self.shadow[name].lerp_(p.detach().to(torch.float32), 1.0 - self.decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the averaged ones (cast to each parameter's dtype)."""
        for name, p in self._params(model):
            p.copy_(self.shadow[name])

    @contextlib.contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily swap the EMA weights into ``model`` (e.g. for evaluation); restore on exit."""
        backup = {name: p.detach().clone() for name, p in self._params(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._params(model):
                    p.copy_(backup[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            if name not in self.shadow:
                raise KeyError(f"EMA state has unknown parameter {name!r}")
            self.shadow[name].copy_(value)


def constant_with_warmup(step: int, warmup_steps: int, start_factor: float = 0.1) -> float:
    """LR multiplier rising linearly from ``start_factor`` at step 0 to 1 at ``warmup_steps``,
    then constant ([IGPT] App. C.4: warmup over the first 10 iterations from 0.1×).

    ``f(s) = start + (1 − start)·min(s, W)/W`` (``f = 1`` when W = 0).
    """
    if warmup_steps <= 0:
        return 1.0
    return start_factor + (1.0 - start_factor) * min(max(step, 0), warmup_steps) / warmup_steps


def linear_decay(step: int, total: int) -> float:
    """LR multiplier ``f(s) = max(0, 1 − s/total)`` ([LMHP]/[N+] ``lrnow = lr·(1 − frac)``)."""
    if total <= 0:
        raise ValueError(f"total must be > 0, got {total}")
    return max(0.0, 1.0 - step / total)


def cosine_to_fraction(step: int, total: int, final_fraction: float = 0.1, warmup: int = 0) -> float:
    """Linear warmup ``s/W`` for ``s < W``, then cosine from 1 down to ``final_fraction`` at
    ``s = total`` and flat after ([IGPT] SFT/RM: cosine to 10%).

    ``p = (s − W)/(total − W)`` clipped to [0, 1], ``f = φ + (1 − φ)·½·(1 + cos(π·p))``.
    """
    if total <= 0 or not 0 <= warmup < total:
        raise ValueError(f"need 0 <= warmup < total, got warmup={warmup}, total={total}")
    if step < warmup:
        return step / warmup
    p = min(1.0, (step - warmup) / (total - warmup))
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * p))

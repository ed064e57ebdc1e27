"""PPO's runtime checks: each raises with a diagnosis instead of training on garbage.

    KL = 0 at iteration 0             the reference is an exact copy of the initial policy
    ratio = 1 on the first minibatch  the trained policy is the function that sampled (§8.1)
    finite everything                 scores, rollout log-probs, values, rewards, losses, grads

Each is one call in the recipe; the tolerances below are the contract.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from rlhf import rl

#: On the first minibatch of an iteration, mean |ratio − 1| over valid tokens allowed (fp32),
#: spec 8.1.
RATIO_TOL = 1e-5
#: ... and the largest single-token deviation allowed in fp32 (rounding of the KV-cache path).
RATIO_MAX_TOL = 1e-3
#: At iteration 0 (policy = reference), mean per-token |KL| allowed; max per token: RATIO_MAX_TOL.
KL0_TOL = 1e-6
#: The same two under bf16 autocast, where the sampler (KV cache, one token at a time) and the
#: training forward (whole sequence) round differently: ~10x the rounding measured on the
#: benchmark model (max |ratio - 1| 0.008, mean |log-ratio| 0.0016; benchmarks/RESULTS.md), far
#: below what a real mismatch (temperature, dropout, positions, stale weights) produces.
BF16_RATIO_TOL = 0.1
BF16_KL0_TOL = 5e-3


class NonFiniteError(FloatingPointError):
    """A NaN or inf appeared in a score, reward, loss or gradient; the message says where."""


class InvariantError(RuntimeError):
    """A PPO runtime invariant (KL = 0 at iteration 0, ratio = 1 on the first minibatch) failed."""


def non_finite_rows(x: Tensor) -> list[int]:
    """Indices of the rows of `x` that hold a NaN or inf."""
    bad = ~torch.isfinite(x)
    if bad.dim() > 1:
        bad = bad.flatten(1).any(1)
    return bad.nonzero().flatten().tolist()


def check_scores(raw: Tensor, texts: list[str], responses: list[str], reward_name: str,
                 iteration: int) -> None:
    """Every episode of a rollout chunk got a finite score."""
    bad = non_finite_rows(raw)
    if bad:
        i = bad[0]
        raise NonFiniteError(
            f"non-finite score from the {reward_name} at iteration {iteration}: "
            f"{len(bad)} of {len(texts)} episodes in this chunk (first: value "
            f"{float(raw[i])}, prompt {texts[i]!r}, response {responses[i]!r})")


def check_rollout(logprobs: Tensor, ref_logprobs: Tensor, values: Tensor, mask: Tensor,
                  texts: list[str], iteration: int) -> None:
    """The sampler's and the reference's log-probs and the values are finite on valid tokens."""
    for x, name, what in ((logprobs, "policy log-probs", "the policy (sampler)"),
                          (ref_logprobs, "reference log-probs", "the reference model"),
                          (values, "values", "the value model")):
        bad = non_finite_rows(torch.where(mask.bool(), x, torch.zeros_like(x)))
        if bad:
            raise NonFiniteError(
                f"non-finite {name} from {what} at iteration {iteration} in {len(bad)} of "
                f"{len(texts)} episodes (first: prompt {texts[bad[0]]!r}); its weights or "
                "inputs hold a NaN/inf")


def check_rewards(rewards: Tensor, scores: Tensor, logprobs: Tensor,
                  ref_logprobs: Tensor) -> None:
    """The per-token rewards (KL penalty + score) are finite."""
    bad = non_finite_rows(rewards)
    if bad:
        i = bad[0]
        raise NonFiniteError(
            f"non-finite per-token reward in {len(bad)} episodes (first: episode {i}; score "
            f"{float(scores[i])}, finite log-probs: {bool(torch.isfinite(logprobs[i]).all())}"
            f", finite reference log-probs: {bool(torch.isfinite(ref_logprobs[i]).all())})")


def check_kl0(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
              autocast: torch.dtype | None = None) -> None:
    """Iteration 0: policy = reference, so log π − log π_ref = 0 on every response token."""
    d = torch.where(mask.bool(), logprobs - ref_logprobs, torch.zeros_like(logprobs))
    worst, mean = float(d.abs().max()), float(rl.masked_mean(d, mask).abs())
    tol, tol_mean = (BF16_RATIO_TOL, BF16_KL0_TOL) if autocast is not None else (RATIO_MAX_TOL,
                                                                                 KL0_TOL)
    if worst > tol or mean > tol_mean:
        raise InvariantError(
            f"PPO invariant violated: KL to the reference is not 0 at iteration 0 (mean per-token "
            f"log-ratio {mean:.3g}, max |log-ratio| {worst:.3g}). The reference must be an exact, "
            "frozen copy of the initial policy, scored with the same temperature, PAD removal "
            "and position ids as the sampler; check dropout (off), dtype and the temperature. "
            "(In reduced precision, set ppo.check_invariants=false.)")


def check_ratio(new_logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, where: str, *,
                autocast: torch.dtype | None, enforce: bool) -> float:
    """On the first minibatch of an iteration the training log-probs reproduce the rollout's:
    mean |ratio − 1| ≤ RATIO_TOL and max ≤ RATIO_MAX_TOL (fp32). Returns the max deviation;
    raises only when `enforce` (`ppo.check_invariants`), except for non-finite log-probs."""
    dev = torch.where(mask.bool(), (new_logprobs - old_logprobs).exp() - 1,
                      torch.zeros_like(new_logprobs)).abs()
    worst = float(dev.max())
    if not math.isfinite(worst):
        raise NonFiniteError(
            f"non-finite training log-probs at {where} (the policy's forward pass on the "
            "rollout), although the rollout's own were finite: the policy weights changed "
            "to NaN/inf between the rollout and the update")
    mean = float(dev.sum() / mask.sum().clamp(min=1))
    # fp32: the mean over valid tokens must be within RATIO_TOL; single tokens may differ
    # by KV-cache-vs-full-forward rounding (seen: 1.05e-5 on a low-probability token), so
    # the max gets RATIO_MAX_TOL. A real mismatch (dropout, temperature, padding) breaks both.
    tol, tol_max = (BF16_RATIO_TOL, BF16_RATIO_TOL) if autocast is not None else \
        (RATIO_TOL, RATIO_MAX_TOL)
    if not enforce or (mean <= tol and worst <= tol_max):
        return worst
    i, t = divmod(int(dev.argmax()), dev.size(1))
    raise InvariantError(
        f"PPO invariant violated ({where}): on the first minibatch the training log-probs "
        f"do not reproduce the rollout log-probs: mean |ratio - 1| = {mean:.3g} (limit "
        f"{tol:g}), max {worst:.3g} (limit {tol_max:g}; episode {i} of the micro-batch, "
        f"response token {t}). The policy "
        "that sampled and the policy being trained must be the same function here. Likely "
        "causes: dropout left on in the policy (RL models need p = 0), the temperature "
        "applied in sampling but not in training (or vice versa), padding or position ids "
        "that differ between generation and training, or weights changed between the "
        "rollout and the first update. (In reduced precision, where log-probs legitimately "
        "differ more, set ppo.check_invariants=false.)")


def check_losses(losses: list[dict[str, Tensor]], where: str) -> None:
    for j, st in enumerate(losses):
        for key in ("policy/loss", "value/loss"):
            if key in st and not bool(torch.isfinite(st[key])):
                raise NonFiniteError(
                    f"non-finite {key.replace('/', ' ')} at {where}, micro-batch {j}: check "
                    "the advantages, returns and log-probs of this minibatch (the rollout "
                    "data were finite), and the LR (weights may have diverged)")


def first_bad_param(named: Sequence[tuple[str, nn.Parameter]]) -> str:
    for name, q in named:
        if q.grad is not None and not bool(torch.isfinite(q.grad).all()):
            return name
    return "?"

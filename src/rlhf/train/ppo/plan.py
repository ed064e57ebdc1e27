"""The PPO batch plan: every batch size of step 3 in one place, in its units, checked before launch.

    iteration  = `episodes_per_iteration` prompts -> as many completions (one per prompt)
                 rolled out in chunks of `rollout_batch_size` per process
    PPO epoch  = a fresh permutation of the iteration's episodes cut into minibatches of
                 `minibatch_size` episodes (global, over all processes) -> one optimizer step each
    minibatch  = per process `minibatch_size / world_size` episodes, accumulated in micro-batches
                 of `micro_batch_size` (+ `ptx_ratio` pretraining blocks per episode for PPO-ptx)

Paper (App. C.4): 512 episodes per iteration, minibatch 64, 1 epoch -> 8 optimizer steps per
iteration; 256k episodes -> 500 iterations, 4,000 optimizer steps (derived).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rlhf.config import PPOConfig
from rlhf.errors import UserError


def _divisors_near(n: int, around: int, k: int = 2) -> list[int]:
    """Up to `k` divisors of n closest to `around` (for 'use X instead' suggestions)."""
    divs = [d for d in range(1, n + 1) if n % d == 0]
    return sorted(sorted(divs, key=lambda d: (abs(d - around), d))[:k])


def _multiples_near(m: int, around: int, k: int = 2) -> list[int]:
    """The multiples of m just below and above `around`."""
    lo = max(m, (around // m) * m)
    hi = lo + m if lo < around or lo == 0 else lo
    out = sorted({lo, hi})
    return out[:k]


@dataclass(frozen=True)
class PPOPlan:
    world_size: int
    iterations: int
    episodes_per_iteration: int
    minibatch_size: int
    micro_batch_size: int
    ppo_epochs: int
    rollout_batch_size: int
    max_prompt_length: int
    max_new_tokens: int
    ptx_ratio: int
    ptx_block_size: int
    gamma_ptx: float
    critic_warmup_iterations: int = 0
    shared_value: bool = False

    @classmethod
    def from_config(cls, p: PPOConfig, world_size: int = 1) -> "PPOPlan":
        return cls(world_size=world_size, iterations=p.iterations,
                   episodes_per_iteration=p.episodes_per_iteration,
                   minibatch_size=p.minibatch_size, micro_batch_size=p.micro_batch_size,
                   ppo_epochs=p.ppo_epochs, rollout_batch_size=p.rollout_batch_size,
                   max_prompt_length=p.max_prompt_length, max_new_tokens=p.max_new_tokens,
                   ptx_ratio=p.ptx_ratio, ptx_block_size=p.ptx_block_size, gamma_ptx=p.gamma_ptx,
                   critic_warmup_iterations=p.critic_warmup_iterations,
                   shared_value=p.value_model == "shared")

    # ------------------------------------------------------------------ derived sizes
    @property
    def episodes_per_rank(self) -> int:
        return self.episodes_per_iteration // self.world_size

    @property
    def minibatch_per_rank(self) -> int:
        return self.minibatch_size // self.world_size

    @property
    def minibatches_per_epoch(self) -> int:
        return self.episodes_per_iteration // self.minibatch_size

    @property
    def micro_batches_per_minibatch(self) -> int:
        return self.minibatch_per_rank // self.micro_batch_size

    @property
    def rollout_chunk(self) -> int:
        return min(self.rollout_batch_size, self.episodes_per_rank)

    @property
    def rollout_chunks_per_rank(self) -> int:
        return math.ceil(self.episodes_per_rank / self.rollout_chunk)

    @property
    def policy_iterations(self) -> int:
        """Iterations that update the policy (after the critic warm-up)."""
        return self.iterations - self.critic_warmup_iterations

    def policy_frozen(self, iteration: int) -> bool:
        """True during the critic warm-up: only the value model trains at `iteration`."""
        return iteration < self.critic_warmup_iterations

    @property
    def steps_per_iteration(self) -> int:
        return self.ppo_epochs * self.minibatches_per_epoch

    @property
    def total_steps(self) -> int:
        return self.iterations * self.steps_per_iteration

    @property
    def total_episodes(self) -> int:
        return self.iterations * self.episodes_per_iteration

    @property
    def ptx_on(self) -> bool:
        return self.gamma_ptx > 0

    @property
    def ptx_blocks_per_minibatch(self) -> int:
        """Pretraining blocks per minibatch, global (paper: 8 × 64 = 512)."""
        return self.ptx_ratio * self.minibatch_size if self.ptx_on else 0

    @property
    def ptx_micro_batches(self) -> int:
        """Per process, ptx micro-batches of `micro_batch_size` blocks per minibatch."""
        return self.ptx_ratio * self.micro_batches_per_minibatch if self.ptx_on else 0

    # ------------------------------------------------------------------ checks
    def problems(self, context_length: int | None = None) -> list[str]:
        """Every inconsistency, each saying which field to change and to what."""
        errs: list[str] = []
        for name in ("iterations", "episodes_per_iteration", "minibatch_size", "micro_batch_size",
                     "ppo_epochs", "rollout_batch_size", "max_new_tokens", "max_prompt_length"):
            if getattr(self, name) < 1:
                errs.append(f"ppo.{name} must be at least 1 (got {getattr(self, name)})")
        if errs:
            return errs
        ws, E, M, m = self.world_size, self.episodes_per_iteration, self.minibatch_size, \
            self.micro_batch_size
        if E % M:
            errs.append(
                f"ppo.episodes_per_iteration ({E}) is not divisible by ppo.minibatch_size ({M}): "
                f"set episodes_per_iteration to a multiple of {M} such as "
                f"{' or '.join(map(str, _multiples_near(M, E)))}, or minibatch_size to a divisor "
                f"of {E} such as {' or '.join(map(str, _divisors_near(E, M)))}")
        if M % ws:
            errs.append(
                f"ppo.minibatch_size ({M}) is not divisible by the number of processes ({ws}): "
                f"use a multiple of {ws} such as {' or '.join(map(str, _multiples_near(ws, M)))}, "
                f"or launch a number of processes that divides {M}")
        elif (M // ws) % m:
            per = M // ws
            errs.append(
                f"the per-process minibatch (ppo.minibatch_size {M} / {ws} process"
                f"{'es' if ws > 1 else ''} = {per}) is not divisible by ppo.micro_batch_size "
                f"({m}): set micro_batch_size to a divisor of {per} such as "
                f"{' or '.join(map(str, _divisors_near(per, m)))}")
        if E % ws and not any("episodes_per_iteration" in e for e in errs):
            errs.append(f"ppo.episodes_per_iteration ({E}) is not divisible by the number of "
                        f"processes ({ws})")
        if M > E:
            errs.append(f"ppo.minibatch_size ({M}) is larger than ppo.episodes_per_iteration "
                        f"({E}): lower minibatch_size or raise episodes_per_iteration")
        w = self.critic_warmup_iterations
        if w < 0 or w >= self.iterations:
            errs.append(f"ppo.critic_warmup_iterations ({w}) must be at least 0 and less than "
                        f"ppo.iterations ({self.iterations}), which it is part of: the policy "
                        f"trains in the remaining iterations")
        elif w and self.shared_value:
            errs.append("ppo.critic_warmup_iterations needs ppo.value_model: separate (with a "
                        "shared trunk, training the value head trains the policy too)")
        if self.gamma_ptx < 0:
            errs.append(f"ppo.gamma_ptx must be >= 0 (got {self.gamma_ptx}); 0 is plain PPO")
        if self.ptx_on and self.ptx_ratio < 1:
            errs.append(f"ppo.ptx_ratio must be at least 1 when ppo.gamma_ptx > 0 (got "
                        f"{self.ptx_ratio}); paper: 8 pretraining sequences per episode")
        if self.ptx_on and self.ptx_block_size < 2:
            errs.append(f"ppo.ptx_block_size must be at least 2 (got {self.ptx_block_size})")
        if context_length is not None:
            need = self.max_prompt_length + self.max_new_tokens
            if need > context_length:
                errs.append(
                    f"ppo.max_prompt_length ({self.max_prompt_length}) + ppo.max_new_tokens "
                    f"({self.max_new_tokens}) = {need} exceeds the policy's context length "
                    f"({context_length}): lower one of them")
            if self.ptx_on and self.ptx_block_size > context_length:
                errs.append(f"ppo.ptx_block_size ({self.ptx_block_size}) exceeds the policy's "
                            f"context length ({context_length})")
        return errs

    def validate(self, context_length: int | None = None) -> "PPOPlan":
        errs = self.problems(context_length)
        if errs:
            raise UserError("inconsistent PPO batch plan:\n  - " + "\n  - ".join(errs))
        return self

    def describe(self) -> str:
        ws = self.world_size
        procs = f"{ws} process{'es' if ws > 1 else ''}"
        toks = self.episodes_per_iteration * self.max_new_tokens
        lines = [
            f"PPO batch plan ({procs})",
            f"  iteration    : {self.episodes_per_iteration:,} prompts -> "
            f"{self.episodes_per_iteration:,} completions, <= {toks:,} generated tokens "
            f"(<= {self.max_new_tokens} each; prompts <= {self.max_prompt_length} tokens)",
            f"  rollout      : {self.episodes_per_rank:,} episodes per process in "
            f"{self.rollout_chunks_per_rank} chunk{'s' if self.rollout_chunks_per_rank > 1 else ''}"
            f" of <= {self.rollout_chunk}",
            f"  training     : {self.ppo_epochs} epoch{'s' if self.ppo_epochs > 1 else ''} x "
            f"{self.minibatches_per_epoch} minibatches of {self.minibatch_size} episodes = "
            f"{self.steps_per_iteration} optimizer steps per iteration",
            f"  minibatch    : {self.minibatch_per_rank} episodes per process = "
            f"{self.micro_batches_per_minibatch} micro-batch"
            f"{'es' if self.micro_batches_per_minibatch > 1 else ''} of {self.micro_batch_size}",
        ]
        if self.ptx_on:
            lines.append(
                f"  ptx          : gamma_ptx {self.gamma_ptx:g}, {self.ptx_ratio} blocks of "
                f"{self.ptx_block_size} tokens per episode = {self.ptx_blocks_per_minibatch:,} "
                f"blocks ({self.ptx_blocks_per_minibatch * self.ptx_block_size:,} tokens) per "
                f"minibatch, {self.ptx_micro_batches} micro-batches of {self.micro_batch_size} "
                f"per process")
        else:
            lines.append("  ptx          : off (gamma_ptx = 0: plain PPO)")
        if self.critic_warmup_iterations:
            lines.append(
                f"  critic warm-up: the first {self.critic_warmup_iterations} iterations train "
                f"only the value model; the policy trains in the other {self.policy_iterations}")
        lines.append(
            f"  total        : {self.iterations:,} iterations = {self.total_episodes:,} episodes, "
            f"{self.total_steps:,} optimizer steps")
        return "\n".join(lines)

"""The PPO update: optimisers, LR schedule, β, EMA, and the epochs over one batch of episodes.

    for each PPO epoch (paper: 1), each minibatch of a fresh permutation (paper: 64 episodes):
        for each micro-batch:  PPO loss (clip 0.2) + clipped value loss, backward, weighted by
                               its share of the minibatch's valid tokens (exact accumulation)
        PPO-ptx:               + γ_ptx · NLL on `ptx_ratio` pretraining blocks per episode
        one optimizer step for the policy (the separate value model has its own), then EMA

Under torchrun each process holds its share of the minibatch, and DDP averages the gradients.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch
from torch import Tensor, nn

from rlhf import dist, rl
from rlhf.config import PPOConfig
from rlhf.errors import UserError
from rlhf.models.cpu import autocast_context
from rlhf.models.lm import position_ids_from_mask
from rlhf.models.lora import is_lora
from rlhf.models.value import logits_to_keep_mode, score_response, value_forward
from rlhf.runs import Timer
from rlhf.train.ppo import checks
from rlhf.train.ppo.checks import NonFiniteError
from rlhf.train.ppo.models import PPOModels
from rlhf.train.ppo.plan import PPOPlan
from rlhf.train.ppo.rollout import Episodes, mix_seed


def build_optimizer(params, lr: float, p: PPOConfig) -> torch.optim.Optimizer:
    """Adam (paper: β = 0.9, 0.95), or TF-style Adam ([LMHP], spec 7.23)."""
    params = [q for q in params if q.requires_grad]
    if p.adam_style == "tf":                                # spec 7.23
        return rl.TFAdam(params, lr=lr, betas=(p.beta1, p.beta2), eps=p.adam_eps)
    # CPU: the fused kernel (one pass per tensor) is ~3x faster than the per-tensor loop
    fused = bool(params) and all(q.device.type == "cpu" for q in params)
    return torch.optim.Adam(params, lr=lr, betas=(p.beta1, p.beta2), eps=p.adam_eps,
                            **({"fused": True} if fused else {}))


def grad_norm(params: Sequence[nn.Parameter]) -> Tensor:
    """The global L2 norm of the gradients `params` hold (0 when none does); over every
    process's shard when the gradients are sharded (FSDP)."""
    return grad_norm_tensors([q.grad for q in params if q.grad is not None])


class Learner:
    """Owns the optimisers, DDP wrappers, EMA and the KL controller; `update(ep, iteration)`
    runs the PPO epochs on a batch of episodes and returns their metrics."""

    def __init__(self, models: PPOModels, cfg: PPOConfig, plan: PPOPlan, seed: int,
                 ptx_blocks: Tensor | None = None):
        self.models, self.cfg, self.plan, self.seed = models, cfg, plan, seed
        self.ptx_blocks = ptx_blocks
        self.sharded = cfg.dist == "fsdp"
        if self.sharded:             # FSDP2: before the optimisers see the parameters
            if models.shared or is_lora(models.lm):
                raise UserError("fsdp shards a separate value model and a full policy: set "
                                "ppo.value_model=separate and no LoRA, or use ddp",
                                field="ppo.dist")
            self.ddp_policy = dist.shard(models.policy, field="ppo.dist")
            self.ddp_value = dist.shard(models.value, field="ppo.dist")
        else:
            self.ddp_policy = dist.wrap_ddp(models.policy)
            self.ddp_value = dist.wrap_ddp(models.value) if models.value is not None else None
        self.policy_params = [q for q in models.policy.parameters() if q.requires_grad]
        self.opt = build_optimizer(self.policy_params, cfg.lr, cfg)
        self.value_params = list(models.value.parameters()) if models.value else []
        self.value_opt = build_optimizer(self.value_params, cfg.value_lr, cfg) \
            if models.value else None
        self.ema = rl.EMA(models.lm, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.kl_ctl = (rl.AdaptiveKLController(cfg.beta_kl, cfg.kl_target, cfg.kl_horizon)
                       if cfg.adaptive_kl else rl.FixedKLController(cfg.beta_kl))
        self.pad = models.tokenizer.pad_token_id
        self.keep = logits_to_keep_mode(models.policy) or False
        self.first_ratio_dev = 0.0     # max |ratio − 1| on the last update's first minibatch

    # -------------------------------------------------------------- schedule
    def lr_factor(self, iteration: int, value: bool = False) -> float:
        """The LR multiplier at `iteration`. The policy's schedule starts when it starts
        training, after the critic warm-up; the value model's at iteration 0."""
        start = 0 if value else self.plan.critic_warmup_iterations
        i, n = max(iteration - start, 0), self.plan.iterations - start
        if self.cfg.lr_schedule == "linear":                 # [LMHP]/[N+]: lr·(1 − frac)
            return rl.linear_decay(i, n)
        return rl.constant_with_warmup(i, self.cfg.warmup_iterations)  # [IGPT]

    def set_lr(self, iteration: int) -> float:
        """Set both optimisers' LR for `iteration`; returns the policy's multiplier (0 during
        the critic warm-up, when the policy does not step)."""
        f = self.lr_factor(iteration)
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * f
        if self.value_opt is not None:
            for g in self.value_opt.param_groups:
                g["lr"] = self.cfg.value_lr * self.lr_factor(iteration, value=True)
        return 0.0 if self.plan.policy_frozen(iteration) else f

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(),
                "value_opt": self.value_opt.state_dict() if self.value_opt else None,
                "ema": self.ema.state_dict() if self.ema else None,
                "kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, s: dict) -> None:
        self.opt.load_state_dict(s["opt"])
        if self.value_opt is not None:
            self.value_opt.load_state_dict(s["value_opt"])
        if self.ema is not None and s.get("ema"):
            self.ema.load_state_dict(s["ema"])
        self.kl_ctl.load_state_dict(s["kl_ctl"])

    # -------------------------------------------------------------- the PPO epochs
    def update(self, ep: Episodes, iteration: int, timer: Timer | None = None) -> dict[str, float]:
        """PPO epochs over `ep` (advantages and returns filled in); returns the mean metrics."""
        timer = timer or Timer()
        self.first_ratio_dev = 0.0
        sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros(()))
        counts: dict[str, int] = defaultdict(int)
        self.ddp_policy.train()
        if self.ddp_value is not None:
            self.ddp_value.train()
        frozen = self.plan.policy_frozen(iteration)   # critic warm-up: the value model only
        mb_size = self.plan.minibatch_per_rank
        for epoch in range(self.cfg.ppo_epochs):
            g = torch.Generator().manual_seed(mix_seed(self.seed, 5, iteration, epoch, dist.rank()))
            perm = torch.randperm(len(ep), generator=g)
            for k in range(self.plan.minibatches_per_epoch):
                idx = perm[k * mb_size:(k + 1) * mb_size]
                where = f"iteration {iteration}, epoch {epoch}, minibatch {k}"
                micro_stats, step_stats = self.minibatch(ep, idx, iteration, epoch, k, where,
                                                         frozen, timer)
                for st in micro_stats:
                    for key, v in st.items():
                        sums[key] = sums[key] + v
                for key in {key for st in micro_stats for key in st}:
                    counts[key] += 1
                for key, v in step_stats.items():
                    sums[key] = sums[key] + v
                    counts[key] += 1
        self.ddp_policy.eval()
        if self.ddp_value is not None:
            self.ddp_value.eval()
        keys = sorted(sums)
        vec = torch.stack([sums[key].float() / max(counts[key], 1) for key in keys])
        vec = dist.all_reduce_mean(vec)   # token-weighted minibatch means, averaged
        out = {key: float(v) for key, v in zip(keys, vec)}
        out["policy/first_minibatch_ratio_dev"] = self.first_ratio_dev
        return out

    def minibatch(self, ep: Episodes, idx: Tensor, iteration: int, epoch: int, k: int,
                  where: str, frozen: bool, timer: Timer
                  ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Accumulate one minibatch's gradients (PPO, value, ptx) and step. Returns the
        micro-batches' token-weighted stats and the step's (ptx loss, gradient norms)."""
        first = epoch == 0 and k == 0
        micro = self.cfg.micro_batch_size
        n_tokens = dist.all_reduce_sum(ep.mask[idx].sum().double()).clamp(min=1)
        parts = [idx[j:j + micro] for j in range(0, len(idx), micro)]
        stats: dict[str, Tensor] = {}
        with timer("train_ppo"):
            losses = []
            for j, part in enumerate(parts):
                last = j == len(parts) - 1
                with dist.no_sync(self.ddp_policy, last), dist.no_sync(self.ddp_value, last):
                    losses.append(self.micro_losses(ep.select(part), n_tokens.float(),
                                                    check_ratio=first, want_entropy=first,
                                                    where=where, policy_frozen=frozen))
            checks.check_losses(losses, where)
            ppo_norm = grad_norm(self.policy_params)
        with timer("train_ptx"):
            if self.plan.ptx_on and not frozen:
                g_ppo = [None if q.grad is None else q.grad.clone() for q in self.policy_params]
                ptx = self.ptx_losses(iteration, epoch, k)
                if not bool(torch.isfinite(ptx)):
                    raise NonFiniteError(f"non-finite ptx (pretraining) loss at {where}")
                stats["ptx/loss"] = ptx
                stats["grad/ptx_norm"] = grad_norm_of_difference(self.policy_params, g_ppo)
                del g_ppo
        with timer("train_step"):
            if not frozen:
                stats["grad/ppo_norm"] = ppo_norm
                stats["grad/policy_norm"] = self.step_policy(ppo_norm, where)
            if self.value_opt is not None:
                stats["grad/value_norm"] = self.step_value(where)
            if self.ema is not None and not frozen:
                self.ema.update(self.models.lm)
        return losses, stats

    # -------------------------------------------------------------- one micro-batch
    def micro_losses(self, mb: Episodes, n_tokens: Tensor, check_ratio: bool,
                     want_entropy: bool, where: str,
                     policy_frozen: bool = False) -> dict[str, Tensor]:
        """Forward + backward of one micro-batch; its loss is weighted by its share of the
        minibatch's valid tokens (× world size, as DDP averages), so accumulation is exact.
        `policy_frozen` (critic warm-up): the policy is only scored, for the logs and the
        ratio check, and only the separate value model gets gradients."""
        p, ws = self.cfg, dist.world_size()
        w = mb.mask.sum() / n_tokens * ws
        with autocast_context(self.models.autocast), torch.set_grad_enabled(not policy_frozen):
            new_lp, ent, v_shared = score_response(self.ddp_policy, mb.query, mb.query_mask,
                                                   mb.response, mb.mask, p.temperature,
                                                   self.pad, want_entropy, self.keep)
        out: dict[str, Tensor] = {}
        if check_ratio:
            worst = checks.check_ratio(new_lp.detach(), mb.logprobs, mb.mask, where,
                                       autocast=self.models.autocast, enforce=p.check_invariants)
            self.first_ratio_dev = max(self.first_ratio_dev, worst)
        pg, st = rl.policy_loss(new_lp, mb.logprobs, mb.advantages, mb.mask, p.clip_range)
        out.update({"policy/loss": pg.detach(), "policy/clipfrac": st["clipfrac"],
                    "policy/approx_kl": st["approx_kl"]})
        if want_entropy:
            out["policy/entropy"] = rl.masked_mean(ent, mb.mask)
        if v_shared is not None:
            vf, vst = rl.value_loss(v_shared, mb.values, mb.returns, mb.mask, p.clip_range_value)
            loss = pg + p.vf_coef * vf
        else:
            loss = pg
        if not policy_frozen:
            (loss * w).backward()
        if self.ddp_value is not None:
            with autocast_context(self.models.autocast):
                vpred = value_forward(self.ddp_value, mb.query, mb.query_mask, mb.response,
                                      mb.mask).float()
            vf, vst = rl.value_loss(vpred, mb.values, mb.returns, mb.mask, p.clip_range_value)
            (vf * w).backward()
        out.update({"value/loss": vf.detach(), "value/clipfrac": vst["clipfrac"]})
        return {k: v.detach().float() * (mb.mask.sum() / n_tokens * ws) for k, v in out.items()}

    # -------------------------------------------------------------- ptx
    def ptx_losses(self, iteration: int, epoch: int, k: int) -> Tensor:
        """γ_ptx·NLL on this minibatch's pretraining blocks, accumulated into the grads."""
        p, n_micro = self.cfg, self.plan.ptx_micro_batches
        g = torch.Generator().manual_seed(mix_seed(self.seed, 11, iteration, epoch, k,
                                                   dist.rank()))
        idx = torch.randint(len(self.ptx_blocks), (n_micro * p.micro_batch_size,), generator=g)
        total = torch.zeros(())
        dev = dist.device()
        for j in range(n_micro):
            ids = self.ptx_blocks[idx[j * p.micro_batch_size:(j + 1) * p.micro_batch_size]].to(dev)
            mask = torch.ones_like(ids)
            with dist.no_sync(self.ddp_policy, j == n_micro - 1):
                with autocast_context(self.models.autocast):
                    if self.models.shared:
                        logits, values = self.ddp_policy(ids, mask, position_ids_from_mask(mask))
                        keep_used = values.sum() * 0.0       # every DDP parameter gets a grad
                    else:
                        logits = self.ddp_policy(input_ids=ids, attention_mask=mask,
                                                 use_cache=False).logits
                        keep_used = 0.0
                    nll = rl.lm_nll(logits[:, :-1].float(), ids[:, 1:], mask[:, 1:])
                (p.gamma_ptx * nll / n_micro + keep_used).backward()
            total = total + nll.detach().float() / n_micro
        return total

    # -------------------------------------------------------------- optimizer steps
    def step_policy(self, ppo_norm: Tensor, where: str) -> Tensor:
        """Clip and apply the accumulated policy gradient (PPO + ptx), refusing non-finite.
        Returns the norm before clipping."""
        total = grad_norm(self.policy_params)
        if not bool(torch.isfinite(total)):
            phase = "the PPO backward" if not bool(torch.isfinite(ppo_norm)) \
                else "the ptx backward"
            named = [(n, q) for n, q in self.models.policy.named_parameters() if q.requires_grad]
            raise NonFiniteError(
                f"non-finite policy gradient at {where}, after {phase} (first bad "
                f"parameter: {checks.first_bad_param(named)}); the losses were "
                "finite, so look for an overflow in the backward pass (LR too "
                "high, fp16 without scaling, extreme logits)")
        if self.cfg.grad_clip:
            clip(self.policy_params, self.cfg.grad_clip, total, self.sharded)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return total

    def step_value(self, where: str) -> Tensor:
        """Clip and apply the separate value model's gradient; returns its norm."""
        vnorm = grad_norm(self.value_params)
        if not bool(torch.isfinite(vnorm)):
            raise NonFiniteError(
                f"non-finite value-model gradient at {where} (first bad "
                f"parameter: {checks.first_bad_param(list(self.models.value.named_parameters()))})")
        if self.cfg.grad_clip:
            clip(self.value_params, self.cfg.grad_clip, vnorm, self.sharded)
        self.value_opt.step()
        self.value_opt.zero_grad(set_to_none=True)
        return vnorm


def grad_norm_of_difference(params: Sequence[nn.Parameter],
                            before: Sequence[Tensor | None]) -> Tensor:
    """‖grad − before‖: the norm of what was accumulated since `before` was copied."""
    return grad_norm_tensors([q.grad - (0 if g0 is None else g0)
                              for q, g0 in zip(params, before) if q.grad is not None])


def grad_norm_tensors(tensors: list[Tensor]) -> Tensor:
    if not tensors:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(tensors)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm   # a sharded one


def clip(params: Sequence[nn.Parameter], max_norm: float, total: Tensor, sharded: bool) -> None:
    """Scale the gradients to global norm ≤ `max_norm` (`total`: their norm, already taken);
    sharded gradients are clipped by torch's DTensor-aware clip."""
    if sharded:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)

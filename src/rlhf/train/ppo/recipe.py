"""Step 3, PPO / PPO-ptx: optimise the SFT policy against the reward model (paper §3.5, App. C.4).

The loop below is the algorithm; each step is one call (the paper's numbers in brackets):

    for each iteration (paper: 512 episodes, 500 iterations):
        rollout       sample y ~ π(·|x) for this iteration's prompts, score r(x, y), log π_ref, V
        rewards       r_t = −β·(log π − log π_ref) on every response token, + r(x, y) at the
                      last one
        advantages    GAE with γ = 1, λ = 0.95, whitened over valid tokens; returns
        update        PPO epochs (clip 0.2, clipped value loss, + γ_ptx·NLL for PPO-ptx), EMA
        β, log, checkpoint

Runtime invariants (`checks`): KL = 0 at iteration 0; on the first minibatch of every iteration
the training log-probs reproduce the rollout log-probs (ratio = 1 within 1e-5); a NaN/inf in a
score, reward, loss or gradient stops the run naming where.

Conventions: `[B, T]` response tensors; `mask` = 1 up to and including the first EOS; V_t is
read at the position before token t (`rlhf.models.value`). Under `torchrun` every process rolls
out `episodes_per_iteration / world_size` episodes, advantages are whitened with global moments,
and DDP averages the gradients. Read next: rollout.py, update.py, checks.py, plan.py.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rlhf import dist, rl
from rlhf.config import Config, PPOConfig, dump_config
from rlhf.data.prompts import load_prompts
from rlhf.data.text import pack_blocks, read_documents
from rlhf.errors import UserError
from rlhf.models import context_length
from rlhf.models.cpu import cpu_threads_hint, tune_cpu_allocator
from rlhf.runs import Run, Timer
from rlhf.train.checkpoint import latest_checkpoint, mark_latest, prune
from rlhf.train.ppo.checks import check_kl0, check_rewards
from rlhf.train.ppo.checkpoint import load_ppo_checkpoint, save_final, save_ppo_checkpoint
from rlhf.train.ppo.models import RewardFn, build_models
from rlhf.train.ppo.plan import PPOPlan
from rlhf.train.ppo.rollout import Episodes, encode_prompts, iteration_prompts, mix_seed, rollout
from rlhf.train.ppo.update import Learner


def ppo(cfg: Config, out_dir: str | Path, resume: bool = False, halt_after: int | None = None,
        reward_fn: RewardFn | None = None,
        hooks: Callable[[str, dict], None] | None = None,
        precision: str | None = None) -> dict:
    """Run PPO / PPO-ptx; returns the summary (also written to out/summary.json).

    `reward_fn` (optional) replaces `cfg.ppo.reward_fn` with an in-process callable. `hooks`
    (tools, tests) is called as hooks(event, state) at "setup", "rollout", "advantages" and
    "iteration".
    `precision` ("bf16", ...; default `cfg.ppo.precision`) overrides the config's; under bf16
    the invariants use `checks.BF16_RATIO_TOL`. `halt_after` stops after that many iterations
    with a resumable checkpoint.
    """
    dist.init()
    dist.seed_everything(cfg.seed)
    p, seed, rank = cfg.ppo, cfg.seed, dist.rank()
    out = Path(out_dir)
    plan = PPOPlan.from_config(p, dist.world_size())
    plan.validate()                                      # fast checks before loading anything
    if not p.temperature > 0:
        raise UserError("PPO samples: ppo.temperature must be > 0 (paper: 1)",
                        field="ppo.temperature")
    if dist.device().type == "cpu":
        tune_cpu_allocator()
        if dist.is_main() and (hint := cpu_threads_hint()):
            print(hint, file=sys.stderr, flush=True)
    models = build_models(p, reward_fn, precision)
    plan.validate(context_length(models.lm))
    tok = models.tokenizer
    prompts, prompt_ids, dropped = encode_prompts(
        tok, load_prompts(p.prompts_file, field="ppo.prompts_file"), p.prompt_template,
        p.max_prompt_length)
    learner = Learner(models, p, plan, seed, load_ptx_blocks(p, tok))
    run = Run(out, dump_config(cfg), is_main=dist.is_main(), resume=resume)
    start = 0
    if resume and (last := latest_checkpoint(run.checkpoints)) is not None:
        start = load_ppo_checkpoint(last, models, learner)["iteration"]
    if dist.is_main():
        print(plan.describe(), flush=True)
        print(f"prompts: {len(prompts):,} ({dropped} longer than {p.max_prompt_length} tokens "
              f"dropped); reward: {models.reward_name}; value model: {p.value_model}"
              + (f"; resuming at iteration {start}" if start else ""), flush=True)
    if hooks:
        hooks("setup", {"models": models, "learner": learner, "plan": plan})
    reduce = dist.all_reduce_sum if dist.world_size() > 1 else None   # global whitening moments

    metrics: dict[str, float] = {}
    first_score = None
    bar = tqdm(total=plan.iterations, initial=start, desc="ppo", disable=not dist.is_main(),
               leave=False)
    it = start
    while it < plan.iterations:
        timer, t0 = Timer(), time.perf_counter()
        lr_factor = learner.set_lr(it)
        beta = learner.kl_ctl.value
        # ---- rollout: this process's share of the iteration's prompts ----------------------
        idx = iteration_prompts(len(prompts), seed, it, plan.episodes_per_iteration)
        idx = idx[rank * plan.episodes_per_rank:(rank + 1) * plan.episodes_per_rank]
        ep = rollout(models, p, [prompts[i] for i in idx], [prompt_ids[i] for i in idx],
                     chunk_generator(seed, it, rank * plan.episodes_per_rank), timer, it)
        if hooks:
            hooks("rollout", {"iteration": it, "episodes": ep, "models": models})
        if it == 0 and p.check_invariants and (not p.reference or p.reference == p.policy):
            check_kl0(ep.logprobs, ep.ref_logprobs, ep.mask, models.autocast)
        # ---- rewards (Eq. 2, per token), GAE, whitening ------------------------------------
        with timer("advantages"), torch.no_grad():
            rewards, non_score, _ = rl.compute_rewards(ep.scores, ep.logprobs, ep.ref_logprobs,
                                                       ep.mask, beta, clamp_kl=p.clamp_kl,
                                                       estimator=p.kl_estimator)
            if p.whiten_rewards:                           # spec 7.15 (off in the paper)
                rewards = rl.whiten(rewards, ep.mask, shift_mean=False, all_reduce_sum=reduce)
            check_rewards(rewards, ep.scores, ep.logprobs, ep.ref_logprobs)
            ep.advantages, ep.returns = rl.gae(rewards, ep.values, ep.mask, p.gamma, p.gae_lambda)
            if p.whiten_advantages:                        # spec 7.14
                ep.advantages = rl.whiten(ep.advantages, ep.mask, all_reduce_sum=reduce)
            kl_seq = rl.masked_sum(rl.kl_k1(ep.logprobs, ep.ref_logprobs), ep.mask, dim=1)
            non_score_seq = rl.masked_sum(non_score, ep.mask, dim=1)
        if hooks:
            hooks("advantages", {"iteration": it, "episodes": ep, "models": models,
                                 "rewards": rewards, "beta": beta})
        # ---- PPO epochs --------------------------------------------------------------------
        stats = learner.update(ep, it, timer)
        # ---- β, logs, checkpoint -----------------------------------------------------------
        metrics = iteration_metrics(ep, kl_seq, non_score_seq, stats, timer,
                                    time.perf_counter() - t0, beta, p.lr * lr_factor, plan)
        learner.kl_ctl.update(metrics["objective/kl"], plan.episodes_per_iteration)
        it += 1
        metrics["episodes"] = it * plan.episodes_per_iteration
        if it % max(1, p.log_every) == 0 or it == plan.iterations or it == 1:
            run.log(it - 1, metrics)
        if first_score is None:
            first_score = metrics["objective/score"]
        if hooks:
            hooks("iteration", {"iteration": it - 1, "metrics": metrics, "models": models,
                                "learner": learner})
        bar.set_postfix(score=f"{metrics['objective/score']:.3f}",
                        kl=f"{metrics['objective/kl']:.3f}")
        bar.update(1)
        halting = halt_after is not None and it >= halt_after and it < plan.iterations
        if (p.save_every and it % p.save_every == 0 and it < plan.iterations) or halting:
            name = f"iter-{it:06d}"
            save_ppo_checkpoint(run.checkpoints / name, models, learner, {"iteration": it})
            mark_latest(run.checkpoints, name)
            prune(run.checkpoints, p.keep_checkpoints)
        if halting:
            break
    bar.close()
    summary = {"iterations": it, "episodes": it * plan.episodes_per_iteration,
               "optimizer_steps": it * plan.steps_per_iteration, "plan": plan.describe(),
               "final_score": metrics.get("objective/score"),
               "final_kl": metrics.get("objective/kl"), "first_score": first_score,
               "reward": models.reward_name, "value_model": p.value_model}
    if it < plan.iterations:
        run.close()
        return {**summary, "halted": True}
    summary.update(save_final(out, models, learner))
    run.finish(summary)
    return summary


def chunk_generator(seed: int, iteration: int, offset: int) -> Callable[[int], torch.Generator]:
    """The sampler's generator for the rollout chunk starting at this process's episode `s`:
    seeded by the chunk's global position, so 1 or N processes draw the same samples."""
    device = dist.device()
    return lambda s: torch.Generator(device=device).manual_seed(
        mix_seed(seed, 3, iteration, offset + s))


def load_ptx_blocks(p: PPOConfig, tokenizer) -> Tensor | None:
    if p.gamma_ptx <= 0:
        return None          # γ_ptx = 0: no pretraining data is read; bit-for-bit plain PPO
    if not p.ptx_files:
        raise UserError("ppo.gamma_ptx > 0 needs pretraining text: ppo.ptx_files",
                        field="ppo.ptx_files")
    return pack_blocks(tokenizer, read_documents(p.ptx_files), p.ptx_block_size)


def iteration_metrics(ep: Episodes, kl_seq: Tensor, non_score_seq: Tensor, stats: dict,
                      timer: Timer, wall: float, beta: float, lr: float,
                      plan: PPOPlan) -> dict[str, float]:
    """The iteration's logged metrics, reduced over processes (TRL/[N+] names)."""
    m = ep.mask.bool()
    lengths = ep.mask.sum(1).double()
    with torch.no_grad():
        local = torch.stack([
            ep.scores.double().sum(), (ep.scores.double() ** 2).sum(), ep.raw_scores.double().sum(),
            kl_seq.double().sum(), non_score_seq.double().sum(),
            lengths.sum(), ep.has_eos.double().sum(),
            torch.tensor(float(len(ep)), dtype=torch.float64, device=lengths.device),
            rl.masked_sum(ep.values.double(), m), m.sum().double(),
            rl.explained_variance(ep.values.double(), ep.returns.double(), m).nan_to_num(0.0),
            rl.masked_sum(ep.advantages.double(), m),
        ])
    g = dist.all_reduce_sum(local)
    n, ntok = float(g[7]), float(g[9])
    score_mean = float(g[0]) / n
    kl = float(g[3]) / n
    out = {
        "objective/score": score_mean,
        "objective/score_std": math.sqrt(max(float(g[1]) / n - score_mean ** 2, 0.0)),
        "objective/raw_score": float(g[2]) / n,
        "objective/kl": kl,
        "objective/kl_per_token": float(g[3]) / max(ntok, 1),
        "objective/non_score_reward": float(g[4]) / n,
        "objective/reward": score_mean + float(g[4]) / n,
        "objective/beta": beta,
        "response/length": float(g[5]) / n,
        "response/eos_fraction": float(g[6]) / n,
        "value/mean": float(g[8]) / max(ntok, 1),
        "value/explained_variance": float(g[10]) / dist.world_size(),
        "lr": lr,
        **stats,
    }
    for k, v in timer.t.items():
        out[f"time/{k}"] = v
    score_t = sum(v for k, v in timer.t.items() if k.startswith("score_"))
    train_t = sum(v for k, v in timer.t.items() if k.startswith("train_"))
    out["time/scoring"] = score_t
    out["time/training"] = train_t
    out["time/iteration"] = wall
    out["perf/episodes_per_s"] = plan.episodes_per_iteration / max(wall, 1e-9)
    gen_t = timer.t.get("generation", 0.0)
    out["perf/generated_tokens_per_s"] = float(g[5]) / max(gen_t, 1e-9)
    return out

"""PPO trainer: the pitfall tests of spec §8 at trainer level, on a real tiny model.

Pure-math tests (GAE, whitening, KL sign, losses) live in tests/test_rl_*.py; these cover what
only the recipe can get wrong: log-prob parity, KL = 0 at iteration 0, post-EOS invariance of the
full loss and gradients, value init from the RM, a frozen reference, γ_ptx = 0 being plain PPO,
EMA, exact resume, reward callables, NaN diagnosis and, functionally, a reward that rises.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import WORDS, tiny_lm
from rlhf import rl
from rlhf.config import Config
from rlhf.errors import UserError
from rlhf.models import load_model, load_tokenizer, position_ids_from_mask
from rlhf.runs import read_metrics
from rlhf.data.prompts import load_prompts
from rlhf.models.value import response_logprobs
from rlhf.train.ppo import PPOPlan
from rlhf.train.ppo import ppo
from rlhf.train.ppo.checks import InvariantError
from rlhf.train.ppo.checks import NonFiniteError
from rlhf.train.ppo.models import build_models
from rlhf.train.ppo.models import load_reward_fn
from rlhf.train.ppo.rollout import Episodes
from rlhf.train.ppo.rollout import encode_prompts
from rlhf.train.ppo.rollout import rollout
from rlhf.train.ppo.update import Learner

TARGET = "cat"


def cat_fraction(prompts, responses):
    """A programmatic judge: the fraction of response words that are 'cat'."""
    return [sum(w.strip(".") == TARGET for w in r.split()) / max(1, len(r.split()))
            for r in responses]


def make_cfg(world, **over) -> Config:
    ppo = dict(policy=str(world["sft"]), reward_model=str(world["rm"]),
               prompts_file=str(world["prompts"]), iterations=2, episodes_per_iteration=8,
               minibatch_size=4, micro_batch_size=2, rollout_batch_size=8, max_new_tokens=6,
               max_prompt_length=24, lr=1e-3, value_lr=1e-3, warmup_iterations=0,
               save_every=100)
    ppo.update(over)
    return Config.model_validate({"seed": 0, "ppo": ppo})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def _strip(row: dict) -> dict:
    """A metrics row without the wall-clock fields."""
    return {k: v for k, v in row.items() if not k.startswith(("time/", "perf/"))}


def fill_advantages(ep, p, beta):
    """What the recipe's loop does between the rollout and the update (one process): per-token
    rewards (Eq. 2), GAE, whitening. `test_recipe_advantages_are_these` ties the two together.
    Fills `ep.advantages` and `ep.returns`; returns the per-token rewards."""
    with torch.no_grad():
        rewards, _, _ = rl.compute_rewards(ep.scores, ep.logprobs, ep.ref_logprobs, ep.mask, beta,
                                           clamp_kl=p.clamp_kl, estimator=p.kl_estimator)
        if p.whiten_rewards:
            rewards = rl.whiten(rewards, ep.mask, shift_mean=False)
        ep.advantages, ep.returns = rl.gae(rewards, ep.values, ep.mask, p.gamma, p.gae_lambda)
        if p.whiten_advantages:
            ep.advantages = rl.whiten(ep.advantages, ep.mask)
    return rewards


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rollout(world, temperature=1.0, n=8, max_new_tokens=6, **over):
    p = make_cfg(world, temperature=temperature, max_new_tokens=max_new_tokens, **over).ppo
    actors = build_models(p)
    prompts = load_prompts(p.prompts_file)[:n]
    texts, ids, _ = encode_prompts(actors.tokenizer, prompts, p.prompt_template, 24)
    gen = torch.Generator().manual_seed(0)
    return p, actors, rollout(actors, p, texts, ids, gen)


# ------------------------------------------------------------------------- log-prob parity

@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_logprobs_equal_training_logprobs(world, temperature):
    """Pitfall 8.1 and 8.10: sampler log-probs = training forward log-probs (fp32, ≤ 1e-5), and
    at T = 0.7 both are log_softmax(logits / 0.7) at the sampled ids (PAD excluded)."""
    p, actors, ep = _rollout(world, temperature)
    tok, model = actors.tokenizer, actors.policy
    train_lp = response_logprobs(model, ep.query, ep.query_mask, ep.response, ep.mask,
                                   temperature=temperature, pad_id=tok.pad_token_id)
    m = ep.mask.bool()
    assert m.sum() > 20
    assert (train_lp - ep.logprobs)[m].abs().max() <= 1e-5
    # independent computation: a plain full forward, logits / T, PAD logit removed
    ids = torch.cat([ep.query, ep.response], 1)
    mask = torch.cat([ep.query_mask, ep.mask], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask,
                       position_ids=position_ids_from_mask(mask)).logits
    tq = ep.query.size(1)
    z = logits[:, tq - 1:-1].clone()
    z[..., tok.pad_token_id] = -math.inf
    ref = torch.log_softmax(z / temperature, -1).gather(-1, ep.response[..., None]).squeeze(-1)
    assert (ref - train_lp)[m].abs().max() <= 1e-5
    if temperature != 1.0:
        at_one = torch.log_softmax(z, -1).gather(-1, ep.response[..., None]).squeeze(-1)
        assert (at_one - train_lp)[m].abs().max() > 1e-2   # the temperature really matters
    # ...and the trainer's own first-minibatch check saw ratio = 1
    trainer = Learner(actors, p, PPOPlan.from_config(p), seed=0)
    fill_advantages(ep, p, 0.02)
    trainer.update(ep, 0)
    assert trainer.first_ratio_dev <= 1e-5


def test_kl_is_zero_at_iteration_0_and_logged(world, tmp_path):
    """Pitfall 8.2: policy = reference at iteration 0 -> per-token KL 0; objective/kl ≈ 0."""
    seen = {}

    def hooks(event, state):
        if event == "rollout" and state["iteration"] == 0:
            ep = state["episodes"]
            seen["d"] = (ep.logprobs - ep.ref_logprobs)[ep.mask.bool()]

    ppo(make_cfg(world, iterations=1), tmp_path / "run", hooks=hooks)
    assert seen["d"].abs().max() <= 1e-5
    row = read_metrics(tmp_path / "run")[0]
    assert row["step"] == 0
    assert abs(row["objective/kl"]) <= 1e-5 and abs(row["objective/kl_per_token"]) <= 1e-6
    assert row["policy/first_minibatch_ratio_dev"] <= 1e-5
    for key in ("objective/score", "policy/entropy", "policy/clipfrac", "policy/approx_kl",
                "value/loss", "value/explained_variance", "response/length",
                "response/eos_fraction", "time/generation", "time/score_ref",
                "time/score_reward", "time/score_value", "time/training", "grad/ppo_norm"):
        assert key in row and math.isfinite(row[key]), key
    assert (tmp_path / "run/tb").is_dir()


# ------------------------------------------------------------------------- post-EOS tokens

def _loss_and_grads(trainer, ep):
    for q in trainer.policy_params + trainer.value_params:
        q.grad = None
    n_tok = ep.mask.sum().float()
    st = trainer.micro_losses(ep.select(torch.arange(len(ep))), n_tok, check_ratio=False,
                              want_entropy=True, where="test")
    grads = {n: q.grad.clone() for n, q in
             list(trainer.models.policy.named_parameters()) + list(trainer.models.value.named_parameters())
             if q.grad is not None}
    return st, grads


def test_tokens_after_eos_change_neither_loss_nor_gradients(world):
    """Pitfall 8.9 on the full PPO loss (policy + value) and every parameter's gradient."""
    p, actors, ep = _rollout(world, max_new_tokens=8, n=16)
    eos, pad = actors.tokenizer.eos_token_id, actors.tokenizer.pad_token_id
    lengths = ep.mask.sum(1)
    assert bool(ep.has_eos.any()) and int(lengths.min()) < ep.response.size(1)
    fill_advantages(ep, p, 0.02)
    trainer = Learner(actors, p, PPOPlan.from_config(p), seed=0)
    st1, g1 = _loss_and_grads(trainer, ep)

    # rewrite every post-EOS position: random tokens, garbage (even nan/inf) per-token data
    after = ~ep.mask.bool()
    g = torch.Generator().manual_seed(3)
    junk = torch.randint(0, len(actors.tokenizer) - 2, ep.response.shape, generator=g)
    junk = torch.where(junk == eos, junk + 1, junk)
    ep2 = Episodes(**{f: getattr(ep, f) for f in ep.__dataclass_fields__})
    ep2.response = torch.where(after, junk, ep.response)
    assert not torch.equal(ep2.response, ep.response)
    assert torch.equal(rl.response_mask_from_eos(ep2.response, eos).long(), ep.mask)
    for name, val in (("logprobs", math.nan), ("ref_logprobs", -math.inf), ("values", 1e30),
                      ("advantages", math.nan), ("returns", math.inf)):
        setattr(ep2, name, getattr(ep, name).masked_fill(after, val))
    st2, g2 = _loss_and_grads(trainer, ep2)
    for k in ("policy/loss", "value/loss", "policy/entropy"):
        assert torch.equal(st1[k], st2[k]), k
    assert g1.keys() == g2.keys() and len(g1) > 10
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
    # and the rewards/advantages built from the garbage rollout are the same where valid
    ep3 = Episodes(**{f: getattr(ep2, f) for f in ep.__dataclass_fields__})
    ep3.logprobs = ep.logprobs.masked_fill(after, 7.0)
    ep3.ref_logprobs = ep.ref_logprobs.masked_fill(after, -7.0)
    fill_advantages(ep3, p, 0.02)
    assert torch.equal(ep3.advantages, ep.advantages) and torch.equal(ep3.returns, ep.returns)


def test_no_eos_penalty_replaces_the_score(world):
    """Spec 7.19: responses without EOS score −1 (flag on by default); others keep the RM's."""
    _, _, ep = _rollout(world, max_new_tokens=4, n=16)
    assert bool((~ep.has_eos).any()) and bool(ep.has_eos.any())
    assert torch.equal(ep.scores[~ep.has_eos], torch.full_like(ep.scores[~ep.has_eos], -1.0))
    assert torch.equal(ep.scores[ep.has_eos], ep.raw_scores[ep.has_eos])
    _, _, ep_off = _rollout(world, max_new_tokens=4, n=16, no_eos_penalty=None)
    assert torch.equal(ep_off.scores, ep_off.raw_scores)


def test_advantages_on_a_real_rollout(world):
    """Pitfall 8.8 at trainer level: with V = 0 (the reward-callable value model starts with a
    zero head), λ = 1 and no whitening the advantages are the reward-to-go of the per-token
    rewards; with whitening they have mean 0 and population std 1 over valid tokens."""
    p, actors, ep = _rollout(world, max_new_tokens=8, n=16, reward_model=None,
                             reward_fn=f"{__name__}:cat_fraction", gae_lambda=1.0,
                             whiten_advantages=False)
    m = ep.mask.bool()
    assert float(ep.values.abs().max()) == 0.0
    with torch.no_grad():   # move the policy off the reference so the KL term is not zero
        actors.policy.transformer.wte.weight.mul_(1.1)
        lp = response_logprobs(actors.policy, ep.query, ep.query_mask, ep.response, ep.mask,
                                 pad_id=actors.tokenizer.pad_token_id)
        ep.logprobs = torch.where(m, lp, torch.zeros_like(lp))   # PAD after EOS: log π = −inf
    r = fill_advantages(ep, p, 0.1)
    assert float(r[m].abs().sum()) > 0
    togo = torch.flip(torch.cumsum(torch.flip(r * m, [1]), 1), [1]) * m
    assert torch.allclose(ep.advantages, togo, atol=1e-6)
    assert torch.allclose(ep.returns, togo, atol=1e-6)
    kl = torch.where(m, ep.logprobs - ep.ref_logprobs, torch.zeros_like(r))
    assert torch.allclose(r.sum(1), ep.scores - 0.1 * kl.sum(1), atol=1e-6)   # Σ r_t (8.7)
    rows, last = torch.arange(len(ep)), rl.last_valid_index(m)
    assert torch.allclose(r[rows, last], ep.scores - 0.1 * kl[rows, last], atol=1e-7)
    p2 = p.model_copy(update={"whiten_advantages": True})
    fill_advantages(ep, p2, 0.1)
    a = ep.advantages[m].double()
    assert abs(float(a.mean())) < 1e-6 and abs(float(a.var(unbiased=False)) - 1) < 1e-5
    assert float(ep.advantages[~m].abs().sum()) == 0.0


@pytest.mark.parametrize("whiten_rewards, kl_estimator", [(False, "k1"), (True, "k1"),
                                                          (False, "k3")])
def test_recipe_advantages_are_these(world, tmp_path, whiten_rewards, kl_estimator):
    """The recipe's advantages and returns are exactly `fill_advantages` of its rollout (so
    the tests above, which call that, test what a run does), with the configured KL
    estimator in the per-token penalty."""
    seen = {}

    def hooks(event, state):
        if event == "rollout":
            ep = state["episodes"]
            seen["ep"] = Episodes(**{f: None if getattr(ep, f) is None else getattr(ep, f).clone()
                                     for f in ep.__dataclass_fields__})
        if event == "advantages":
            ep = state["episodes"]
            seen["adv"], seen["ret"] = ep.advantages.clone(), ep.returns.clone()
            seen["rewards"], seen["beta"] = state["rewards"].clone(), state["beta"]

    cfg = make_cfg(world, iterations=2, whiten_rewards=whiten_rewards, kl_estimator=kl_estimator,
                   beta_kl=0.5)      # the last iteration seen: the policy has moved
    ppo(cfg, tmp_path / "run", hooks=hooks)
    rewards = fill_advantages(seen["ep"], cfg.ppo, seen["beta"])
    assert torch.equal(rewards, seen["rewards"])
    assert torch.equal(seen["ep"].advantages, seen["adv"])
    assert torch.equal(seen["ep"].returns, seen["ret"])
    ep, other = seen["ep"], "k2" if kl_estimator != "k2" else "k1"
    assert float((ep.logprobs - ep.ref_logprobs)[ep.mask.bool()].abs().max()) > 1e-4
    assert not torch.equal(rewards, fill_advantages(        # the estimator reaches the penalty
        ep, cfg.ppo.model_copy(update={"kl_estimator": other}), seen["beta"]))


# ------------------------------------------------------------------------- value and reference

def test_value_at_last_token_equals_rm_score_at_step_0(world):
    """Pitfall 8.11: the critic starts as the RM: its head at the last valid token of
    query+response equals the (normalised, bias 0.25 included) score used as reward."""
    from rlhf.models.reward import last_token_index

    p, actors, ep = _rollout(world, max_new_tokens=8, n=16, no_eos_penalty=None)
    ids = torch.cat([ep.query, ep.response], 1)
    mask = torch.cat([ep.query_mask, ep.mask], 1)
    with torch.no_grad():
        tv = actors.value(ids, mask)
    last = tv[torch.arange(len(ep)), last_token_index(mask)]
    assert torch.allclose(last, ep.scores, atol=1e-5)
    assert abs(float(actors.value.rm.reward_bias) - 0.25) < 1e-7
    # per-token values are read one position before each response token
    m = ep.mask.bool()
    assert torch.allclose(ep.values[m], tv[:, ep.query.size(1) - 1:-1][m], atol=1e-6)


def test_reference_is_frozen_and_unchanged_by_updates(world, tmp_path):
    """Pitfall 8.13: reference checksums do not move; requires_grad False; the policy moves."""
    got = {}

    def hooks(event, state):
        a = state["models"]
        if event == "setup":
            got["ref0"] = {k: v.clone() for k, v in a.ref.state_dict().items()}
        if event == "iteration":
            got["ref1"] = {k: v.clone() for k, v in a.ref.state_dict().items()}
            got["grad"] = [q.requires_grad for q in a.ref.parameters()]
            got["training"] = a.ref.training

    ppo(make_cfg(world, iterations=3), tmp_path / "run", hooks=hooks)
    init = weights(world["sft"])
    assert same(got["ref0"], got["ref1"])
    assert all(torch.equal(got["ref1"][k], init[k]) for k in init)
    assert not any(got["grad"]) and got["training"] is False
    assert not same(weights(tmp_path / "run/final"), init)


def test_shared_value_head_starts_at_zero_and_trains(world, tmp_path):
    """Option: shared trunk + zero-initialised value head ([LMHP]); loss = PPO + vf_coef·VF."""
    s = ppo(make_cfg(world, value_model="shared", iterations=2), tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert rows[0]["value/mean"] == 0.0
    assert rows[-1]["value/mean"] != 0.0
    head = load_file(str(tmp_path / "run/value/value_head.safetensors"))
    assert float(head["weight"].abs().sum()) > 0
    assert Path(s["model"]).joinpath("config.json").exists()


def test_critic_warmup_trains_only_the_value_model(world, tmp_path):
    """ppo.critic_warmup_iterations = 2 of 3: after iterations 0 and 1 the policy (and its EMA)
    are still the SFT weights while the value model has moved; iteration 2 moves the policy,
    whose LR schedule starts then (warmup from 0.1×), while the value model's started at 0.
    PPO-ptx's pretraining loss waits for the policy too."""
    seen = []

    def hooks(event, state):
        if event == "iteration":
            a, tr = state["models"], state["learner"]
            lm = a.lm.state_dict()
            seen.append((all(torch.equal(lm[k], v) for k, v in sft.items()),
                         {k: v.detach().clone() for k, v in a.value.state_dict().items()},
                         tr.value_opt.param_groups[0]["lr"], tr.ema.num_updates))

    sft = weights(world["sft"])
    ppo(make_cfg(world, iterations=3, critic_warmup_iterations=2, warmup_iterations=2,
                   ptx_files=[str(world["text"])], gamma_ptx=1.0, ptx_ratio=1,
                   ptx_block_size=16), tmp_path / "run", hooks=hooks)
    assert [s[0] for s in seen] == [True, True, False]            # the policy is frozen ...
    assert [s[3] for s in seen] == [0, 0, 2]                      # ... and so is its EMA
    assert not same(seen[0][1], seen[1][1])                       # the value model trained
    rows = read_metrics(tmp_path / "run")
    assert [r["lr"] for r in rows] == pytest.approx([0.0, 0.0, 1e-4])     # policy: 0.1× at 2
    assert [s[2] for s in seen] == pytest.approx([1e-4, 5.5e-4, 1e-3])    # value: from 0
    assert "grad/policy_norm" not in rows[0] and "ptx/loss" not in rows[0]
    assert rows[2]["grad/policy_norm"] > 0 and rows[2]["ptx/loss"] > 0
    assert rows[0]["grad/value_norm"] > 0 and math.isfinite(rows[0]["policy/loss"])


# ------------------------------------------------------------------------- ptx, EMA, resume

def test_gamma_ptx_zero_is_bit_identical_to_plain_ppo(world, tmp_path):
    """Pitfall 8.12: γ_ptx = 0 (with ptx data configured) = plain PPO bit for bit; γ_ptx > 0
    changes the update, and the PPO and ptx gradient norms are logged separately."""
    ppo(make_cfg(world), tmp_path / "plain")
    ppo(make_cfg(world, gamma_ptx=0.0, ptx_files=[str(world["text"])], ptx_ratio=2,
                   ptx_block_size=16), tmp_path / "zero")
    ppo(make_cfg(world, gamma_ptx=1.0, ptx_files=[str(world["text"])], ptx_ratio=2,
                   ptx_block_size=16), tmp_path / "ptx")
    assert same(weights(tmp_path / "plain/final"), weights(tmp_path / "zero/final"))
    assert same(weights(tmp_path / "plain/final_ema"), weights(tmp_path / "zero/final_ema"))
    assert not same(weights(tmp_path / "plain/final"), weights(tmp_path / "ptx/final"))
    plain = read_metrics(tmp_path / "plain")
    assert [_strip(r) for r in plain] == [_strip(r) for r in read_metrics(tmp_path / "zero")]
    row = read_metrics(tmp_path / "ptx")[0]
    assert row["grad/ptx_norm"] > 0 and row["grad/ppo_norm"] > 0 and row["ptx/loss"] > 0
    assert "ptx/loss" not in plain[0]


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_ema_endpoints(world, tmp_path, decay):
    """EMA θ̄ ← dθ̄ + (1−d)θ per optimizer step: d = 0 tracks the policy, d = 1 stays at init."""
    ppo(make_cfg(world, ema_decay=decay), tmp_path / "run")
    final, ema = weights(tmp_path / "run/final"), weights(tmp_path / "run/final_ema")
    if decay == 0.0:
        assert same(final, ema)
    else:
        assert same(ema, weights(world["sft"])) and not same(final, ema)


def test_ema_is_the_average_of_the_trajectory(world, tmp_path):
    """d = 0.5 over the 4 optimizer steps of 2 iterations: θ̄ = Σ weights · θ_k, checked on one
    tensor by recording the policy after every step."""
    traj = []

    def hooks(event, state):
        if event == "setup":
            tr = state["learner"]
            orig = tr.opt.step

            def step(*a, **k):
                out = orig(*a, **k)
                traj.append(tr.models.lm.transformer.wte.weight.detach().clone())
                return out
            tr.opt.step = step
            traj.append(tr.models.lm.transformer.wte.weight.detach().clone())

    ppo(make_cfg(world, ema_decay=0.5), tmp_path / "run", hooks=hooks)
    ema = traj[0]
    for th in traj[1:]:
        ema = 0.5 * ema + 0.5 * th
    got = weights(tmp_path / "run/final_ema")["transformer.wte.weight"]
    assert len(traj) == 5 and torch.allclose(got, ema, atol=1e-7)


def test_resume_continues_the_same_trajectory(world, tmp_path):
    """Exact resume: 3 iterations straight = 2, halt, resume for 1 (weights, EMA, value, β)."""
    cfg = make_cfg(world, iterations=3, adaptive_kl=True, kl_target=0.5, kl_horizon=100)
    ppo(cfg, tmp_path / "straight")
    s = ppo(cfg, tmp_path / "split", halt_after=2)
    assert s["halted"] and (tmp_path / "split/checkpoints/latest").read_text() == "iter-000002"
    assert not (tmp_path / "split/final").exists()
    ppo(cfg, tmp_path / "split", resume=True)
    for sub in ("final", "final_ema", "value"):
        assert same(weights(tmp_path / "straight" / sub), weights(tmp_path / "split" / sub)), sub
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "split")
    assert [r["step"] for r in b] == [0, 1, 2]
    assert [_strip(r) for r in a] == [_strip(r) for r in b]
    assert a[2]["objective/beta"] != a[0]["objective/beta"]      # the controller moved β


@pytest.mark.parametrize("schedule, expect", [("constant_warmup", [0.1, 0.55, 1.0, 1.0]),
                                              ("linear", [1.0, 0.75, 0.5, 0.25])])
def test_lr_schedules(world, tmp_path, schedule, expect):
    """[IGPT]: constant with a warmup from 0.1× (here over 2 iterations); [LMHP]: linear decay."""
    ppo(make_cfg(world, iterations=4, lr_schedule=schedule, warmup_iterations=2, lr=1e-3,
                   episodes_per_iteration=4, minibatch_size=4), tmp_path / "run")
    got = [r["lr"] for r in read_metrics(tmp_path / "run")]
    assert got == pytest.approx([1e-3 * f for f in expect])


def test_paper_and_peer_options_run_finite(world, tmp_path):
    """TF-style Adam, linear decay, reward whitening, clamped KL, gradient clipping, 2 epochs,
    adaptive β: every option runs and produces finite metrics."""
    got = {}

    def hooks(event, state):
        if event == "setup":
            got["opt"] = type(state["learner"].opt).__name__

    ppo(make_cfg(world, adam_style="tf", lr_schedule="linear", whiten_rewards=True,
                   clamp_kl=True, grad_clip=0.5, ppo_epochs=2, adaptive_kl=True, gae_lambda=1.0),
          tmp_path / "run", hooks=hooks)
    assert got["opt"] == "TFAdam"
    for row in read_metrics(tmp_path / "run"):
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row


def test_micro_batches_accumulate_to_the_same_update(world, tmp_path):
    """The minibatch gradient is a token-weighted mean however it is split into micro-batches."""
    ppo(make_cfg(world, micro_batch_size=4, iterations=1), tmp_path / "a")
    ppo(make_cfg(world, micro_batch_size=1, iterations=1), tmp_path / "b")
    a, b = weights(tmp_path / "a/final"), weights(tmp_path / "b/final")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-6, rtol=1e-5), k


# ------------------------------------------------------------------------- rewards, errors

def test_reward_callable_by_import_path(world, tmp_path, monkeypatch):
    mod = tmp_path / "judge_mod.py"
    mod.write_text("def score(prompts, responses):\n"
                   "    assert all(isinstance(p, str) and p.startswith('Say ') for p in prompts)\n"
                   "    return [float(len(r.split())) for r in responses]\n"
                   "NOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward_fn("judge_mod:score")
    assert fn(["Say x"], ["a b"]) == [2.0]
    assert load_reward_fn(f"{mod}:score")(["Say y"], ["a"]) == [1.0]
    s = ppo(make_cfg(world, reward_model=None, reward_fn="judge_mod:score", iterations=1,
                       no_eos_penalty=None), tmp_path / "run")
    row = read_metrics(tmp_path / "run")[0]
    assert row["objective/score"] == pytest.approx(row["response/length"], abs=3)
    assert "judge_mod:score" in s["reward"]
    assert (tmp_path / "run/value/config.json").exists()   # value model from the policy trunk
    for spec, msg in (("judge_mod", "module:function"), ("no_such_mod_xyz:f", "cannot import"),
                      ("judge_mod:nope", "no attribute"), ("judge_mod:NOT_CALLABLE",
                                                           "not callable"),
                      (f"{tmp_path}/missing.py:f", "not found")):
        with pytest.raises(UserError, match=msg) as e:
            load_reward_fn(spec)
        assert "ppo.reward_fn" in str(e.value)


def test_nan_score_stops_with_a_diagnosis(world, tmp_path):
    def bad(prompts, responses):
        return [math.nan if i == 3 else 0.0 for i in range(len(prompts))]

    with pytest.raises(NonFiniteError, match=r"non-finite score .*1 of 8 .*prompt 'Say"):
        ppo(make_cfg(world, reward_model=None), tmp_path / "run", reward_fn=bad)


def test_nan_gradient_stops_and_names_the_parameter(world, tmp_path):
    def hooks(event, state):
        if event == "setup":
            w = state["models"].policy.transformer.h[0].mlp.c_fc.weight
            w.register_hook(lambda g: torch.full_like(g, math.nan))

    with pytest.raises(NonFiniteError, match=r"policy gradient .*transformer\.h\.0\.mlp\.c_fc"
                                               r"\.weight"):
        ppo(make_cfg(world), tmp_path / "run", hooks=hooks)
    assert not (tmp_path / "run/final").exists()


@pytest.mark.parametrize("where, checks, expect", [
    ("value", True, r"non-finite values from the value model"),
    ("policy", True, r"non-finite training log-probs at iteration 0, epoch 0, minibatch 0"),
    ("step", False, r"non-finite policy loss at iteration 0, epoch 0, minibatch 1, "
                    r"micro-batch 0"),
])
def test_nan_in_values_or_losses_is_located(world, tmp_path, where, checks, expect):
    def poison(a):
        with torch.no_grad():
            a.policy.transformer.h[0].ln_1.weight.fill_(math.nan)

    def hooks(event, state):
        a = state["models"]
        if where == "value" and event == "setup":
            with torch.no_grad():
                a.value.rm.head.weight.fill_(math.nan)
        if where == "policy" and event == "rollout":
            poison(a)
        if where == "step" and event == "setup":     # weights turn NaN after the first step
            opt = state["learner"].opt
            orig = opt.step
            opt.step = lambda *args, **kw: (orig(*args, **kw), poison(a))[0]

    with pytest.raises(NonFiniteError, match=expect):
        ppo(make_cfg(world, check_invariants=checks), tmp_path / "run", hooks=hooks)


def test_ratio_invariant_catches_a_policy_changed_after_rollout(world, tmp_path):
    def hooks(event, state):
        if event == "rollout":
            with torch.no_grad():
                state["models"].policy.transformer.wte.weight.mul_(1.5)

    with pytest.raises(InvariantError, match="ratio - 1.*dropout.*temperature.*padding"):
        ppo(make_cfg(world), tmp_path / "run", hooks=hooks)


def test_inconsistent_plan_is_refused_before_loading_models(tmp_path):
    cfg = Config.model_validate({"ppo": {"policy": str(tmp_path / "nowhere"),
                                         "episodes_per_iteration": 10, "minibatch_size": 4}})
    with pytest.raises(UserError, match=r"episodes_per_iteration \(10\).*minibatch_size \(4\)"):
        ppo(cfg, tmp_path / "run")


def test_missing_reward_and_bad_tokenizer_are_user_errors(world, tmp_path):
    with pytest.raises(UserError, match="reward_model.*reward_fn"):
        ppo(make_cfg(world, reward_model=None), tmp_path / "run")
    with pytest.raises(UserError, match="context length"):
        ppo(make_cfg(world, max_prompt_length=100, max_new_tokens=100), tmp_path / "run")


# ------------------------------------------------------------------------- functional

def test_reward_rises_with_a_programmatic_judge(world, tmp_path):
    """30 iterations × 16 episodes, 8 new tokens, high LR: the mean fraction of 'cat' words
    rises from ~1/25 to well above, while the KL to the reference stays bounded."""
    cfg = make_cfg(world, reward_model=None, iterations=30, episodes_per_iteration=16,
                   minibatch_size=8, micro_batch_size=8, rollout_batch_size=16,
                   max_new_tokens=8, no_eos_penalty=None, ema_decay=None)
    s = ppo(cfg, tmp_path / "run", reward_fn=cat_fraction)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 30
    first = sum(r["objective/score"] for r in rows[:5]) / 5
    last = sum(r["objective/score"] for r in rows[-5:]) / 5
    assert first < 0.12 and last > first + 0.2, (first, last)
    kls = [r["objective/kl"] for r in rows]
    assert all(math.isfinite(k) for k in kls) and max(kls) < 25
    assert s["final_score"] is not None


def test_separate_reference_is_loaded_and_used_for_kl(world, tmp_path):
    """Later rounds continue from a PPO policy while the KL reference stays the SFT model."""
    first = tmp_path / "r1"
    ppo(make_cfg(world, iterations=2), first)
    got = {}

    def hooks(event, state):
        if event == "setup":
            got["ref"] = {k: v.clone() for k, v in state["models"].ref.state_dict().items()}

    cfg = make_cfg(world, iterations=1, policy=str(first / "final"), reference=str(world["sft"]))
    ppo(cfg, tmp_path / "r2", hooks=hooks)
    init = weights(world["sft"])
    assert all(torch.equal(got["ref"][k], init[k]) for k in init)
    kl = [r["objective/kl"] for r in read_metrics(tmp_path / "r2") if "objective/kl" in r]
    assert kl and kl[0] != 0.0  # the policy already differs from its reference

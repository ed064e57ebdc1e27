"""The PPO speed paths compute what the plain paths compute.

Fused unembedding + log-softmax (values, entropy, gradients), the inverse-CDF sampler (the same
distribution, PAD never drawn), the fused GELU swap, the shared value head read from the
sampler's hidden states, reward callables given token ids, and bf16 autocast: log-prob parity
with fp32 within the stated tolerance, and a PPO run whose invariants hold under it.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from helpers import WORDS, tiny_lm

from rlhf.config import Config
from rlhf.models.generation import _sample_inverse_cdf, generate
from rlhf import rl
from rlhf.rl import policy_logits
from rlhf.models import load_model, load_tokenizer
from rlhf.data.prompts import load_prompts
from rlhf.models import cpu as cpu_module
from rlhf.models.cpu import autocast_context
from rlhf.models.cpu import cpu_threads_hint
from rlhf.models.cpu import fuse_activations
from rlhf.models.cpu import tune_cpu_allocator
from rlhf.models.fused_head import fused_head_logprobs
from rlhf.models.value import PolicyWithValueHead
from rlhf.models.value import fused_parts
from rlhf.models.value import response_logprobs
from rlhf.models.value import score_response
from rlhf.train.ppo import ppo
from rlhf.train.ppo.checks import BF16_RATIO_TOL
from rlhf.train.ppo.models import build_models
from rlhf.train.ppo.rollout import encode_prompts
from rlhf.train.ppo.rollout import reward_fn_kwargs
from rlhf.train.ppo.rollout import rollout

#: bf16 autocast against fp32, per response token: |Δ log π| (max over tokens, and mean).
BF16_MAX_ABS = 0.05
BF16_MEAN_ABS = 0.005


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("perf")
    base = tiny_lm(tmp, n_layer=2, n_embd=32)
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {w} and {v}"}) + "\n"
                               for w, v in itertools.pairwise(WORDS)))
    return {"dir": tmp, "model": base, "prompts": prompts}


def _cfg(setup, **over) -> Config:
    ppo = dict(policy=str(setup["model"]), reward_fn=f"{__name__}:word_count",
               prompts_file=str(setup["prompts"]), iterations=2, episodes_per_iteration=8,
               minibatch_size=4, micro_batch_size=2, rollout_batch_size=8, max_new_tokens=8,
               max_prompt_length=24, lr=1e-3, value_lr=1e-3, warmup_iterations=0,
               save_every=100, ema_decay=None)
    ppo.update(over)
    return Config.model_validate({"seed": 0, "ppo": ppo})


def word_count(prompts, responses):
    return [float(len(r.split())) for r in responses]


def _rollout(setup, precision=None, **over):
    p = _cfg(setup, **over).ppo
    actors = build_models(p, precision=precision)
    prompts = load_prompts(p.prompts_file)[:8]
    texts, ids, _ = encode_prompts(actors.tokenizer, prompts, p.prompt_template, 24)
    return p, actors, rollout(actors, p, texts, ids, torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ fused head

@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_head_matches_logits_then_log_softmax(temperature):
    """Values, entropy and both gradients equal the plain computation (fp32, ≤ 1e-5)."""
    g = torch.Generator().manual_seed(0)
    n, d, v, pad = 300, 16, 97, 5                    # 300 rows: several row blocks
    h = torch.randn(n, d, generator=g, dtype=torch.float64).float().requires_grad_()
    w = (0.5 * torch.randn(v, d, generator=g)).requires_grad_()
    y = torch.randint(0, v, (n,), generator=g)
    y[y == pad] = pad + 1
    up = torch.randn(n, generator=g)
    lp, ent = fused_head_logprobs(h, w, y, temperature, pad, want_entropy=True)
    (lp * up).sum().backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    z = policy_logits(h @ w.t(), temperature, pad)
    ref = torch.log_softmax(z, -1).gather(-1, y[:, None]).squeeze(-1)
    (ref * up).sum().backward()
    assert torch.allclose(lp, ref, atol=1e-5)
    assert torch.allclose(lp, rl.logprobs_from_logits(z.detach(), y), atol=1e-5)
    assert torch.allclose(ent, rl.entropy_from_logits(z.detach()), atol=1e-5)
    assert torch.allclose(gh, h.grad, atol=1e-5)
    assert torch.allclose(gw, w.grad, atol=1e-5)
    assert float(gw[pad].abs().max()) == 0.0        # PAD is out of the softmax: no gradient
    with torch.no_grad():                           # the no-graph path: same numbers
        lp2, ent2 = fused_head_logprobs(h, w, y, temperature, pad)
    assert ent2 is None and torch.equal(lp2, lp.detach())


def test_fused_head_refuses_a_second_backward():
    h = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(11, 8, requires_grad=True)
    lp, _ = fused_head_logprobs(h, w, torch.tensor([1, 2, 3, 4]))
    lp.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward twice"):
        lp.sum().backward()


def test_score_response_fused_equals_plain_forward(setup):
    """The fused path (base model + fused head) gives the plain forward's log-probs, entropy
    and gradients on a real model, and the shared head's values."""
    _, actors, ep = _rollout(setup)
    model, pad = actors.policy, actors.tokenizer.pad_token_id
    assert fused_parts(model) is not None
    args = (ep.query, ep.query_mask, ep.response, ep.mask, 0.9, pad)
    lp, ent, _ = score_response(model, *args, want_entropy=True)
    (lp * ep.mask).sum().backward()
    g1 = {n: q.grad.clone() for n, q in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    lp0, ent0, _ = score_response(model, *args, want_entropy=True, fused=False)
    (lp0 * ep.mask).sum().backward()
    m = ep.mask.bool()
    assert (lp - lp0)[m].abs().max() <= 1e-5
    assert (ent - ent0)[m].abs().max() <= 1e-5
    for n, q in model.named_parameters():
        assert torch.allclose(g1[n], q.grad, atol=1e-5), n
    model.zero_grad(set_to_none=True)
    # shared value head: fused and plain paths read the same hidden state
    shared = PolicyWithValueHead(model)
    torch.nn.init.normal_(shared.v_head.weight)
    with torch.no_grad():
        _, _, v1 = score_response(shared, *args)
        _, _, v0 = score_response(shared, *args, fused=False)
    assert torch.allclose(v1, v0, atol=1e-5)


def test_shared_values_come_from_the_sampler(setup):
    """In shared mode the rollout's values are the head on the sampler's own hidden states:
    equal to a training forward's values (no extra forward)."""
    _, actors, ep = _rollout(setup, value_model="shared")
    with torch.no_grad():
        torch.nn.init.normal_(actors.policy.v_head.weight)
        ro = generate(actors.lm, actors.tokenizer,
                      [row[m.bool()].tolist() for row, m in zip(ep.query, ep.query_mask)],
                      max_new_tokens=8, generator=torch.Generator().manual_seed(0),
                      sampler="inverse_cdf", return_hidden=True)
        from_sampler = actors.policy.v_head(ro.hidden).squeeze(-1)
        _, _, from_forward = score_response(actors.policy, ro.query, ro.query_mask,
                                              ro.response, ro.response_mask, 1.0,
                                              actors.tokenizer.pad_token_id)
    m = ro.response_mask.bool()
    assert ro.hidden.shape[:2] == ro.response.shape
    assert (from_sampler - from_forward)[m].abs().max() <= 1e-5


# ------------------------------------------------------------------ sampler

def test_inverse_cdf_sampler_draws_the_distribution():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0]] * 20000)
    g = torch.Generator().manual_seed(0)
    draws = _sample_inverse_cdf(probs, g)
    freq = torch.bincount(draws, minlength=5).double() / len(draws)
    assert freq[1] == 0 and freq[4] == 0              # zero-probability ids never drawn
    assert torch.allclose(freq, probs[0].double(), atol=0.015)
    # unnormalised rows (a top-p cut) and u·total rounding up to the total
    assert _sample_inverse_cdf(torch.tensor([[0.0, 2.0, 0.0]]), g).item() == 1


def test_inverse_cdf_sampler_edge_takes_the_last_nonzero(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.ones(a[0], a[1], dtype=torch.float64))
    probs = torch.tensor([[0.2, 0.8, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert _sample_inverse_cdf(probs, None).tolist() == [1, 3]


def test_generate_samplers_agree_in_distribution(setup):
    """Both samplers, same prompt repeated: first-token frequencies agree, PAD never drawn,
    and the reported log-probs are those of the drawn tokens."""
    tok, model = load_tokenizer(setup["model"]), load_model(setup["model"]).eval()
    ids = [tok("User: Say", add_special_tokens=False)["input_ids"]] * 2000
    first = {}
    for sampler in ("multinomial", "inverse_cdf"):
        ro = generate(model, tok, ids, max_new_tokens=1, sampler=sampler,
                      generator=torch.Generator().manual_seed(1))
        assert not bool((ro.response == tok.pad_token_id).any())
        first[sampler] = torch.bincount(ro.response[:, 0], minlength=len(tok)).double() / 2000
        with torch.no_grad():
            z = policy_logits(model(torch.tensor(ids[:1])).logits[:, -1], 1.0, tok.pad_token_id)
        lp = torch.log_softmax(z, -1)[0, ro.response[:, 0]]
        assert torch.allclose(lp, ro.logprobs[:, 0], atol=1e-5)
    assert (first["multinomial"] - first["inverse_cdf"]).abs().max() < 0.05
    with pytest.raises(ValueError, match="sampler"):
        generate(model, tok, ids[:1], max_new_tokens=1, sampler="nope")


def test_policy_logits_leaves_its_input_alone():
    x = torch.randn(3, 7)
    x0 = x.clone()
    out = policy_logits(x, 0.5, 2)
    assert torch.equal(x, x0) and out is not x
    assert torch.isinf(out[:, 2]).all() and torch.allclose(out[:, :2], x0[:, :2] / 0.5)
    xb = x.bfloat16()
    assert policy_logits(xb, 1.0, None).dtype == torch.float32


# ------------------------------------------------------------------ GELU swap

def test_fused_gelu_is_the_same_function(setup):
    model = load_model(setup["model"]).eval()
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        before = model(ids).logits
        n = fuse_activations(model)
        after = model(ids).logits
    assert n == 2                                   # one per block
    assert model.config.activation_function == "gelu_new"   # the saved config is unchanged
    assert (before - after).abs().max() <= 1e-5


# ------------------------------------------------------------------ reward ids

def test_reward_callable_gets_token_ids(setup, tmp_path):
    seen = []

    def by_ids(prompts, responses, response_ids, prompt_ids):
        seen.append((list(prompts), list(responses), response_ids, prompt_ids))
        return [float(len(r)) for r in response_ids]

    cfg = _cfg(setup, iterations=1, reward_fn=None)
    rows = {}
    ppo(cfg, tmp_path / "run", reward_fn=by_ids,
          hooks=lambda e, s: rows.setdefault("ep", s.get("episodes")) if e == "rollout" else None)
    ep, tok = rows["ep"], load_tokenizer(setup["model"])
    _, _, r_ids, p_ids = seen[0]
    lens = ep.mask.sum(1).tolist()
    for i, ids in enumerate(r_ids):
        assert ids == ep.response[i, :lens[i]].tolist()          # up to and including EOS
        assert tok.pad_token_id not in ids
    for i, ids in enumerate(p_ids):
        assert ids == ep.query[i][ep.query_mask[i].bool()].tolist()
    assert ep.raw_scores.tolist() == [float(n) for n in lens]
    assert reward_fn_kwargs(word_count) == frozenset()
    assert reward_fn_kwargs(lambda p, r, **kw: 0) == {"prompt_ids", "response_ids"}


# ------------------------------------------------------------------ bf16 autocast

def test_bf16_logprob_parity(setup):
    """bf16 autocast sampler log-probs vs an fp32 forward of the same tokens:
    max |Δ log π| ≤ BF16_MAX_ABS and mean ≤ BF16_MEAN_ABS (measured on the benchmark model:
    see benchmarks/RESULTS.md)."""
    p, actors, ep = _rollout(setup, precision="bf16")
    assert actors.autocast is torch.bfloat16
    with torch.no_grad():
        lp32 = response_logprobs(actors.lm, ep.query, ep.query_mask, ep.response, ep.mask,
                                   p.temperature, actors.tokenizer.pad_token_id)
        with autocast_context(torch.bfloat16, torch.device("cpu")):
            lp16 = response_logprobs(actors.ref, ep.query, ep.query_mask, ep.response,
                                       ep.mask, p.temperature, actors.tokenizer.pad_token_id)
    m = ep.mask.bool()
    for name, lp in (("sampler", ep.logprobs), ("training forward", lp16)):
        d = (lp - lp32)[m].abs()
        assert float(d.max()) <= BF16_MAX_ABS, name
        assert float(d.mean()) <= BF16_MEAN_ABS, name
    assert float((ep.ref_logprobs - lp16)[m].abs().max()) == 0.0   # ref = frozen copy, same path


def test_bf16_ppo_runs_with_its_invariants(setup, tmp_path):
    """A bf16-autocast run: KL-at-0 and first-minibatch ratio checks pass at the bf16
    tolerances, losses finite, the ratio deviation reported (and nonzero: bf16 really ran)."""
    rows, seen = [], {}

    def hooks(event, state):
        if event == "setup":
            seen["autocast"] = state["models"].autocast
        if event == "iteration":
            rows.append(state["metrics"])

    ppo(_cfg(setup, iterations=2, precision="bf16"), tmp_path / "run", hooks=hooks)
    assert seen["autocast"] is torch.bfloat16           # the config field `ppo.precision`
    for m in rows:
        assert 0 < m["policy/first_minibatch_ratio_dev"] <= BF16_RATIO_TOL
        assert math.isfinite(m["policy/loss"]) and math.isfinite(m["value/loss"])
    with pytest.raises(Exception, match="ppo.precision"):
        _cfg(setup, precision="fp8")


def test_cpu_threads_hint(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(cpu_module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert "OMP_WAIT_POLICY=PASSIVE" in cpu_threads_hint(load=1.5)
    assert cpu_threads_hint(load=0.1) is None            # a quiet machine
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert cpu_threads_hint(load=3.0) is None
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert cpu_threads_hint(load=3.0) is None            # one thread: nothing to spin


def test_allocator_tuning_is_harmless():
    assert tune_cpu_allocator() in (True, False)
    x = torch.randn(1000, 1000)
    assert torch.isfinite(x @ x).all()


def test_token_logprobs_is_the_rl_formula():
    """The training forward's fused log-softmax + NLL (`models.value.token_logprobs`) is
    `rl.logprobs_from_logits` of the same policy logits (PAD removed, ÷T): values, gradients."""
    from rlhf.models.value import token_logprobs

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 7, 50, generator=g)
    ids = torch.randint(1, 50, (3, 7), generator=g)
    for temperature in (1.0, 0.7):
        a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        fast = token_logprobs(policy_logits(a, temperature, 0), ids)
        ref = rl.logprobs_from_logits(policy_logits(b, temperature, 0), ids)
        assert torch.allclose(fast, ref, atol=1e-6)
        fast.sum().backward()
        ref.sum().backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-6)

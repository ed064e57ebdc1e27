"""rlhf.rl.losses on hand-worked numbers, and post-EOS invariance (spec 7.16, 7.17, 7.20, 8.1, 8.9)."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhf.rl import (
    compute_rewards,
    gae,
    lm_nll,
    logprobs_from_logits,
    policy_loss,
    response_mask_from_eos,
    value_loss,
    whiten,
)

# ratios 1.5, 0.5, 1.1, 0.7 and one invalid token with a wild ratio and advantage
RATIOS = [1.5, 0.5, 1.1, 0.7, 100.0]
ADV = torch.tensor([[1.0, 1.0, -1.0, -1.0, 50.0]])
MASK5 = torch.tensor([[1, 1, 1, 1, 0]])


def test_policy_loss_hand_numbers():
    logp = torch.tensor([[math.log(r) for r in RATIOS]], requires_grad=True)
    old = torch.zeros(1, 5)
    loss, stats = policy_loss(logp, old, ADV, MASK5, clip_range=0.2)
    # per token max(-Aρ, -A·clip(ρ)): max(-1.5,-1.2) = -1.2 (clipped); max(-0.5,-0.8) = -0.5;
    # max(1.1, 1.1) = 1.1; max(0.7, 0.8) = 0.8 (clipped)  -> mean 0.2/4 = 0.05
    assert loss.item() == pytest.approx(0.05)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    expected_kl = 0.5 * sum(math.log(r) ** 2 for r in RATIOS[:4]) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_kl)
    assert stats["ratio_mean"].item() == pytest.approx(0.95)
    assert stats["ratio_max"].item() == pytest.approx(1.5)
    assert not any(v.requires_grad for v in stats.values())
    loss.backward()
    # clipped tokens: 0; unclipped: d(-Aρ)/dlogp = -Aρ, divided by 4 valid tokens
    assert logp.grad[0].tolist() == pytest.approx([0.0, -0.125, 0.275, 0.0, 0.0])


def test_policy_loss_first_minibatch_ratio_one():
    logp = torch.tensor([[-1.0, -2.0, -0.3]])
    adv = torch.tensor([[0.5, -1.5, 2.5]])
    loss, stats = policy_loss(logp, logp.clone(), adv, torch.ones(1, 3))
    assert loss.item() == pytest.approx(-0.5)  # -mean(A)
    assert stats["clipfrac"].item() == 0.0 and stats["approx_kl"].item() == 0.0
    assert stats["ratio_mean"].item() == 1.0 and stats["ratio_max"].item() == 1.0


def test_value_loss_hand_numbers():
    values = torch.tensor([[1.0, 0.0, 2.0, 99.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 2.0, -99.0]])
    ret = torch.tensor([[2.0, -1.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = value_loss(values, old, ret, mask, clip_range_value=0.2)
    # V_clip = 0.7, 0.3, 2.0; unclipped (V-R)² = 1, 1, 1; clipped (V_clip-R)² = 1.69, 1.69, 1
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.69 + 1.0) / 3)
    assert stats["clipfrac"].item() == pytest.approx(2 / 3)
    assert stats["error"].item() == pytest.approx(1.0)
    loss.backward()
    # clipped branch at its bound -> 0 grad; token 3: d ½(V-R)²/dV / 3 = (2-1)/3
    assert values.grad[0].tolist() == pytest.approx([0.0, 0.0, 1 / 3, 0.0])


def test_value_loss_unclipped_branch_and_no_clipping():
    # V moved past V_old + ε towards R: unclipped error is the larger one
    v, old, r = torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[0.8]])
    loss, stats = value_loss(v, old, r, torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.5 * 0.2**2) and stats["clipfrac"].item() == 0.0
    v = torch.tensor([[1.0, 0.0]])
    loss, _ = value_loss(v, torch.tensor([[0.5, 0.5]]), torch.tensor([[2.0, -1.0]]), torch.ones(1, 2),
                         clip_range_value=None)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 1.0) / 2)


def test_lm_nll_hand_numbers():
    logits = torch.tensor([[[0.0, math.log(2), math.log(3)]] * 3])  # p = 1/6, 2/6, 3/6
    labels = torch.tensor([[2, 0, -100]])
    mask = torch.tensor([[1, 1, 0]])
    nll = lm_nll(logits, labels, mask)
    assert nll.item() == pytest.approx((math.log(2) + math.log(6)) / 2)
    ce = F.cross_entropy(logits.view(-1, 3), labels.view(-1), ignore_index=-100)
    assert nll.item() == pytest.approx(ce.item())


# ---- post-EOS invariance through the whole PPO math (pitfall 8.9) ----------------------------

EOS, PAD, VOCAB, DIM = 1, 0, 7, 4


class TinyCausal(torch.nn.Module):
    """logits_t and V_t see only tokens < t (exclusive prefix sum of embeddings)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Parameter(torch.randn(VOCAB, DIM, generator=g, dtype=torch.float64))
        self.w = torch.nn.Parameter(torch.randn(DIM, VOCAB, generator=g, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.randn(VOCAB, generator=g, dtype=torch.float64))
        self.wv = torch.nn.Parameter(torch.randn(DIM, generator=g, dtype=torch.float64))

    def forward(self, ids):
        e = self.emb[ids]
        h = torch.cumsum(e, dim=1) - e
        return h @ self.w + self.b, h @ self.wv


def ppo_losses(model, ids, temperature=0.7):
    mask = response_mask_from_eos(ids, EOS, PAD)
    logits, values = model(ids)
    logp = logprobs_from_logits(logits, ids, temperature) * mask   # 0 after EOS, as sampled
    with torch.no_grad():
        old_logp = logp + 0.1 * torch.sin(torch.arange(ids.numel(), dtype=logp.dtype)).view_as(logp)
        ref_logp = logp - 0.05
        old_values = values + 0.3
    _, _, kl = compute_rewards(torch.tensor([1.0, -0.5]), logp.detach(), ref_logp, mask, 0.02)
    rewards, _, _ = compute_rewards(torch.tensor([1.0, -0.5]), old_logp, ref_logp, mask, 0.02)
    adv, ret = gae(rewards, old_values, mask, 1.0, 0.95)
    adv = whiten(adv, mask)
    pg, pg_stats = policy_loss(logp, old_logp, adv, mask)
    vf, _ = value_loss(values, old_values, ret, mask)
    ptx = lm_nll(logits, ids, mask)
    return pg + 0.1 * vf + 27.8 * ptx, pg_stats


def test_tokens_after_eos_change_neither_loss_nor_gradients():
    ids = torch.tensor([[3, 4, 1, 0, 0, 0], [2, 5, 6, 1, 0, 0]])
    junk = torch.tensor([[3, 4, 1, 6, 1, 2], [2, 5, 6, 1, 4, 3]])  # other tokens after the EOS
    results = []
    for x in (ids, junk):
        model = TinyCausal()
        loss, stats = ppo_losses(model, x)
        loss.backward()
        results.append((loss.detach(), stats, [p.grad.clone() for p in model.parameters()]))
    (l1, s1, g1), (l2, s2, g2) = results
    assert torch.equal(l1, l2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert any(g.abs().sum() > 0 for g in g1)

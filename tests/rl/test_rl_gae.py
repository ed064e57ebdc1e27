"""rlhf.rl.gae against hand numbers and an explicit reference loop (spec 7.13, pitfall 8.8)."""

import pytest
import torch

from rlhf.rl import gae, masked_mean, masked_var, whiten


def reference_gae(rewards, values, lengths, gamma, lam):
    """Plain-Python GAE per row over its first `length` tokens; zeros after."""
    advs, rets = [], []
    for r, v, L in zip(rewards, values, lengths):
        a = [0.0] * len(r)
        last = 0.0
        for t in reversed(range(L)):
            next_v = v[t + 1] if t + 1 < L else 0.0
            delta = r[t] + gamma * next_v - v[t]
            last = delta + gamma * lam * last
            a[t] = last
        advs.append(a)
        rets.append([a[t] + v[t] if t < L else 0.0 for t in range(len(r))])
    return advs, rets


def test_two_step_hand_numbers():
    # δ1 = 1 - 0.25 = 0.75 = A1; δ0 = 0 + 0.25 - 0.5 = -0.25; A0 = -0.25 + 0.95·0.75 = 0.4625
    adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2), 1.0, 0.95)
    assert adv[0].tolist() == pytest.approx([0.4625, 0.75])
    assert ret[0].tolist() == pytest.approx([0.9625, 1.0])


R = [[0.1, -0.2, 1.0, 9.0, 3.0], [0.5, 0.0, -0.3, 0.7, 0.2], [2.0, 5.0, 5.0, 5.0, 5.0]]
V = [[0.3, 0.2, -0.1, 7.0, 1.0], [1.0, 0.5, 0.2, -0.4, 0.6], [-1.0, 4.0, 4.0, 4.0, 4.0]]
LENGTHS = [3, 5, 1]


@pytest.mark.parametrize("lam", [0.95, 1.0])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_matches_reference_loop_with_masks(gamma, lam):
    mask = torch.arange(5)[None] < torch.tensor(LENGTHS)[:, None]
    adv, ret = gae(torch.tensor(R, dtype=torch.float64), torch.tensor(V, dtype=torch.float64), mask,
                   gamma=gamma, gae_lambda=lam)
    ref_adv, ref_ret = reference_gae(R, V, LENGTHS, gamma, lam)
    assert torch.allclose(adv, torch.tensor(ref_adv, dtype=torch.float64))
    assert torch.allclose(ret, torch.tensor(ref_ret, dtype=torch.float64))


def test_lambda1_v0_gives_reward_to_go():
    r = torch.tensor([[1.0, 2.0, 3.0, 50.0], [4.0, -1.0, 0.5, 2.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    adv, ret = gae(r, torch.zeros_like(r), mask, gamma=1.0, gae_lambda=1.0)
    assert adv.tolist() == [[6.0, 5.0, 3.0, 0.0], [5.5, 1.5, 2.5, 2.0]]
    assert ret.tolist() == adv.tolist()


def test_lambda1_gamma1_returns_are_reward_to_go_for_any_values():
    r = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    v = torch.tensor([[0.7, -3.0, 11.0, 8.0]])
    _, ret = gae(r, v, torch.tensor([[1, 1, 1, 0]]), 1.0, 1.0)
    assert ret[0].tolist() == pytest.approx([6.0, 5.0, 3.0, 0.0])


def test_invalid_positions_are_ignored_and_zero():
    r, v = torch.tensor(R), torch.tensor(V)
    mask = torch.arange(5)[None] < torch.tensor(LENGTHS)[:, None]
    r2, v2 = r.clone(), v.clone()
    r2[~mask], v2[~mask] = float("nan"), float("inf")
    adv, ret = gae(r, v, mask)
    adv2, ret2 = gae(r2, v2, mask)
    assert torch.equal(adv, adv2) and torch.equal(ret, ret2)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_no_grad_and_shape_check():
    v = torch.tensor([[1.0, 2.0]], requires_grad=True)
    adv, ret = gae(torch.zeros(1, 2), v, torch.ones(1, 2))
    assert not adv.requires_grad and not ret.requires_grad
    with pytest.raises(ValueError):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 4))


def test_whitened_advantages_mean0_population_std1():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(5, 8, generator=g, dtype=torch.float64)
    v = torch.randn(5, 8, generator=g, dtype=torch.float64)
    mask = torch.arange(8)[None] < torch.tensor([8, 2, 5, 1, 6])[:, None]
    adv, _ = gae(r, v, mask, 1.0, 0.95)
    w = whiten(adv, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(w, mask).sqrt().item() == pytest.approx(1.0, abs=1e-6)

"""rlhf.rl.kl: estimators, shaped rewards, controllers (spec 7.11, 7.12, pitfalls 8.2, 8.7)."""

import math

import pytest
import torch

from rlhf.rl import (
    AdaptiveKLController,
    FixedKLController,
    compute_rewards,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_per_token,
    logprobs_from_logits,
)


def best_of_n_kl(n: int) -> float:
    """Analytic KL(best-of-n ‖ base) = log n − (n − 1)/n (Stiennon et al. 2020, App. G.3): the
    reference value the estimators are checked against."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def test_estimators_hand_numbers():
    lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])  # d = 0.5, -1
    assert torch.allclose(kl_k1(lp, ref), torch.tensor([0.5, -1.0]))
    assert torch.allclose(kl_k2(lp, ref), torch.tensor([0.125, 0.5]))
    assert torch.allclose(kl_k3(lp, ref), torch.tensor([math.exp(-0.5) - 0.5, math.e - 2.0]))
    assert torch.equal(kl_per_token(lp, ref, "k3"), kl_k3(lp, ref))
    with pytest.raises(ValueError):
        kl_per_token(lp, ref, "k4")


def test_k1_and_k3_unbiased_on_samples():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    true_kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    y = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    lp, ref = p.log()[y], q.log()[y]
    assert kl_k1(lp, ref).mean().item() == pytest.approx(true_kl, abs=0.01)
    assert kl_k3(lp, ref).mean().item() == pytest.approx(true_kl, abs=0.01)
    assert (kl_k3(lp, ref) >= 0).all()


def test_best_of_n_kl_closed_form_and_as_estimator_target():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)
    with pytest.raises(ValueError):
        best_of_n_kl(0)
    # best-of-n over M equally likely items with distinct scores: P(rank i) = (i/M)^n - ((i-1)/M)^n
    n, big_m = 4, 2000
    i = torch.arange(1, big_m + 1, dtype=torch.float64)
    p = (i / big_m) ** n - ((i - 1) / big_m) ** n
    ref_all = torch.full_like(p, -math.log(big_m))
    # exact expectations under the best-of-n policy (k3's samples are heavy-tailed here)
    assert (p * kl_k1(p.log(), ref_all)).sum().item() == pytest.approx(best_of_n_kl(n), abs=2e-3)
    assert (p * kl_k3(p.log(), ref_all)).sum().item() == pytest.approx(best_of_n_kl(n), abs=2e-3)
    y = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(1))
    assert kl_k1(p.log()[y], ref_all[y]).mean().item() == pytest.approx(best_of_n_kl(n), abs=0.02)


SCORE = torch.tensor([2.0, -1.0])
LP = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-1.0, -1.0, -1.0, -1.0]])
REF = torch.tensor([[-1.5, -1.0, -0.5, -9.0], [-2.0, -1.0, -1.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])  # row 0: EOS at 2; row 1: truncated, no EOS


def test_compute_rewards_hand_numbers():
    rewards, nsr, kl = compute_rewards(SCORE, LP, REF, MASK, beta_kl=0.1)
    # row 0: d = 0.5, -1, 0, (invalid); row 1: d = 1, 0, 0, -1
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, -1.0]]))
    assert torch.allclose(nsr, torch.tensor([[-0.05, 0.1, 0.0, 0.0], [-0.1, 0.0, 0.0, 0.1]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.1, 2.0, 0.0], [-0.1, 0.0, 0.0, -0.9]]))


def test_sum_of_rewards_is_score_minus_beta_kl_sum():
    g = torch.Generator().manual_seed(3)
    B, T, beta = 4, 7, 0.02
    lp, ref = -torch.rand(B, T, generator=g) * 3, -torch.rand(B, T, generator=g) * 3
    lengths = torch.tensor([7, 1, 3, 5])
    mask = torch.arange(T)[None] < lengths[:, None]
    score = torch.randn(B, generator=g)
    rewards, _, _ = compute_rewards(score, lp, ref, mask, beta)
    for b in range(B):
        L = lengths[b].item()
        expected = score[b].item() - beta * sum(lp[b, t].item() - ref[b, t].item() for t in range(L))
        assert rewards[b].sum().item() == pytest.approx(expected, abs=1e-6)
        # the score lands at the last valid token (EOS) and nothing after it
        assert rewards[b, L - 1].item() == pytest.approx(
            score[b].item() - beta * (lp[b, L - 1] - ref[b, L - 1]).item(), abs=1e-6)
        assert (rewards[b, L:] == 0).all()


def test_clamp_kl_option():
    rewards, nsr, kl = compute_rewards(SCORE, LP, REF, MASK, beta_kl=0.1, clamp_kl=True)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 2.0, 0.0], [-0.1, 0.0, 0.0, -1.0]]))


def test_invalid_positions_hold_anything():
    lp, ref = LP.clone(), REF.clone()
    lp[0, 3], ref[0, 3] = float("inf"), float("nan")
    a = compute_rewards(SCORE, lp, ref, MASK, 0.1)
    lp[0, 3] = ref[0, 3] = 0.0          # what the sampler writes after EOS
    b = compute_rewards(SCORE, lp, ref, MASK, 0.1)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_kl_sign_policy_raising_a_token_gets_negative_non_score_reward():
    ref_logits = torch.zeros(1, 1, 3)
    pol_logits = torch.tensor([[[0.0, 1.0, 0.0]]])  # policy raised token 1's probability
    ids = torch.tensor([[1]])
    lp, ref = logprobs_from_logits(pol_logits, ids), logprobs_from_logits(ref_logits, ids)
    _, nsr, kl = compute_rewards(torch.tensor([0.0]), lp, ref, torch.ones(1, 1), beta_kl=0.02)
    assert kl.item() > 0 and nsr.item() < 0


def test_policy_equal_reference_gives_exactly_zero_kl():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 9, generator=g)
    ids = torch.randint(0, 9, (2, 5), generator=g)
    lp = logprobs_from_logits(logits, ids)
    ref = logprobs_from_logits(logits.clone(), ids)
    rewards, nsr, kl = compute_rewards(torch.tensor([0.3, -0.7]), lp, ref, torch.ones(2, 5), 0.02)
    assert (kl == 0).all() and (nsr == 0).all()
    assert rewards[:, -1].tolist() == pytest.approx([0.3, -0.7])


def test_compute_rewards_errors():
    with pytest.raises(ValueError, match="no valid token"):
        compute_rewards(SCORE, LP, REF, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]), 0.1)
    with pytest.raises(ValueError, match="score"):
        compute_rewards(torch.zeros(3), LP, REF, MASK, 0.1)


def test_fixed_controller():
    c = FixedKLController(0.02)
    assert c.update(100.0, 512) == 0.02 and c.value == 0.02
    c2 = FixedKLController(1.0)
    c2.load_state_dict(c.state_dict())
    assert c2.value == 0.02


def test_adaptive_controller_numbers():
    c = AdaptiveKLController(init_kl_coef=0.15, target=6.0, horizon=10_000)
    # KL 9: e = clip(9/6 - 1) = clip(0.5) = 0.2 -> β = 0.15·(1 + 0.2·512/10000) = 0.15·1.01024
    assert c.update(9.0, 512) == pytest.approx(0.151536)
    # KL 5.4: e = -0.1 -> β·(1 - 0.1·0.0512) = 0.151536·0.99488
    assert c.update(5.4, 512) == pytest.approx(0.151536 * 0.99488)
    # KL 0: e clipped at -0.2
    c = AdaptiveKLController(0.15, 6.0, 10_000)
    assert c.update(0.0, 512) == pytest.approx(0.15 * 0.98976)
    # on target: unchanged
    assert c.update(6.0, 512) == pytest.approx(0.15 * 0.98976)
    c2 = AdaptiveKLController(1.0, 1.0, 1.0)
    c2.load_state_dict(c.state_dict())
    assert (c2.value, c2.target, c2.horizon) == (c.value, 6.0, 10_000.0)
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, 0.0, 10)

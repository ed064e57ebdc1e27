"""rlhf.rl.masked on hand-worked numbers (spec 7.14, pitfall 8.8)."""

import math

import pytest
import torch

from rlhf.rl import explained_variance, masked_mean, masked_sum, masked_var, whiten

INF, NAN = float("inf"), float("nan")
# Valid entries: 1, 2, 3, 4, 5 -> sum 15, mean 3, population var (4+1+0+1+4)/5 = 2, unbiased 10/4.
X = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, INF, NAN]], dtype=torch.float64)
M = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def test_sum_mean_var_ignore_invalid_even_inf_nan():
    assert masked_sum(X, M).item() == 15.0
    assert masked_mean(X, M).item() == 3.0
    assert masked_var(X, M).item() == pytest.approx(2.0)
    assert masked_var(X, M, unbiased=True).item() == pytest.approx(2.5)
    assert masked_sum(X, M, dim=1).tolist() == [6.0, 9.0]
    assert masked_mean(X, M, dim=1).tolist() == [2.0, 4.5]
    assert masked_mean(X, M.bool(), dim=1, keepdim=True).shape == (2, 1)


def test_population_variance_differs_from_torch_default():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert masked_var(x, torch.ones(5)).item() == pytest.approx(2.0)
    assert torch.var(x).item() == pytest.approx(2.5)  # the N-blog #9 pitfall


def test_empty_mask_gives_zero_mean_without_nan_grad():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    m = torch.tensor([[1, 1], [0, 0]])
    mean = masked_mean(x, m, dim=1)
    assert mean.tolist() == [1.5, 0.0]
    mean.sum().backward()
    assert x.grad.tolist() == [[0.5, 0.5], [0.0, 0.0]]
    assert masked_mean(x, torch.zeros(2, 2)).item() == 0.0


def test_gradient_is_zero_at_invalid_positions_with_inf():
    x = X.clone().requires_grad_(True)
    masked_mean(x, M).backward()
    expected = [[0.2, 0.2, 0.2, 0.0], [0.2, 0.2, 0.0, 0.0]]
    assert torch.allclose(x.grad, torch.tensor(expected, dtype=torch.float64))


def test_whiten_hand_numbers():
    w = whiten(X, M, eps=0.0)
    s = math.sqrt(2.0)
    expected = [[-2 / s, -1 / s, 0.0, 0.0], [1 / s, 2 / s, 0.0, 0.0]]
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64))
    w_scale = whiten(X, M, shift_mean=False, eps=0.0)
    expected = [[3 - 2 / s, 3 - 1 / s, 3.0, 0.0], [3 + 1 / s, 3 + 2 / s, 0.0, 0.0]]
    assert torch.allclose(w_scale, torch.tensor(expected, dtype=torch.float64))
    # eps enters as sqrt(var + eps)
    w_eps = whiten(X, M, eps=2.0)
    assert w_eps[0, 0].item() == pytest.approx(-2 / 2.0)


def test_whiten_mean0_population_std1_over_valid_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 9, generator=g, dtype=torch.float64) * 3 + 7
    lengths = torch.tensor([9, 1, 4, 7, 2, 5])
    m = torch.arange(9)[None, :] < lengths[:, None]
    w = whiten(x, m)
    vals = [w[i, j].item() for i in range(6) for j in range(9) if m[i, j]]
    mean = sum(vals) / len(vals)
    pop_std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    assert abs(mean) < 1e-12 and pop_std == pytest.approx(1.0, abs=1e-6)
    assert (w[~m] == 0).all()


def test_explained_variance():
    r = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 5.0, -9.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert explained_variance(r, r, m).item() == pytest.approx(1.0)
    assert explained_variance(torch.zeros_like(r), r, m).item() == pytest.approx(0.0)
    # residuals 1, -1, 1, -1, 0: population var 0.8; Var[R] = 2 -> EV = 1 - 0.8/2 = 0.6
    res = torch.tensor([[1.0, -1.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0]])
    assert explained_variance(r - res, r, m).item() == pytest.approx(0.6)
    assert math.isnan(explained_variance(r, torch.ones_like(r), m).item())

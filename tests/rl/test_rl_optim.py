"""rlhf.rl.optim: TF-style Adam closed form, EMA math, LR schedules (spec 7.22, 7.23, pitfall 8.15)."""

import math

import pytest
import torch

from rlhf.rl import EMA, TFAdam, constant_with_warmup, cosine_to_fraction, linear_decay


def tf_adam_reference(theta, grads, lr, b1, b2, eps):
    """Closed form, element by element: lr_t = lr·sqrt(1-β2^t)/(1-β1^t); θ -= lr_t·m/(sqrt(v)+ε̂)."""
    theta, m, v = list(theta), [0.0] * len(theta), [0.0] * len(theta)
    for t, g in enumerate(grads, start=1):
        lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        for i in range(len(theta)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            theta[i] -= lr_t * m[i] / (math.sqrt(v[i]) + eps)
    return theta


def run_tf_adam(theta0, grads, **kw):
    p = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    opt = TFAdam([p], **kw)
    for g in grads:
        opt.zero_grad()
        (p * torch.tensor(g, dtype=torch.float64)).sum().backward()  # dL/dθ = g
        opt.step()
    return p.detach().tolist(), opt


def test_tf_adam_one_step_closed_form():
    # step 1: m = 0.1·g, v = 0.05·g², lr_1 = 0.1·sqrt(0.05)/0.1 = sqrt(0.05)
    # θ = 1 - sqrt(0.05)·0.05/(sqrt(0.05)·0.5 + 1e-5) for g = 0.5
    got, _ = run_tf_adam([1.0, -2.0], [[0.5, -3.0]], lr=0.1, betas=(0.9, 0.95), eps=1e-5)
    s = math.sqrt(0.05)
    assert got[0] == pytest.approx(1.0 - s * 0.05 / (s * 0.5 + 1e-5), abs=1e-15)
    assert got[1] == pytest.approx(-2.0 + s * 0.3 / (s * 3.0 + 1e-5), abs=1e-15)


def test_tf_adam_three_steps_match_reference_loop():
    grads = [[0.5, -3.0, 1e-4], [-0.2, 1.0, 2e-4], [0.7, 0.1, -1e-4]]
    got, opt = run_tf_adam([1.0, -2.0, 0.0], grads, lr=0.01, betas=(0.9, 0.95), eps=1e-5)
    assert got == pytest.approx(tf_adam_reference([1.0, -2.0, 0.0], grads, 0.01, 0.9, 0.95, 1e-5), abs=1e-15)
    state = next(iter(opt.state.values()))
    assert state["step"] == 3


def test_tf_adam_vs_torch_adam_eps_semantics():
    # equal to torch Adam at step 1 only when ε_torch = ε̂ / sqrt(1 - β2); with the same ε they differ
    g, eps_hat = [[1e-4, -2e-4]], 1e-5
    got, _ = run_tf_adam([0.0, 0.0], g, lr=0.1, betas=(0.9, 0.95), eps=eps_hat)

    def torch_adam(eps):
        p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        opt = torch.optim.Adam([p], lr=0.1, betas=(0.9, 0.95), eps=eps)
        p.grad = torch.tensor(g[0], dtype=torch.float64)
        opt.step()
        return p.detach().tolist()

    assert got == pytest.approx(torch_adam(eps_hat / math.sqrt(1 - 0.95)), rel=1e-12)
    # 0.1·1e-4/(1e-4 + 1e-5) = 0.0909 vs TF's 0.0691: PyTorch steps harder early
    assert abs(torch_adam(eps_hat)[0]) == pytest.approx(0.1 * 1e-4 / (1e-4 + 1e-5))
    assert abs(torch_adam(eps_hat)[0]) > abs(got[0]) * 1.3


def test_tf_adam_defaults_lambda_lr_and_errors():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = TFAdam([p])
    assert opt.defaults == {"lr": 1e-5, "betas": (0.9, 0.95), "eps": 1e-5}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: constant_with_warmup(s, 10))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)
    opt.step()  # no grad: skipped
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 * 0.19)
    assert p.item() == 0.0
    with pytest.raises(ValueError):
        TFAdam([p], betas=(1.0, 0.9))


def test_ema_math_copy_apply_and_state():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
    ema.update(model)  # 0.9·[1, 2] + 0.1·[3, 4] = [1.2, 2.2]
    assert ema.shadow["weight"][0].tolist() == pytest.approx([1.2, 2.2], rel=1e-6)
    with torch.no_grad():
        model.weight.zero_()
    ema.update(model)  # 0.9·[1.2, 2.2] = [1.08, 1.98]
    assert ema.shadow["weight"][0].tolist() == pytest.approx([1.08, 1.98], rel=1e-6)
    assert ema.num_updates == 2
    with ema.applied_to(model):
        assert model.weight[0].tolist() == pytest.approx([1.08, 1.98], rel=1e-6)
    assert model.weight[0].tolist() == [0.0, 0.0]
    ema2 = EMA(model, decay=0.5)
    ema2.load_state_dict(ema.state_dict())
    assert ema2.decay == 0.9 and ema2.num_updates == 2
    ema2.copy_to(model)
    assert model.weight[0].tolist() == pytest.approx([1.08, 1.98], rel=1e-6)
    assert EMA(model).decay == 0.992


def test_ema_shadow_is_float32_for_bf16_models():
    model = torch.nn.Linear(4, 4).to(torch.bfloat16)
    ema = EMA(model, decay=0.992)
    assert all(v.dtype == torch.float32 for v in ema.shadow.values())
    before = ema.shadow["weight"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    # shift of exactly 0.008·Δ, which a bf16 shadow could not hold
    assert torch.allclose(ema.shadow["weight"] - before,
                          0.008 * (model.weight.float() - before), atol=1e-6)
    ema.copy_to(model)
    assert model.weight.dtype == torch.bfloat16


def test_constant_with_warmup():
    assert constant_with_warmup(0, 10) == pytest.approx(0.1)
    assert constant_with_warmup(5, 10) == pytest.approx(0.55)
    assert constant_with_warmup(10, 10) == 1.0
    assert constant_with_warmup(1000, 10) == 1.0
    assert constant_with_warmup(0, 0) == 1.0
    assert constant_with_warmup(0, 4, start_factor=0.0) == 0.0


def test_linear_decay():
    assert linear_decay(0, 100) == 1.0
    assert linear_decay(50, 100) == 0.5
    assert linear_decay(100, 100) == 0.0
    assert linear_decay(150, 100) == 0.0
    with pytest.raises(ValueError):
        linear_decay(0, 0)


def test_cosine_to_fraction():
    assert cosine_to_fraction(0, 100) == pytest.approx(1.0)
    assert cosine_to_fraction(50, 100) == pytest.approx(0.55)  # 0.1 + 0.9·½
    assert cosine_to_fraction(100, 100) == pytest.approx(0.1)
    assert cosine_to_fraction(200, 100) == pytest.approx(0.1)
    assert cosine_to_fraction(0, 110, warmup=10) == 0.0
    assert cosine_to_fraction(5, 110, warmup=10) == 0.5
    assert cosine_to_fraction(10, 110, warmup=10) == pytest.approx(1.0)
    assert cosine_to_fraction(60, 110, warmup=10) == pytest.approx(0.55)
    assert cosine_to_fraction(110, 110, final_fraction=0.0, warmup=10) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        cosine_to_fraction(0, 10, warmup=10)

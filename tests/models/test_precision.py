"""The precision setting: how `auto` resolves on each kind of hardware, bad values, and the parity
of bf16 (autocast, and pure bf16 weights for frozen models) with fp32 on tiny random models."""

from __future__ import annotations

import pytest
import torch

import archs
from rlhf.errors import UserError
from rlhf.models import precision as prec
from rlhf.models.precision import Precision, cpu_supports_bf16, resolve_precision


# ---------------------------------------------------------------------------- resolution

def _cpuinfo(tmp_path, flags: str):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\n"
                 f"processor\t: 1\nflags\t\t: {flags}\n")
    return p


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    for d in ("epyc", "z4", "spr"):
        (tmp_path / d).mkdir()
    assert not cpu_supports_bf16(_cpuinfo(tmp_path / "epyc", "fpu sse avx2 fma"))
    assert cpu_supports_bf16(_cpuinfo(tmp_path / "z4", "avx2 avx512f avx512_bf16"))
    assert cpu_supports_bf16(_cpuinfo(tmp_path / "spr", "avx2 amx_bf16 amx_tile"))
    assert not cpu_supports_bf16(tmp_path / "missing")          # not Linux: no flags


def test_auto_on_avx2_only_cpu_is_fp32(monkeypatch):
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: False)
    p = resolve_precision("auto", "cpu")
    assert (p.name, p.autocast_dtype, p.weight_dtype) == ("fp32", None, torch.float32)
    assert "AVX512-BF16" in p.reason and "slower" in p.reason


def test_auto_on_bf16_cpu_is_bf16_autocast_with_fp32_weights(monkeypatch):
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: True)
    p = resolve_precision("auto", torch.device("cpu"))
    assert (p.name, p.autocast_dtype, p.weight_dtype) == ("bf16", torch.bfloat16, torch.float32)
    assert p.activation_bytes == 2 and p.weight_bytes == 4


@pytest.mark.parametrize("supported", [True, False])
def test_auto_on_cuda_follows_the_gpu(monkeypatch, supported):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: not supported)   # not consulted
    p = resolve_precision("auto", "cuda:0")
    assert p.name == ("bf16" if supported else "fp32")
    assert not supported or p.autocast_dtype == torch.bfloat16


def test_auto_never_picks_bf16_weights_even_for_frozen_models(monkeypatch):
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", "cpu", trainable=False).weight_dtype == torch.float32


def test_explicit_settings_are_honoured(monkeypatch):
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("fp32").autocast_dtype is None
    p = resolve_precision("BF16", "cpu")                     # case-insensitive
    assert p.autocast_dtype == torch.bfloat16 and p.weight_dtype == torch.float32
    assert "slower" in p.reason                              # honoured, with the warning
    w = resolve_precision("bf16-weights", "cpu", trainable=False)
    assert w.weight_dtype == torch.bfloat16 and w.weight_bytes == 2


def test_bf16_weights_are_refused_for_trained_models():
    with pytest.raises(UserError) as e:
        resolve_precision("bf16-weights", "cpu", trainable=True, field="ppo.precision")
    assert e.value.field == "ppo.precision" and "frozen" in str(e.value)


@pytest.mark.parametrize("bad", ["fp16", "bfloat", "", "float32"])
def test_unknown_setting_names_the_field(bad):
    with pytest.raises(UserError) as e:
        resolve_precision(bad, "cpu", field="sft.precision")
    assert e.value.field == "sft.precision" and "auto, fp32, bf16, bf16-weights" in str(e.value)


def test_autocast_and_cast():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with resolve_precision("bf16").autocast("cpu"):
        assert lin(x).dtype == torch.bfloat16
    with resolve_precision("fp32").autocast("cpu"):
        assert lin(x).dtype == torch.float32
    w = resolve_precision("bf16-weights", trainable=False)
    assert w.cast(lin).weight.dtype == torch.bfloat16
    assert isinstance(w, Precision) and "bf16-weights" in str(w)


def test_bf16_weights_keep_buffers_in_fp32():
    """Only parameters are rounded: the rotary inv_freq (positions) and the reward model's
    normalisation bias stay fp32."""
    from rlhf.models.reward import RewardModel
    rm = RewardModel.from_causal_lm(archs.build_model("llama"))
    rm.set_reward_bias(1.2345678)
    resolve_precision("bf16-weights", trainable=False).cast(rm)
    assert all(p.dtype == torch.bfloat16 for p in rm.parameters())
    buffers = dict(rm.named_buffers())
    assert buffers["reward_bias"].dtype == torch.float32 and float(rm.reward_bias) == \
        pytest.approx(1.2345678, abs=1e-7)
    assert any("inv_freq" in n for n in buffers)
    assert all(b.dtype == torch.float32 for n, b in buffers.items() if "inv_freq" in n)


# ---------------------------------------------------------------------------- parity

#: Tolerances against fp32 (nats per response token; relative for the loss), a little above
#: what was measured on these seeded models (hidden 64, 2 layers, initializer_range 0.1, so the
#: response log-probs spread ~0.8 nats like a model that has learned something):
#:                 max |Δ log p|      mean |Δ log p|     |Δ loss| / loss
#:   gpt2 bf16     0.018              0.0045             2e-5
#:   llama bf16    0.037              0.0061             < 5e-6
#:   gpt2 bf16-w   0.017              0.0048             1e-5
#:   llama bf16-w  0.034              0.0074             7e-5
MAX_TOL, MEAN_TOL, LOSS_TOL = 0.05, 0.01, 2e-4
PROMPT = 16


def _logprobs_and_loss(model, p: Precision, ids):
    with torch.no_grad(), p.autocast("cpu"):
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        loss = model(input_ids=ids, labels=ids).loss.float()
    logp = torch.log_softmax(out.logits.float()[:, PROMPT - 1:-1], -1)
    return logp.gather(-1, ids[:, PROMPT:, None]).squeeze(-1), loss, out.logits.dtype


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("setting", ["bf16", "bf16-weights"])
def test_bf16_logprobs_and_loss_match_fp32(arch, setting):
    tok = archs.tokenizer()
    ids = torch.randint(2, len(tok), (8, 48), generator=torch.Generator().manual_seed(0))
    model = archs.build_model(arch, hidden=64, initializer_range=0.1)
    ref, ref_loss, ref_dtype = _logprobs_and_loss(model, resolve_precision("fp32"), ids)
    p = resolve_precision(setting, "cpu", trainable=False)
    lp, loss, dtype = _logprobs_and_loss(p.cast(model), p, ids)
    assert ref_dtype == torch.float32 and dtype == torch.bfloat16   # bf16 really was used
    d = (lp - ref).abs()
    assert d.max() > 0                                              # ... and changed something
    assert d.max() < MAX_TOL and d.mean() < MEAN_TOL, (float(d.max()), float(d.mean()))
    assert abs(float(loss - ref_loss)) / float(ref_loss) < LOSS_TOL

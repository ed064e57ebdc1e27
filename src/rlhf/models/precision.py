"""One precision setting for every recipe: which dtype the weights are held in and which dtype
the forward computes in.

    setting        weights  forward                         for
    fp32           fp32     fp32                            anything
    bf16           fp32     bf16 autocast (fp32 master      anything (trained models keep fp32
                            weights, gradients, optimizer)  weights, gradients and Adam state)
    bf16-weights   bf16     bf16 (autocast on, so the ops   frozen weights only: the PPO reference,
                            autocast keeps in fp32 do)      the reward model, a LoRA run's base
                                                            (the adapter stays fp32). A trained
                                                            model in pure bf16 loses updates
                                                            below bf16's rounding step (2^-8)
    auto           bf16 where the hardware runs it natively, else fp32

`auto` picks bf16 only on GPUs that support it (`torch.cuda.is_bf16_supported()`) and CPUs with
AMX-BF16 or AVX512-BF16 (read from /proc/cpuinfo): elsewhere bf16 is emulated, and on an
AVX2-only AMD EPYC bf16 autocast measured 11-20x slower than fp32. `auto` never picks
`bf16-weights`: rounding the weights themselves (and the residual stream) moves a frozen
reference's log-probs further from the fp32-master policy's than autocast does, so it is a
deliberate memory trade, asked for by name.

Parity with fp32 (tests/test_precision.py, seeded tiny random GPT-2 and Llama, hidden 64,
initializer_range 0.1, 8 x 32 response tokens), measured on an AVX512-BF16 CPU:

    bf16 autocast   per-token response log-prob: max 0.018 / 0.037 nats, mean 0.0045 / 0.0061;
                    LM loss: 2e-5 / < 5e-6 relative (GPT-2 / Llama)
    bf16-weights    max 0.017 / 0.034 nats, mean 0.0048 / 0.0074; loss 1e-5 / 7e-5 relative

The test holds them to max 0.05, mean 0.01 nats and 2e-4 relative.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlhf.errors import UserError

SETTINGS = ("auto", "fp32", "bf16", "bf16-weights")

#: what an AVX2-only CPU costs under bf16 (README: "Using your own model"; benchmarks)
_EMULATED = "bf16 autocast measured 11-20x slower than fp32 on an AVX2-only AMD EPYC"


@dataclass(frozen=True)
class Precision:
    """A resolved precision: `name` is "fp32", "bf16" or "bf16-weights" (never "auto")."""
    name: str
    autocast_dtype: torch.dtype | None   # the forward's autocast dtype; None: no autocast
    weight_dtype: torch.dtype            # the dtype the weights are loaded / held in
    reason: str                          # why, in words (for logs and `plan` output)

    @property
    def weight_bytes(self) -> int:
        """Bytes per weight element."""
        return torch.empty((), dtype=self.weight_dtype).element_size()

    @property
    def activation_bytes(self) -> int:
        """Bytes per element of a matmul output (what most saved activations are)."""
        dt = self.autocast_dtype or self.weight_dtype
        return torch.empty((), dtype=dt).element_size()

    def autocast(self, device: torch.device | str):
        """`torch.autocast(device.type, autocast_dtype)`, or a null context for fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.autocast_dtype)

    def cast(self, model: nn.Module) -> nn.Module:
        """Put `model`'s floating-point parameters in `weight_dtype` (a no-op for fp32 / bf16).
        Buffers keep their dtype: `model.to(bf16)` would also round the rotary inv_freq
        (positions drift at long context) and the reward model's normalisation bias. (Loading
        with `load_model(path, dtype=weight_dtype)` avoids the fp32 copy altogether.)"""
        with torch.no_grad():
            for p in model.parameters():
                if p.is_floating_point() and p.dtype != self.weight_dtype:
                    p.data = p.data.to(self.weight_dtype)
        return model

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


@functools.lru_cache(maxsize=None)
def _cpuinfo_flags(path: str) -> frozenset[str]:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:   # x86 Linux: every core lists the same
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_supports_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when this CPU has native bf16 matmul instructions (AMX-BF16 or AVX512-BF16).
    False where /proc/cpuinfo is unreadable (not Linux) or lists neither flag."""
    flags = _cpuinfo_flags(str(cpuinfo))
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether `device` runs bf16 natively, and the evidence, in words."""
    if device.type == "cuda":
        ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return ok, ("this GPU supports bf16" if ok else "this GPU has no native bf16")
    if device.type == "cpu":
        ok = cpu_supports_bf16()
        return ok, ("this CPU has AMX-BF16 / AVX512-BF16" if ok else
                    f"this CPU has no AMX-BF16 / AVX512-BF16 ({_EMULATED})")
    return False, f"bf16 is not chosen automatically on {device.type}"


def resolve_precision(setting: str, device: torch.device | str = "cpu", *,
                      trainable: bool = True, field: str = "precision") -> Precision:
    """The precision `setting` (one of SETTINGS) means for a model on `device`.

    `trainable`: whether the model's own weights are trained (policy, value model, SFT, RM
    training); those may not use "bf16-weights" (pure bf16 weights lose small updates), only
    frozen ones may (PPO reference, reward model, evaluation, and the frozen base under a LoRA
    adapter, which stays fp32: pass trainable=False for it). `field` names the setting in
    errors.
    An explicit "bf16" is honoured on any hardware; the reason says when it is emulated."""
    s = str(setting).strip().lower()
    if s not in SETTINGS:
        raise UserError(f"precision must be one of {', '.join(SETTINGS)}, got {setting!r}",
                        field=field)
    dev = torch.device(device)
    if s == "fp32":
        return Precision("fp32", None, torch.float32, "fp32 requested")
    if s == "bf16-weights":
        if trainable:
            raise UserError("bf16-weights (pure bf16 weights) is only for frozen models (the PPO "
                            "reference, the reward model): a trained model in bf16 loses updates "
                            "below bf16's rounding step. Use bf16 (autocast, fp32 master weights)",
                            field=field)
        return Precision("bf16-weights", torch.bfloat16, torch.bfloat16,
                         "bf16-weights requested (frozen model: weights held in bf16)")
    native, why = _native_bf16(dev)
    if s == "bf16":
        return Precision("bf16", torch.bfloat16, torch.float32,
                         "bf16 autocast requested" + ("" if native else f"; note: {why}"))
    if native:
        return Precision("bf16", torch.bfloat16, torch.float32,
                         f"auto: {why}, so bf16 autocast with fp32 master weights")
    return Precision("fp32", None, torch.float32, f"auto: {why}, so fp32")

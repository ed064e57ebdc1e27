"""CPU speed: a fused GELU, a contiguous unembedding input, malloc thresholds, a thread hint, and
the autocast context every recipe runs its forwards in.

None of these changes a weight or a saved config; each is measured in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import FastGELUActivation, NewGELUActivation

from rlhf import dist
from torch.nn.attention import SDPBackend, sdpa_kernel


class _GeluTanh(nn.Module):
    """F.gelu(approximate="tanh"): one fused kernel for GPT-2's "gelu_new"."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")


def fuse_activations(model: nn.Module) -> int:
    """Swap transformers' Python tanh-GELU modules (`NewGELUActivation` = GPT-2's "gelu_new",
    `FastGELUActivation`: ~8 elementwise kernels each way, as many saved tensors) for the fused
    `F.gelu(approximate="tanh")`: the same function (|Δ| ≤ 3e-7 in fp32), ~3× less time in the
    activation forward and backward. No weight and no saved config changes. Returns the count."""
    n = 0
    for mod in list(model.modules()):
        for name, child in list(mod.named_children()):
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(mod, name, _GeluTanh())
                n += 1
    return n


def _contiguous_input(module: nn.Module, args: tuple):
    x = args[0] if args else None
    if isinstance(x, Tensor) and not x.is_contiguous():
        return (x.contiguous(), *args[1:])
    return None


def contiguous_unembedding(model: nn.Module) -> None:
    """Make the unembedding's input contiguous: HF slices the hidden states for
    `logits_to_keep`, and a strided 3-D input sends `F.linear` to a batched matmul that is ~5×
    slower on CPU than the one big matmul it becomes after a (small) copy."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Module) and not getattr(head, "_rlhf_contiguous", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._rlhf_contiguous = True


def tune_cpu_allocator() -> bool:
    """glibc malloc hands every freed block above its mmap threshold (128 KiB, adapting up to
    32 MiB) back to the kernel, so each activation of every step is page-faulted in afresh:
    memory-bound kernels (the [B, T, vocab] log-softmax, GELU, copies) then run at about half
    speed. Raise the mmap and trim thresholds (what jemalloc and tcmalloc do by default): the
    heap keeps its peak size. Linux/glibc only; `RLHF_CPU_MALLOC=0` leaves malloc alone."""
    if not sys.platform.startswith("linux") or os.environ.get("RLHF_CPU_MALLOC", "1") == "0":
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and \
            bool(libc.mallopt(m_trim_threshold, 1 << 31))
    except (OSError, AttributeError):    # not glibc
        return False


def cpu_threads_hint(load: float | None = None) -> str | None:
    """A warning when more than one torch thread shares busy cores under OpenMP's default
    spin-waiting: on a 2-core box with another job running, 2 threads made `generate` 20x and
    training 2.5x slower than 1 thread (benchmarks/RESULTS.md). None when nothing to say."""
    n = torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                  # not Linux
        cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if load is None and hasattr(os, "getloadavg") else (load or 0.0)
    if n <= 1 or load + n <= cores + 1 or \
            os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return None
    return (f"note: {n} torch threads on {cores} cores with load average {load:.1f} from other "
            "processes: OpenMP threads spin while they wait, so sharing busy cores can slow "
            "every step several-fold. Start with OMP_WAIT_POLICY=PASSIVE, or use fewer threads "
            "(OMP_NUM_THREADS / torch.set_num_threads).")


def autocast_context(dtype: torch.dtype | None, device: torch.device | None = None):
    """`torch.autocast` to `dtype` on `device` (default: this process's), or a null context.

    On CPU with gradients on, attention also takes the math kernel: the flash kernel's bf16
    backward is ~2x slower there than the math one (which computes in float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    dev = torch.device(device) if device is not None else dist.device()
    if dev.type != "cpu" or not torch.is_grad_enabled() or os.environ.get("RLHF_SDPA_FLASH"):
        return torch.autocast(dev.type, dtype=dtype)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(dev.type, dtype=dtype))
    stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    return stack

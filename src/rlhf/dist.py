"""Distributed helpers: the same recipe runs in one process or under torchrun (DDP)."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist


def init() -> tuple[int, int]:
    """Initialise the process group when launched by torchrun; return (rank, world_size)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


def seed_everything(seed: int) -> None:
    """One seed fixes Python, NumPy and torch RNGs (per-rank offset: spec 7.24)."""
    s = seed + rank() * 100003
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def wrap_ddp(model):
    if dist.is_initialized():
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(model)
    return model


def no_sync(module, sync: bool):
    """DDP's `no_sync()` while accumulating (`sync` False), else a null context; also a null
    context for a module that is not DDP-wrapped, or None."""
    if not sync and module is not None and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()

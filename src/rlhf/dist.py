"""Distributed helpers: the same recipe runs in one process or under torchrun, with DDP (every
process holds the whole model) or FSDP2 (`fully_shard` per transformer block: each process holds
1/N of the weights, gradients and optimizer state)."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from rlhf.errors import UserError


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


def rank_share(n: int) -> list[int | None]:
    """This process's share of n items (i = rank, rank + N, ...), padded with None to the same
    length on every process: under FSDP every forward is a collective, so every process must
    run as many as the others (a None stands for a forward whose result is dropped)."""
    ws = world_size()
    mine: list[int | None] = list(range(rank(), n, ws))
    return mine + [None] * (-(-n // ws) - len(mine))


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
    """No gradient reduction while accumulating (`sync` False): DDP's `no_sync()`, FSDP2's
    `set_requires_gradient_sync(False)`; a null context otherwise (one process, or None)."""
    if sync or module is None:
        return contextlib.nullcontext()
    if hasattr(module, "no_sync"):
        return module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):
        return _fsdp_no_sync(module)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def all_true(flag: bool) -> bool:
    """Whether `flag` holds on every process (a collective: every process must call it)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def is_sharded(model) -> bool:
    """Whether `model` is FSDP2-sharded (`fully_shard` on it as the root)."""
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def shard(model, field: str = "dist"):
    """FSDP2: `fully_shard` every transformer block (the classes the Hugging Face models list in
    `_no_split_modules`), then the whole model, over all processes. The weights are first
    broadcast from process 0, so every process shards the same model. Needs torchrun; `field`
    names the setting in the error."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise UserError("fsdp shards the model over processes: launch with torchrun "
                        "--nproc_per_node N (one process has nothing to shard with), or use ddp",
                        field=field)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)
    blocks = set()
    for m in model.modules():
        blocks |= set(getattr(m, "_no_split_modules", None) or ())
    if not blocks:
        raise UserError(f"cannot find the transformer blocks of {type(model).__name__} to shard "
                        "(no _no_split_modules); use ddp", field=field)
    mesh = init_device_mesh(device().type, (world_size(),))
    for m in list(model.modules()):
        if type(m).__name__ in blocks:
            fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model

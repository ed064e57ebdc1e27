"""Pieces every supervised recipe shares: optimiser, schedule, batch plan, checkpoints.

Exact resume: the data order of epoch e is a permutation seeded by (seed, e); a checkpoint stores
the step, model, optimiser, scheduler and RNG states, so resuming replays the same trajectory.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from rlhf.config import OptimFields
from rlhf.errors import UserError
from rlhf.io import atomic_path, write_text_atomic
from rlhf.rl.optim import cosine_to_fraction
from rlhf.train import dist


def build_optimizer(model: torch.nn.Module, cfg: OptimFields) -> torch.optim.Optimizer:
    """AdamW with the paper's betas (0.9, 0.95); no weight decay on biases and norms."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def cosine_schedule(optimizer, total_steps: int, warmup_steps: int = 0,
                    final_fraction: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then cosine decay to `final_fraction` of the peak (paper: 10 %, no warmup)."""
    warmup = min(warmup_steps, max(0, total_steps - 1))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_to_fraction(step, max(total_steps, 1), final_fraction, warmup))


class BatchPlan:
    """Global batches of example indices, split across ranks and into micro-batches.

    `batch_size` is global (all ranks together); each rank takes an equal, contiguous share and
    accumulates gradients over micro-batches of `micro_batch_size`. The last partial batch of an
    epoch is dropped so every optimizer step sees the same number of examples.
    """

    def __init__(self, n_examples: int, batch_size: int, micro_batch_size: int | None,
                 seed: int, shuffle: bool = True):
        ws = dist.world_size()
        if batch_size % ws:
            raise UserError(f"batch_size {batch_size} must be divisible by the number of "
                            f"processes ({ws})", field="batch_size")
        per_rank = batch_size // ws
        micro = micro_batch_size or per_rank
        if per_rank % micro:
            raise UserError(f"per-process batch {per_rank} (batch_size / processes) must be "
                            f"divisible by micro_batch_size {micro}", field="micro_batch_size")
        if n_examples < batch_size:
            raise UserError(f"only {n_examples} examples for a global batch of {batch_size}; "
                            "lower batch_size", field="batch_size")
        self.n, self.batch_size, self.per_rank, self.micro = n_examples, batch_size, per_rank, micro
        self.seed, self.shuffle = seed, shuffle
        self.steps_per_epoch = n_examples // batch_size

    def epoch_order(self, epoch: int) -> list[int]:
        order = list(range(self.n))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def micro_batches(self, epoch: int, step_in_epoch: int) -> list[list[int]]:
        """This rank's micro-batches (lists of example indices) for one optimizer step."""
        order = self.epoch_order(epoch)
        start = step_in_epoch * self.batch_size + dist.rank() * self.per_rank
        mine = order[start:start + self.per_rank]
        return [mine[i:i + self.micro] for i in range(0, len(mine), self.micro)]


# ----------------------------------------------------------------------------- checkpoints

def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: str | Path, model, tokenizer, optimizer=None, scheduler=None,
                    state: dict | None = None) -> Path:
    """Write an HF-format model (+ tokenizer, + trainer state) atomically to `path`."""
    path = Path(path)
    if dist.is_main():
        with atomic_path(path, is_dir=True) as tmp:
            dist.unwrap(model).save_pretrained(str(tmp), safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))
            if optimizer is not None:
                torch.save({"optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler else None,
                            "rng": _rng_state(), "state": state or {}},
                           tmp / "trainer_state.pt")
    dist.barrier()
    return path


def load_trainer_state(path: str | Path, optimizer, scheduler=None) -> dict:
    blob = torch.load(Path(path) / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob["scheduler"] is not None:
        scheduler.load_state_dict(blob["scheduler"])
    _set_rng_state(blob["rng"])
    return blob["state"]


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The checkpoint named by `ckpt_dir/latest`, if it is complete (has its trainer state)."""
    pointer = Path(ckpt_dir) / "latest"
    if pointer.exists():
        p = Path(ckpt_dir) / pointer.read_text().strip()
        if (p / "trainer_state.pt").exists():
            return p
    return None


def mark_latest(ckpt_dir: str | Path, name: str) -> None:
    """Point `ckpt_dir/latest` at a checkpoint that has been completely written."""
    if dist.is_main():
        write_text_atomic(Path(ckpt_dir) / "latest", name)

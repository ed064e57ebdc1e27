"""The supervised loop shared by pretraining, SFT and the reward model.

    plan  = BatchPlan: global batches of example indices, split over ranks and micro-batches
    for each optimizer step:
        for each micro-batch:  loss_sum, stats = objective.loss(model, batch)
                               backward(loss_sum × world size / the global batch's `count`)
        clip, AdamW step (β = 0.9, 0.95), cosine schedule to 10 %
        log, evaluate, checkpoint (every epoch and/or every `save_every` steps)

The loss is normalised by the *global* count of its units (loss tokens for a language model,
prompts for the reward model), so the gradient is the same in one process or over `torchrun`
ranks. Exact resume: the data order of epoch e is a permutation seeded by (seed, e), and a
checkpoint stores the step, model, optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from rlhf import dist
from rlhf.config import OptimFields
from rlhf.errors import UserError
from rlhf.models.lm import IGNORE_INDEX, token_nll_sum
from rlhf.rl.optim import cosine_to_fraction
from rlhf.runs import Run
from rlhf.models.cpu import autocast_context
from rlhf.models.lm import enable_gradient_checkpointing
from rlhf.models.lora import apply_lora, is_lora
from rlhf.models.precision import Precision, resolve_precision
from rlhf.train.checkpoint import (latest_checkpoint, load_model_weights, load_sharded,
                                   load_trainer_state, mark_latest, save_checkpoint)


def prepare_model(model, section, name: str):
    """Set up a model a recipe trains from its config section `name` (sft, rm, ppo): the
    precision (bf16-weights only for a LoRA run's frozen base), a LoRA adapter when `lora.r` >
    0, gradient checkpointing. Returns (the model to train, its resolved Precision)."""
    lora = getattr(section, "lora", None)
    use_lora = lora is not None and lora.r > 0
    precision = resolve_precision(section.precision, dist.device(), trainable=not use_lora,
                                  field=f"{name}.precision")
    precision.cast(model)
    if use_lora:
        model = apply_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules,
                           field=f"{name}.lora")
    if section.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, precision


class Objective(Protocol):
    """What a recipe trains: the loss of a micro-batch, its units, and the logged metrics."""

    def count(self, batch: dict) -> float:
        """Units the loss is a sum over in `batch` (loss tokens, prompts)."""

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss with a graph, float64 stats vector summed over the batch)."""

    def metrics(self, stats: torch.Tensor, n_global: float) -> dict[str, float]:
        """`train/...` metrics from the step's all-reduced stats and global count."""


class LanguageModeling:
    """Next-token NLL on every position whose label is not IGNORE_INDEX (pretraining, SFT)."""

    def count(self, batch: dict) -> float:
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        s, _ = token_nll_sum(model, batch)
        return s, torch.tensor([float(s.detach())], dtype=torch.float64)

    def metrics(self, stats: torch.Tensor, n_global: float) -> dict[str, float]:
        return {"train/loss": float(stats[0]) / max(n_global, 1)}


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
        optimizer,
        lambda step: cosine_to_fraction(step, max(total_steps, 1), final_fraction, warmup))


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


def fit(model, tokenizer, examples: Sequence, collate_fn: Callable, cfg, *, epochs: float,
        run: Run, seed: int, objective: Objective | None = None, resume: bool = False,
        save_every: int | None = None, epoch_checkpoints: bool = False,
        halt_after: int | None = None, max_steps: int | None = None,
        on_epoch_end: Callable[[int, int], None] | None = None,
        on_eval: Callable[[int], dict] | None = None, eval_every: int | None = None,
        load_checkpoint: Callable[[Path], None] | None = None,
        autocast: torch.dtype | None = None, section: str = "train",
        desc: str = "train") -> dict:
    """Train `model` on `examples` (AdamW + cosine to 10 %); returns the last step's metrics
    with `step`, `total_steps`, `halted` and `sequences` (forwarded, all ranks).

    cfg provides batch_size, micro_batch_size, log_every and the OptimFields; `objective`
    defaults to language modeling. Checkpoints go to run.checkpoints: epoch-NN at the end of
    each epoch (`epoch_checkpoints`, after `on_epoch_end`), step-NNNNNN every `save_every`
    steps; `checkpoints/latest` names the newest one for `resume`. `halt_after` stops after
    that step as a kill would: with only the checkpoints written so far (tests of exact resume
    use it). `load_checkpoint(path)` loads a checkpoint's weights into `model` (default: the
    HF folder's tensors, or a LoRA model's adapter). `on_eval(step)` returns metrics logged
    every `eval_every` steps. `autocast` (e.g. torch.bfloat16) runs the forwards under it.
    `cfg.dist` is "ddp" or "fsdp" (FSDP2: the model is sharded before the optimizer is built,
    and resumes from its sharded checkpoint); `section` names cfg in error messages.
    """
    objective = objective or LanguageModeling()
    plan = BatchPlan(len(examples), cfg.batch_size, cfg.micro_batch_size, seed)
    total = int(math.ceil(epochs * plan.steps_per_epoch))
    if max_steps is not None:
        total = min(total, max_steps)
    if total < 1:
        raise UserError("no optimizer step to take: add data or epochs", field="epochs")
    sharded = getattr(cfg, "dist", "ddp") == "fsdp"
    if sharded:
        if is_lora(model):
            raise UserError("LoRA with fsdp is not supported yet: use ddp (an adapter's "
                            "optimizer state is small)", field=f"{section}.dist")
        dist.shard(model, field=f"{section}.dist")         # before the optimizer sees the params
    optimizer = build_optimizer(model, cfg)
    scheduler = cosine_schedule(optimizer, total, cfg.warmup_steps, cfg.final_lr_fraction)
    step = 0
    if resume and (last := latest_checkpoint(run.checkpoints)) is not None:
        if sharded:
            load_sharded(last, model, optimizer)
        elif load_checkpoint is not None:
            load_checkpoint(last)
        else:
            load_model_weights(model, last)
        step = load_trainer_state(last, optimizer, scheduler)["step"]
    ddp_model = model if sharded else dist.wrap_ddp(model)
    ddp_model.train()

    def checkpoint(name: str) -> None:
        save_checkpoint(run.checkpoints / name, model, tokenizer, optimizer, scheduler,
                        {"step": step})
        mark_latest(run.checkpoints, name)

    metrics: dict = {}
    bar = tqdm(total=total, initial=step, desc=desc, disable=not dist.is_main(), leave=False)
    # tokens/s is steady-state: counted from the end of this process's first step (which warms
    # up allocators and opens the TensorBoard writer)
    t0, tokens, sequences, first = time.perf_counter(), 0, 0, step
    halted = False
    while step < total:
        epoch, in_epoch = divmod(step, plan.steps_per_epoch)
        micro = [collate_fn([examples[i] for i in mb])
                 for mb in plan.micro_batches(epoch, in_epoch)]
        n_global = float(dist.all_reduce_sum(torch.tensor(float(sum(
            objective.count(b) for b in micro)))))
        stats = None
        for k, batch in enumerate(micro):
            with dist.no_sync(ddp_model, k == len(micro) - 1):
                with autocast_context(autocast):
                    loss_sum, st = objective.loss(ddp_model, batch)
                (loss_sum * dist.world_size() / max(n_global, 1)).backward()
            stats = st if stats is None else stats + st
            tokens += int(batch["attention_mask"].sum())
            sequences += batch["input_ids"].shape[0]
        grad_norm = None
        if cfg.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        metrics = objective.metrics(dist.all_reduce_sum(stats), n_global)
        if not math.isfinite(metrics["train/loss"]):
            raise FloatingPointError(f"{desc}: loss became {metrics['train/loss']} at step {step}")
        metrics.update({"train/lr": scheduler.get_last_lr()[0],
                        "train/epoch": step / plan.steps_per_epoch,
                        "train/tokens_per_s": tokens * dist.world_size() /
                        max(time.perf_counter() - t0, 1e-9)})
        if grad_norm is not None:
            metrics["train/grad_norm"] = grad_norm
        if step % max(1, cfg.log_every) == 0 or step == total:
            run.log(step, metrics)
        bar.set_postfix({k[6:]: f"{metrics[k]:.3f}" for k in ("train/loss", "train/accuracy")
                         if k in metrics})
        bar.update(1)
        if on_eval is not None and eval_every and step % eval_every == 0 and step < total:
            run.log(step, on_eval(step))
        halted = halt_after is not None and step >= halt_after and step < total
        if epoch_checkpoints and step % plan.steps_per_epoch == 0:
            if on_epoch_end is not None:
                on_epoch_end(step // plan.steps_per_epoch, step)
            checkpoint(f"epoch-{step // plan.steps_per_epoch:02d}")
        elif save_every and step % save_every == 0 and step < total:
            checkpoint(f"step-{step:06d}")
        if step == first + 1:
            t0, tokens = time.perf_counter(), 0
        if halted:
            break
    bar.close()
    sequences = int(dist.all_reduce_sum(torch.tensor(sequences)))
    return {**metrics, "step": step, "total_steps": total, "halted": halted,
            "sequences": sequences}

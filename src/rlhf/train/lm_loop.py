"""The supervised language-model loop shared by pretraining and SFT.

Per optimizer step: this rank's micro-batches are forwarded and back-propagated with the loss
normalised by the number of loss tokens in the *global* batch, so the gradient is the same
whether the batch runs in one process or is split over `torchrun` ranks.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from rlhf.data.sft import IGNORE
from rlhf.errors import UserError
from rlhf.runs import Run
from rlhf.train import dist
from rlhf.train.common import (BatchPlan, build_optimizer, cosine_schedule, latest_checkpoint,
                               load_trainer_state, mark_latest, save_checkpoint)


def token_nll_sum(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token NLL over positions whose label is not IGNORE, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1]
    valid = labels != IGNORE
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.clamp(min=0).reshape(-1),
        reduction="none").view_as(labels)
    return (nll * valid).sum(), int(valid.sum())


def count_loss_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE).sum())


@torch.no_grad()
def evaluate_nll(model, examples: Sequence, collate_fn: Callable, micro_batch_size: int) -> float:
    """Mean per-token NLL over `examples` (sharded over ranks, reduced)."""
    was_training = model.training
    model.eval()
    tot = torch.zeros(2, dtype=torch.float64)
    idx = list(range(dist.rank(), len(examples), dist.world_size()))
    for i in range(0, len(idx), micro_batch_size):
        batch = collate_fn([examples[j] for j in idx[i:i + micro_batch_size]])
        s, n = token_nll_sum(model, batch)
        tot += torch.tensor([float(s), n], dtype=torch.float64)
    tot = dist.all_reduce_sum(tot)
    model.train(was_training)
    return float(tot[0] / max(tot[1], 1))


def fit(model, tokenizer, examples: Sequence, collate_fn: Callable, cfg, *, epochs: float,
        run: Run, seed: int, resume: bool = False, save_every: int | None = None,
        halt_after: int | None = None, max_steps: int | None = None,
        on_epoch_end: Callable[[int, int], None] | None = None,
        on_eval: Callable[[int], dict] | None = None, eval_every: int | None = None,
        desc: str = "train") -> dict:
    """Train `model` on `examples` with AdamW + cosine-to-10 %; returns the last metrics.

    cfg provides batch_size, micro_batch_size and the OptimFields. Checkpoints go to
    run.checkpoints/step-N (every `save_every` steps) and epoch-N (each epoch, via
    `on_epoch_end`); `checkpoints/latest` names the newest one for `resume`.
    """
    plan = BatchPlan(len(examples), cfg.batch_size, cfg.micro_batch_size, seed)
    total = int(math.ceil(epochs * plan.steps_per_epoch))
    if max_steps is not None:
        total = min(total, max_steps)
    if total < 1:
        raise UserError("no optimizer step to take: add data or epochs", field="epochs")
    optimizer = build_optimizer(model, cfg)
    scheduler = cosine_schedule(optimizer, total, cfg.warmup_steps, cfg.final_lr_fraction)
    ddp_model = dist.wrap_ddp(model)
    step = 0
    ckpt_dir = run.checkpoints
    if resume:
        last = latest_checkpoint(ckpt_dir)
        if last is not None:
            dist.unwrap(model).load_state_dict(_load_weights(last, model))
            step = load_trainer_state(last, optimizer, scheduler)["step"]
    ddp_model.train()

    def checkpoint(name: str) -> None:
        save_checkpoint(ckpt_dir / name, model, tokenizer, optimizer, scheduler, {"step": step})
        mark_latest(ckpt_dir, name)

    metrics: dict = {}
    bar = tqdm(total=total, initial=step, desc=desc, disable=not dist.is_main(), leave=False)
    t0, tokens = time.time(), 0
    while step < total:
        epoch, in_epoch = divmod(step, plan.steps_per_epoch)
        micro = [collate_fn([examples[i] for i in mb]) for mb in plan.micro_batches(epoch, in_epoch)]
        n_global = int(dist.all_reduce_sum(torch.tensor(sum(count_loss_tokens(b) for b in micro))))
        loss_sum = 0.0
        for k, batch in enumerate(micro):
            sync = k == len(micro) - 1
            ctx = ddp_model.no_sync() if (not sync and hasattr(ddp_model, "no_sync")) \
                else contextlib.nullcontext()
            with ctx:
                s, _ = token_nll_sum(ddp_model, batch)
                (s * dist.world_size() / max(n_global, 1)).backward()
            loss_sum += float(s.detach())
            tokens += int(batch["attention_mask"].sum())
        grad_norm = None
        if cfg.grad_clip:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss = float(dist.all_reduce_sum(torch.tensor(loss_sum))) / max(n_global, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss} at step {step}")
        metrics = {"train/loss": loss, "train/lr": scheduler.get_last_lr()[0],
                   "train/epoch": step / plan.steps_per_epoch,
                   "train/tokens_per_s": tokens * dist.world_size() / max(time.time() - t0, 1e-9)}
        if grad_norm is not None:
            metrics["train/grad_norm"] = grad_norm
        if step % max(1, getattr(cfg, "log_every", 10)) == 0 or step == total:
            run.log(step, metrics)
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)
        if on_eval is not None and eval_every and step % eval_every == 0 and step < total:
            run.log(step, on_eval(step))
        if step % plan.steps_per_epoch == 0 and on_epoch_end is not None:
            on_epoch_end(step // plan.steps_per_epoch, step)
            checkpoint(f"epoch-{step // plan.steps_per_epoch:02d}")
        elif save_every and step % save_every == 0:
            checkpoint(f"step-{step:06d}")
        if halt_after is not None and step >= halt_after:
            break
    bar.close()
    metrics["step"] = step
    metrics["total_steps"] = total
    return metrics


def _load_weights(path: Path, model) -> dict:
    from safetensors.torch import load_file
    files = sorted(Path(path).glob("*.safetensors"))
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    own = dist.unwrap(model).state_dict()
    # tied weights (lm_head = wte) are saved once; fill the missing alias from its twin
    for k in own:
        if k not in state:
            for twin in ("transformer.wte.weight", "model.embed_tokens.weight"):
                if twin in state and own[k].shape == state[twin].shape:
                    state[k] = state[twin]
    return state

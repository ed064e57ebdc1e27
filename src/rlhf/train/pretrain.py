"""Pretraining: causal-LM training on plain text packed into blocks; held-out perplexity.

    cfg.pretrain.train_files -> tokenizer (trained here unless given) -> [N, block] blocks
    -> tiny model (or `init`) -> [induction warm-up on synthetic copy blocks: out/copy_warmup]
    -> AdamW, cosine to 10 % -> out/final (HF format) + perplexity
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from rlhf.config import Config, dump_config
from rlhf.data.text import (block_examples, collate_blocks, pack_blocks, read_documents,
                            repeat_blocks)
from rlhf.errors import UserError
from rlhf.models import build_tiny_model, load_model, load_tokenizer, train_tokenizer
from rlhf.runs import Run
from rlhf import dist
from rlhf.models.lm import evaluate_nll
from rlhf.train.checkpoint import save_checkpoint
from rlhf.train.loop import fit, prepare_model


def pretrain(cfg: Config, out_dir: str | Path, resume: bool = False,
             halt_after: int | None = None,
             probe: Callable[[torch.nn.Module, object], dict] | None = None) -> dict:
    """`probe(model, tokenizer) -> {name: number}` adds held-out metrics of the caller's to each
    evaluation (every `eval_every` steps and at the end), logged as `valid/<name>` and returned
    as `valid_<name>` (e.g. the copy probe: experiments/copy_formation.py). It runs without
    gradients on every rank (rank 0's values are logged), so it must not use collectives."""
    dist.init()
    dist.seed_everything(cfg.seed)
    p = cfg.pretrain
    out = Path(out_dir)
    run = Run(out, dump_config(cfg), is_main=dist.is_main(), resume=resume)
    docs = read_documents(p.train_files)
    if p.tokenizer:
        tokenizer = load_tokenizer(p.tokenizer)
    else:
        tok_dir = out / "tokenizer"
        if resume and (tok_dir / "tokenizer.json").exists():
            tokenizer = load_tokenizer(tok_dir)
        else:
            if dist.is_main():
                train_tokenizer(docs, p.model.vocab_size, tok_dir)
            dist.barrier()
            tokenizer = load_tokenizer(tok_dir)
    if p.init:
        model = load_model(p.init)
    else:
        torch.manual_seed(cfg.seed)  # same init on every rank
        model = build_tiny_model(p.model, tokenizer)
    model, precision = prepare_model(model, p, "pretrain")
    blocks = pack_blocks(tokenizer, docs, p.block_size, p.max_tokens)
    copy_ids = plain_token_ids(tokenizer)
    gen = torch.Generator().manual_seed(cfg.seed)
    if p.copy_warmup_steps:
        copy_warmup(model, tokenizer, p, repeat_blocks(p.copy_warmup_steps * p.batch_size,
                                                       p.block_size, copy_ids, gen),
                    cfg.seed, out / "copy_warmup", resume)
    n_copy = round(p.copy_fraction * len(blocks) / (1 - p.copy_fraction))
    train = block_examples(torch.cat([blocks, repeat_blocks(n_copy, p.block_size, copy_ids, gen)])
                           if n_copy else blocks)
    valid = None
    if p.valid_files:
        valid = block_examples(pack_blocks(tokenizer, read_documents(p.valid_files), p.block_size))
    micro = p.micro_batch_size or max(1, p.batch_size // dist.world_size())

    def on_eval(step: int) -> dict:
        res = {"valid/ppl": math.exp(evaluate_nll(model, valid, collate_blocks, micro))} \
            if valid else {}
        if probe is not None:
            was_training = model.training
            with torch.no_grad():
                extra = {f"valid/{k}": v for k, v in probe(model, tokenizer).items()}
            model.train(was_training)
            if extra.keys() & res.keys():
                raise UserError(f"the probe's metrics {sorted(extra.keys() & res.keys())} "
                                "collide with the recipe's", field="probe")
            res.update(extra)
        return res

    metrics = fit(model, tokenizer, train, collate_blocks, p, epochs=p.epochs, run=run,
                  seed=cfg.seed, resume=resume, save_every=p.save_every, halt_after=halt_after,
                  max_steps=p.max_steps, on_eval=on_eval, eval_every=p.eval_every,
                  autocast=precision.autocast_dtype, section="pretrain", desc="pretrain")
    summary = {"train_tokens": int(blocks.numel()), "copy_blocks": n_copy,
               "copy_warmup_steps": p.copy_warmup_steps, "params": model.num_parameters(),
               "steps": metrics["step"], "final_train_loss": metrics.get("train/loss")}
    if metrics["halted"]:
        run.close()
        return {**summary, "halted": True}
    if valid or probe is not None:
        final = on_eval(metrics["step"])
        summary.update({"valid_" + k[len("valid/"):]: v for k, v in final.items()})
        run.log(metrics["step"], final)
    save_checkpoint(out / "final", model, tokenizer)
    summary["model"] = str(out / "final")
    run.finish(summary)
    return summary


def plain_token_ids(tokenizer) -> torch.Tensor:
    """The tokenizer's ids without its special tokens (what synthetic copy blocks draw from)."""
    special = set(tokenizer.all_special_ids)
    return torch.tensor([i for i in range(len(tokenizer)) if i not in special], dtype=torch.long)


def copy_warmup(model, tokenizer, p, blocks: torch.Tensor, seed: int, out: Path,
                resume: bool, on_eval: Callable[[int], dict] | None = None,
                eval_every: int | None = None) -> None:
    """Train `model` in place on synthetic copy blocks, one pass (the induction warm-up; see
    `PretrainConfig.copy_warmup_steps`), at the section's optimiser settings with a constant LR
    after warm-up (the heads form abruptly, late in the phase). Its own run folder: a finished
    warm-up is loaded, not repeated, and an interrupted one resumes from its checkpoint.
    `on_eval(step)` runs every `eval_every` steps before the last, as in `fit`
    (experiments/induction_formation.py measures copying with it)."""
    done = out / "final"
    if resume and (done / "config.json").exists():
        model.load_state_dict(load_model(done).state_dict())
        return
    run = Run(out, None, is_main=dist.is_main(), resume=resume)
    metrics = fit(model, tokenizer, block_examples(blocks), collate_blocks,
                  p.model_copy(update={"final_lr_fraction": 1.0}), epochs=1.0, run=run,
                  seed=seed, resume=resume, save_every=p.save_every, on_eval=on_eval,
                  eval_every=eval_every, section="pretrain", desc="copy warm-up")
    save_checkpoint(done, model, tokenizer)
    dist.barrier()
    run.finish({"steps": metrics["step"], "final_train_loss": metrics.get("train/loss"),
                "model": str(done)})

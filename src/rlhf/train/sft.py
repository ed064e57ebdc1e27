"""Step 1, SFT: fine-tune a pretrained causal LM on labeler demonstrations (paper §3.5, C.1).

    demonstrations -> (prompt ids, response ids + EOS), loss on response tokens only (flag)
    -> residual dropout 0.2, AdamW β2 = 0.95, cosine to 10 %, several epochs
    -> validation loss and a full HF checkpoint every epoch (step 2 picks one by RM score)
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

from rlhf.config import Config, dump_config
from rlhf.data.sft import collate, encode_all, load_demonstrations
from rlhf.data.text import pack_blocks, read_documents
from rlhf.models import context_length, load_model, load_tokenizer, set_dropout
from rlhf.runs import Run
from rlhf import dist
from rlhf.models.lm import evaluate_nll
from rlhf.train.checkpoint import save_final_model
from rlhf.train.loop import fit, prepare_model


def sft(cfg: Config, out_dir: str | Path, resume: bool = False,
        halt_after: int | None = None) -> dict:
    dist.init()
    dist.seed_everything(cfg.seed)
    s = cfg.sft
    out = Path(out_dir)
    run = Run(out, dump_config(cfg), is_main=dist.is_main(), resume=resume)
    tokenizer = load_tokenizer(s.model)
    model = load_model(s.model)
    set_dropout(model, s.residual_dropout)
    model, precision = prepare_model(model, s, "sft")
    max_len = min(s.max_length, context_length(model))
    encode = partial(encode_all, tokenizer, max_length=max_len, template=s.prompt_template,
                     loss_on_prompt=s.loss_on_prompt)
    train = encode(load_demonstrations(s.train_file, s.data_format), source=s.train_file)
    valid = encode(load_demonstrations(s.valid_file, s.data_format), source=s.valid_file) \
        if s.valid_file else None
    if s.ptx_fraction > 0:
        # App. C.3: the PPO-init SFT model mixes pretraining text into the demonstrations.
        blocks = pack_blocks(tokenizer, read_documents(s.ptx_files), max_len)
        n = min(len(blocks), int(len(train) * s.ptx_fraction / (1 - s.ptx_fraction)))
        pick = random.Random(cfg.seed).sample(range(len(blocks)), n)
        train = train + [(blocks[i].tolist(), blocks[i].tolist()) for i in pick]
    col = partial(collate, pad_id=tokenizer.pad_token_id)
    micro = s.micro_batch_size or max(1, s.batch_size // dist.world_size())
    history: list[dict] = []

    def on_epoch_end(epoch: int, step: int) -> None:
        row = {"epoch": epoch}
        if valid:
            row["valid/loss"] = evaluate_nll(model, valid, col, micro)
        run.log(step, row)
        history.append(row)

    metrics = fit(model, tokenizer, train, col, s, epochs=s.epochs, run=run, seed=cfg.seed,
                  resume=resume, halt_after=halt_after, max_steps=s.max_steps,
                  epoch_checkpoints=True, on_epoch_end=on_epoch_end,
                  autocast=precision.autocast_dtype, section="sft", desc="sft")
    summary = {"examples": len(train), "steps": metrics["step"],
               "final_train_loss": metrics.get("train/loss"), "epochs": history}
    if metrics["halted"]:
        run.close()
        return {**summary, "halted": True}
    set_dropout(model, 0.0)
    summary.update(save_final_model(model, tokenizer, out / "final"))
    summary["epoch_checkpoints"] = sorted(str(p) for p in run.checkpoints.glob("epoch-*"))
    run.finish(summary)
    return summary

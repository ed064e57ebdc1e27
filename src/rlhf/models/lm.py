"""Causal language models: load any HF model from a local path, or build a tiny one; their
next-token loss (summed over labelled positions) and held-out NLL."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel,
                          LlamaConfig, LlamaForCausalLM, PreTrainedModel)

from transformers.utils import logging as hf_logging

from rlhf import dist
from rlhf.config import TinyModelConfig
from rlhf.errors import UserError
from rlhf.models.lora import adapter_info, merged_adapter
from rlhf.models.tokenizer import ensure_pad_token

#: Label value that carries no loss (the Hugging Face / PyTorch convention).
IGNORE_INDEX = -100

hf_logging.disable_progress_bar()  # our own bars show progress; HF's per-file bars are noise
hf_logging.set_verbosity_error()


def _check_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not (p / "config.json").exists() and what == "model":
        raise UserError(f"no Hugging Face {what} here (config.json missing)", path=str(p))
    if not p.exists():
        raise UserError(f"{what} path not found", path=str(p))
    return p


def load_tokenizer(path: str | Path):
    p = _check_dir(path, "tokenizer")
    tok = AutoTokenizer.from_pretrained(str(p))
    ensure_pad_token(tok)
    return tok


def load_model(path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load a causal LM saved with save_pretrained (any architecture transformers knows), or a
    LoRA adapter folder (adapter_config.json): its base with the adapter folded in."""
    info = adapter_info(path)
    if info is not None:
        if info["kind"] == "reward":
            raise UserError("this is a reward model's LoRA adapter, not a causal LM's",
                            path=str(path))
        return merged_adapter(load_model(info["base"], dtype), path, "causal_lm")
    p = _check_dir(path, "model")
    model = AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype or torch.float32)
    return model


def build_tiny_model(cfg: TinyModelConfig, tokenizer) -> PreTrainedModel:
    """A small GPT-2- or Llama-style model sized to the tokenizer, randomly initialised."""
    vocab = len(tokenizer)
    common = dict(vocab_size=vocab, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if cfg.arch == "gpt2":
        conf = GPT2Config(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                          n_positions=cfg.n_positions, resid_pdrop=cfg.dropout,
                          embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, **common)
        return GPT2LMHeadModel(conf)
    conf = LlamaConfig(num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                       num_key_value_heads=cfg.n_head, hidden_size=cfg.n_embd,
                       intermediate_size=4 * cfg.n_embd, max_position_embeddings=cfg.n_positions,
                       attention_dropout=cfg.dropout, tie_word_embeddings=True, **common)
    return LlamaForCausalLM(conf)


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout probability (p = 0 for RL: spec 7.9; SFT uses residual dropout 0.2)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    conf = getattr(model, "config", None)
    if conf is not None:
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout",
                     "hidden_dropout", "dropout"):
            if hasattr(conf, name) and isinstance(getattr(conf, name), float):
                setattr(conf, name, p)


def disable_dropout(model: nn.Module) -> None:
    set_dropout(model, 0.0)


def context_length(model: PreTrainedModel) -> int:
    conf = model.config
    for name in ("n_positions", "max_position_embeddings"):
        if getattr(conf, name, None):
            return int(getattr(conf, name))
    return 2048


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore padding: exclusive cumsum of the mask (spec 7.4)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_nll_sum(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token NLL over positions whose label is not IGNORE_INDEX, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1]
    valid = labels != IGNORE_INDEX
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.clamp(min=0).reshape(-1),
        reduction="none").view_as(labels)
    return (nll * valid).sum(), int(valid.sum())


@torch.no_grad()
def evaluate_nll(model, examples, collate_fn, micro_batch_size: int) -> float:
    """Mean per-token NLL over `examples` (sharded over ranks under torchrun, then reduced)."""
    was_training = model.training
    model.eval()
    tot = torch.zeros(2, dtype=torch.float64)
    idx = dist.rank_share(len(examples))
    for i in range(0, len(idx), micro_batch_size):
        part = [j for j in idx[i:i + micro_batch_size] if j is not None]
        batch = collate_fn([examples[j] for j in part or [0]])  # a stand-in keeps FSDP in step
        s, n = token_nll_sum(model, batch)
        if part:
            tot += torch.tensor([float(s), n], dtype=torch.float64)
    tot = dist.all_reduce_sum(tot)
    model.train(was_training)
    return float(tot[0] / max(tot[1], 1))


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute each transformer block's activations in the backward instead of keeping them
    (the `gradient_checkpointing` setting): less activation memory for ~30 % more compute. Works
    on a causal LM, a reward model's backbone, a LoRA model and the shared-value wrapper; only
    in training mode (sampling in eval mode keeps its KV cache)."""
    target = getattr(model, "backbone", None) or getattr(model, "lm", None) or model
    if hasattr(target, "enable_input_require_grads"):
        target.enable_input_require_grads()     # a frozen embedding (LoRA) still needs a grad path
    if hasattr(target, "activation_checkpointing_enable"):      # transformers >= 5.x's name
        target.activation_checkpointing_enable({"use_reentrant": False})
    else:
        target.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    return model

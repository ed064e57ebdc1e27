"""Models: HF causal LMs by path, a tiny-model factory, local tokenizers, reward/value models."""

from rlhf.models.lm import (build_tiny_model, context_length, disable_dropout, load_model,
                            load_tokenizer, position_ids_from_mask, set_dropout)
from rlhf.models.tokenizer import EOS_TOKEN, PAD_TOKEN, ensure_pad_token, train_tokenizer

__all__ = ["build_tiny_model", "context_length", "disable_dropout", "load_model",
           "load_tokenizer", "position_ids_from_mask", "set_dropout", "EOS_TOKEN", "PAD_TOKEN",
           "ensure_pad_token", "train_tokenizer"]

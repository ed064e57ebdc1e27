"""A byte-level BPE tokenizer trained locally (no downloads), saved in Hugging Face format."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048,
                    out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE on `texts`. EOS (also BOS) and PAD are distinct."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   unk_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    fast.padding_side = "left"  # generation pads queries on the left (spec 7.4)
    fast.model_max_length = 1_000_000
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer a pad token distinct from EOS (spec 7.3), adding one if needed."""
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})

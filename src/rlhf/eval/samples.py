"""Responses of a model to evaluation prompts, and perplexity on held-out pretraining text.

Evaluation samples greedily by default (temperature 0; App. D). A "GPT prompted" baseline is the
base model with a few-shot `prefix` (see `few_shot_prefix`) placed before the formatted prompt;
cut its answers at `stop=["\\nUser:"]` so it does not run on into the next made-up turn.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from rlhf.data.text import block_examples, collate_blocks, pack_blocks, read_documents
from rlhf.errors import UserError
from rlhf.models import context_length, disable_dropout, load_model, load_tokenizer
from rlhf.models.format import DEFAULT_TEMPLATE, decode_response, encode_prompt, format_prompt
from rlhf.models.generation import generate
from rlhf.models.lm import evaluate_nll


def few_shot_prefix(examples: Sequence[tuple[str, str]], template: str = DEFAULT_TEMPLATE,
                    sep: str = "\n\n") -> str:
    """'User: p1\\nAssistant: r1\\n\\nUser: p2\\nAssistant: r2\\n\\n': k demonstrations in the
    chat template, to prompt a base model into following instructions."""
    return "".join(format_prompt(p, template) + " " + r.strip() + sep for p, r in examples)


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """Text up to the first occurrence of any stop string (stripped)."""
    if not stop:
        return text
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut].strip()


def _load(model_or_dir, tokenizer):
    if isinstance(model_or_dir, (str, Path)):
        model = load_model(model_or_dir)
        tokenizer = tokenizer or load_tokenizer(model_or_dir)
    else:
        model = model_or_dir
        if tokenizer is None:
            raise ValueError("pass the tokenizer with an in-memory model")
    disable_dropout(model)
    model.eval()
    return model, tokenizer


def sample_model(model_dir, prompts: Sequence[Any], *, max_new_tokens: int = 64,
                 temperature: float = 0.0, prefix: str = "", template: str = DEFAULT_TEMPLATE,
                 stop: Sequence[str] | None = None, batch_size: int = 32, seed: int = 0,
                 tokenizer=None) -> list[str]:
    """One response per prompt (strings or records with "prompt") from a model folder (or an
    in-memory model with its `tokenizer`). temperature = 0 decodes greedily. Like
    `rlhf.models.generation.generate_texts`, but a prompt (with its prefix) longer than the context
    minus `max_new_tokens` is cut from the left, so a few-shot prefix never overflows a tiny
    model's context."""
    model, tokenizer = _load(model_dir, tokenizer)
    texts = [p["prompt"] if isinstance(p, dict) else str(p) for p in prompts]
    if not texts:
        return []
    room = context_length(model) - max_new_tokens
    if room < 1:
        raise UserError(f"max_new_tokens={max_new_tokens} leaves no room for the prompt in a "
                        f"context of {context_length(model)}", field="max_new_tokens")
    pre = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    ids = [(pre + encode_prompt(tokenizer, t, template))[-room:] for t in texts]
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    out: list[str] = []
    for i in range(0, len(ids), batch_size):
        ro = generate(model, tokenizer, ids[i:i + batch_size], max_new_tokens=max_new_tokens,
                      temperature=temperature, generator=gen)
        out += [cut_at_stop(decode_response(tokenizer, r), stop) for r in ro.response.tolist()]
    return out


def model_perplexity(model_dir, files: Sequence[str], *, block_size: int | None = None,
                     max_tokens: int | None = None, micro_batch_size: int = 16,
                     tokenizer=None) -> float:
    """exp(mean NLL) on held-out pretraining text (the alignment-tax metric, §4.2); block_size
    defaults to the model's context length."""
    model, tokenizer = _load(model_dir, tokenizer)
    bs = block_size or context_length(model)
    blocks = pack_blocks(tokenizer, read_documents(list(map(str, files))), bs, max_tokens)
    return math.exp(evaluate_nll(model, block_examples(blocks), collate_blocks, micro_batch_size))

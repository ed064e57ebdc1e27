"""Tiny random models of the architectures users bring (Llama, Qwen2, Qwen3, Mistral, GPT-NeoX,
and the project's own GPT-2), built from transformers' config classes: nothing is downloaded.

Each is sized to the tests' tokenizer (the byte-level BPE of `tests/helpers.py`, 320 tokens) and
keeps the features that make the family what it is: grouped-query attention (Llama, Qwen2,
Qwen3, Mistral: 4 query heads sharing 2 key/value heads), Qwen2's q/k/v biases, Qwen3's q/k
RMSNorm and explicit head_dim, Mistral's sliding window, GPT-NeoX's fused query_key_value,
partial rotary embedding and parallel residual, untied embeddings where the family unties them.

    tokenizer()                -> the shared tiny tokenizer (trained once per process)
    build_model(arch, seed=0)  -> a randomly initialised causal LM (fp32, eval mode)
    save_model(tmp, arch)      -> a folder with the model and tokenizer in Hugging Face format
"""

from __future__ import annotations

import functools
from pathlib import Path

ARCHS = ("gpt2", "llama", "qwen2", "qwen3", "mistral", "gpt_neox")


@functools.lru_cache(maxsize=1)
def tokenizer():
    """The tests' tiny byte-level BPE tokenizer (EOS = BOS, a distinct PAD), trained in memory."""
    import random

    from helpers import WORDS

    from rlhf.models import train_tokenizer

    r = random.Random(0)
    corpus = [" ".join(r.choice(WORDS) for _ in range(24)) + "." for _ in range(200)]
    return train_tokenizer(corpus + ["User: Assistant: Repeat:"] * 50, 320)


def config(arch: str, vocab_size: int, *, hidden: int = 32, layers: int = 2,
           positions: int = 128, bos: int | None = 0, eos: int | None = 0,
           pad: int | None = 1, **overrides):
    """The transformers config of a tiny `arch` model (random weights once instantiated)."""
    from transformers import (GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig, Qwen2Config,
                              Qwen3Config)

    ids = dict(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    decoder = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                   num_attention_heads=4, num_key_value_heads=2,
                   max_position_embeddings=positions, **ids)
    if arch == "gpt2":
        conf = GPT2Config(n_layer=layers, n_head=4, n_embd=hidden, n_positions=positions,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    elif arch == "llama":
        conf = LlamaConfig(tie_word_embeddings=True, **decoder)
    elif arch == "qwen2":
        conf = Qwen2Config(tie_word_embeddings=True, **decoder)
    elif arch == "qwen3":
        conf = Qwen3Config(head_dim=16, tie_word_embeddings=False, **decoder)
    elif arch == "mistral":
        conf = MistralConfig(sliding_window=64, tie_word_embeddings=False, **decoder)
    elif arch == "gpt_neox":
        conf = GPTNeoXConfig(hidden_size=hidden, intermediate_size=4 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4,
                             max_position_embeddings=positions, use_parallel_residual=True,
                             tie_word_embeddings=False, hidden_dropout=0.0,
                             attention_dropout=0.0, **ids)
        conf.rope_parameters = {**(conf.rope_parameters or {}), "partial_rotary_factor": 0.25}
    else:
        raise ValueError(f"unknown arch {arch!r}; one of {ARCHS}")
    for k, v in overrides.items():
        setattr(conf, k, v)
    return conf


def build_model(arch: str, seed: int = 0, tok=None, **config_kw):
    """A randomly initialised (seeded) tiny causal LM of `arch`, sized to `tok` (default: the
    shared tiny tokenizer), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = tok if tok is not None else tokenizer()
    conf = config(arch, len(tok), bos=tok.bos_token_id, eos=tok.eos_token_id,
                  pad=tok.pad_token_id, **config_kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(conf, dtype=torch.float32)
    return model.eval()


def save_model(tmp: Path, arch: str, seed: int = 0, **config_kw) -> Path:
    """Build (once per folder) and save a tiny `arch` model with the shared tokenizer."""
    out = Path(tmp) / f"tiny-{arch}-s{seed}"
    if not (out / "config.json").exists():
        build_model(arch, seed, **config_kw).save_pretrained(str(out))
        tokenizer().save_pretrained(str(out))
    return out

"""Tiny models and data for fast tests (shared by the test modules)."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("the cat dog bird sat ran flew on near under red blue green river town hill "
         "Anna Bob Cleo likes sees finds one two three").split()


def write_corpus(path: Path, n_docs: int = 300, seed: int = 0) -> Path:
    r = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n_docs):
            f.write(" ".join(r.choice(WORDS) for _ in range(24)) + ".\n\n")
    return path


def write_demos(path: Path, n: int = 32, seed: int = 0) -> Path:
    r = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            w = [r.choice(WORDS) for _ in range(3)]
            f.write(json.dumps({"prompt": f"Repeat: {' '.join(w)}",
                                "response": " ".join(w)}) + "\n")
    return path


def tiny_lm(tmp: Path, n_layer: int = 1, n_embd: int = 32, arch: str = "gpt2") -> Path:
    """Build and save an untrained tiny causal LM + tokenizer; return its folder."""
    import torch

    from rlhf.config import TinyModelConfig
    from rlhf.models import build_tiny_model, train_tokenizer

    out = tmp / f"tiny-{arch}-{n_layer}-{n_embd}"
    if (out / "config.json").exists():
        return out
    corpus = write_corpus(tmp / "corpus_for_tok.txt", 200)
    tok = train_tokenizer([corpus.read_text()] + ["User: Assistant: Repeat:"] * 50, 320)
    torch.manual_seed(0)
    model = build_tiny_model(TinyModelConfig(arch=arch, n_layer=n_layer, n_head=2,
                                             n_embd=n_embd, n_positions=128), tok)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out

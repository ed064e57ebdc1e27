"""The pretraining corpus: plain micro-English prose about the world, with no instructions.

Documents are single paragraphs (profiles of people, towns, animals and rivers; short stories;
weekly habits; greetings) separated by a blank line. Tokens are counted as whitespace-separated
words throughout the world (`count_tokens`); a byte-level BPE trained on this corpus produces
roughly 1.3 BPE tokens per word.
"""

from __future__ import annotations

import random
from pathlib import Path

from rlhf.world.prose import corpus_document
from rlhf.world.universe import Universe


def count_tokens(text: str) -> int:
    """Whitespace-separated words: the world's unit for corpus sizes and statistics."""
    return len(text.split())


def generate_corpus(u: Universe, seed: int, n_tokens: int, stream: str = "train") -> list[str]:
    """Documents totalling at least n_tokens words, from the named random stream."""
    rng = random.Random(f"corpus:{stream}:{seed}")
    docs: list[str] = []
    total = 0
    while total < n_tokens:
        doc = corpus_document(u, rng)
        docs.append(doc)
        total += count_tokens(doc)
    return docs


def write_corpus(path: Path, docs: list[str]) -> int:
    """Write documents separated by blank lines; returns the token count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(docs) + "\n"
    path.write_text(text, encoding="utf-8")
    return count_tokens(text)

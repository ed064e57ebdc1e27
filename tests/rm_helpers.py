"""Tiny reward-model fixtures shared by the RM tests (tests/models, tests/train): a tokenizer
over a small vocabulary, a saved tiny causal LM to start an RM from, and rankings with a
hidden preference (more of the marker word is better)."""

from __future__ import annotations

import json
import random

import torch

from rlhf.config import TinyModelConfig
from rlhf.models import build_tiny_model, train_tokenizer

WORDS = "gold tree river stone cloud apple house bird green small quick lazy".split()


def tiny_tokenizer(out_dir=None):
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=8)) for _ in range(300)]
    texts += ["User: say something\nAssistant: fine"] * 5
    return train_tokenizer(texts, vocab_size=300, out_dir=out_dir)


def tiny_lm(tok, arch="gpt2", n_layer=1, seed=0):
    torch.manual_seed(seed)
    return build_tiny_model(TinyModelConfig(arch=arch, n_layer=n_layer, n_head=2, n_embd=32,
                                            n_positions=128), tok)


def tiny_rm_dir(tmp_path, seed=0):
    """A saved tiny causal LM + tokenizer (what an SFT run writes)."""
    tok = tiny_tokenizer()
    lm = tiny_lm(tok, seed=seed)
    d = tmp_path / "sft"
    lm.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


MARK = "gold"
FILL = [w for w in WORDS if w != MARK]


def hidden_value(text: str) -> int:
    return text.split().count(MARK)


def make_rankings(n, rng, labelers, k_range=(4, 6)):
    """Responses of fixed length (6 words); the hidden preference counts the marker word."""
    rows = []
    while len(rows) < n:
        k = rng.randint(*k_range)
        rs = []
        for _ in range(k):
            m = rng.randint(0, 4)
            words = rng.choices(FILL, k=6 - m) + [MARK] * m
            rng.shuffle(words)
            rs.append(" ".join(words))
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(rs):
            groups.setdefault(hidden_value(r), []).append(i)
        if len(groups) < 2:
            continue
        rows.append({"prompt": " ".join(rng.choices(FILL, k=3)), "responses": rs,
                     "ranking": [groups[v] for v in sorted(groups, reverse=True)],
                     "labeler_id": rng.choice(labelers)})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)

"""The PPO tests' shared world: a briefly pretrained 1-layer GPT-2 that emits words and EOS,
an RM made from it (with a non-zero normalisation bias), prompts and pretraining text."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from helpers import WORDS, tiny_lm

from rlhf.models import load_model, load_tokenizer


def _short_doc_corpus(path: Path, n: int = 400, seed: int = 1) -> Path:
    r = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(" ".join(r.choice(WORDS) for _ in range(r.randint(2, 7))) + "\n\n")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A briefly pretrained 1-layer GPT-2 (emits words and EOS), an RM made from it with a
    non-zero normalisation bias, a prompt file and pretraining text."""
    from rlhf.data.text import pack_blocks, read_documents
    from rlhf.models.reward import RewardModel

    tmp = tmp_path_factory.mktemp("ppo_world")
    base = tiny_lm(tmp, n_layer=1, n_embd=32)
    tok, model = load_tokenizer(base), load_model(base)
    corpus = _short_doc_corpus(tmp / "corpus.txt")
    blocks = pack_blocks(tok, read_documents([str(corpus)]), 32)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        b = blocks[torch.randint(len(blocks), (16,), generator=g)]
        model(input_ids=b, labels=b).loss.backward()
        opt.step()
        opt.zero_grad()
    sft = tmp / "sft"
    model.save_pretrained(str(sft))
    tok.save_pretrained(str(sft))
    torch.manual_seed(1)
    rm = RewardModel.from_causal_lm(load_model(sft))
    rm.set_reward_bias(0.25)
    rm.save_pretrained(str(tmp / "rm"), tokenizer=tok)
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": str(i), "prompt": f"Say {w}"}) + "\n"
                               for i, w in enumerate(WORDS)))
    return {"dir": tmp, "sft": sft, "rm": tmp / "rm", "prompts": prompts, "text": corpus}

"""Helpers for the end-to-end tests: a tiny checkpoint, a real uvicorn server in a subprocess
(rlhf.labeling.loadtest.live_server), and one SFT step plus one reward-model step on exported
files."""

from __future__ import annotations

from pathlib import Path

from rlhf.labeling.loadtest import live_server  # noqa: F401 - used by the e2e tests


def tiny_checkpoint(folder: Path) -> Path:
    """An untrained one-layer GPT-2 and a byte-level BPE trained on a few sentences."""
    import torch

    from rlhf.config import TinyModelConfig
    from rlhf.models import build_tiny_model, train_tokenizer

    if (folder / "config.json").exists():
        return folder
    text = ["User: Name a color.\nAssistant: Red is a color.", "Say hello in French: bonjour.",
            "The cat sat on the mat and the dog ran near the river."] * 20
    tok = train_tokenizer(text, vocab_size=300)
    torch.manual_seed(0)
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=128),
                             tok)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def train_one_sft_step(model_dir: Path, demonstrations: Path, out: Path) -> dict:
    """One SFT optimizer step on exported demonstrations (rlhf.train.sft)."""
    from rlhf.config import Config, SFTConfig
    from rlhf.train.sft import sft

    cfg = Config(sft=SFTConfig(model=str(model_dir), train_file=str(demonstrations),
                               max_steps=1, epochs=1, batch_size=1, max_length=64, lr=1e-3,
                               residual_dropout=0.0, log_every=1))
    return sft(cfg, out)


def train_one_rm_step(model_dir: Path, rankings: Path, out: Path) -> dict:
    """One reward-model optimizer step on exported K-way rankings (rlhf.train.reward)."""
    from rlhf.config import Config, RMConfig
    from rlhf.train.reward import train_rm

    cfg = Config(rm=RMConfig(model=str(model_dir), train_file=str(rankings), max_steps=1,
                             epochs=1, batch_size=1, max_length=64, lr=1e-3, log_every=1))
    return train_rm(cfg, out)

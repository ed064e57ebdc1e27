"""Helpers for the end-to-end tests: a tiny checkpoint, a real uvicorn server in a subprocess,
and one SFT step plus one reward-model step on exported files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(db_url: str, admin_token: str, log_path: Path,
                startup_timeout: float = 60.0) -> Iterator[str]:
    """`rlhf label serve` (uvicorn) in a subprocess on a free loopback port; yields its URL."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rlhf.labeling.cli", "serve", "--db", db_url, "--host",
           "127.0.0.1", "--port", str(port), "--admin-token", admin_token, "--log-level",
           "warning"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/api/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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

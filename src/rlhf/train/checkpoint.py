"""Checkpoints: write atomically, point `latest` at complete ones, resume exactly.

A checkpoint is an HF-format model folder (loadable as is) plus `trainer_state.pt`: the step,
optimizer, scheduler and RNG states, so a resumed run replays the same trajectory. It is written
to a temporary folder and renamed; `latest` names it only once it is complete.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from rlhf import dist
from rlhf.io import atomic_path, write_text_atomic
from rlhf.models.lora import MERGED, is_lora, load_lora_weights, save_lora


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: str | Path, model, tokenizer, optimizer=None, scheduler=None,
                    state: dict | None = None) -> Path:
    """Write an HF-format model (+ tokenizer, + trainer state) atomically to `path`."""
    path = Path(path)
    if dist.is_main():
        with atomic_path(path, is_dir=True) as tmp:
            m = dist.unwrap(model)
            if is_lora(m):                  # the adapter only (PEFT's format): resumable
                save_lora(m, tmp, tokenizer)
            else:
                m.save_pretrained(str(tmp), safe_serialization=True)
                if tokenizer is not None:
                    tokenizer.save_pretrained(str(tmp))
            if optimizer is not None:
                torch.save({"optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler else None,
                            "rng": rng_state(), "state": state or {}},
                           tmp / "trainer_state.pt")
    dist.barrier()
    return path


def load_trainer_state(path: str | Path, optimizer, scheduler=None) -> dict:
    blob = torch.load(Path(path) / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob["scheduler"] is not None:
        scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    return blob["state"]


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The checkpoint named by `ckpt_dir/latest`, if it is complete (has its trainer state)."""
    pointer = Path(ckpt_dir) / "latest"
    if pointer.exists():
        p = Path(ckpt_dir) / pointer.read_text().strip()
        if (p / "trainer_state.pt").exists():
            return p
    return None


def mark_latest(ckpt_dir: str | Path, name: str) -> None:
    """Point `ckpt_dir/latest` at a checkpoint that has been completely written."""
    if dist.is_main():
        write_text_atomic(Path(ckpt_dir) / "latest", name)


def load_weights(path: Path, model) -> dict:
    """The state dict saved in an HF checkpoint folder, for `model` (tied weights filled in)."""
    files = sorted(Path(path).glob("*.safetensors"))
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    own = dist.unwrap(model).state_dict()
    # tied weights (lm_head = wte) are saved once; fill the missing alias from its twin
    for k in own:
        if k not in state:
            for twin in ("transformer.wte.weight", "model.embed_tokens.weight"):
                if twin in state and own[k].shape == state[twin].shape:
                    state[k] = state[twin]
    return state


def prune(ckpt_dir: Path, keep: int, pattern: str = "iter-*") -> None:
    """Delete all but the newest `keep` checkpoints matching `pattern` (keep = 0: keep all)."""
    if not dist.is_main() or keep <= 0:
        return
    prefix = pattern.rstrip("*")
    items = sorted(p for p in ckpt_dir.glob(pattern) if p.name[len(prefix):].isdigit())
    for p in items[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def save_weights_exact(module: nn.Module, path: Path) -> None:
    """A module's tensors as they are (safetensors; no HF folding of any bias)."""
    save_model(module, str(path))


def load_weights_exact(module: nn.Module, path: Path) -> None:
    load_model(module, str(path), strict=True)


def load_model_weights(model, path: Path) -> None:
    """Load a checkpoint folder's weights into `model` in place (resume): a LoRA model's
    adapter, or a plain model's full state dict."""
    m = dist.unwrap(model)
    if is_lora(m):
        load_lora_weights(m, path)
    else:
        m.load_state_dict(load_weights(path, m))


def save_final_model(model, tokenizer, folder: Path) -> dict[str, str]:
    """The finished model in Hugging Face format at `folder` (loadable with plain transformers).
    A LoRA model writes its adapter (PEFT's format) to `<folder>_adapter/` and the model with the
    adapter merged in to `folder`; `rlhf` loads either path."""
    m = dist.unwrap(model)
    if not is_lora(m):
        save_checkpoint(folder, m, tokenizer)
        return {"model": str(folder)}
    adapter = folder.with_name(folder.name + "_adapter")
    if dist.is_main():
        with atomic_path(adapter, is_dir=True) as tmp:
            save_lora(m, tmp, tokenizer, merged=True)
        with atomic_path(folder, is_dir=True) as tmp:
            os.rmdir(tmp)
            os.replace(adapter / MERGED, tmp)
    dist.barrier()
    return {"model": str(folder), "adapter": str(adapter)}

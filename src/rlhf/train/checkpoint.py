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
from typing import Callable

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, load_model, save_model
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_model_state_dict,
                                                     set_optimizer_state_dict)
from transformers import AutoModel, AutoModelForCausalLM

from rlhf import dist
from rlhf.io import atomic_path, write_text_atomic
from rlhf.models.reward import RewardModel
from rlhf.models.lora import MERGED, is_lora, load_lora_weights, materialize, save_lora


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: str | Path, model, tokenizer, optimizer=None, scheduler=None,
                    state: dict | None = None) -> Path:
    """Write an HF-format model (+ tokenizer, + trainer state) atomically to `path`. Called on
    every process; an FSDP-sharded model is gathered for the HF folder, and its sharded model
    and optimizer state go to `path/dcp` (torch distributed checkpoint) for resuming."""
    path = Path(path)
    if dist.is_sharded(dist.unwrap(model)):
        return _save_sharded(path, model, tokenizer, optimizer, scheduler, state)
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
    """Restore the optimizer (unless it was saved sharded: `load_sharded`), the scheduler and
    the RNG states; returns the recipe's state (e.g. {"step": n})."""
    blob = torch.load(Path(path) / "trainer_state.pt", weights_only=False)
    if blob["optimizer"] is not None:
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


# ----------------------------------------------------------------------------- FSDP2

#: A sharded model's state gathered whole, on the CPU (a collective: every process calls it).
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def save_with_shards(path: Path, shards: dict | None, write: Callable[[Path], None]) -> None:
    """The folder of a sharded run's checkpoint, called on every process: `shards` (a torch
    distributed checkpoint state, or None) is saved by all processes beside `path`; then the
    main process writes the folder atomically with `write(tmp)` and moves the shards into it as
    `dcp/`."""
    staged = path.parent / f".{path.name}.dcp"
    if shards is not None:
        if dist.is_main():
            shutil.rmtree(staged, ignore_errors=True)
        dist.barrier()
        dcp.save(shards, checkpoint_id=str(staged))
    if dist.is_main():
        with atomic_path(path, is_dir=True) as tmp:
            write(tmp)
            if shards is not None:
                os.replace(staged, tmp / "dcp")
    dist.barrier()


def write_plain(plain, tokenizer, folder: Path) -> None:
    """An unsharded model copy in Hugging Face format (+ tokenizer); a RewardModel folds its
    bias on saving."""
    if hasattr(plain, "backbone"):
        plain.save_pretrained(folder, tokenizer=tokenizer)
    else:
        plain.save_pretrained(str(folder), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder))


def _save_sharded(path: Path, model, tokenizer, optimizer, scheduler, state) -> Path:
    m = dist.unwrap(model)
    full = get_model_state_dict(m, options=FULL)
    shards = None if optimizer is None else {
        "model": get_model_state_dict(m), "optim": get_optimizer_state_dict(m, optimizer)}

    def write(tmp: Path) -> None:
        write_plain(unsharded_copy(m, full), tokenizer, tmp)
        if optimizer is not None:
            torch.save({"optimizer": None,
                        "scheduler": scheduler.state_dict() if scheduler else None,
                        "rng": rng_state(), "state": state or {}}, tmp / "trainer_state.pt")

    save_with_shards(path, shards, write)
    return path


def unsharded_copy(model, full_state: dict):
    """A plain (unsharded, CPU) copy of a sharded causal LM or RewardModel holding
    `full_state`, built on the meta device (no random init, no second copy of the weights)."""
    with torch.device("meta"):
        if hasattr(model, "backbone"):
            plain = RewardModel(AutoModel.from_config(model.backbone.config))
        else:
            plain = AutoModelForCausalLM.from_config(model.config)
    return materialize(plain, full_state, model)


def load_sharded(path: Path, model, optimizer) -> None:
    """Resume a sharded model and its optimizer from `path/dcp` (each process reads its shards)."""
    m = dist.unwrap(model)
    st = {"model": get_model_state_dict(m), "optim": get_optimizer_state_dict(m, optimizer)}
    dcp.load(st, checkpoint_id=str(Path(path) / "dcp"))
    set_model_state_dict(m, st["model"])
    set_optimizer_state_dict(m, optimizer, st["optim"])

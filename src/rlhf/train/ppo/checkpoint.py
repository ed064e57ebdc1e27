"""PPO checkpoints and final outputs.

    iter-N/   the policy in HF format (+ tokenizer), `value/` (exact value weights), and
              trainer_state.pt (optimisers, EMA, β, RNG, iteration): resume continues exactly
    final/    the policy (HF format), final_ema/ (EMA weights, if on), value/ (the value model)
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf import dist
from rlhf.io import atomic_path, write_text_atomic
from rlhf.models.lora import is_lora, save_lora
from rlhf.train.checkpoint import (load_model_weights, load_weights_exact, rng_state,
                                   save_final_model, save_weights_exact, set_rng_state)
from rlhf.train.ppo.models import PPOModels
from rlhf.train.ppo.update import Learner


def save_ppo_checkpoint(path: Path, models: PPOModels, learner: Learner, state: dict) -> None:
    """policy (HF format + tokenizer, loadable as is) + exact value/head weights + trainer state."""
    if dist.is_main():
        with atomic_path(path, is_dir=True) as tmp:
            if is_lora(models.lm):                         # the adapter (PEFT's format)
                save_lora(models.lm, tmp, models.tokenizer)
            else:
                models.lm.save_pretrained(str(tmp), safe_serialization=True)
                models.tokenizer.save_pretrained(str(tmp))
            (tmp / "value").mkdir()   # exact weights (HF's save folds the RM bias: not bit-exact)
            if models.shared:
                save_weights_exact(models.policy.v_head, tmp / "value/value_head.safetensors")
            else:
                save_weights_exact(models.value, tmp / "value/value.safetensors")
            torch.save({"trainer": learner.state_dict(), "rng": rng_state(), "state": state},
                       tmp / "trainer_state.pt")
    dist.barrier()


def load_ppo_checkpoint(path: Path, models: PPOModels, learner: Learner) -> dict:
    load_model_weights(models.lm, path)
    if models.shared:
        load_weights_exact(models.policy.v_head, path / "value/value_head.safetensors")
    else:
        load_weights_exact(models.value, path / "value/value.safetensors")
    blob = torch.load(path / "trainer_state.pt", weights_only=False)
    learner.load_state_dict(blob["trainer"])
    set_rng_state(blob["rng"])
    return blob["state"]


def save_final(out: Path, models: PPOModels, learner: Learner) -> dict[str, str]:
    """out/final (policy + tokenizer), out/final_ema (EMA weights), out/value (value model); a
    LoRA run also writes the adapters (`final_adapter/`, ...) beside the merged models."""
    tok = models.tokenizer
    paths = {"model": save_final_model(models.lm, tok, out / "final")["model"]}
    if learner.ema is not None:
        with learner.ema.applied_to(models.lm):
            paths["model_ema"] = save_final_model(models.lm, tok, out / "final_ema")["model"]
    if models.shared:
        if dist.is_main():
            with atomic_path(out / "value", is_dir=True) as tmp:
                save_weights_exact(models.policy.v_head, tmp / "value_head.safetensors")
                write_text_atomic(tmp / "README.txt", "Shared-trunk value head: Linear(d_model, "
                                  "1) on the final hidden state of the policy in ../final.\n")
        dist.barrier()
    else:
        save_final_model(models.value.rm, tok, out / "value")
    paths["value_model"] = str(out / "value")
    return paths

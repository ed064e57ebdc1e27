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
from rlhf.train.checkpoint import (load_weights, load_weights_exact, rng_state, save_weights_exact,
                                   set_rng_state)
from rlhf.train.ppo.models import PPOModels
from rlhf.train.ppo.update import Learner


def save_ppo_checkpoint(path: Path, models: PPOModels, learner: Learner, state: dict) -> None:
    """policy (HF format + tokenizer, loadable as is) + exact value/head weights + trainer state."""
    if dist.is_main():
        with atomic_path(path, is_dir=True) as tmp:
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
    models.lm.load_state_dict(load_weights(path, models.lm))
    if models.shared:
        load_weights_exact(models.policy.v_head, path / "value/value_head.safetensors")
    else:
        load_weights_exact(models.value, path / "value/value.safetensors")
    blob = torch.load(path / "trainer_state.pt", weights_only=False)
    learner.load_state_dict(blob["trainer"])
    set_rng_state(blob["rng"])
    return blob["state"]


def save_final(out: Path, models: PPOModels, learner: Learner) -> dict[str, str]:
    """out/final (policy + tokenizer), out/final_ema (EMA weights), out/value (value model)."""
    paths = {"model": str(out / "final")}
    if dist.is_main():
        tok = models.tokenizer
        with atomic_path(out / "final", is_dir=True) as tmp:
            models.lm.save_pretrained(str(tmp), safe_serialization=True)
            tok.save_pretrained(str(tmp))
        if learner.ema is not None:
            with learner.ema.applied_to(models.lm), atomic_path(out / "final_ema",
                                                                 is_dir=True) as tmp:
                models.lm.save_pretrained(str(tmp), safe_serialization=True)
                tok.save_pretrained(str(tmp))
        with atomic_path(out / "value", is_dir=True) as tmp:
            if models.shared:
                save_weights_exact(models.policy.v_head, tmp / "value_head.safetensors")
                write_text_atomic(tmp / "README.txt", "Shared-trunk value head: Linear(d_model, "
                                  "1) on the final hidden state of the policy in ../final.\n")
            else:
                models.value.rm.save_pretrained(str(tmp), tokenizer=tok)
    dist.barrier()
    if learner.ema is not None:
        paths["model_ema"] = str(out / "final_ema")
    paths["value_model"] = str(out / "value")
    return paths

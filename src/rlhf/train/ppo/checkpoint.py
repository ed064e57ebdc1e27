"""PPO checkpoints and final outputs.

    iter-N/   the policy in HF format (+ tokenizer), `value/` (exact value weights), and
              trainer_state.pt (optimisers, EMA, β, RNG, iteration): resume continues exactly
    final/    the policy (HF format), final_ema/ (EMA weights, if on), value/ (the value model)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_model_state_dict,
                                                     set_optimizer_state_dict)

from rlhf import dist
from rlhf.io import atomic_path, write_text_atomic
from rlhf.models.lora import is_lora, save_lora
from rlhf.train.checkpoint import (FULL, load_model_weights, load_weights_exact, rng_state,
                                   save_final_model, save_weights_exact, save_with_shards,
                                   set_rng_state, unsharded_copy, write_plain)
from rlhf.train.ppo.models import PPOModels
from rlhf.train.ppo.update import Learner


def save_ppo_checkpoint(path: Path, models: PPOModels, learner: Learner, state: dict) -> None:
    """policy (HF format + tokenizer, loadable as is) + exact value/head weights + trainer state.
    Called on every process; sharded (FSDP) models also write their shards to `path/dcp`."""
    if learner.sharded:
        return _save_sharded(path, models, learner, state)
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
    if learner.sharded:
        return _load_sharded(path, models, learner)
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
    if learner.sharded:
        return _save_final_sharded(out, models, learner)
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


# ----------------------------------------------------------------------------- FSDP2

def _shards(models: PPOModels, learner: Learner) -> dict:
    """What a sharded PPO run resumes from: both models' and optimisers' shards, the EMA's."""
    st = {"policy": get_model_state_dict(models.policy),
          "value": get_model_state_dict(models.value),
          "opt": get_optimizer_state_dict(models.policy, learner.opt),
          "value_opt": get_optimizer_state_dict(models.value, learner.value_opt)}
    if learner.ema is not None:
        st["ema"] = learner.ema.shadow
    return st


def _save_sharded(path: Path, models: PPOModels, learner: Learner, state: dict) -> None:
    policy = get_model_state_dict(models.lm, options=FULL)       # collectives: every process
    value = get_model_state_dict(models.value, options=FULL)

    def write(tmp: Path) -> None:
        write_plain(unsharded_copy(models.lm, policy), models.tokenizer, tmp)
        (tmp / "value").mkdir()
        save_file({k: v.contiguous() for k, v in value.items()},
                  str(tmp / "value/value.safetensors"))
        torch.save({"trainer": {"kl_ctl": learner.kl_ctl.state_dict(),
                                "ema_updates": learner.ema.num_updates if learner.ema else None},
                    "rng": rng_state(), "state": state}, tmp / "trainer_state.pt")

    save_with_shards(path, _shards(models, learner), write)


def _load_sharded(path: Path, models: PPOModels, learner: Learner) -> dict:
    st = _shards(models, learner)
    dcp.load(st, checkpoint_id=str(path / "dcp"))             # the EMA's shards in place
    set_model_state_dict(models.policy, st["policy"])
    set_model_state_dict(models.value, st["value"])
    set_optimizer_state_dict(models.policy, learner.opt, st["opt"])
    set_optimizer_state_dict(models.value, learner.value_opt, st["value_opt"])
    blob = torch.load(path / "trainer_state.pt", weights_only=False)
    learner.kl_ctl.load_state_dict(blob["trainer"]["kl_ctl"])
    if learner.ema is not None:
        learner.ema.num_updates = int(blob["trainer"]["ema_updates"])
    set_rng_state(blob["rng"])
    return blob["state"]


def _save_final_sharded(out: Path, models: PPOModels, learner: Learner) -> dict[str, str]:
    tok = models.tokenizer
    paths = {"model": str(out / "final"), "value_model": str(out / "value")}
    folders = [("final", get_model_state_dict(models.lm, options=FULL), models.lm)]
    if learner.ema is not None:
        with learner.ema.applied_to(models.lm):
            folders.append(("final_ema", get_model_state_dict(models.lm, options=FULL),
                            models.lm))
        paths["model_ema"] = str(out / "final_ema")
    value = get_model_state_dict(models.value, options=FULL)
    folders.append(("value", {k[len("rm."):]: v for k, v in value.items()}, models.value.rm))
    for name, full, module in folders:
        save_with_shards(out / name, None,       # called at once: no late binding to fear
                         lambda tmp: write_plain(unsharded_copy(module, full), tok, tmp))
    return paths

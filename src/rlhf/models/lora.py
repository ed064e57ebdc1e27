"""LoRA adapters (PEFT) for SFT, the reward model and PPO (policy and value model).

    apply_lora(model, r, alpha, dropout)   causal LM -> PeftModel; RewardModel -> its backbone
                                           wrapped, the scalar head left fully trainable
    reference_context(model)               the adapter switched off: the frozen base. In PPO the
                                           KL reference is the policy's own backbone with its
                                           adapter disabled, so a LoRA run holds one frozen copy
                                           of the weights, not two
    save_lora(model, out_dir, tokenizer)   the adapter in PEFT's format (adapter_config.json +
                                           adapter_model.safetensors), + `merged/`, a plain
                                           Hugging Face model with the adapter folded in
    merged_adapter(path)                   an adapter folder as a plain model: its base (named by
                                           adapter_config.json) with the adapter folded in; what
                                           `models.lm.load_model` and `models.reward.
                                           load_reward_model` return for an adapter folder

LoRA (Hu et al. 2021) replaces W x by W x + (alpha / r) B A x with A [r, in], B [out, r], B = 0 at
the start, so an adapted model starts exactly at its base and only A and B train (and, for the
reward and value models, the scalar head). A and B stay fp32 whatever the base's precision.

A reward-model adapter folder holds the backbone's PEFT adapter plus `reward_head.safetensors`
(head weight and bias, reward_bias) and `rlhf_lora.json` ({"kind": "reward"}); its base is
the causal LM (or reward model) the RM started from.

Merging never touches the live model: the merged weights W + (alpha / r) B A are computed into a
new state dict on the CPU (peak: one extra CPU copy of the adapted matrices), so a checkpoint
written mid-run leaves training exactly where it was. Under FSDP, gather a full state dict first.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.errors import UserError

#: Default LoRA targets per `config.model_type`: every projection of attention and MLP (the
#: QLoRA recipe: adapting all of them matches full fine-tuning better than q/v alone). The
#: unembedding and the embeddings are never adapted. Other families: PEFT's "all-linear".
LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],                        # Conv1D (fan_in_fan_out)
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "bloom": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    **{t: LLAMA_LIKE for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2",
                               "gemma3_text", "olmo", "olmo2", "granite", "smollm3")},
}
#: Architectures whose projections are transformers' Conv1D (weight stored [in, out]).
_CONV1D = ("gpt2",)

ADAPTER_CONFIG = "adapter_config.json"
RLHF_META = "rlhf_lora.json"
REWARD_HEAD = "reward_head.safetensors"
MERGED = "merged"


def default_target_modules(model_type: str) -> list[str] | str:
    """The module names LoRA adapts for a `config.model_type` ("all-linear" if unknown)."""
    targets = DEFAULT_TARGETS.get(model_type)
    return list(targets) if targets else "all-linear"


def _peft():
    import peft
    return peft


def is_lora(model: nn.Module) -> bool:
    """True when `model` (or a module inside it: a RewardModel's backbone, a policy's LM) carries
    a PEFT adapter."""
    PeftModel = _peft().PeftModel
    return any(isinstance(m, PeftModel) for m in model.modules())


def _peft_models(model: nn.Module) -> list[nn.Module]:
    PeftModel = _peft().PeftModel
    return [m for m in model.modules() if isinstance(m, PeftModel)]


def _is_reward_model(model: nn.Module) -> bool:
    """A `rlhf.models.reward.RewardModel` (a backbone and a scalar head; not imported here, as
    models.reward loads adapters through this module)."""
    return isinstance(getattr(model, "backbone", None), nn.Module) and \
        isinstance(getattr(model, "head", None), nn.Linear) and hasattr(model, "reward_bias")


def _local_dir(name: str | None) -> str | None:
    """`name` as an absolute path when it is a local model folder (so an adapter records where
    its base is, wherever it is loaded from); otherwise unchanged."""
    if name and (Path(name) / "config.json").exists():
        return str(Path(name).resolve())
    return name or None


def apply_lora(model: nn.Module, r: int = 8, alpha: float = 16, dropout: float = 0.0,
               target_modules: list[str] | str | None = None, *, base: str | None = None,
               field: str = "lora") -> nn.Module:
    """Freeze `model` and give it a LoRA adapter of rank `r` (scale alpha / r).

    A causal LM comes back as a `peft.PeftModelForCausalLM` (use it like the model). A
    `RewardModel` comes back as itself, its `backbone` wrapped in a `peft.PeftModel` and its
    scalar `head` trainable (it is new, so it must train in full). `target_modules` defaults to
    DEFAULT_TARGETS for the model's type. `base` is what adapter_config.json records as the base
    model (default: the folder the model was loaded from). Errors name `field`.r / .alpha."""
    peft = _peft()
    if int(r) < 1:
        raise UserError(f"the LoRA rank must be at least 1, got {r}", field=f"{field}.r")
    if float(alpha) <= 0:
        raise UserError(f"the LoRA alpha must be positive, got {alpha}", field=f"{field}.alpha")
    if not 0 <= float(dropout) < 1:
        raise UserError(f"the LoRA dropout must be in [0, 1), got {dropout}",
                        field=f"{field}.dropout")
    if is_lora(model):
        raise ValueError("this model already has a LoRA adapter")
    reward = _is_reward_model(model)
    target = model.backbone if reward else model
    model_type = getattr(target.config, "model_type", "")
    targets = target_modules if target_modules is not None else \
        default_target_modules(model_type)
    conf = peft.LoraConfig(r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout),
                           target_modules=targets, fan_in_fan_out=model_type in _CONV1D,
                           bias="none", task_type=None if reward else "CAUSAL_LM")
    conf.base_model_name_or_path = _local_dir(base or getattr(target, "name_or_path", None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # transformers' deprecation notes
        try:
            wrapped = peft.get_peft_model(target, conf)
        except ValueError as e:     # no module matched the targets
            raise UserError(f"cannot apply LoRA: {e}", field=f"{field}.target_modules") from None
    wrapped.peft_config["default"].base_model_name_or_path = conf.base_model_name_or_path
    if not reward:
        return wrapped
    model.backbone = wrapped
    model.head.requires_grad_(True)
    return model


def reference_context(model: nn.Module):
    """A context in which `model` runs as its frozen base: every LoRA adapter in it disabled.

    The KL reference of a LoRA policy: `with torch.no_grad(), reference_context(policy):
    ref_logits = policy(...)` gives exactly the base model's output (the base weights are
    frozen; the adapter only adds). Raises ValueError for a model without an adapter (it needs a
    separate frozen copy as its reference)."""
    peft_models = _peft_models(model)
    if not peft_models:
        raise ValueError("reference_context needs a LoRA model (apply_lora); without an adapter "
                         "the reference is a separate frozen copy")
    stack = contextlib.ExitStack()
    for m in peft_models:
        stack.enter_context(m.disable_adapter())
    return stack


# ============================================================================ merge / save / load

def merged_state_dict(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict (its own key names) with the adapter folded in, on the CPU:
    W + scale · B A for every adapted weight, every other tensor as is. The live model is not
    modified."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    adapter = peft_model.active_adapter
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, mod in base.named_modules():
            if isinstance(mod, LoraLayer) and adapter in mod.lora_A:
                deltas[f"{name}.weight"] = mod.get_delta_weight(adapter)
        out: dict[str, torch.Tensor] = {}
        for key, value in base.state_dict().items():
            if ".lora_" in key:
                continue
            key = key.replace(".base_layer.", ".")
            if key in deltas:
                value = value + deltas[key].to(value.dtype)
            out[key] = value.detach().cpu()
    if ".modules_to_save." in " ".join(out) or ".original_module." in " ".join(out):
        raise NotImplementedError("merging adapters with modules_to_save is not supported")
    return out


def merged_copy(peft_model: nn.Module) -> nn.Module:
    """A plain transformers model (no PEFT) on the CPU holding base + adapter merged."""
    base = peft_model.get_base_model()
    with torch.device("meta"):
        plain = type(base)(copy.deepcopy(base.config))
    return materialize(plain, merged_state_dict(peft_model), base).eval()


def materialize(plain: nn.Module, state: dict[str, torch.Tensor], source: nn.Module) -> nn.Module:
    """Fill `plain`, built on the meta device (no random init, no second copy of the weights),
    with `state`; its non-persistent buffers (rotary inv_freq, ...: in no state dict) come from
    `source`, the live model it copies. Ties the weights its config ties; raises if a tensor is
    left unset."""
    plain.load_state_dict(state, strict=False, assign=True)
    for name, buf in source.named_buffers():
        owner, _, leaf = name.rpartition(".")
        mod = plain.get_submodule(owner) if owner else plain
        if getattr(mod, leaf, None) is not None and getattr(mod, leaf).is_meta:
            setattr(mod, leaf, buf.detach().cpu().clone())
    if hasattr(plain, "tie_weights"):
        plain.tie_weights()
    left = [n for n, t in [*plain.named_parameters(), *plain.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"a copy of {type(source).__name__} left tensors unset: {left[:5]}")
    return plain


def save_lora(model: nn.Module, out_dir: str | Path, tokenizer=None, *,
              merged: bool = False) -> dict[str, Path]:
    """Write `model`'s adapter in PEFT's format to `out_dir` (+ the tokenizer); with `merged`,
    also a plain Hugging Face model with the adapter folded in to `out_dir/merged`. Works for a
    LoRA causal LM and a LoRA RewardModel (which also writes its head). Returns the folders."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reward = _is_reward_model(model)
    peft_model = model.backbone if reward else model
    if not isinstance(peft_model, _peft().PeftModel):
        raise ValueError("save_lora needs a model returned by apply_lora / load_model_or_adapter")
    peft_model.save_pretrained(str(out))
    written = {"adapter": out}
    if reward:
        save_file({"weight": model.head.weight.detach().cpu().contiguous(),
                   "bias": model.head.bias.detach().cpu().contiguous(),
                   "reward_bias": model.reward_bias.detach().cpu().reshape(1)},
                  str(out / REWARD_HEAD))
    (out / RLHF_META).write_text(json.dumps({"kind": "reward" if reward else "causal_lm"}) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    if merged:
        dest = out / MERGED
        plain = merged_copy(peft_model)
        if reward:      # the same RewardModel class around the merged backbone
            type(model)(plain, copy.deepcopy(model.head).cpu(),
                        float(model.reward_bias)).save_pretrained(dest, tokenizer)
        else:
            plain.save_pretrained(str(dest))
            if tokenizer is not None:
                tokenizer.save_pretrained(str(dest))
        written["merged"] = dest
    return written


def adapter_info(path: str | Path) -> dict[str, Any] | None:
    """For an adapter folder: {"base": its base model folder, "kind": "causal_lm" | "reward"}; None
    for any other folder. Raises UserError naming base_model_name_or_path when the base it names
    is not a local model folder."""
    p = Path(path)
    conf_path = p / ADAPTER_CONFIG
    if not conf_path.exists():
        return None
    try:
        conf = json.loads(conf_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON: {e}", path=str(conf_path)) from None
    base = conf.get("base_model_name_or_path")
    if not base:
        raise UserError("this LoRA adapter does not say which model it adapts: set "
                        "base_model_name_or_path to the base model's folder",
                        path=str(conf_path), field="base_model_name_or_path")
    base_path = Path(base)
    if not base_path.is_absolute() and not (base_path / "config.json").exists():
        base_path = p / base                    # relative to the adapter folder
    if not (base_path / "config.json").exists():
        raise UserError(f"the base model of this LoRA adapter is not here: {base} (no "
                        "config.json); copy the base model there, or point "
                        "base_model_name_or_path at its folder",
                        path=str(conf_path), field="base_model_name_or_path")
    kind = "causal_lm"
    if (p / RLHF_META).exists():
        kind = json.loads((p / RLHF_META).read_text()).get("kind", kind)
    return {"base": base_path, "kind": kind}


def merged_adapter(base: nn.Module, path: str | Path, kind: str) -> nn.Module:
    """The adapter in folder `path` loaded onto `base` (the model its adapter_config.json
    names, already loaded: a causal LM, or a RewardModel for kind "reward") and folded in: a
    plain model, the same function as the adapted one. For a reward model the head and the
    normalisation bias come from the folder too."""
    from safetensors.torch import load_file

    target = base.backbone if kind == "reward" else base
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = _peft().PeftModel.from_pretrained(target, str(path), is_trainable=False)
    plain = merged_copy(peft_model)
    if kind != "reward":
        return plain
    base.backbone = plain
    head = load_file(str(Path(path) / REWARD_HEAD))
    with torch.no_grad():
        base.head.weight.copy_(head["weight"])
        base.head.bias.copy_(head["bias"])
        base.reward_bias.copy_(head["reward_bias"].reshape(()))
    return base


def load_lora_weights(model: nn.Module, path: str | Path) -> None:
    """Put the adapter (and, for a reward model, the head and bias) saved by `save_lora` in
    `path` into the live LoRA `model` (resuming a run): the base weights are untouched."""
    from safetensors.torch import load_file

    reward = _is_reward_model(model)
    peft_model = model.backbone if reward else model
    state = load_file(str(Path(path) / "adapter_model.safetensors"))
    result = _peft().set_peft_model_state_dict(peft_model, state)
    if getattr(result, "unexpected_keys", None):
        raise RuntimeError(f"adapter weights that this model does not have: "
                           f"{result.unexpected_keys[:5]}")
    if reward:
        head = load_file(str(Path(path) / REWARD_HEAD))
        with torch.no_grad():
            model.head.weight.copy_(head["weight"])
            model.head.bias.copy_(head["bias"])
            model.reward_bias.copy_(head["reward_bias"].reshape(()))

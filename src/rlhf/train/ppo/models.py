"""The models PPO holds: the policy, its frozen reference, the reward and the value model.

    policy  π   = the SFT model (dropout off)             ref π_ref = a frozen copy (KL reference)
    reward  r   = the RM (normalised score at the last valid token) or any callable
                  `(prompts, responses) -> scores`        value V = a separate copy of the RM
                  (paper) or a zero-initialised head on the policy trunk ("shared", [LMHP])
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from rlhf import dist
from rlhf.config import PPOConfig
from rlhf.errors import UserError
from rlhf.models import disable_dropout, load_model, load_tokenizer
from rlhf.models.cpu import contiguous_unembedding, fuse_activations
from rlhf.models.lora import reference_context
from rlhf.models.reward import RewardModel, load_reward_model
from rlhf.models.value import PolicyWithValueHead, TokenValues
from rlhf.train.loop import prepare_model

RewardFn = Callable[[list[str], list[str]], Any]


@dataclass
class PPOModels:
    """The four models of PPO, their tokenizer, and how episodes are scored. `value` is None
    in shared mode (the head is in `policy`)."""
    tokenizer: Any
    policy: nn.Module                    # causal LM, or PolicyWithValueHead ("shared")
    ref: nn.Module | None                # frozen causal LM; None: the policy, adapter off
    value: nn.Module | None              # TokenValues(RewardModel) ("separate")
    reward_model: nn.Module | None       # frozen RewardModel, or None when a callable scores
    reward_fn: RewardFn | None
    reward_name: str
    autocast: torch.dtype | None = None  # bf16 autocast of every forward (None: full precision)

    @property
    def shared(self) -> bool:
        return isinstance(self.policy, PolicyWithValueHead)

    @property
    def lm(self) -> nn.Module:
        """The policy's causal LM (what `final/` holds)."""
        return self.policy.lm if self.shared else self.policy

    def reference(self) -> tuple[nn.Module, contextlib.AbstractContextManager]:
        """The KL reference and the context to run it in: the frozen copy, or (LoRA) the
        policy's own model with its adapter disabled."""
        if self.ref is not None:
            return self.ref, contextlib.nullcontext()
        return self.lm, reference_context(self.lm)


def load_reward_fn(spec: str) -> RewardFn:
    """Import `package.module:function` or `path/to/file.py:function` (a reward callable)."""
    field = "ppo.reward_fn"
    if ":" not in spec:
        raise UserError(f"'{spec}' must look like 'package.module:function' or "
                        "'path/to/file.py:function'", field=field)
    mod_name, attr = spec.rsplit(":", 1)
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.exists():
                raise UserError("reward function file not found", path=str(path), field=field)
            name = f"rlhf_reward_fn_{abs(hash(str(path.resolve())))}"
            spec_ = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec_)
            sys.modules[name] = module
            spec_.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any import failure is the user's to fix
        raise UserError(f"cannot import '{mod_name}': {type(e).__name__}: {e}",
                        field=field) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"'{mod_name}' has no attribute '{attr}'", field=field)
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"'{spec}' is not callable", field=field)
    return obj


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def check_same_tokenizer(tokenizer, path: str) -> None:
    p = Path(path)
    if not ((p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()):
        return
    other = load_tokenizer(p)
    if len(other) != len(tokenizer) or other.get_vocab() != tokenizer.get_vocab():
        raise UserError("the reward model's tokenizer differs from the policy's; PPO scores the "
                        "policy's token ids directly, so both must share one tokenizer",
                        path=str(p), field="ppo.reward_model")


def build_models(p: PPOConfig, reward_fn: RewardFn | None = None,
                 precision: str | None = None) -> PPOModels:
    """Load the policy, its frozen reference, the reward (RM or callable) and the value model.

    With LoRA (`ppo.lora.r` > 0) the policy and the value model get adapters, and the reference
    is the policy with its adapter disabled (one frozen copy of the weights, not two), unless
    `ppo.reference` names another model. `precision` overrides `ppo.precision`."""
    if not p.policy:
        raise UserError("say which model to optimise: ppo.policy (the SFT model folder)",
                        field="ppo.policy")
    section = p if precision is None else p.model_copy(update={"precision": precision})
    dev = dist.device()
    tokenizer = load_tokenizer(p.policy)
    lm = load_model(p.policy)
    disable_dropout(lm)                                   # spec 7.9
    if p.reference and p.reference != p.policy:
        # Later rounds start from the previous PPO policy; the KL reference stays the SFT model.
        check_same_tokenizer(tokenizer, p.reference)
        ref = freeze(load_model(p.reference))
    elif p.lora.r > 0:
        ref = None                                        # the policy, its adapter disabled
    else:
        ref = freeze(copy.deepcopy(lm))                  # spec 7.27: frozen, eval, no grad
    lm, prec = prepare_model(lm, section, "ppo")
    if reward_fn is None and p.reward_fn:
        reward_fn = load_reward_fn(p.reward_fn)
    reward_model = None
    if reward_fn is None:
        if not p.reward_model:
            raise UserError("say how episodes are scored: ppo.reward_model (an RM folder) or "
                            "ppo.reward_fn ('module:function')", field="ppo.reward_model")
        check_same_tokenizer(tokenizer, p.reward_model)
        reward_model = freeze(load_reward_model(p.reward_model))
        name = f"reward model {p.reward_model}"
    else:
        name = f"reward function {p.reward_fn or getattr(reward_fn, '__name__', reward_fn)}"
    if p.value_model == "shared":
        policy: nn.Module = PolicyWithValueHead(lm)
        value = None
    else:
        if p.reward_model:
            # Paper (App. C.4, [SFF] §3.4): a separate value network initialised from the RM.
            if reward_fn is not None:
                check_same_tokenizer(tokenizer, p.reward_model)
            vm = load_reward_model(p.reward_model)
        else:
            # No RM (a reward callable): start the value model from the policy's trunk with a
            # zero head, so V = 0 at first, as [LMHP]'s zero-initialised value head.
            vm = RewardModel.from_causal_lm(load_model(p.policy))
            with torch.no_grad():
                vm.head.weight.zero_()
                vm.head.bias.zero_()
                vm.reward_bias.zero_()
        disable_dropout(vm)
        vm, _ = prepare_model(vm, section, "ppo")
        value = TokenValues(vm)
        policy = lm
    # speed: fused GELU everywhere; the unembedding gets a contiguous input
    for m in (policy, ref, value, reward_model):
        if m is not None:
            fuse_activations(m)
    for m in (lm, ref):
        if m is not None:
            contiguous_unembedding(m)
    return PPOModels(tokenizer, policy.to(dev), ref.to(dev) if ref is not None else None,
                     value.to(dev) if value else None,
                     reward_model.to(dev) if reward_model is not None else None, reward_fn,
                     name, prec.autocast_dtype)

"""The memory plan: bytes per device of a model's weights, gradients, optimizer state,
activations and KV cache, for a precision, LoRA rank, FSDP sharding and batch; the plan of PPO's
four models; and a check that refuses a plan over the device's memory, naming what to change.

Per model, on each of `n_shards` devices (FSDP2 shards weights, gradients and optimizer state;
activations and the KV cache are per device):

    weights      n_params × (4 fp32 | 2 bf16-weights) / n_shards, + the LoRA adapter in fp32,
                 + under FSDP the all-gathered full weights of two layers (current + prefetch)
    gradients    trained parameters × 4 (fp32: full fine-tuning, or the adapter only) / n_shards
    optimizer    trained parameters × 8 (Adam's two fp32 moments; SGD: 0) / n_shards
    activations  trained: what backward needs, per token of the micro-batch,
                     L × (c_h·h + c_i·i + c_kv·kv) + c_e·h + 12·vocab bytes
                 (h hidden, i MLP width, kv key/value width, L layers; 12 bytes per vocab entry:
                 the logits and the loss's temporaries), + 2 bytes per parameter under bf16
                 autocast (the bf16 weight copies backward keeps); with gradient checkpointing
                 L × 4·h (each layer's input) + the larger of one layer's activations and the
                 logits'. Logits count only on the positions that compute them (`logit_len`).
                 frozen: the transient peak of a no-grad forward + log-softmax, per token
                     max(vocab × (8 fp32 | 10 bf16), f_h·h + f_i·i) bytes (FROZEN_COEF)
    KV cache     tokens × L × 2 × kv × (4 | 2) bytes

The coefficients (TRAIN_COEF, FROZEN_COEF: bytes per token) were fitted to the peak live tensor
bytes (TensorMemoryTracker: every tensor storage alive, as a caching allocator must hold them) of
random tiny shapes per family on CPU, with HF's SDPA attention (no T² term) and no dropout.
Measured error, checked by benchmarks/memory_plan.py on other shapes and on families not fitted
(Qwen2, Qwen3, Mistral), fp32 and bf16 autocast, full and LoRA r = 8 (also on a bf16 base),
gradient checkpointing,
causal LMs and reward models (benchmarks/results/memory_plan.json; MEASURED_ERROR), as
(estimated − measured) / measured:

    training step (micro-batch with accumulated gradients + AdamW step)  -8.2 % .. +5.9 %
        its activations alone                                              -13.9 % .. +6.6 %
    frozen forward (reference log-probs, reward scores)                  -1.8 % .. +4.9 %
    rollout (KV cache + sampling)                                         -7.3 % .. +14.7 %

The largest underestimates are reward models of the Llama family and GPT-NeoX in training (the
coefficients were fitted on causal LMs). On GPUs add the framework's own overhead (CUDA context,
cuBLAS workspace, allocator fragmentation: typically 0.5-2 GiB): `check_fits(headroom_bytes=)`.

In PPO the phases do not overlap: the rollout holds the KV cache, scoring holds one frozen
forward, training holds the gradients and activations; weights and optimizer state are there
throughout. The plan's peak is the largest phase.
"""

from __future__ import annotations

import functools
import json
import math
import re
import weakref
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from rlhf.errors import UserError

GiB = 1 << 30

#: bytes saved for backward per token of a training micro-batch, per layer: per hidden unit,
#: per MLP unit, per key/value unit; and outside the layers per hidden unit. Fitted (least
#: squares over 10 random shapes of causal LMs per family, within 1.4-8.6 % of each) on CPU.
TRAIN_COEF: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "gpt2": {"fp32": (37.7, 20.4, 0.0, 12.0), "bf16": (24.7, 10.0, 0.0, 5.0)},
    "llama": {"fp32": (34.2, 15.0, 8.5, 13.8), "bf16": (29.1, 8.1, 6.0, 10.7)},
    "gpt_neox": {"fp32": (34.0, 7.9, 0.0, 11.5), "bf16": (18.3, 4.2, 0.0, 5.9)},
}
#: the transient peak of a no-grad forward inside the layers, bytes per token: per hidden unit,
#: per MLP unit (fitted over 5 shapes per family, within 0.5-8 %)
FROZEN_COEF: dict[str, dict[str, tuple[float, float]]] = {
    "gpt2": {"fp32": (24.2, 16.0), "bf16": (22.2, 8.0), "bf16-weights": (12.2, 8.0)},
    "llama": {"fp32": (18.2, 12.0), "bf16": (18.2, 6.0), "bf16-weights": (9.2, 6.0)},
    "gpt_neox": {"fp32": (32.0, 4.0), "bf16": (33.0, 1.0), "bf16-weights": (16.0, 2.0)},
}
#: model_type -> the family whose coefficients apply (anything else: "llama", the modern layout)
FAMILY = {"gpt2": "gpt2", "gpt_neox": "gpt_neox", "gptj": "gpt2", "gpt_neo": "gpt2",
          "bloom": "gpt_neox", "falcon": "gpt_neox", "opt": "gpt2", "phi": "gpt_neox"}
LOGIT_BYTES = 12            # per token per vocab entry in training (logits + loss temporaries)
AUTOCAST_COPY_BYTES = 2     # per parameter of a trained model under bf16 autocast
OPTIMIZER_BYTES = {"adam": 8, "adamw": 8, "sgd": 0}

#: (estimated − measured) / measured, (min, max) over the runs of benchmarks/memory_plan.py
#: (benchmarks/results/memory_plan.json: six families, hidden 96, 3 layers, vocab 1536, 4 × 96
#: tokens), of the whole peak and of the activations alone (the rest are exact counts).
MEASURED_ERROR = {
    "train": {"total": (-0.082, 0.059), "activations": (-0.139, 0.066)},
    "frozen": {"total": (-0.018, 0.049), "activations": (-0.034, 0.127)},
    "rollout": {"total": (-0.073, 0.147), "activations": (-0.205, 0.327)},
}


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def parse_bytes(text: str | int | float, *, field: str = "device_memory") -> int:
    """'80GB', '80 GiB', '24g', '512MiB', or a number of bytes -> bytes (GB read as GiB: what
    `nvidia-smi` calls GB)."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*", str(text).lower())
    if not m:
        raise UserError(f"cannot read {text!r} as a memory size (e.g. 80GB, 24GiB, 512MB)",
                        field=field)
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * scale)


# ============================================================================ model shapes

@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of an architecture (read from its config, counted on `meta`)."""
    model_type: str
    n_params: int              # unique parameters of the causal LM (tied embeddings once)
    lm_head_params: int        # parameters only the LM head has (0 when tied)
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int                # key/value width: num_key_value_heads × head_dim
    vocab: int
    largest_layer_params: int
    lora_in_out: int           # Σ (in + out) over LoRA's default targets: × r = adapter size

    @property
    def family(self) -> str:
        return FAMILY.get(self.model_type, "llama")

    def lora_params(self, rank: int) -> int:
        return rank * self.lora_in_out


def _config(model_config):
    from transformers import AutoConfig, PretrainedConfig
    if isinstance(model_config, PretrainedConfig):
        return model_config
    if isinstance(model_config, Mapping):
        conf = dict(model_config)
        return AutoConfig.for_model(conf.pop("model_type"), **conf)
    p = Path(model_config)
    if not (p / "config.json").exists():
        raise UserError("no Hugging Face model config here (config.json missing)", path=str(p))
    return AutoConfig.from_pretrained(str(p))


def _get(conf, *names, default=None):
    for n in names:
        v = getattr(conf, n, None)
        if v is not None:
            return v
    return default


@functools.lru_cache(maxsize=32)
def _shape_from_json(model_type: str, conf_json: str) -> ModelShape:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    from rlhf.models.lora import default_target_modules

    conf = AutoConfig.for_model(model_type, **json.loads(conf_json))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf)
    n_params = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    tied = head is not None and head.weight is emb.weight
    targets = default_target_modules(model_type)
    in_out = 0
    for name, mod in model.named_modules():
        if mod is head:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if targets != "all-linear" and leaf not in targets:
            continue
        if isinstance(mod, torch.nn.Linear):
            in_out += mod.in_features + mod.out_features
        elif isinstance(mod, Conv1D):
            in_out += sum(mod.weight.shape)
    layer_sizes = [sum(p.numel() for p in layer.parameters())
                   for stack in model.modules() if isinstance(stack, torch.nn.ModuleList)
                   for layer in stack] or [0]
    hidden = int(_get(conf, "hidden_size", "n_embd"))
    heads = int(_get(conf, "num_attention_heads", "n_head"))
    head_dim = int(_get(conf, "head_dim", default=hidden // heads))
    kv_heads = int(_get(conf, "num_key_value_heads", default=heads))
    return ModelShape(
        model_type=model_type, n_params=n_params,
        lm_head_params=0 if tied or head is None else head.weight.numel(),
        layers=int(_get(conf, "num_hidden_layers", "n_layer")), hidden=hidden,
        intermediate=int(_get(conf, "intermediate_size", "n_inner", "ffn_dim",
                              default=4 * hidden)),
        kv_dim=kv_heads * head_dim, vocab=int(conf.vocab_size),
        largest_layer_params=max(layer_sizes), lora_in_out=in_out)


def model_shape(model_config) -> ModelShape:
    """The shape of a causal LM from its config (a PretrainedConfig, a model folder, or a dict
    with model_type). Counted by building the model on the meta device: no memory, ~1 s for 8B."""
    conf = _config(model_config)
    d = conf.to_diff_dict()
    d.pop("model_type", None)
    return _shape_from_json(conf.model_type, json.dumps(d, sort_keys=True, default=str))


# ============================================================================ one model

def _precision_name(precision) -> str:
    name = getattr(precision, "name", precision)
    if name not in ("fp32", "bf16", "bf16-weights"):
        raise ValueError(f"precision must be resolved first (fp32, bf16 or bf16-weights), "
                         f"got {name!r}")
    return name


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one model (or of a phase's extra), by component."""
    name: str
    weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    kv_cache: int = 0
    note: str = ""
    inputs: Mapping[str, Any] = dataclass_field(default_factory=dict, compare=False, repr=False)

    COLUMNS = ("weights", "gradients", "optimizer", "activations", "kv_cache")

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.kv_cache

    @property
    def peak(self) -> int:
        return self.total

    def table(self) -> str:
        return _table([self], self.total, f"total per device: {format_bytes(self.total)}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{c: getattr(self, c) for c in self.COLUMNS},
                "total": self.total, "note": self.note}


def _table(rows: list[MemoryEstimate], peak: int, footer: str) -> str:
    head = ["", "weights", "grads", "optimizer", "activations", "KV cache", "total"]
    body = [[r.name, *(format_bytes(getattr(r, c)) if getattr(r, c) else "-"
                       for c in MemoryEstimate.COLUMNS), format_bytes(r.total)] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), *(line(b) for b in body)]
    notes = [f"  {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(out + notes + [footer])


def estimate_memory(model_config, *, precision="fp32", lora_rank: int = 0, n_shards: int = 1,
                    batch_size: int = 1, seq_len: int = 512, trainable: bool = True,
                    optimizer: str = "adam", gradient_checkpointing: bool = False,
                    kv_cache_tokens: int = 0, scalar_head: bool = False,
                    logit_len: int | None = None, name: str = "model") -> MemoryEstimate:
    """Bytes per device of one model (see the module doc for every term).

    `precision`: a resolved Precision or its name ("fp32", "bf16" autocast, "bf16-weights" for
    frozen models and a LoRA run's frozen base). `lora_rank` > 0: the base is frozen and an
    adapter (fp32) of that rank on the
    default targets trains. `batch_size` × `seq_len`: the tokens of one micro-batch (training) or
    one forward (frozen). `scalar_head`: a reward/value model (the LM head replaced by a
    hidden→1 head). `logit_len`: positions per sequence whose logits are computed (PPO keeps the
    response's only: `logits_to_keep`); default all. `kv_cache_tokens`: tokens held in the KV
    cache (batch × length)."""
    prec = _precision_name(precision)
    if trainable and prec == "bf16-weights" and not lora_rank:
        raise ValueError("bf16-weights is for frozen models (or a LoRA run's frozen base)")
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_BYTES)}")
    if n_shards < 1 or batch_size < 0 or seq_len < 0 or lora_rank < 0:
        raise ValueError("n_shards >= 1, batch_size, seq_len and lora_rank >= 0")
    s = model_shape(model_config)
    inputs = dict(model_config=model_config, precision=prec, lora_rank=lora_rank,
                  n_shards=n_shards, batch_size=batch_size, seq_len=seq_len,
                  trainable=trainable, optimizer=optimizer,
                  gradient_checkpointing=gradient_checkpointing,
                  kv_cache_tokens=kv_cache_tokens, scalar_head=scalar_head,
                  logit_len=logit_len, name=name)
    n_params = s.n_params - (s.lm_head_params if scalar_head else 0) + \
        ((s.hidden + 1) if scalar_head else 0)
    vocab = 1 if scalar_head else s.vocab
    wbytes = 2 if prec == "bf16-weights" else 4
    abytes = 4 if prec == "fp32" else 2
    adapter = s.lora_params(lora_rank) if lora_rank else 0
    head = (s.hidden + 1) if scalar_head else 0
    trained = (adapter + head) if lora_rank else n_params
    weights = math.ceil(n_params * wbytes / n_shards) + math.ceil(adapter * 4 / n_shards)
    notes = [f"{prec}"]
    if n_shards > 1:
        weights += 2 * s.largest_layer_params * wbytes      # all-gathered layers (FSDP)
        notes.append(f"FSDP over {n_shards}")
    if lora_rank:
        notes.append(f"LoRA r={lora_rank}: {adapter:,} trained of {n_params:,}")
    tokens = batch_size * seq_len
    logit_tokens = batch_size * (seq_len if logit_len is None else min(logit_len, seq_len))
    gradients = optimizer_state = 0
    if trainable:
        gradients = math.ceil(trained * 4 / n_shards)
        optimizer_state = math.ceil(trained * OPTIMIZER_BYTES[optimizer] / n_shards)
        c_h, c_i, c_kv, c_e = TRAIN_COEF[s.family]["fp32" if prec == "fp32" else "bf16"]
        per_layer = tokens * (c_h * s.hidden + c_i * s.intermediate + c_kv * s.kv_dim)
        logits = logit_tokens * LOGIT_BYTES * vocab
        if gradient_checkpointing:     # layer inputs; one layer recomputed after the loss
            activations = tokens * s.layers * 4 * s.hidden + max(per_layer, logits)
            notes.append("gradient checkpointing")
        else:
            activations = s.layers * per_layer + logits
        activations += tokens * c_e * s.hidden
        if prec == "bf16":
            activations += AUTOCAST_COPY_BYTES * n_params
    else:
        notes.append("frozen")
        f_h, f_i = FROZEN_COEF[s.family][prec]
        logits = logit_tokens * (8 if prec == "fp32" else 10) * vocab if not scalar_head else 0
        activations = max(logits, tokens * (f_h * s.hidden + f_i * s.intermediate))
    kv = kv_cache_tokens * s.layers * 2 * s.kv_dim * abytes
    return MemoryEstimate(name, weights, gradients, optimizer_state, int(activations), kv,
                          ", ".join(notes), inputs)


def rollout_memory(model_config, *, precision="fp32", batch_size: int, prompt_length: int,
                   new_tokens: int) -> MemoryEstimate:
    """What sampling adds to the weights, at its peak: the prompt forward (the cache of the
    prompts + that forward's logits: the sampler keeps the last position's, but the model
    computes all of them) or the last step (the full KV cache of `batch_size` × (prompt + new)
    tokens + one layer's cache copied as it grows + one step's logits), whichever is larger.
    `kv_cache` is the full cache; `activations` the rest of that peak."""
    prec = _precision_name(precision)
    s = model_shape(model_config)
    per_token_kv = s.layers * 2 * s.kv_dim * (4 if prec == "fp32" else 2)
    kv = batch_size * (prompt_length + new_tokens) * per_token_kv
    logit_bytes = 4 if prec == "fp32" else 6           # bf16 logits + their float copy
    prefill = batch_size * prompt_length * (per_token_kv + s.vocab * logit_bytes + 16 * s.hidden)
    last_step = kv + kv // s.layers + batch_size * s.vocab * 8
    return MemoryEstimate("rollout", activations=max(prefill, last_step) - kv, kv_cache=kv,
                          note=f"{batch_size} sequences x {prompt_length} + {new_tokens} "
                               "tokens in the KV cache")


# ============================================================================ PPO

@dataclass(frozen=True)
class MemoryPlan:
    """Several models on one device; `phases` are the per-device totals of the phases that do
    not overlap (PPO: rollout, scoring, training); the peak is the largest."""
    title: str
    parts: tuple[MemoryEstimate, ...]
    phases: Mapping[str, int]
    inputs: Mapping[str, Any] = dataclass_field(default_factory=dict, compare=False, repr=False)

    @property
    def peak(self) -> int:
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    @property
    def total(self) -> int:
        return self.peak

    def table(self) -> str:
        phases = ", ".join(f"{k} {format_bytes(v)}" for k, v in self.phases.items())
        return _table(list(self.parts), self.peak,
                      f"{self.title}: peak per device {format_bytes(self.peak)} "
                      f"({self.peak_phase}); phases: {phases}")

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "parts": [p.as_dict() for p in self.parts],
                "phases": dict(self.phases), "peak": self.peak}


def ppo_memory(policy_config, *, precision="fp32", frozen_precision=None, lora_rank: int = 0,
               n_shards: int = 1, micro_batch_size: int = 8, rollout_batch_size: int = 64,
               max_prompt_length: int = 256, max_new_tokens: int = 256, reward_config=None,
               value_config=None, value_model: str = "separate", optimizer: str = "adam",
               gradient_checkpointing: bool = False, reward_model: bool = True) -> MemoryPlan:
    """The per-device memory of PPO: policy (trained), reference (frozen; none with LoRA: the
    policy's backbone with its adapter disabled), reward model (frozen; none when
    `reward_model` is False: a reward function scores), value model (trained; none when
    "shared": a head on the policy) and the rollout's KV cache.

    `frozen_precision` (default: `precision`) is the reference's and reward model's; they may use
    "bf16-weights". The reward and value models default to the policy's architecture
    (`reward_config`, `value_config`: the RM's, e.g. a smaller one). Scoring (reference
    log-probs, reward) runs on a rollout chunk of `rollout_batch_size` sequences; training on
    micro-batches; logits are computed for the response positions only (`logits_to_keep`)."""
    prec = _precision_name(precision)
    fprec = _precision_name(frozen_precision or prec)
    inputs = dict(policy_config=policy_config, precision=prec, frozen_precision=fprec,
                  lora_rank=lora_rank, n_shards=n_shards, micro_batch_size=micro_batch_size,
                  rollout_batch_size=rollout_batch_size, max_prompt_length=max_prompt_length,
                  max_new_tokens=max_new_tokens, reward_config=reward_config,
                  value_config=value_config, value_model=value_model, optimizer=optimizer,
                  gradient_checkpointing=gradient_checkpointing, reward_model=reward_model)
    seq = max_prompt_length + max_new_tokens
    reward_config = reward_config if reward_config is not None else policy_config
    value_config = value_config if value_config is not None else reward_config
    common = dict(lora_rank=lora_rank, n_shards=n_shards, optimizer=optimizer,
                  gradient_checkpointing=gradient_checkpointing)
    keep = max_new_tokens + 1                   # logits of the response positions only
    policy = estimate_memory(policy_config, precision=prec, batch_size=micro_batch_size,
                             seq_len=seq, logit_len=keep, name="policy", **common)
    frozen = dict(precision=fprec, n_shards=n_shards, batch_size=rollout_batch_size,
                  seq_len=seq, trainable=False)
    if lora_rank:
        ref_fwd = estimate_memory(policy_config, **frozen, logit_len=keep, name="reference")
        reference = MemoryEstimate("reference", note="the policy's backbone, adapter disabled")
    else:
        reference = ref_fwd = estimate_memory(policy_config, **frozen, logit_len=keep,
                                              name="reference")
    reward = estimate_memory(reward_config, **frozen, scalar_head=True, name="reward model") \
        if reward_model else MemoryEstimate("reward model", note="a reward function scores")
    parts = [policy, reference, reward]
    value = None
    if value_model == "separate":
        value = estimate_memory(value_config, precision=prec, batch_size=micro_batch_size,
                                seq_len=seq, scalar_head=True, name="value model", **common)
        parts.append(value)
    rollout = rollout_memory(policy_config, precision=prec, batch_size=rollout_batch_size,
                             prompt_length=max_prompt_length, new_tokens=max_new_tokens)
    parts.append(rollout)
    static = sum(p.weights + p.optimizer for p in parts)
    trained = [policy] + ([value] if value else [])
    phases = {
        "rollout": static + rollout.kv_cache + rollout.activations,
        "scoring": static + max(ref_fwd.activations, reward.activations),
        "training": static + sum(p.gradients + p.activations for p in trained),
    }
    return MemoryPlan("PPO memory plan", tuple(parts), phases, inputs)


# ============================================================================ the check

#: What each remedy changes, as the setting the user sets (`{s}`: the recipe's section). The
#: recipes may pass their own names to `check_fits(fields=...)`, and None for a remedy their
#: config has no setting for (it is then not offered).
FIELDS = {
    "lora": "{s}.lora.r",
    "precision": "{s}.precision",
    "frozen_precision": "{s}.frozen_precision",
    "shards": "{s}.fsdp_shards",
    "gradient_checkpointing": "{s}.gradient_checkpointing",
    "micro_batch": "{s}.micro_batch_size",
    "rollout": "{s}.rollout_batch_size",
}


def _remedies(inputs: Mapping[str, Any]) -> list[tuple[str, str, dict]]:
    """(remedy key, value in words, changed inputs) for what could lower the estimate."""
    out = []
    ppo = "policy_config" in inputs
    trainable = ppo or inputs.get("trainable", True)
    if trainable and not inputs["lora_rank"]:
        out.append(("lora", "16", {"lora_rank": 16}))
    if inputs["precision"] != "bf16-weights" and (not trainable or inputs["lora_rank"]):
        out.append(("precision", "bf16-weights", {"precision": "bf16-weights"}))
    elif inputs["precision"] == "fp32":
        out.append(("precision", "bf16", {"precision": "bf16"}))
    if ppo and inputs["frozen_precision"] != "bf16-weights" and not inputs["lora_rank"]:
        out.append(("frozen_precision", "bf16-weights", {"frozen_precision": "bf16-weights"}))
    if trainable and not inputs["gradient_checkpointing"]:
        out.append(("gradient_checkpointing", "true", {"gradient_checkpointing": True}))
    batch = "micro_batch_size" if ppo else "batch_size"
    if inputs[batch] > 1:
        out.append(("micro_batch", str(inputs[batch] // 2), {batch: inputs[batch] // 2}))
    if ppo and inputs["rollout_batch_size"] > 1:
        r = inputs["rollout_batch_size"] // 2
        out.append(("rollout", str(r), {"rollout_batch_size": r}))
    out.append(("shards", str(2 * inputs["n_shards"]), {"n_shards": 2 * inputs["n_shards"]}))
    return out


def check_fits(estimate: MemoryEstimate | MemoryPlan, device_memory_bytes: int, *,
               section: str = "ppo", fields: Mapping[str, str | None] | None = None,
               headroom_bytes: int = 0) -> None:
    """Raise UserError when the estimate's peak exceeds `device_memory_bytes` − `headroom_bytes`,
    naming (as `field`) the one setting whose change makes it fit and saves the most (else the
    one that saves the most), and listing every single change that lowers the peak with the
    peak it would give. Remedies are re-estimated, not guessed. `fields` renames the settings
    of FIELDS; a remedy renamed to None is not offered."""
    cap = device_memory_bytes - headroom_bytes
    if estimate.peak <= cap:
        return
    names = {k: v.format(s=section) if v else None
             for k, v in {**FIELDS, **(fields or {})}.items()}
    rebuild: Callable[..., Any] = ppo_memory if isinstance(estimate, MemoryPlan) \
        else estimate_memory
    options = []
    for key, value, change in _remedies(estimate.inputs):
        if names[key] is None:
            continue
        peak = rebuild(**{**estimate.inputs, **change}).peak
        if peak < estimate.peak:
            options.append((peak <= cap, estimate.peak - peak, names[key], value, peak))
    options.sort(key=lambda o: (not o[0], -o[1]))
    lines = [f"  set {f} = {v}: peak {format_bytes(p)}{' (fits)' if ok else ''}"
             for ok, _, f, v, p in options]
    best = options[0] if options else None
    raise UserError(
        f"the memory plan needs {format_bytes(estimate.peak)} per device, more than the "
        f"{format_bytes(cap)} available (--device-memory"
        f"{f' less {format_bytes(headroom_bytes)} headroom' if headroom_bytes else ''}):\n"
        f"{estimate.table()}\n"
        + ("change one of these (those that fit first, then by what they save):\n"
           + "\n".join(lines) if lines else "no single setting lowers it: use a smaller "
           "model or a larger device"), field=best[2] if best else None)


# ============================================================================ measuring

class TensorMemoryTracker:
    """Bytes of tensor storage alive while the tracker is active (`with tracker:`) and their
    peak: what a caching allocator must hold, without its rounding or fragmentation. Storages
    that exist beforehand count once `add(...)` is given them (weights, gradients, optimizer
    state), else from the first op that touches them.

    CPU and GPU alike (it sees every ATen op through a TorchDispatchMode); used to check this
    module's estimates on CPU, where torch keeps no allocator statistics."""

    def __init__(self):
        from torch.utils.weak import WeakIdKeyDictionary
        self._live = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0
        self._mode = None

    def _free(self, n: int) -> None:
        self.current -= n

    def _track(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        st = t.untyped_storage()
        if st in self._live:
            return
        n = st.nbytes()
        self._live[st] = n
        weakref.finalize(st, self._free, n)
        self.current += n
        self.peak = max(self.peak, self.current)

    def add(self, tensors) -> "TensorMemoryTracker":
        for t in tensors:
            if t is not None:
                self._track(t)
        return self

    def reset_peak(self) -> None:
        self.peak = self.current

    def __enter__(self) -> "TensorMemoryTracker":
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    tracker._track(t)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        self._mode = None


def measured_error(estimated: int, measured: int) -> float:
    """(estimated − measured) / measured: positive = the estimate is high."""
    return (estimated - measured) / measured


__all__ = ["GiB", "MemoryEstimate", "MemoryPlan", "ModelShape", "TensorMemoryTracker",
           "check_fits", "estimate_memory", "format_bytes", "measured_error", "model_shape",
           "parse_bytes", "ppo_memory", "rollout_memory"]

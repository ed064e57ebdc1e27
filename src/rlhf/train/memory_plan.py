"""The memory plan of a configured run (`rlhf sft plan`, `rlhf rm plan`, `rlhf ppo plan`): the
bytes per device that `rlhf.models.memory` estimates for the models a section names, and the
check that refuses a plan over the device's memory, naming the setting to change.

Each model's shape comes from its folder's config.json alone: nothing is loaded or downloaded.
The estimate follows each section's `precision` ("auto" counts as bf16: a plan is made for a
GPU), `lora` and `gradient_checkpointing`, under DDP (every process holds whole models, so the
world size changes only the per-process batch; with `dist: fsdp`, SFT and the RM also divide
the sharded weights, gradients and Adam state by it). The refusal names only settings the
sections have: precision, LoRA rank, gradient checkpointing, the micro-batch and the rollout
batch.

    SFT  one micro-batch of `micro_batch_size` demonstrations × max_length tokens (trained)
    RM   one micro-batch of `micro_batch_size` prompts, each with its K ≤ max_k responses in
         the same forward (trained, a scalar head)
    PPO  policy, reference, reward model, value model and the rollout (models.memory.ppo_memory)
"""

from __future__ import annotations

from pathlib import Path

from rlhf.config import Config, PPOConfig, RMConfig, SFTConfig
from rlhf.errors import UserError
from rlhf.models.memory import (FIELDS, MemoryEstimate, MemoryPlan, check_fits, estimate_memory,
                                format_bytes, parse_bytes, ppo_memory)

STEPS = ("sft", "rm", "ppo")

#: the settings each step's refusal may name (remedies: see models.memory.FIELDS); sharding
#: (FSDP) and a separate frozen precision are not offered: the config has neither
STEP_FIELDS: dict[str, dict[str, str]] = {
    s: {"precision": f"{s}.precision", "lora": f"{s}.lora.r",
        "gradient_checkpointing": f"{s}.gradient_checkpointing",
        "micro_batch": f"{s}.micro_batch_size"} for s in STEPS}
STEP_FIELDS["ppo"]["rollout"] = "ppo.rollout_batch_size"


def plan_precision(setting: str) -> str:
    """The precision a memory plan counts for a section's setting: "auto" is bf16 (on the bf16
    GPUs a plan is for); the others as they are."""
    return "bf16" if setting == "auto" else setting


def model_config(path: str | None, field: str):
    """The transformers config of the model folder at `path` (its config.json: nothing is loaded
    or downloaded), or a UserError naming `field`."""
    if not path:
        raise UserError("the memory plan needs the model: set it to a model folder", field=field)
    if not (Path(path) / "config.json").is_file():
        raise UserError("not a model folder (config.json missing)", path=str(path), field=field)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(path))


def _context_length(conf) -> int:
    """As `rlhf.models.context_length`, from the config alone."""
    for name in ("n_positions", "max_position_embeddings"):
        if getattr(conf, name, None):
            return int(getattr(conf, name))
    return 2048


def supervised_micro_batch(section: SFTConfig | RMConfig, step: str, world_size: int) -> int:
    """Examples per process per forward, as the supervised loop splits the global batch (its
    divisibility rules included, each refusal naming the setting)."""
    if world_size < 1:
        raise UserError("must be at least 1", field="--world-size")
    if section.batch_size % world_size:
        raise UserError(f"batch_size {section.batch_size} must be divisible by the number of "
                        f"processes ({world_size})", field=f"{step}.batch_size")
    per_rank = section.batch_size // world_size
    micro = section.micro_batch_size or per_rank
    if per_rank % micro:
        raise UserError(f"per-process batch {per_rank} (batch_size / processes) must be "
                        f"divisible by micro_batch_size {micro}", field=f"{step}.micro_batch_size")
    return micro


def sft_memory(s: SFTConfig, world_size: int = 1) -> MemoryEstimate:
    """One SFT training step of `s.model` on each device."""
    conf = model_config(s.model, "sft.model")
    micro = supervised_micro_batch(s, "sft", world_size)
    return estimate_memory(conf, precision=plan_precision(s.precision), lora_rank=s.lora.r,
                           n_shards=world_size if s.dist == "fsdp" else 1,
                           gradient_checkpointing=s.gradient_checkpointing, batch_size=micro,
                           seq_len=min(s.max_length, _context_length(conf)), name="SFT model")


def rm_memory(r: RMConfig, world_size: int = 1) -> MemoryEstimate:
    """One reward-model training step of `r.model` (with a scalar head) on each device. The K
    responses of a prompt are one batch element; the estimate depends on the tokens of the
    forward only, so it is counted as one sequence of max_k × max_length tokens, and halving
    the batch means halving `rm.micro_batch_size`."""
    conf = model_config(r.model, "rm.model")
    micro = supervised_micro_batch(r, "rm", world_size)
    seq = min(r.max_length, _context_length(conf))
    return estimate_memory(conf, precision=plan_precision(r.precision), lora_rank=r.lora.r,
                           n_shards=world_size if r.dist == "fsdp" else 1,
                           gradient_checkpointing=r.gradient_checkpointing, batch_size=micro,
                           seq_len=r.max_k * seq, scalar_head=True, name="reward model")


def ppo_memory_plan(p: PPOConfig, world_size: int = 1) -> MemoryPlan:
    """PPO's four models and the rollout on each device (per-process batch sizes); with
    `dist: fsdp` the policy and the value model are sharded over `world_size` processes."""
    policy = model_config(p.policy, "ppo.policy")
    reward = model_config(p.reward_model, "ppo.reward_model") if p.reward_model else None
    return ppo_memory(policy, precision=plan_precision(p.precision), lora_rank=p.lora.r,
                      gradient_checkpointing=p.gradient_checkpointing,
                      n_shards=world_size if p.dist == "fsdp" else 1,
                      micro_batch_size=p.micro_batch_size,
                      rollout_batch_size=p.rollout_batch_size,
                      max_prompt_length=p.max_prompt_length, max_new_tokens=p.max_new_tokens,
                      reward_config=reward, value_model=p.value_model,
                      reward_model=reward is not None)


def memory_plan(cfg: Config, step: str, world_size: int = 1) -> MemoryEstimate | MemoryPlan:
    """The memory plan of `step` ("sft", "rm" or "ppo") as `cfg` configures it."""
    if step == "sft":
        return sft_memory(cfg.sft, world_size)
    if step == "rm":
        return rm_memory(cfg.rm, world_size)
    if step == "ppo":
        return ppo_memory_plan(cfg.ppo, world_size)
    raise ValueError(f"step must be one of {STEPS}, got {step!r}")


def check_memory(plan: MemoryEstimate | MemoryPlan, step: str, device_memory: str | int) -> str:
    """Refuse (UserError naming the setting to change) a plan whose peak exceeds
    `device_memory` ('80GB', '24GiB', bytes); else the line saying it fits."""
    cap = parse_bytes(device_memory, field="--device-memory")
    fields = {**{k: None for k in FIELDS}, **STEP_FIELDS[step]}
    check_fits(plan, cap, section=step, fields=fields)
    return (f"fits: peak {format_bytes(plan.peak)} of {format_bytes(cap)} per device "
            f"({plan.peak / cap:.0%}); add the framework's own overhead on a GPU (0.5-2 GiB)")


def _header(cfg: Config, step: str, world_size: int, plan: MemoryEstimate) -> str:
    """What one process holds in a supervised step's micro-batch, in words."""
    section = cfg.sft if step == "sft" else cfg.rm
    procs = f"{world_size} process{'es' if world_size > 1 else ''}"
    micro = plan.inputs["batch_size"]
    steps = section.batch_size // world_size // micro
    if step == "sft":
        what = f"{micro} demonstrations of up to {plan.inputs['seq_len']} tokens"
    else:
        what = (f"{micro} prompts x up to {cfg.rm.max_k} responses of up to "
                f"{plan.inputs['seq_len'] // cfg.rm.max_k} tokens")
    return (f"{step.upper()} memory plan ({procs}): batch {section.batch_size} = {procs} x "
            f"{steps} micro-batch{'es' if steps > 1 else ''} of {what}")


def memory_report(cfg: Config, step: str, world_size: int = 1,
                  device_memory: str | int | None = None) -> str:
    """The memory plan of `step` as text (its table; for SFT and the RM a line on the batch
    first), then, with `device_memory`, the check's verdict: raises UserError when it does not
    fit."""
    plan = memory_plan(cfg, step, world_size)
    text = plan.table() if step == "ppo" else \
        _header(cfg, step, world_size, plan) + "\n" + plan.table()
    if device_memory is not None:
        text += "\n" + check_memory(plan, step, device_memory)
    return text


def model_context_length(path: str | None, field: str) -> int:
    """The context length in the config.json of the model at `path`."""
    return _context_length(model_config(path, field))


__all__ = ["STEPS", "check_memory", "memory_plan", "memory_report", "model_config",
           "model_context_length", "ppo_memory_plan", "rm_memory", "sft_memory",
           "supervised_micro_batch"]

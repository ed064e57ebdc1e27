"""Configuration: one pydantic model per step, loaded from YAML, overridable from the CLI.

One YAML file may hold every section (the pipeline uses them all); a single-step command reads
only its own section. Every field can be overridden with a dotted path, e.g.
``--set sft.lr=1e-5 --set seed=3``. Unknown keys and wrong types are errors naming the key.

Defaults follow the InstructGPT paper (Ouyang et al. 2022, App. C) where it gives one; the
comment beside each field says where a value comes from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlhf.errors import UserError


#: How a prompt is shown to a model without a chat template (the plain template; {prompt} is
#: replaced). SFT, the RM, PPO and evaluation must all use the same one.
DEFAULT_TEMPLATE = "User: {prompt}\nAssistant:"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyModelConfig(Section):
    """A small model built from scratch (the embedded default)."""
    arch: Literal["gpt2", "llama"] = "gpt2"
    vocab_size: int = 2048          # size of the locally trained byte-level BPE tokenizer
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 256          # context length
    dropout: float = 0.0            # pretraining dropout (SFT sets residual dropout itself)


#: `precision` of every recipe (rlhf.models.precision): "fp32"; "bf16" autocast with fp32
#: weights; "bf16-weights" (frozen models only: PPO's reference and reward model); "auto" = bf16
#: where the hardware runs it natively (bf16 GPUs, AMX / AVX512-BF16 CPUs), else fp32. The
#: embedded configs say fp32, which their figures were measured with.
Precision = Literal["auto", "fp32", "bf16", "bf16-weights"]


class LoRAConfig(Section):
    """A LoRA adapter (rlhf.models.lora) instead of training every weight: `r` = 0 is off."""
    r: int = 0                      # rank (8-64 are usual); 0 trains the full model
    alpha: float = 16.0             # scale alpha / r
    dropout: float = 0.0
    target_modules: list[str] | None = None  # default: every attention and MLP projection


class OptimFields(Section):
    """Optimiser and schedule fields shared by the supervised steps (flat: `sft.lr=1e-5`)."""
    lr: float = 1e-3
    beta1: float = 0.9              # paper: Adam β1 = 0.9 for all models
    beta2: float = 0.95             # paper: Adam β2 = 0.95 for all models
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0   # global-norm clipping; None disables
    warmup_steps: int = 0
    final_lr_fraction: float = 0.1  # paper: cosine decay to 10 % of peak
    precision: Precision = "fp32"   # see `Precision` above
    gradient_checkpointing: bool = False  # recompute activations in the backward: less memory
    dist: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: ddp (whole model per process) or
                                    # fsdp (FSDP2, weights/grads/Adam state sharded per block)


class PretrainConfig(OptimFields):
    """Causal-LM training on plain text (packed blocks of `block_size` tokens)."""
    train_files: list[str] = Field(default_factory=list)
    valid_files: list[str] = Field(default_factory=list)
    tokenizer: str | None = None    # path to a tokenizer; None trains one on train_files
    init: str | None = None         # path to an HF causal LM to continue; None builds `model`
    model: TinyModelConfig = Field(default_factory=TinyModelConfig)
    block_size: int = 128
    batch_size: int = 32            # sequences per optimizer step (global, over all ranks)
    micro_batch_size: int | None = None  # per-rank per-forward; None = batch_size / world size
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float = 2e-3
    warmup_steps: int = 50
    eval_every: int = 200
    save_every: int = 500
    log_every: int = 10
    max_tokens: int | None = None   # cap on training tokens read (None = all)
    # Induction warm-up: a 4-layer model does not learn to copy from its context within a small
    # budget of world text (it never needs to: the corpus states each detail once), and every
    # closed-domain task needs copying. `copy_warmup_steps` optimizer steps on synthetic copy
    # blocks (`rlhf.data.text.repeat_blocks`, constant LR after warm-up) come first and form the
    # induction heads; `copy_fraction` of the corpus phase's blocks stay synthetic so they are
    # kept. 0 and 0.0 = plain pretraining. experiments/induction_formation.py measures when the
    # heads form; experiments/copy_formation.py, copying through the whole pretraining run.
    copy_warmup_steps: int = 0
    copy_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)


class SFTConfig(OptimFields):
    """Step 1: supervised fine-tuning on demonstrations (paper §3.5, App. C.1)."""
    model: str = ""                 # path to the pretrained HF causal LM (+ tokenizer)
    train_file: str = ""            # demonstrations JSONL (or LIMA json with data_format: lima)
    valid_file: str | None = None
    data_format: Literal["auto", "jsonl", "lima"] = "auto"
    prompt_template: str = DEFAULT_TEMPLATE
    loss_on_prompt: bool = False    # paper unspecified; mask prompt tokens by default (spec §2)
    max_length: int = 256           # prompt+response tokens; longer examples are truncated (warned)
    epochs: int = 16                # paper: 16 epochs
    batch_size: int = 32            # paper: batch 32 (global, over all ranks)
    micro_batch_size: int | None = None
    residual_dropout: float = 0.2   # paper: residual dropout 0.2
    lr: float = 9.65e-6             # paper: SFT LR 9.65e-6 (1.3B/6B)
    ptx_fraction: float = 0.0       # App. C.3: the PPO-init SFT mixes 10 % pretraining data
    ptx_files: list[str] = Field(default_factory=list)
    log_every: int = 10
    max_steps: int | None = None    # stop early (for tests); None = all epochs
    lora: LoRAConfig = Field(default_factory=LoRAConfig)  # final/ holds the merged model


class RMConfig(OptimFields):
    """Step 2: reward model from K-way rankings (paper §3.5, App. C.2)."""
    model: str = ""                 # path to the SFT model the RM starts from
    train_file: str = ""            # rankings JSONL (or pairwise chosen/rejected)
    valid_file: str | None = None
    data_format: Literal["auto", "rankings", "pairwise", "hh_rlhf", "tldr"] = "auto"
    skip_invalid: bool = False      # skip (and count) invalid records instead of stopping
    demonstrations_file: str | None = None  # for normalisation: demos score mean 0 (§3.5)
    prompt_template: str = DEFAULT_TEMPLATE
    max_length: int = 256
    max_k: int = 9                  # paper: K = 4..9
    epochs: int = 1                 # paper: 1 epoch (more overfits)
    batch_size: int = 64            # paper: 64 prompts, all C(K,2) pairs of a prompt in one element
    micro_batch_size: int | None = None
    lr: float = 9e-6                # paper: RM LR 9e-6
    grad_clip: float | None = None
    log_every: int = 10
    eval_every: int | None = None   # held-out metrics every N steps (and always at the end)
    save_every: int | None = None   # resumable checkpoints every N steps (None: final only)
    max_steps: int | None = None
    lora: LoRAConfig = Field(default_factory=LoRAConfig)  # on the backbone; the head trains fully


class PPOConfig(Section):
    """Step 3: PPO / PPO-ptx against the reward model (paper §3.5, App. C.4)."""
    policy: str = ""                # PPO init = SFT model; also the frozen KL reference
    reference: str | None = None    # KL reference if not the init (later rounds start from PPO)
    reward_model: str | None = None # RM path; the value model is initialised from it
    reward_fn: str | None = None    # or "module:function" taking (prompts, responses) -> scores
    prompts_file: str = ""
    prompt_template: str = DEFAULT_TEMPLATE
    ptx_files: list[str] = Field(default_factory=list)  # pretraining text for PPO-ptx
    # batch plan
    iterations: int = 500           # paper: 256k episodes / 512 = 500 iterations (derived)
    episodes_per_iteration: int = 512   # paper: batch 512 episodes
    minibatch_size: int = 64        # paper: minibatch 64
    ppo_epochs: int = 1             # paper: 1 inner epoch
    micro_batch_size: int = 8       # gradient accumulation unit (per rank)
    rollout_batch_size: int = 64    # prompts generated at once (per rank)
    # sampling
    max_new_tokens: int = 64
    max_prompt_length: int = 192
    temperature: float = 1.0        # paper: rollout temperature 1
    precision: Precision = "fp32"   # of every forward (see `Precision`); under bf16 the
                                    # invariants use BF16_RATIO_TOL (train/ppo/checks.py)
    gradient_checkpointing: bool = False  # for the trained policy and value model
    dist: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: fsdp shards the policy and the value
                                    # model (FSDP2); the reference and the RM stay whole
    lora: LoRAConfig = Field(default_factory=LoRAConfig)  # policy and value model; the KL
                                    # reference is then the policy with its adapter disabled
    no_eos_penalty: float | None = -1.0  # score for responses without EOS (spec 7.19); None = off
    # reward
    beta_kl: float = 0.02           # paper: β = 0.02, fixed
    adaptive_kl: bool = False       # LMHP controller instead of fixed β
    kl_target: float = 6.0
    kl_horizon: int = 10000
    clamp_kl: bool = False          # AlpacaFarm clamps per-token KL ≥ 0 (not the paper)
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"  # per-token KL in the penalty: k1 = log-ratio
                                    # (the paper's); k2, k3: Schulman's estimators (rl/kl.py)
    whiten_rewards: bool = False
    # advantages and losses
    gamma: float = 1.0              # paper: no discount
    gae_lambda: float = 0.95        # LMHP / N+ default (paper unspecified)
    whiten_advantages: bool = True
    clip_range: float = 0.2         # paper: clip ratio 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1            # only for the shared-trunk value head
    value_model: Literal["separate", "shared"] = "separate"  # paper: separate, init from RM
    critic_warmup_iterations: int = 0  # the first N of `iterations` train only the value model
                                    # (policy frozen; OpenRLHF's freezing_actor_steps). Not in
                                    # the paper; an RM scores whole answers, not prefixes
    # optimisation
    lr: float = 9.65e-6             # policy LR (App. E.9 sweeps 2.55e-6..2.55e-5)
    value_lr: float = 9e-6          # paper: value function LR 9e-6
    lr_schedule: Literal["constant_warmup", "linear"] = "constant_warmup"
    warmup_iterations: int = 10     # paper: warmup over the first 10 iterations from 0.1×
    adam_style: Literal["torch", "tf"] = "torch"
    beta1: float = 0.9              # paper: Adam β1 = 0.9 for all models
    beta2: float = 0.95             # paper: Adam β2 = 0.95 for all models
    adam_eps: float = 1e-5
    grad_clip: float | None = None  # paper: unspecified; LMHP: none
    ema_decay: float | None = 0.992 # paper: EMA of weights 0.992; None disables
    # PPO-ptx
    gamma_ptx: float = 0.0          # paper: 27.8 under OpenAI's normalisation; 0 = plain PPO
    ptx_ratio: int = 8              # paper: 8 pretraining sequences per episode
    ptx_block_size: int = 128
    # bookkeeping
    check_invariants: bool = True   # KL = 0 at iteration 0, ratio = 1 on the first minibatch
    save_every: int = 50            # iterations between resumable checkpoints
    keep_checkpoints: int = 3       # newest checkpoints kept (0 = all)
    log_every: int = 1


class EvalConfig(Section):
    max_new_tokens: int = 64
    temperature: float = 0.0        # App. D: T = 0 for evaluation (greedy)
    n_prompts: int | None = None


class PipelineConfig(Section):
    """The whole loop on the Instruction World (or your own files): `rlhf pipeline`."""
    world: dict[str, Any] = Field(default_factory=dict)  # options for rlhf.world.build_world
    n_labelers: int = 40            # simulated labeler pool (paper: ~40 labelers)
    rounds: int = 2                 # rounds of (fresh comparisons -> RM -> PPO); paper repeats 2-3
    k_min: int = 4                  # paper: K = 4..9 responses ranked per prompt
    k_max: int = 9
    rm_prompts_per_round: int = 400
    rm_valid_fraction: float = 0.15  # share of ranked prompts held out for RM validation
    sample_temperature: float = 1.0
    sample_max_new_tokens: int = 48
    select_sft_by_rm: bool = True   # paper §3.5: pick the SFT epoch by RM score, not val loss
    select_prompts: int = 64        # validation prompts used for that selection
    select_min_rm_accuracy: float = 0.55  # ...but only with an RM at least this accurate on
                                    # held-out rankings; otherwise keep the last epoch
    ppo_ptx: bool = True            # also train PPO-ptx (gamma_ptx from `ppo_ptx_gamma`)
    ppo_ptx_gamma: float = 1.0      # γ_ptx under our per-token-mean normalisation
    ppo_iterations_later_rounds: int | None = None  # default: same as ppo.iterations
    eval_prompts: int | None = None # test prompts evaluated (None = all)
    curve_prompts: int = 48         # prompts for the proxy/gold-vs-sqrt(KL) curve per checkpoint
    copy_probe_stories: int = 50    # stories for the copy probe (x 2 shapes x 5 details); 0: off
    base_cache: bool = True         # reuse a base pretrained on the same corpus with the same
                                    # pretrain section and seed (the paper's GPT-3 is an input)
    cache_dir: str | None = None    # default: $RLHF_CACHE_DIR, else $XDG_CACHE_HOME/rlhf,
                                    # else ~/.cache/rlhf


class Config(Section):
    """The root: `seed`, the output folder and one section per step."""
    seed: int = 0
    out: str | None = None
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    rm: RMConfig = Field(default_factory=RMConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    extra: dict[str, Any] = Field(default_factory=dict)  # free-form, for pipelines and plug-ins


def _parse_value(text: str) -> Any:
    """Parse an override value as YAML (so 1e-5, true, [a, b], null work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like key.path=value", field=item)
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise UserError(f"'{p}' is not a section", field=key)
            node = child
        node[parts[-1]] = _parse_value(value)
    return data


def format_validation_error(err: ValidationError, source: str | None) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        else:
            msg = e["msg"]
            if "input" in e and e["type"] != "missing":
                msg += f" (got {e['input']!r})"
        lines.append(f"'{key}': {msg}")
    where = f"{source}: " if source else ""
    return where + "invalid config: " + "; ".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> Config:
    """Read a YAML config (optional), apply dotted overrides, validate. Errors name the key."""
    data: dict = dict(base or {})
    source = None
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.exists():
            raise UserError("config file not found", path=source)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise UserError(f"malformed YAML: {getattr(e, 'problem', e)}", path=source,
                            line=mark.line + 1 if mark else None) from None
        if not isinstance(loaded, dict):
            raise UserError("a config file must be a mapping of sections", path=source)
        data.update(loaded)
    apply_overrides(data, overrides or [])
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(e, source)) from None


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

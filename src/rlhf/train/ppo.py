"""Step 3, PPO / PPO-ptx: optimise the SFT policy against the reward model (paper §3.5, App. C.4).

    policy  π   = the SFT model (dropout off)             ref π_ref = a frozen copy (KL reference)
    reward  r   = the RM (normalised score at the last valid token) or any callable
                  `(prompts, responses) -> scores`        value V = a separate copy of the RM
                  (paper) or a zero-initialised head on the policy trunk ("shared", [LMHP])

    for each iteration (paper: 512 episodes, 500 iterations):
        prompts  <- episodes_per_iteration prompts (a fixed function of seed and iteration)
        rollout  <- sample y ~ π(·|x) with the KV cache, T, stop at EOS; PAD after the first EOS;
                    old log-probs = the sampler's own (temperature-scaled, PAD logit removed)
        score    <- r(x, y) (−1 when y has no EOS), log π_ref (one forward), V (one forward)
        rewards  r_t = −β·(log π − log π_ref) on every response token + r(x, y) at the last one
        GAE      γ = 1, λ = 0.95 -> advantages (whitened over valid tokens), returns
        for each PPO epoch (paper: 1), each minibatch of a fresh permutation (paper: 64):
            PPO loss (clip 0.2) + clipped value loss, accumulated over micro-batches
            + γ_ptx · NLL on `ptx_ratio` pretraining blocks per episode (PPO-ptx), same gradient
            one optimizer step (policy; value has its own optimiser), EMA of the policy weights
        β update (adaptive controller, if on); LR schedule (constant + warmup, or linear decay)

Runtime invariants (checked every run, `check_invariants`): KL = 0 at iteration 0; on the first
minibatch of every iteration the training log-probs reproduce the rollout log-probs (ratio = 1
within 1e-5); a NaN/inf in a score, reward, loss or gradient stops the run naming where.

Conventions: `[B, T]` response tensors; `mask` = 1 up to and including the first EOS. The value
of response token t is read at the position *before* it (the state the token was chosen in), so
V_t estimates the return of y_t.. (the [LMHP]/[N+] convention). Under `torchrun` every process
rolls out `episodes_per_iteration / world_size` episodes, advantages are whitened with global
moments, and DDP averages the gradients.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import inspect
import math
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from rlhf import rl
from rlhf.config import Config, PPOConfig, dump_config
from rlhf.data.format import decode_response, encode_prompt
from rlhf.errors import UserError
from rlhf.generation import generate, policy_logits
from rlhf.io import atomic_path, read_jsonl, require_str, write_text_atomic
from rlhf.models import (context_length, disable_dropout, load_model, load_tokenizer,
                         position_ids_from_mask)
from rlhf.runs import Run
from rlhf.train import dist
from rlhf.train.common import _rng_state, _set_rng_state, latest_checkpoint, mark_latest
from rlhf.train.ppo_plan import PPOPlan

RewardFn = Callable[[list[str], list[str]], Any]

#: On the first minibatch of an iteration, mean |ratio − 1| over valid tokens allowed (fp32): §8.1.
RATIO_TOL = 1e-5
#: ... and the largest single-token deviation allowed in fp32 (rounding of the KV-cache path).
RATIO_MAX_TOL = 1e-3
#: At iteration 0 (policy = reference), mean per-token |KL| allowed; max per token: RATIO_MAX_TOL.
KL0_TOL = 1e-6
#: The same two under bf16 autocast, where the sampler (KV cache, one token at a time) and the
#: training forward (whole sequence) round differently: ~10x the rounding measured on the
#: benchmark model (max |ratio - 1| 0.008, mean |log-ratio| 0.0016; benchmarks/RESULTS.md), far
#: below what a real mismatch (temperature, dropout, positions, stale weights) produces.
BF16_RATIO_TOL = 0.1
BF16_KL0_TOL = 5e-3


class NonFiniteError(FloatingPointError):
    """A NaN or inf appeared in a score, reward, loss or gradient; the message says where."""


class InvariantError(RuntimeError):
    """A PPO runtime invariant (KL = 0 at iteration 0, ratio = 1 on the first minibatch) failed."""


# ============================================================================ models

class PolicyWithValueHead(nn.Module):
    """The "shared" option ([LMHP]): the policy's trunk feeds a zero-initialised scalar head.

    forward returns (logits of the last `logits_to_keep` positions, values at every position).
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        d = lm.config.hidden_size
        self.v_head = nn.Linear(d, 1, dtype=next(lm.parameters()).dtype)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids, attention_mask, position_ids,
                logits_to_keep: int | Tensor = 0):
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids, use_cache=False, output_hidden_states=True,
                      logits_to_keep=logits_to_keep)
        values = self.v_head(out.hidden_states[-1]).squeeze(-1).float()
        return out.logits, values


class TokenValues(nn.Module):
    """`RewardModel.token_values` as a module forward (so DDP sees and syncs the call)."""

    def __init__(self, rm: nn.Module):
        super().__init__()
        self.rm = rm

    def forward(self, input_ids, attention_mask):
        return self.rm.token_values(input_ids, attention_mask)


@dataclass
class Actors:
    """Everything that acts in PPO. `value` is None in shared mode (the head is in `policy`)."""
    tokenizer: Any
    policy: nn.Module                    # causal LM, or PolicyWithValueHead ("shared")
    ref: nn.Module                       # frozen causal LM
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


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def _check_same_tokenizer(tokenizer, path: str) -> None:
    p = Path(path)
    if not ((p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()):
        return
    other = load_tokenizer(p)
    if len(other) != len(tokenizer) or other.get_vocab() != tokenizer.get_vocab():
        raise UserError("the reward model's tokenizer differs from the policy's; PPO scores the "
                        "policy's token ids directly, so both must share one tokenizer",
                        path=str(p), field="ppo.reward_model")


# ============================================================================ speed (CPU)

class _GeluTanh(nn.Module):
    """F.gelu(approximate="tanh"): one fused kernel for GPT-2's "gelu_new"."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")


def fuse_activations(model: nn.Module) -> int:
    """Swap transformers' Python tanh-GELU modules (`NewGELUActivation` = GPT-2's "gelu_new",
    `FastGELUActivation`: ~8 elementwise kernels each way, as many saved tensors) for the fused
    `F.gelu(approximate="tanh")`: the same function (|Δ| ≤ 3e-7 in fp32), ~3× less time in the
    activation forward and backward. No weight and no saved config changes. Returns the count."""
    try:
        from transformers.activations import FastGELUActivation, NewGELUActivation
    except ImportError:        # pragma: no cover - transformers renamed them
        return 0
    n = 0
    for mod in list(model.modules()):
        for name, child in list(mod.named_children()):
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(mod, name, _GeluTanh())
                n += 1
    return n


def _contiguous_input(module: nn.Module, args: tuple):
    x = args[0] if args else None
    if isinstance(x, Tensor) and not x.is_contiguous():
        return (x.contiguous(), *args[1:])
    return None


def contiguous_unembedding(model: nn.Module) -> None:
    """Make the unembedding's input contiguous: HF slices the hidden states for
    `logits_to_keep`, and a strided 3-D input sends `F.linear` to a batched matmul that is ~5×
    slower on CPU than the one big matmul it becomes after a (small) copy."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Module) and not getattr(head, "_rlhf_contiguous", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._rlhf_contiguous = True


def tune_cpu_allocator() -> bool:
    """glibc malloc hands every freed block above its mmap threshold (128 KiB, adapting up to
    32 MiB) back to the kernel, so each activation of every step is page-faulted in afresh:
    memory-bound kernels (the [B, T, vocab] log-softmax, GELU, copies) then run at about half
    speed. Raise the mmap and trim thresholds (what jemalloc and tcmalloc do by default): the
    heap keeps its peak size. Linux/glibc only; `RLHF_CPU_MALLOC=0` leaves malloc alone."""
    if not sys.platform.startswith("linux") or os.environ.get("RLHF_CPU_MALLOC", "1") == "0":
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and \
            bool(libc.mallopt(m_trim_threshold, 1 << 31))
    except (OSError, AttributeError):    # not glibc
        return False


def cpu_threads_hint(load: float | None = None) -> str | None:
    """A warning when more than one torch thread shares busy cores under OpenMP's default
    spin-waiting: on a 2-core box with another job running, 2 threads made `generate` 20x and
    training 2.5x slower than 1 thread (benchmarks/RESULTS.md). None when nothing to say."""
    n = torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                  # not Linux
        cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if load is None and hasattr(os, "getloadavg") else (load or 0.0)
    if n <= 1 or load + n <= cores + 1 or \
            os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return None
    return (f"note: {n} torch threads on {cores} cores with load average {load:.1f} from other "
            "processes: OpenMP threads spin while they wait, so sharing busy cores can slow "
            "every step several-fold. Start with OMP_WAIT_POLICY=PASSIVE, or use fewer threads "
            "(OMP_NUM_THREADS / torch.set_num_threads).")


def autocast_context(dtype: torch.dtype | None, device: torch.device | None = None):
    """`torch.autocast` to `dtype` on `device` (default: this process's), or a null context.

    On CPU with gradients on, attention also takes the math kernel: the flash kernel's bf16
    backward is ~2x slower there than the math one (which computes in float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    dev = torch.device(device) if device is not None else dist.device()
    if dev.type != "cpu" or not torch.is_grad_enabled() or os.environ.get("RLHF_SDPA_FLASH"):
        return torch.autocast(dev.type, dtype=dtype)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(dev.type, dtype=dtype))
    stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    return stack


AUTOCAST = {"off": None, "none": None, "fp32": None, "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16}


def _autocast_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if str(value).lower() not in AUTOCAST:
        raise UserError(f"autocast must be one of {sorted(AUTOCAST)}, got {value!r}",
                        field="ppo.autocast")
    return AUTOCAST[str(value).lower()]


def build_actors(p: PPOConfig, reward_fn: RewardFn | None = None,
                 autocast: str | torch.dtype | None = None) -> Actors:
    """Load the policy, its frozen reference, the reward (RM or callable) and the value model."""
    from rlhf.models.reward import RewardModel, load_reward_model

    if not p.policy:
        raise UserError("say which model to optimise: ppo.policy (the SFT model folder)",
                        field="ppo.policy")
    dev = dist.device()
    tokenizer = load_tokenizer(p.policy)
    lm = load_model(p.policy)
    disable_dropout(lm)                                   # spec 7.9
    if p.reference and p.reference != p.policy:
        # Later rounds start from the previous PPO policy; the KL reference stays the SFT model.
        _check_same_tokenizer(tokenizer, p.reference)
        ref = _freeze(load_model(p.reference))
    else:
        ref = _freeze(copy.deepcopy(lm))                  # spec 7.27: frozen, eval, no grad
    if reward_fn is None and p.reward_fn:
        reward_fn = load_reward_fn(p.reward_fn)
    reward_model = None
    if reward_fn is None:
        if not p.reward_model:
            raise UserError("say how episodes are scored: ppo.reward_model (an RM folder) or "
                            "ppo.reward_fn ('module:function')", field="ppo.reward_model")
        _check_same_tokenizer(tokenizer, p.reward_model)
        reward_model = _freeze(load_reward_model(p.reward_model))
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
                _check_same_tokenizer(tokenizer, p.reward_model)
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
        value = TokenValues(vm)
        policy = lm
    # speed: fused GELU everywhere; the unembedding gets a contiguous input
    for m in (policy, ref, value, reward_model):
        if m is not None:
            fuse_activations(m)
    for m in (lm, ref):
        contiguous_unembedding(m)
    if autocast is None:
        autocast = getattr(p, "autocast", None)     # a config field, where the config has one
    actors = Actors(tokenizer, policy.to(dev), ref.to(dev), value.to(dev) if value else None,
                    reward_model.to(dev) if reward_model is not None else None, reward_fn, name,
                    _autocast_dtype(autocast))
    return actors


# ============================================================================ data

def load_prompts(path: str) -> list[str]:
    """Prompts from JSONL records with a "prompt" field, or a text file with one per line."""
    if not path:
        raise UserError("say where the prompts are: ppo.prompts_file", field="ppo.prompts_file")
    p = Path(path)
    if not p.exists():
        raise UserError("prompts file not found", path=str(p), field="ppo.prompts_file")
    if p.suffix in (".jsonl", ".json") or p.name.endswith(".jsonl.gz"):
        prompts = [require_str(obj, "prompt", str(p), line) for line, obj in read_jsonl(p)]
    else:
        prompts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    if not prompts:
        raise UserError("no prompts in this file", path=str(p), field="ppo.prompts_file")
    return prompts


def encode_prompts(tokenizer, prompts: list[str], template: str,
                   max_length: int) -> tuple[list[str], list[list[int]], int]:
    """Formatted, tokenised prompts; longer than `max_length` tokens are dropped (paper: > 1k)."""
    kept, ids, dropped = [], [], 0
    for text in prompts:
        enc = encode_prompt(tokenizer, text, template)
        if not enc or len(enc) > max_length:
            dropped += 1
            continue
        kept.append(text)
        ids.append(enc)
    if not kept:
        raise UserError(f"every prompt is longer than ppo.max_prompt_length ({max_length}) "
                        "tokens (or empty)", field="ppo.max_prompt_length")
    return kept, ids, dropped


def _seed(*parts: int) -> int:
    s = 0x5EED
    for x in parts:
        s = (s * 1_000_003 + int(x) + 1) % (2**61 - 1)
    return s


def iteration_prompts(n_prompts: int, seed: int, iteration: int, count: int) -> list[int]:
    """Prompt indices of one iteration: a slice of an endless stream of seeded permutations,
    so every prompt is used once per pass, and iteration i is the same after a resume."""
    out, perms = [], {}
    for pos in range(iteration * count, (iteration + 1) * count):
        epoch, k = divmod(pos, n_prompts)
        if epoch not in perms:
            order = list(range(n_prompts))
            random.Random(_seed(seed, 7, epoch)).shuffle(order)
            perms[epoch] = order
        out.append(perms[epoch][k])
    return out


# ============================================================================ episodes

@dataclass
class Episodes:
    """A batch of episodes: left-padded queries, right-padded responses and per-token data."""
    query: Tensor            # [N, Tq] left padded
    query_mask: Tensor       # [N, Tq]
    response: Tensor         # [N, Tr] PAD after the first EOS
    mask: Tensor             # [N, Tr] 1 up to and including the first EOS
    logprobs: Tensor         # [N, Tr] rollout log π (temperature-scaled)
    ref_logprobs: Tensor     # [N, Tr] log π_ref
    values: Tensor           # [N, Tr] V before the update
    scores: Tensor           # [N] score used as reward (after the no-EOS penalty)
    raw_scores: Tensor       # [N] score before the penalty
    has_eos: Tensor          # [N] bool
    advantages: Tensor | None = None
    returns: Tensor | None = None
    rewards: Tensor | None = None

    def __len__(self) -> int:
        return self.query.size(0)

    def select(self, idx: Tensor) -> "Episodes":
        """Rows `idx`, with all-padding columns trimmed (left of queries, right of responses)."""
        qm, rm = self.query_mask[idx], self.mask[idx]
        q0 = int(qm.any(0).long().argmax())
        r1 = int(rm.any(0).nonzero().max()) + 1
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                out[f.name] = None
            elif f.name in ("query", "query_mask"):
                out[f.name] = v[idx][:, q0:]
            elif v.dim() == 2:
                out[f.name] = v[idx][:, :r1]
            else:
                out[f.name] = v[idx]
        return Episodes(**out)

    @staticmethod
    def cat(chunks: Sequence["Episodes"], pad_id: int) -> "Episodes":
        tq = max(c.query.size(1) for c in chunks)
        tr = max(c.response.size(1) for c in chunks)
        out = {}
        for f in fields(Episodes):
            vals = [getattr(c, f.name) for c in chunks]
            if vals[0] is None:
                out[f.name] = None
                continue
            if f.name in ("query", "query_mask"):
                fill = pad_id if f.name == "query" else 0
                vals = [torch.nn.functional.pad(v, (tq - v.size(1), 0), value=fill) for v in vals]
            elif vals[0].dim() == 2:
                fill = pad_id if f.name == "response" else 0
                vals = [torch.nn.functional.pad(v, (0, tr - v.size(1)), value=fill) for v in vals]
            out[f.name] = torch.cat(vals, 0)
        return Episodes(**out)


def _logits_to_keep_mode(model: nn.Module) -> str | None:
    """How the model's forward takes `logits_to_keep`: "tensor" (positions, so exactly the
    response's are unembedded), "int" (the last n), or None (not at all)."""
    m = dist.unwrap(model)
    if isinstance(m, PolicyWithValueHead):
        m = m.lm
    return _keep_mode_of(type(m))


_KEEP_MODES: dict[type, str | None] = {}


def _keep_mode_of(cls: type) -> str | None:
    if cls not in _KEEP_MODES:
        try:
            param = inspect.signature(cls.forward).parameters.get("logits_to_keep")
        except (TypeError, ValueError):
            param = None
        _KEEP_MODES[cls] = None if param is None else \
            ("tensor" if "Tensor" in str(param.annotation) else "int")
    return _KEEP_MODES[cls]


def _supports_logits_to_keep(model: nn.Module) -> bool:
    return _logits_to_keep_mode(model) is not None


def _scaled_logits_(logits: Tensor, temperature: float, pad_id: int | None) -> Tensor:
    """`policy_logits` on a model output nobody else holds: in place when it is float32 (no
    [B, T, vocab] copy), else (bf16 under autocast) on its float32 copy."""
    if logits.dtype != torch.float32:
        return policy_logits(logits, temperature, pad_id)
    if pad_id is not None and pad_id < logits.size(-1):
        logits[..., pad_id] = float("-inf")
    if temperature > 0 and temperature != 1:
        logits.div_(temperature)
    return logits


def token_logprobs(logits: Tensor, ids: Tensor) -> Tensor:
    """log softmax(logits)[ids] per position, as one fused log-softmax + NLL (what
    `F.cross_entropy` runs): the same kernels as the sampler's log-softmax, and half the time
    and temporaries of a gather minus a logsumexp, forward and backward. float32 `logits`."""
    v = logits.size(-1)
    return -F.cross_entropy(logits.reshape(-1, v), ids.reshape(-1).long(),
                            reduction="none").view(ids.shape)


# -------------------------------------------------- fused unembedding + log-softmax (CPU)
#
# The response log-probs need log softmax over the vocabulary at every response token. Done as
# "logits = lm_head(h); log_softmax; gather" the [N, vocab] float32 tensor is written and read
# some ten times (logits, PAD fill, log-softmax, its backward, NLL's zero-filled gradient, …),
# which on CPU costs more than the unembedding matmuls themselves. `fused_head_logprobs` does the
# one matmul, then the log-sum-exp, gather, entropy and (backward) softmax gradient a cache-sized
# block of rows at a time, in place on the logits, and the two gradient matmuls at full size.

#: Causal LMs whose logits are exactly `get_output_embeddings()(base_model(...)[0])`.
FUSED_HEAD_CLASSES = frozenset({"GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM",
                                "Qwen2ForCausalLM", "Qwen3ForCausalLM"})


def _block_rows(v: int) -> int:
    return max(8, (1 << 18) // max(v, 1))       # ~1 MiB of float32 logits per block


def _autocast_dtype_of(t: Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def _head_weight(weight: Tensor, dt: torch.dtype) -> Tensor:
    """The unembedding in the matmul dtype; bf16/fp16 rows padded to a multiple of 64 (a vocab of
    8194 runs the bf16 matmul at half the speed of 8192)."""
    w = weight.detach().to(dt)
    v = w.size(0)
    if dt in (torch.bfloat16, torch.float16) and v % 64:
        w = torch.cat([w, w.new_zeros(64 - v % 64, w.size(1))])
    return w


def _scale_block_(z: Tensor, v: int, temperature: float, pad_id: int | None) -> Tensor:
    """policy_logits in place on a float32 block: PAD and vocab padding -> -inf, ÷T."""
    if pad_id is not None and pad_id < v:
        z[:, pad_id] = float("-inf")
    if z.size(1) > v:
        z[:, v:] = float("-inf")
    if temperature > 0 and temperature != 1:
        z.div_(temperature)
    return z


class _FusedHeadLogprobs(torch.autograd.Function):
    """(h [N, d], unembedding weight [V, d], targets [N]) -> log π(target) [N], entropy [N]."""

    @staticmethod
    def forward(ctx, h, weight, targets, temperature, pad_id, want_entropy):
        v = weight.size(0)
        dt = _autocast_dtype_of(h)
        hd, w = h.detach().to(dt), _head_weight(weight, dt)
        z = hd @ w.t()                                   # [N, Vp], one matmul
        n, rows = z.size(0), _block_rows(z.size(1))
        lp = torch.empty(n, dtype=torch.float32, device=z.device)
        lse = torch.empty_like(lp)
        ent = torch.empty_like(lp) if want_entropy else None
        exact = z.dtype == torch.float32
        for s in range(0, n, rows):
            zb = z[s:s + rows]
            zb = _scale_block_(zb if exact else zb.float(), v, temperature, pad_id)
            lb = torch.logsumexp(zb, -1)
            lse[s:s + rows] = lb
            lp[s:s + rows] = zb.gather(1, targets[s:s + rows, None]).squeeze(1) - lb
            if ent is not None:
                ent[s:s + rows] = torch.special.entr(torch.exp(zb - lb[:, None])).sum(-1)
        ctx.save_for_backward(hd, w, targets, lse, z)
        ctx.cfg = (v, temperature, pad_id, exact, h.dtype, weight.dtype)
        ctx.used = False
        if ent is not None:
            ctx.mark_non_differentiable(ent)
        return lp, ent

    @staticmethod
    def backward(ctx, g, _g_ent):
        if ctx.used:
            raise RuntimeError("fused_head_logprobs: backward twice (its logits are reused in "
                               "place); recompute the forward instead of retain_graph=True")
        ctx.used = True
        hd, w, targets, lse, z = ctx.saved_tensors
        v, temperature, pad_id, exact, h_dtype, w_dtype = ctx.cfg
        g = g.float()
        n, rows = z.size(0), _block_rows(z.size(1))
        for s in range(0, n, rows):
            gb = g[s:s + rows, None]
            zb = z[s:s + rows] if exact else _scale_block_(z[s:s + rows].float(), v,
                                                          temperature, pad_id)
            # d log π(y) / dz = onehot(y) − softmax(z), then ÷T for the scaling
            p = zb.sub_(lse[s:s + rows, None]).exp_().mul_(-gb)
            p.scatter_add_(1, targets[s:s + rows, None], gb)
            if temperature > 0 and temperature != 1:
                p.div_(temperature)
            if not exact:
                z[s:s + rows] = p                        # back into the logits' storage
        grad_h = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_h = (z @ w).to(h_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (z.t() @ hd)[:v].to(w_dtype)
        return grad_h, grad_w, None, None, None, None


def fused_head_logprobs(h: Tensor, weight: Tensor, targets: Tensor, temperature: float = 1.0,
                        pad_id: int | None = None, want_entropy: bool = False
                        ) -> tuple[Tensor, Tensor | None]:
    """log softmax(policy_logits(h @ weightᵀ))[targets] (float32) and, if asked, the entropy of
    that distribution, without [N, vocab] temporaries beyond the logits themselves. The matmuls
    run in the autocast dtype when autocast is on (the soft-max in float32)."""
    h2, t2 = h.reshape(-1, h.size(-1)), targets.reshape(-1).long()
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        lp, ent = _FusedHeadLogprobs.apply(h2, weight, t2, temperature, pad_id, want_entropy)
    else:
        with torch.no_grad():
            lp, ent = _FusedHeadLogprobs.forward(_NoCtx(), h2, weight, t2, temperature, pad_id,
                                                 want_entropy)
    return lp.view(targets.shape), None if ent is None else ent.view(targets.shape)


class _NoCtx:
    """A stand-in autograd ctx for running the forward alone (no graph, nothing kept)."""

    def save_for_backward(self, *tensors):
        pass

    def mark_non_differentiable(self, *tensors):
        pass


def _fused_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Linear] | None:
    """(causal LM, base transformer, unembedding) when the fused path applies to `model`: an
    allow-listed LM (or PolicyWithValueHead on one), not wrapped in DDP (whose forward must run),
    with a bias-free linear unembedding."""
    if dist.unwrap(model) is not model:
        return None
    lm = model.lm if isinstance(model, PolicyWithValueHead) else model
    if type(lm).__name__ not in FUSED_HEAD_CLASSES:
        return None
    base = getattr(lm, "base_model", None)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if base is None or base is lm or not isinstance(head, nn.Linear) or head.bias is not None \
            or getattr(lm.config, "final_logit_softcapping", None):
        return None
    return lm, base, head


def score_response(model: nn.Module, query: Tensor, query_mask: Tensor, response: Tensor,
                   response_mask: Tensor, temperature: float, pad_id: int | None,
                   want_entropy: bool = False, keep_logits: bool | str | None = None,
                   fused: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One forward -> (log π(y_t) [B, Tr], entropy [B, Tr] if asked, values [B, Tr] if shared).

    What `forward_response` + `token_logprobs` + `entropy` compute, through the fused head
    (`fused_head_logprobs`) where `_fused_parts` allows it."""
    parts = _fused_parts(model) if fused else None
    if parts is None:
        logits, values = forward_response(model, query, query_mask, response, response_mask,
                                          temperature, pad_id, keep_logits)
        lp = token_logprobs(logits, response)
        ent = None
        if want_entropy:
            with torch.no_grad():
                ent = entropy(logits.detach())
        return lp, ent, values
    _, base, head = parts
    ids = torch.cat([query, response], 1)
    mask = torch.cat([query_mask, response_mask], 1)
    tq, tr = query.size(1), response.size(1)
    hidden = base(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                  use_cache=False).last_hidden_state
    lp, ent = fused_head_logprobs(hidden[:, tq - 1:tq + tr - 1], head.weight, response,
                                  temperature, pad_id, want_entropy)
    values = None
    if isinstance(model, PolicyWithValueHead):
        values = model.v_head(hidden[:, tq - 1:-1]).squeeze(-1).float()
    return lp, ent, values


def forward_response(model: nn.Module, query: Tensor, query_mask: Tensor, response: Tensor,
                     response_mask: Tensor, temperature: float, pad_id: int | None,
                     keep_logits: bool | str | None = None) -> tuple[Tensor, Tensor | None]:
    """One forward over query+response -> (logits scoring each response token, values).

    The logits are `policy_logits` (PAD removed, divided by T: spec 7.5, 7.10), i.e. exactly what
    the sampler drew from; row t scores `response[:, t]`. Values (shared head only) are read at
    the position before each response token. Only the response positions are unembedded.
    `keep_logits`: None/True (ask the model), "tensor", "int", or False (full logits).
    """
    ids = torch.cat([query, response], 1)
    mask = torch.cat([query_mask, response_mask], 1)
    pos = position_ids_from_mask(mask)
    tq, tr = query.size(1), response.size(1)
    mode = _logits_to_keep_mode(model) if keep_logits in (None, True) else (keep_logits or None)
    if mode == "tensor":      # exactly the tr positions that score a response token
        kw = {"logits_to_keep": torch.arange(tq - 1, tq + tr - 1, device=ids.device)}
    elif mode == "int":
        kw = {"logits_to_keep": tr + 1}
    else:
        kw = {}
    if isinstance(dist.unwrap(model), PolicyWithValueHead):
        logits, values = model(ids, mask, pos, **kw)
        values = values[:, tq - 1:-1]
    else:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                       **kw).logits
        values = None
    if mode != "tensor":
        logits = logits[:, -(tr + 1):-1]
    return _scaled_logits_(logits, temperature, pad_id), values


def response_logprobs(model: nn.Module, query: Tensor, query_mask: Tensor, response: Tensor,
                      response_mask: Tensor, temperature: float = 1.0,
                      pad_id: int | None = None) -> Tensor:
    """log π(y_t | x, y_<t) of the response tokens under `model` (temperature-scaled, PAD
    removed): the training-side twin of the sampler's log-probs."""
    return score_response(model, query, query_mask, response, response_mask, temperature,
                          pad_id)[0]


def value_forward(value: nn.Module, query: Tensor, query_mask: Tensor, response: Tensor,
                  response_mask: Tensor) -> Tensor:
    """V_t of a separate value model: its head at the position before response token t."""
    ids = torch.cat([query, response], 1)
    mask = torch.cat([query_mask, response_mask], 1)
    tq = query.size(1)
    return value(ids, mask)[:, tq - 1:-1]


def entropy(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) per position; −inf logits (PAD) contribute exactly 0."""
    return torch.special.entr(torch.softmax(logits.float(), -1)).sum(-1)


class Timer:
    """Wall time per phase (synchronising the GPU, if any, so the split is honest)."""

    def __init__(self):
        self.t: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t[name] += time.perf_counter() - t0


def _non_finite_rows(x: Tensor) -> list[int]:
    bad = ~torch.isfinite(x)
    if bad.dim() > 1:
        bad = bad.flatten(1).any(1)
    return bad.nonzero().flatten().tolist()


def _reward_fn_kwargs(fn: Callable) -> frozenset[str]:
    """Which of `prompt_ids` / `response_ids` a reward callable takes (by name, or **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params):
        return frozenset({"prompt_ids", "response_ids"})
    return frozenset(q.name for q in params if q.name in ("prompt_ids", "response_ids")
                     and q.kind in (inspect.Parameter.KEYWORD_ONLY,
                                    inspect.Parameter.POSITIONAL_OR_KEYWORD))


@torch.no_grad()
def rollout(actors: Actors, p: PPOConfig, prompts: list[str], prompt_ids: list[list[int]],
            generator: torch.Generator | Callable[[int], torch.Generator] | None,
            timer: Timer | None = None, iteration: int = 0) -> Episodes:
    """Sample, then score: one batched call per model per chunk of `rollout_batch_size`.

    `generator` may be a function of the chunk's first episode index, so that the samples do
    not depend on how the episodes are split over processes."""
    timer = timer or Timer()
    tok = actors.tokenizer
    pad = tok.pad_token_id
    policy_lm = actors.lm
    policy_lm.eval()
    q_dev = next(policy_lm.parameters()).device
    chunks = []
    for s in range(0, len(prompt_ids), p.rollout_batch_size):
        texts, ids = prompts[s:s + p.rollout_batch_size], prompt_ids[s:s + p.rollout_batch_size]
        gen = generator(s) if callable(generator) else generator
        with timer("generation"), autocast_context(actors.autocast, q_dev):
            ro = generate(policy_lm, tok, ids, max_new_tokens=p.max_new_tokens,
                          temperature=p.temperature, generator=gen, sampler="inverse_cdf",
                          return_hidden=actors.shared)
        q, qm, r, rm = ro.query, ro.query_mask, ro.response, ro.response_mask
        with timer("score_ref"), autocast_context(actors.autocast, q_dev):
            ref_lp = response_logprobs(actors.ref, q, qm, r, rm, temperature=p.temperature,
                                       pad_id=pad)
        with timer("score_reward"):
            if actors.reward_model is not None:
                with autocast_context(actors.autocast, q_dev):
                    raw = actors.reward_model(torch.cat([q, r], 1),
                                              torch.cat([qm, rm], 1)).float()
            else:
                rows = r.tolist()
                responses = [decode_response(tok, row) for row in rows]
                kw = {}
                wants = _reward_fn_kwargs(actors.reward_fn)
                if "prompt_ids" in wants:
                    kw["prompt_ids"] = [list(x) for x in ids]
                if "response_ids" in wants:
                    kw["response_ids"] = [row[:n] for row, n in zip(rows, rm.sum(1).tolist())]
                out = actors.reward_fn(list(texts), responses, **kw)
                try:
                    raw = torch.as_tensor(out, dtype=torch.float32).flatten().to(q.device)
                except (TypeError, ValueError) as e:
                    raise UserError(f"{actors.reward_name} must return one number per episode; "
                                    f"got {type(out).__name__} ({e})") from None
                if raw.numel() != len(texts):
                    raise UserError(f"{actors.reward_name} returned {raw.numel()} scores for "
                                    f"{len(texts)} episodes")
        bad = _non_finite_rows(raw)
        if bad:
            i = bad[0]
            raise NonFiniteError(
                f"non-finite score from the {actors.reward_name} at iteration {iteration}: "
                f"{len(bad)} of {len(texts)} episodes in this chunk (first: value "
                f"{float(raw[i])}, prompt {texts[i]!r}, response "
                f"{decode_response(tok, r[i].tolist())!r})")
        score = raw
        if p.no_eos_penalty is not None:                   # spec 7.19
            score = torch.where(ro.has_eos, raw, torch.full_like(raw, p.no_eos_penalty))
        with timer("score_value"), autocast_context(actors.autocast, q_dev):
            if actors.shared:     # the sampler's own hidden states: no forward at all
                values = actors.policy.v_head(ro.hidden).squeeze(-1).float()
            else:
                values = value_forward(actors.value, q, qm, r, rm)
        for x, name, what in ((ro.logprobs, "policy log-probs", "the policy (sampler)"),
                              (ref_lp, "reference log-probs", "the reference model"),
                              (values, "values", "the value model")):
            bad = _non_finite_rows(torch.where(rm.bool(), x, torch.zeros_like(x)))
            if bad:
                raise NonFiniteError(
                    f"non-finite {name} from {what} at iteration {iteration} in {len(bad)} of "
                    f"{len(texts)} episodes (first: prompt {texts[bad[0]]!r}); its weights or "
                    "inputs hold a NaN/inf")
        chunks.append(Episodes(q, qm, r, rm, ro.logprobs, ref_lp, values.float(), score, raw,
                               ro.has_eos))
    return Episodes.cat(chunks, pad)


# ============================================================================ advantages

def _global_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population variance over valid entries of every process."""
    m = mask.bool()
    xv = torch.where(m, x, torch.zeros_like(x)).double()
    s = dist.all_reduce_sum(torch.stack([xv.sum(), m.sum().double()]))
    mean = s[0] / s[1].clamp(min=1)
    dev = torch.where(m, x.double() - mean, torch.zeros_like(xv))
    var = dist.all_reduce_sum((dev ** 2).sum()) / s[1].clamp(min=1)
    return mean.to(x.dtype), var.to(x.dtype)


def whiten_global(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """`rl.whiten` with the moments of all processes (spec 7.14; the same in one process)."""
    if dist.world_size() == 1:
        return rl.whiten(x, mask, shift_mean=shift_mean)
    mean, var = _global_moments(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, torch.zeros_like(out))


@torch.no_grad()
def compute_advantages(ep: Episodes, p: PPOConfig, beta: float) -> dict[str, Tensor]:
    """Per-token rewards (KL penalty + score at the last token), GAE, whitening; fills `ep`."""
    rewards, non_score, kl = rl.compute_rewards(ep.scores, ep.logprobs, ep.ref_logprobs, ep.mask,
                                                beta, clamp_kl=p.clamp_kl)
    raw_kl = rl.masked_sum(rl.kl_k1(ep.logprobs, ep.ref_logprobs), ep.mask, dim=1)
    if p.whiten_rewards:                                   # spec 7.15 (off in the paper)
        rewards = whiten_global(rewards, ep.mask, shift_mean=False)
    bad = _non_finite_rows(rewards)
    if bad:
        i = bad[0]
        raise NonFiniteError(
            f"non-finite per-token reward in {len(bad)} episodes (first: episode {i}; score "
            f"{float(ep.scores[i])}, finite log-probs: {bool(torch.isfinite(ep.logprobs[i]).all())}"
            f", finite reference log-probs: {bool(torch.isfinite(ep.ref_logprobs[i]).all())})")
    adv, ret = rl.gae(rewards, ep.values, ep.mask, p.gamma, p.gae_lambda)
    if p.whiten_advantages:
        adv = whiten_global(adv, ep.mask)
    ep.rewards, ep.advantages, ep.returns = rewards, adv, ret
    return {"kl_seq": raw_kl, "non_score": rl.masked_sum(non_score, ep.mask, dim=1)}


# ============================================================================ update

def _optimizer(params, lr: float, p: PPOConfig) -> torch.optim.Optimizer:
    params = [q for q in params if q.requires_grad]
    if p.adam_style == "tf":                                # spec 7.23
        return rl.TFAdam(params, lr=lr, betas=(0.9, 0.95), eps=p.adam_eps)
    # CPU: the fused kernel (one pass per tensor) is ~3x faster than the per-tensor loop
    fused = bool(params) and all(q.device.type == "cpu" for q in params)
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.95), eps=p.adam_eps,
                            **({"fused": True} if fused else {}))


def _grads(params: Sequence[nn.Parameter]) -> list[Tensor]:
    return [q.grad for q in params if q.grad is not None]


def _norm(tensors: list[Tensor]) -> Tensor:
    if not tensors:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(tensors)


def _first_bad_param(named: Sequence[tuple[str, nn.Parameter]]) -> str:
    for name, q in named:
        if q.grad is not None and not bool(torch.isfinite(q.grad).all()):
            return name
    return "?"


def _no_sync(module: nn.Module, sync: bool):
    if not sync and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


class Trainer:
    """Owns the optimisers, DDP wrappers, EMA and β; `train(ep)` runs the PPO epochs."""

    def __init__(self, actors: Actors, p: PPOConfig, plan: PPOPlan, seed: int,
                 ptx_blocks: Tensor | None = None):
        self.a, self.p, self.plan, self.seed = actors, p, plan, seed
        self.ptx_blocks = ptx_blocks
        self.ddp_policy = dist.wrap_ddp(actors.policy)
        self.ddp_value = dist.wrap_ddp(actors.value) if actors.value is not None else None
        self.policy_params = [q for q in actors.policy.parameters() if q.requires_grad]
        self.opt = _optimizer(self.policy_params, p.lr, p)
        self.value_params = [q for q in actors.value.parameters()] if actors.value else []
        self.value_opt = _optimizer(self.value_params, p.value_lr, p) if actors.value else None
        self.ema = rl.EMA(actors.lm, p.ema_decay) if p.ema_decay is not None else None
        self.kl_ctl = (rl.AdaptiveKLController(p.beta_kl, p.kl_target, p.kl_horizon)
                       if p.adaptive_kl else rl.FixedKLController(p.beta_kl))
        self.pad = actors.tokenizer.pad_token_id
        self.keep = _logits_to_keep_mode(actors.policy) or False

    # -------------------------------------------------------------- schedule
    def lr_factor(self, iteration: int, value: bool = False) -> float:
        """The LR multiplier at `iteration`. The policy's schedule starts when it starts
        training, after the critic warm-up; the value model's at iteration 0."""
        start = 0 if value else self.plan.critic_warmup_iterations
        i, n = max(iteration - start, 0), self.plan.iterations - start
        if self.p.lr_schedule == "linear":                 # [LMHP]/[N+]: lr·(1 − frac)
            return rl.linear_decay(i, n)
        return rl.constant_with_warmup(i, self.p.warmup_iterations)  # [IGPT]

    def set_lr(self, iteration: int) -> float:
        """Set both optimisers' LR for `iteration`; returns the policy's multiplier (0 during
        the critic warm-up, when the policy does not step)."""
        f = self.lr_factor(iteration)
        for g in self.opt.param_groups:
            g["lr"] = self.p.lr * f
        if self.value_opt is not None:
            for g in self.value_opt.param_groups:
                g["lr"] = self.p.value_lr * self.lr_factor(iteration, value=True)
        return 0.0 if self.plan.policy_frozen(iteration) else f

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(),
                "value_opt": self.value_opt.state_dict() if self.value_opt else None,
                "ema": self.ema.state_dict() if self.ema else None,
                "kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, s: dict) -> None:
        self.opt.load_state_dict(s["opt"])
        if self.value_opt is not None:
            self.value_opt.load_state_dict(s["value_opt"])
        if self.ema is not None and s.get("ema"):
            self.ema.load_state_dict(s["ema"])
        self.kl_ctl.load_state_dict(s["kl_ctl"])

    # -------------------------------------------------------------- one micro-batch
    def micro_losses(self, mb: Episodes, n_tokens: Tensor, check_ratio: bool,
                     want_entropy: bool, where: str,
                     policy_frozen: bool = False) -> dict[str, Tensor]:
        """Forward + backward of one micro-batch; its loss is weighted by its share of the
        minibatch's valid tokens (× world size, as DDP averages), so accumulation is exact.
        `policy_frozen` (critic warm-up): the policy is only scored, for the logs and the
        ratio check, and only the separate value model gets gradients."""
        p, ws = self.p, dist.world_size()
        w = mb.mask.sum() / n_tokens * ws
        with autocast_context(self.a.autocast), torch.set_grad_enabled(not policy_frozen):
            new_lp, ent, v_shared = score_response(self.ddp_policy, mb.query, mb.query_mask,
                                                   mb.response, mb.mask, p.temperature,
                                                   self.pad, want_entropy, self.keep)
        out: dict[str, Tensor] = {}
        if check_ratio:
            self._check_ratio(new_lp.detach(), mb, where)
        pg, st = rl.policy_loss(new_lp, mb.logprobs, mb.advantages, mb.mask, p.clip_range)
        out.update({"policy/loss": pg.detach(), "policy/clipfrac": st["clipfrac"],
                    "policy/approx_kl": st["approx_kl"]})
        if want_entropy:
            out["policy/entropy"] = rl.masked_mean(ent, mb.mask)
        if v_shared is not None:
            vf, vst = rl.value_loss(v_shared, mb.values, mb.returns, mb.mask, p.clip_range_value)
            loss = pg + p.vf_coef * vf
        else:
            loss = pg
        if not policy_frozen:
            (loss * w).backward()
        if self.ddp_value is not None:
            with autocast_context(self.a.autocast):
                vpred = value_forward(self.ddp_value, mb.query, mb.query_mask, mb.response,
                                      mb.mask).float()
            vf, vst = rl.value_loss(vpred, mb.values, mb.returns, mb.mask, p.clip_range_value)
            (vf * w).backward()
        out.update({"value/loss": vf.detach(), "value/clipfrac": vst["clipfrac"]})
        return {k: v.detach().float() * (mb.mask.sum() / n_tokens * ws) for k, v in out.items()}

    def _check_ratio(self, new_lp: Tensor, mb: Episodes, where: str) -> None:
        dev = torch.where(mb.mask.bool(), (new_lp - mb.logprobs).exp() - 1,
                          torch.zeros_like(new_lp)).abs()
        worst = float(dev.max())
        if not math.isfinite(worst):
            raise NonFiniteError(
                f"non-finite training log-probs at {where} (the policy's forward pass on the "
                "rollout), although the rollout's own were finite: the policy weights changed "
                "to NaN/inf between the rollout and the update")
        self.first_ratio_dev = max(getattr(self, "first_ratio_dev", 0.0), worst)
        mean = float(dev.sum() / mb.mask.sum().clamp(min=1))
        # fp32: the mean over valid tokens must be within RATIO_TOL; single tokens may differ
        # by KV-cache-vs-full-forward rounding (seen: 1.05e-5 on a low-probability token), so
        # the max gets RATIO_MAX_TOL. A real mismatch (dropout, temperature, padding) breaks both.
        tol, tol_max = (BF16_RATIO_TOL, BF16_RATIO_TOL) if self.a.autocast is not None else \
            (RATIO_TOL, RATIO_MAX_TOL)
        if not self.p.check_invariants or (mean <= tol and worst <= tol_max):
            return
        i, t = divmod(int(dev.argmax()), dev.size(1))
        raise InvariantError(
            f"PPO invariant violated ({where}): on the first minibatch the training log-probs "
            f"do not reproduce the rollout log-probs: mean |ratio - 1| = {mean:.3g} (limit "
            f"{tol:g}), max {worst:.3g} (limit {tol_max:g}; episode {i} of the micro-batch, "
            f"response token {t}). The policy "
            "that sampled and the policy being trained must be the same function here. Likely "
            "causes: dropout left on in the policy (RL models need p = 0), the temperature "
            "applied in sampling but not in training (or vice versa), padding or position ids "
            "that differ between generation and training, or weights changed between the "
            "rollout and the first update. (In reduced precision, where log-probs legitimately "
            "differ more, set ppo.check_invariants=false.)")

    # -------------------------------------------------------------- ptx
    def ptx_losses(self, iteration: int, epoch: int, k: int) -> Tensor:
        """γ_ptx·NLL on this minibatch's pretraining blocks, accumulated into the grads."""
        p, plan = self.p, self.plan
        n_micro = plan.ptx_micro_batches
        g = torch.Generator().manual_seed(_seed(self.seed, 11, iteration, epoch, k, dist.rank()))
        idx = torch.randint(len(self.ptx_blocks), (n_micro * p.micro_batch_size,), generator=g)
        total = torch.zeros(())
        dev = dist.device()
        for j in range(n_micro):
            ids = self.ptx_blocks[idx[j * p.micro_batch_size:(j + 1) * p.micro_batch_size]].to(dev)
            mask = torch.ones_like(ids)
            with _no_sync(self.ddp_policy, j == n_micro - 1):
                with autocast_context(self.a.autocast):
                    if self.a.shared:
                        logits, values = self.ddp_policy(ids, mask, position_ids_from_mask(mask))
                        keep_used = values.sum() * 0.0       # every DDP parameter gets a grad
                    else:
                        logits = self.ddp_policy(input_ids=ids, attention_mask=mask,
                                                 use_cache=False).logits
                        keep_used = 0.0
                    nll = rl.lm_nll(logits[:, :-1].float(), ids[:, 1:], mask[:, 1:])
                (p.gamma_ptx * nll / n_micro + keep_used).backward()
            total = total + nll.detach().float() / n_micro
        return total

    # -------------------------------------------------------------- the PPO epochs
    def train(self, ep: Episodes, iteration: int, timer: Timer | None = None) -> dict[str, float]:
        p, plan = self.p, self.plan
        timer = timer or Timer()
        self.first_ratio_dev = 0.0
        sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros(()))
        counts: dict[str, int] = defaultdict(int)
        n_local = len(ep)
        mb_size, micro = plan.minibatch_per_rank, p.micro_batch_size
        self.ddp_policy.train()
        if self.ddp_value is not None:
            self.ddp_value.train()
        named_policy = [(n, q) for n, q in self.a.policy.named_parameters() if q.requires_grad]
        named_value = list(self.a.value.named_parameters()) if self.a.value else []
        frozen = plan.policy_frozen(iteration)     # critic warm-up: the value model only
        for epoch in range(p.ppo_epochs):
            g = torch.Generator().manual_seed(_seed(self.seed, 5, iteration, epoch, dist.rank()))
            perm = torch.randperm(n_local, generator=g)
            for k in range(plan.minibatches_per_epoch):
                first = epoch == 0 and k == 0
                where = f"iteration {iteration}, epoch {epoch}, minibatch {k}"
                idx = perm[k * mb_size:(k + 1) * mb_size]
                n_tokens = dist.all_reduce_sum(ep.mask[idx].sum().double()).clamp(min=1)
                parts = [idx[j:j + micro] for j in range(0, len(idx), micro)]
                losses = []
                with timer("train_ppo"):
                    for j, part in enumerate(parts):
                        last = j == len(parts) - 1
                        with _no_sync(self.ddp_policy, last), \
                                (_no_sync(self.ddp_value, last) if self.ddp_value is not None
                                 else contextlib.nullcontext()):
                            st = self.micro_losses(ep.select(part), n_tokens.float(),
                                                   check_ratio=first, want_entropy=first,
                                                   where=where, policy_frozen=frozen)
                        losses.append(st)
                        for key, v in st.items():
                            sums[key] = sums[key] + v
                    counts_key = {key for st in losses for key in st}
                    for key in counts_key:
                        counts[key] += 1
                    self._check_losses(losses, where)
                    g_ppo = _grads(self.policy_params)
                    ppo_norm = _norm(g_ppo)
                with timer("train_ptx"):
                    if plan.ptx_on and not frozen:
                        g_copy = [None if q.grad is None else q.grad.clone()
                                  for q in self.policy_params]
                        ptx = self.ptx_losses(iteration, epoch, k)
                        if not bool(torch.isfinite(ptx)):
                            raise NonFiniteError(f"non-finite ptx (pretraining) loss at {where}")
                        sums["ptx/loss"] = sums["ptx/loss"] + ptx
                        counts["ptx/loss"] += 1
                        ptx_norm = _norm([q.grad - (0 if g0 is None else g0)
                                          for q, g0 in zip(self.policy_params, g_copy)
                                          if q.grad is not None])
                        sums["grad/ptx_norm"] = sums["grad/ptx_norm"] + ptx_norm
                        counts["grad/ptx_norm"] += 1
                        del g_copy
                with timer("train_step"):
                    if not frozen:
                        self._policy_step(ppo_norm, named_policy, where, sums, counts)
                    if self.value_opt is not None:
                        vnorm = _norm(_grads(self.value_params))
                        if not bool(torch.isfinite(vnorm)):
                            raise NonFiniteError(
                                f"non-finite value-model gradient at {where} (first bad "
                                f"parameter: {_first_bad_param(named_value)})")
                        if p.grad_clip:
                            torch.nn.utils.clip_grads_with_norm_(self.value_params, p.grad_clip,
                                                                 vnorm)
                        self.value_opt.step()
                        self.value_opt.zero_grad(set_to_none=True)
                        sums["grad/value_norm"] = sums["grad/value_norm"] + vnorm
                        counts["grad/value_norm"] += 1
                    if self.ema is not None and not frozen:
                        self.ema.update(self.a.lm)
        self.ddp_policy.eval()
        if self.ddp_value is not None:
            self.ddp_value.eval()
        keys = sorted(sums)
        vec = torch.stack([sums[key].float() / max(counts[key], 1) for key in keys])
        vec = dist.all_reduce_mean(vec)   # token-weighted minibatch means, averaged
        out = {key: float(v) for key, v in zip(keys, vec)}
        out["policy/first_minibatch_ratio_dev"] = self.first_ratio_dev
        return out

    def _policy_step(self, ppo_norm: Tensor, named_policy: list, where: str,
                     sums: dict[str, Tensor], counts: dict[str, int]) -> None:
        """Clip and apply the accumulated policy gradient (PPO + ptx), refusing non-finite."""
        total = _norm(_grads(self.policy_params))
        if not bool(torch.isfinite(total)):
            phase = "the PPO backward" if not bool(torch.isfinite(ppo_norm)) \
                else "the ptx backward"
            raise NonFiniteError(
                f"non-finite policy gradient at {where}, after {phase} (first bad "
                f"parameter: {_first_bad_param(named_policy)}); the losses were "
                "finite, so look for an overflow in the backward pass (LR too "
                "high, fp16 without scaling, extreme logits)")
        if self.p.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(self.policy_params, self.p.grad_clip, total)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        for key, v in (("grad/ppo_norm", ppo_norm), ("grad/policy_norm", total)):
            sums[key] = sums[key] + v
            counts[key] += 1

    def _check_losses(self, losses: list[dict[str, Tensor]], where: str) -> None:
        for j, st in enumerate(losses):
            for key in ("policy/loss", "value/loss"):
                if key in st and not bool(torch.isfinite(st[key])):
                    raise NonFiniteError(
                        f"non-finite {key.replace('/', ' ')} at {where}, micro-batch {j}: check "
                        "the advantages, returns and log-probs of this minibatch (the rollout "
                        "data were finite), and the LR (weights may have diverged)")


# ============================================================================ checkpoints

def _save_weights_exact(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save_model
    save_model(module, str(path))


def _load_weights_exact(module: nn.Module, path: Path) -> None:
    from safetensors.torch import load_model as st_load_model
    missing, unexpected = st_load_model(module, str(path), strict=True)


def save_ppo_checkpoint(path: Path, actors: Actors, trainer: Trainer, state: dict) -> None:
    """policy (HF format + tokenizer, loadable as is) + exact value/head weights + trainer state."""
    if dist.is_main():
        with atomic_path(path, is_dir=True) as tmp:
            actors.lm.save_pretrained(str(tmp), safe_serialization=True)
            actors.tokenizer.save_pretrained(str(tmp))
            (tmp / "value").mkdir()   # exact weights (HF's save folds the RM bias: not bit-exact)
            if actors.shared:
                _save_weights_exact(actors.policy.v_head, tmp / "value/value_head.safetensors")
            else:
                _save_weights_exact(actors.value, tmp / "value/value.safetensors")
            torch.save({"trainer": trainer.state_dict(), "rng": _rng_state(), "state": state},
                       tmp / "trainer_state.pt")
    dist.barrier()


def load_ppo_checkpoint(path: Path, actors: Actors, trainer: Trainer) -> dict:
    from rlhf.train.lm_loop import _load_weights
    actors.lm.load_state_dict(_load_weights(path, actors.lm))
    if actors.shared:
        _load_weights_exact(actors.policy.v_head, path / "value/value_head.safetensors")
    else:
        _load_weights_exact(actors.value, path / "value/value.safetensors")
    blob = torch.load(path / "trainer_state.pt", weights_only=False)
    trainer.load_state_dict(blob["trainer"])
    _set_rng_state(blob["rng"])
    return blob["state"]


def _prune(ckpt_dir: Path, keep: int) -> None:
    if not dist.is_main() or keep <= 0:
        return
    import shutil
    items = sorted(p for p in ckpt_dir.glob("iter-*") if p.name[5:].isdigit())
    for p in items[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def save_final(out: Path, actors: Actors, trainer: Trainer) -> dict[str, str]:
    """out/final (policy + tokenizer), out/final_ema (EMA weights), out/value (value model)."""
    paths = {"model": str(out / "final")}
    if dist.is_main():
        tok = actors.tokenizer
        with atomic_path(out / "final", is_dir=True) as tmp:
            actors.lm.save_pretrained(str(tmp), safe_serialization=True)
            tok.save_pretrained(str(tmp))
        if trainer.ema is not None:
            with trainer.ema.applied_to(actors.lm), atomic_path(out / "final_ema",
                                                                 is_dir=True) as tmp:
                actors.lm.save_pretrained(str(tmp), safe_serialization=True)
                tok.save_pretrained(str(tmp))
        with atomic_path(out / "value", is_dir=True) as tmp:
            if actors.shared:
                _save_weights_exact(actors.policy.v_head, tmp / "value_head.safetensors")
                write_text_atomic(tmp / "README.txt", "Shared-trunk value head: Linear(d_model, "
                                  "1) on the final hidden state of the policy in ../final.\n")
            else:
                actors.value.rm.save_pretrained(str(tmp), tokenizer=tok)
    dist.barrier()
    if trainer.ema is not None:
        paths["model_ema"] = str(out / "final_ema")
    paths["value_model"] = str(out / "value")
    return paths


# ============================================================================ the recipe

def _load_ptx_blocks(p: PPOConfig, tokenizer) -> Tensor | None:
    if p.gamma_ptx <= 0:
        return None          # γ_ptx = 0: no pretraining data is read; bit-for-bit plain PPO
    from rlhf.data.text import pack_blocks, read_documents
    if not p.ptx_files:
        raise UserError("ppo.gamma_ptx > 0 needs pretraining text: ppo.ptx_files",
                        field="ppo.ptx_files")
    return pack_blocks(tokenizer, read_documents(p.ptx_files), p.ptx_block_size)


def ppo(cfg: Config, out_dir: str | Path, resume: bool = False, halt_after: int | None = None,
        reward_fn: RewardFn | None = None,
        hooks: Callable[[str, dict], None] | None = None,
        autocast: str | torch.dtype | None = None) -> dict:
    """Run PPO / PPO-ptx; returns the summary (also written to out/summary.json).

    `reward_fn` (optional) replaces `cfg.ppo.reward_fn` with an in-process callable. `hooks`
    (tests, tools) is called as hooks(event, state) at "setup", "rollout" and "iteration".
    `autocast` ("bf16"; default: `cfg.ppo.autocast` where the config has that field, else off)
    runs every forward under bf16 autocast (see `BF16_RATIO_TOL` for the invariants then).
    """
    dist.init()
    dist.seed_everything(cfg.seed)
    p, seed, rank, ws = cfg.ppo, cfg.seed, dist.rank(), dist.world_size()
    out = Path(out_dir)
    plan = PPOPlan.from_config(p, ws)
    plan.validate()                                      # fast checks before loading anything
    if not p.temperature > 0:
        raise UserError("PPO samples: ppo.temperature must be > 0 (paper: 1)",
                        field="ppo.temperature")
    if dist.device().type == "cpu":
        tune_cpu_allocator()
        if dist.is_main() and (hint := cpu_threads_hint()):
            print(hint, file=sys.stderr, flush=True)
    actors = build_actors(p, reward_fn, autocast)
    plan.validate(context_length(actors.lm))
    tok = actors.tokenizer
    prompts, prompt_ids, dropped = encode_prompts(tok, load_prompts(p.prompts_file),
                                                  p.prompt_template, p.max_prompt_length)
    trainer = Trainer(actors, p, plan, seed, _load_ptx_blocks(p, tok))
    run = Run(out, dump_config(cfg), is_main=dist.is_main(), resume=resume)
    start = 0
    if resume and (last := latest_checkpoint(run.checkpoints)) is not None:
        start = load_ppo_checkpoint(last, actors, trainer)["iteration"]
    if dist.is_main():
        print(plan.describe(), flush=True)
        print(f"prompts: {len(prompts):,} ({dropped} longer than {p.max_prompt_length} tokens "
              f"dropped); reward: {actors.reward_name}; value model: {p.value_model}"
              + (f"; resuming at iteration {start}" if start else ""), flush=True)
    if hooks:
        hooks("setup", {"actors": actors, "trainer": trainer, "plan": plan})

    def checkpoint(done: int) -> None:
        name = f"iter-{done:06d}"
        save_ppo_checkpoint(run.checkpoints / name, actors, trainer, {"iteration": done})
        mark_latest(run.checkpoints, name)
        _prune(run.checkpoints, p.keep_checkpoints)

    dev = dist.device()
    metrics: dict[str, float] = {}
    history: list[dict] = []
    bar = tqdm(total=plan.iterations, initial=start, desc="ppo", disable=not dist.is_main(),
               leave=False)
    it = start
    while it < plan.iterations:
        timer = Timer()
        t0 = time.perf_counter()
        lr_factor = trainer.set_lr(it)
        beta = trainer.kl_ctl.value
        # ---- rollout: this process's share of the iteration's prompts ----------------------
        idx = iteration_prompts(len(prompts), seed, it, plan.episodes_per_iteration)
        idx = idx[rank * plan.episodes_per_rank:(rank + 1) * plan.episodes_per_rank]
        offset = rank * plan.episodes_per_rank

        def gen(s: int, it=it, offset=offset) -> torch.Generator:
            # seeded by the chunk's global position: the same samples in 1 or N processes
            return torch.Generator(device=dev).manual_seed(_seed(seed, 3, it, offset + s))

        ep = rollout(actors, p, [prompts[i] for i in idx], [prompt_ids[i] for i in idx], gen,
                     timer, it)
        if hooks:
            hooks("rollout", {"iteration": it, "episodes": ep, "actors": actors})
        # ---- rewards, GAE, whitening -------------------------------------------------------
        with timer("advantages"):
            extra = compute_advantages(ep, p, beta)
        if it == 0 and p.check_invariants and (not p.reference or p.reference == p.policy):
            _check_kl0(ep, actors.autocast)
        # ---- PPO epochs --------------------------------------------------------------------
        stats = trainer.train(ep, it, timer)
        # ---- bookkeeping -------------------------------------------------------------------
        metrics = _iteration_metrics(ep, extra, stats, timer, time.perf_counter() - t0, beta,
                                     p.lr * lr_factor, plan)
        trainer.kl_ctl.update(metrics["objective/kl"], plan.episodes_per_iteration)
        it += 1
        metrics["episodes"] = it * plan.episodes_per_iteration
        if it % max(1, p.log_every) == 0 or it == plan.iterations or it == 1:
            run.log(it - 1, metrics)
        history.append({k: metrics[k] for k in ("objective/score", "objective/kl")})
        if hooks:
            hooks("iteration", {"iteration": it - 1, "metrics": metrics, "actors": actors,
                                "trainer": trainer})
        bar.set_postfix(score=f"{metrics['objective/score']:.3f}",
                        kl=f"{metrics['objective/kl']:.3f}")
        bar.update(1)
        halting = halt_after is not None and it >= halt_after and it < plan.iterations
        if (p.save_every and it % p.save_every == 0 and it < plan.iterations) or halting:
            checkpoint(it)
        if halting:
            break
    bar.close()
    summary = {"iterations": it, "episodes": it * plan.episodes_per_iteration,
               "optimizer_steps": it * plan.steps_per_iteration, "plan": plan.describe(),
               "final_score": metrics.get("objective/score"),
               "final_kl": metrics.get("objective/kl"),
               "first_score": history[0]["objective/score"] if history else None,
               "reward": actors.reward_name, "value_model": p.value_model}
    if it < plan.iterations:
        run.close()
        return {**summary, "halted": True}
    summary.update(save_final(out, actors, trainer))
    run.finish(summary)
    return summary


def _check_kl0(ep: Episodes, autocast: torch.dtype | None = None) -> None:
    """Iteration 0: policy = reference, so log π − log π_ref = 0 on every response token."""
    d = torch.where(ep.mask.bool(), ep.logprobs - ep.ref_logprobs, torch.zeros_like(ep.logprobs))
    worst, mean = float(d.abs().max()), float(rl.masked_mean(d, ep.mask).abs())
    tol, tol_mean = (BF16_RATIO_TOL, BF16_KL0_TOL) if autocast is not None else (RATIO_MAX_TOL,
                                                                                 KL0_TOL)
    if worst > tol or mean > tol_mean:
        raise InvariantError(
            f"PPO invariant violated: KL to the reference is not 0 at iteration 0 (mean per-token "
            f"log-ratio {mean:.3g}, max |log-ratio| {worst:.3g}). The reference must be an exact, "
            "frozen copy of the initial policy, scored with the same temperature, PAD removal "
            "and position ids as the sampler; check dropout (off), dtype and the temperature. "
            "(In reduced precision, set ppo.check_invariants=false.)")


def _iteration_metrics(ep: Episodes, extra: dict, stats: dict, timer: Timer, wall: float,
                       beta: float, lr: float, plan: PPOPlan) -> dict[str, float]:
    m = ep.mask.bool()
    lengths = ep.mask.sum(1).double()
    with torch.no_grad():
        local = torch.stack([
            ep.scores.double().sum(), (ep.scores.double() ** 2).sum(), ep.raw_scores.double().sum(),
            extra["kl_seq"].double().sum(), extra["non_score"].double().sum(),
            lengths.sum(), ep.has_eos.double().sum(),
            torch.tensor(float(len(ep)), dtype=torch.float64, device=lengths.device),
            rl.masked_sum(ep.values.double(), m), m.sum().double(),
            rl.explained_variance(ep.values.double(), ep.returns.double(), m).nan_to_num(0.0),
            rl.masked_sum(ep.advantages.double(), m),
        ])
    g = dist.all_reduce_sum(local)
    n, ntok = float(g[7]), float(g[9])
    score_mean = float(g[0]) / n
    kl = float(g[3]) / n
    out = {
        "objective/score": score_mean,
        "objective/score_std": math.sqrt(max(float(g[1]) / n - score_mean ** 2, 0.0)),
        "objective/raw_score": float(g[2]) / n,
        "objective/kl": kl,
        "objective/kl_per_token": float(g[3]) / max(ntok, 1),
        "objective/non_score_reward": float(g[4]) / n,
        "objective/reward": score_mean + float(g[4]) / n,
        "objective/beta": beta,
        "response/length": float(g[5]) / n,
        "response/eos_fraction": float(g[6]) / n,
        "value/mean": float(g[8]) / max(ntok, 1),
        "value/explained_variance": float(g[10]) / dist.world_size(),
        "lr": lr,
        **stats,
    }
    for k, v in timer.t.items():
        out[f"time/{k}"] = v
    score_t = sum(v for k, v in timer.t.items() if k.startswith("score_"))
    train_t = sum(v for k, v in timer.t.items() if k.startswith("train_"))
    out["time/scoring"] = score_t
    out["time/training"] = train_t
    out["time/iteration"] = wall
    out["perf/episodes_per_s"] = plan.episodes_per_iteration / max(wall, 1e-9)
    gen_t = timer.t.get("generation", 0.0)
    out["perf/generated_tokens_per_s"] = float(g[5]) / max(gen_t, 1e-9)
    return out

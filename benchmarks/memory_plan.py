"""The memory plan's estimate (rlhf.models.memory) against measured peak memory on CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/memory_plan.py
                     [--out benchmarks/results/memory_plan.json]

For tiny random models of six families (GPT-2, Llama, Qwen2, Qwen3, Mistral, GPT-NeoX; shapes
other than the ones the coefficients were fitted on: hidden 96, MLP 3 x hidden (GPT-2 and
NeoX: 4 x), 3 layers, vocab 1536, 4 x 96 tokens), it measures, with TensorMemoryTracker (every
tensor storage alive: what a caching allocator must hold):

    train   a training micro-batch with gradients already accumulated from the one before, then
            the AdamW step: fp32 and bf16 autocast, full and LoRA (r = 8; also on a bf16
            base), full with gradient checkpointing, and a reward model (scalar head: no logits)
    frozen  a no-grad forward + log-softmax (a PPO reference), and a reward model's scores
    rollout rlhf's `generate` with the KV cache, 8 prompts x (32 + 64) tokens

and prints the estimate next to the measurement, with the relative error
(estimated - measured) / measured, of the total and of the activations alone (the measurement
less the estimate's weights, gradients and optimizer state, which are exact counts). Writes JSON
with every row and the error ranges per kind.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))   # tests/archs.py: the tiny architectures

ARCHS = ("gpt2", "llama", "qwen2", "qwen3", "mistral", "gpt_neox")
SHAPE = dict(hidden=96, layers=3)
VOCAB, BATCH, SEQ = 1536, 4, 96


def _config(arch: str):
    import archs
    conf = archs.config(arch, VOCAB, positions=256, **SHAPE)
    if arch not in ("gpt2", "gpt_neox"):
        conf.intermediate_size = 3 * SHAPE["hidden"]
    return conf


def _model(arch: str, lora: int, bf16_base: bool = False):
    from transformers import AutoModelForCausalLM

    from rlhf.models.lora import apply_lora
    from rlhf.models.precision import resolve_precision
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(arch))
    if bf16_base:
        resolve_precision("bf16-weights", trainable=False).cast(model)
    return apply_lora(model, r=lora, alpha=2 * lora) if lora else model


def _state(model, opt) -> list:
    return [*model.parameters(), *model.buffers(),
            *(p.grad for p in model.parameters()),
            *(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v))]


def _reward_model(arch: str):
    from rlhf.models.reward import RewardModel
    return RewardModel.from_causal_lm(_model(arch, 0))


def measure_train(arch: str, precision: str, lora: int = 0, checkpointing: bool = False,
                  reward: bool = False) -> int:
    """Peak of a micro-batch (gradients of the one before still held) + the AdamW step; a
    reward model (`reward`) trains on its scores instead of the LM loss."""
    from rlhf.models.memory import TensorMemoryTracker
    model = _reward_model(arch).train() if reward else \
        _model(arch, lora, bf16_base=precision == "bf16-weights").train()
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})   # per decoder layer
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(2, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    ac = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision != "fp32" else \
        contextlib.nullcontext

    def micro_batch():
        with ac():
            loss = -model(ids, torch.ones_like(ids)).mean() if reward else \
                model(input_ids=ids, labels=ids).loss
        loss.backward()

    micro_batch(); opt.step(); opt.zero_grad()          # noqa: E702 - optimizer state exists
    micro_batch()                                        # gradients accumulated
    tracker = TensorMemoryTracker().add(_state(model, opt))
    with tracker:
        micro_batch()
        opt.step()
    return tracker.peak


def measure_frozen(arch: str, precision: str, reward: bool = False) -> int:
    """Peak of a no-grad forward + log-softmax (a reward model: its scores)."""
    from rlhf.models.memory import TensorMemoryTracker
    model = (_reward_model(arch) if reward else _model(arch, 0)).eval().requires_grad_(False)
    if precision == "bf16-weights":
        model.to(torch.bfloat16)
    ids = torch.randint(2, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    tracker = TensorMemoryTracker().add([*model.parameters(), *model.buffers()])
    with tracker, torch.no_grad(), (torch.autocast("cpu", dtype=torch.bfloat16)
                                    if precision != "fp32" else contextlib.nullcontext()):
        if reward:
            model(ids, torch.ones_like(ids))
        else:
            logits = model(input_ids=ids).logits
            torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])
    return tracker.peak


def measure_rollout(arch: str, prompts: int = 8, prompt_len: int = 32,
                    new_tokens: int = 64) -> int:
    """Peak minus weights of `generate` (fp32), every prompt sampling all `new_tokens`."""
    from rlhf.models.memory import TensorMemoryTracker
    try:
        from rlhf.models.generation import generate
    except ImportError:
        from rlhf.models.generation import generate

    class _Tok:                                      # no EOS can be drawn: full length
        eos_token_id, pad_token_id = -1, 1

    model = _model(arch, 0).eval().requires_grad_(False)
    ids = torch.randint(2, VOCAB, (prompts, prompt_len),
                        generator=torch.Generator().manual_seed(0)).tolist()
    tracker = TensorMemoryTracker().add([*model.parameters(), *model.buffers()])
    weights = tracker.current
    with tracker:
        generate(model, _Tok(), ids, max_new_tokens=new_tokens,
                 generator=torch.Generator().manual_seed(0))
    return tracker.peak - weights


def main() -> None:
    from _bench import write_result

    from rlhf.models.memory import (estimate_memory, format_bytes, measured_error,
                                    rollout_memory)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "memory_plan.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)   # transformers' renamings
    rows = []

    def row(kind, arch, setting, est, meas):
        """`est` a MemoryEstimate; also the error of the activations alone (the measurement less
        the estimate's weights, gradients and optimizer state, which are exact counts)."""
        err = measured_error(est.total, meas)
        static = est.total - est.activations
        act_err = measured_error(est.activations, meas - static)
        rows.append(dict(kind=kind, arch=arch, setting=setting, estimated=est.total,
                         measured=meas, error=round(err, 4), activations=est.activations,
                         activations_measured=meas - static, activation_error=round(act_err, 4)))
        print(f"{kind:8s} {arch:9s} {setting:22s} est {format_bytes(est.total):>11s}  "
              f"measured {format_bytes(meas):>11s}  {err:+7.1%}   activations "
              f"{format_bytes(est.activations):>11s} vs {format_bytes(meas - static):>11s} "
              f"{act_err:+7.1%}", flush=True)

    for arch in ARCHS:
        conf = _config(arch)
        for precision, lora, ckpt in [("fp32", 0, False), ("bf16", 0, False), ("fp32", 8, False),
                                      ("bf16", 8, False), ("bf16-weights", 8, False),
                                      ("fp32", 0, True)]:
            est = estimate_memory(conf, precision=precision, lora_rank=lora, batch_size=BATCH,
                                  seq_len=SEQ, trainable=True, gradient_checkpointing=ckpt,
                                  optimizer="adamw")
            meas = measure_train(arch, precision, lora, ckpt)
            setting = precision + (f" lora{lora}" if lora else "") + (" ckpt" if ckpt else "")
            row("train", arch, setting, est, meas)
        for precision in ("fp32", "bf16"):
            est = estimate_memory(conf, precision=precision, batch_size=BATCH, seq_len=SEQ,
                                  trainable=True, scalar_head=True, optimizer="adamw")
            row("train", arch, f"{precision} reward model", est,
                measure_train(arch, precision, reward=True))
        for precision in ("fp32", "bf16", "bf16-weights"):
            for reward in (False, True):
                est = estimate_memory(conf, precision=precision, batch_size=BATCH, seq_len=SEQ,
                                      trainable=False, scalar_head=reward)
                row("frozen", arch, precision + (" reward model" if reward else ""), est,
                    measure_frozen(arch, precision, reward))
        est = rollout_memory(conf, precision="fp32", batch_size=8, prompt_length=32,
                             new_tokens=64)
        row("rollout", arch, "fp32 8x(32+64)", est, measure_rollout(arch))
    summary = {}
    for kind in ("train", "frozen", "rollout"):
        for key in ("error", "activation_error"):
            errs = [r[key] for r in rows if r["kind"] == kind]
            summary.setdefault(kind, {})[key] = {
                "min": min(errs), "max": max(errs),
                "mean_abs": round(sum(map(abs, errs)) / len(errs), 4)}
            print(f"{kind:8s} {key:17s} {min(errs):+.1%} .. {max(errs):+.1%}, "
                  f"mean |error| {summary[kind][key]['mean_abs']:.1%}")
    write_result(args.out, {"shape": {**SHAPE, "vocab": VOCAB, "batch": BATCH, "seq": SEQ},
                            "rows": rows, "error": summary})


if __name__ == "__main__":
    main()

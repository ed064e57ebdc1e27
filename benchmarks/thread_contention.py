"""CPU throughput under background load: PPO iterations/s and pretraining tokens/s, quiet and
with one core kept busy by a second process, under each OpenMP thread policy.

    .venv/bin/python benchmarks/thread_contention.py [--seconds 25] [--ppo-iterations 6]
                     [--out benchmarks/results/thread_contention.json]

Each measurement runs in a fresh child process, because GNU OpenMP (torch's thread pool here)
reads its wait policy once, when it loads. Policies:

    gomp_default  OMP_WAIT_POLICY and GOMP_SPINCOUNT unset (RLHF_THREAD_POLICY=off): idle
                  threads spin for a while before they sleep
    rlhf          what `import rlhf` sets when the user has not (rlhf/__init__.py)
    passive       OMP_WAIT_POLICY=PASSIVE: idle threads sleep at once (for reference)

The busy process is a pure-Python loop (one core, no OpenMP of its own). Workloads on the
demo-size GPT-2 (4 x 128, vocab 2048): pretraining fwd+bwd+AdamW on 32 x 128-token blocks, and
the PPO recipe's iteration (64 episodes x <= 48 tokens, separate value model, EMA), first
iteration excluded. Target: with one core busy at least 40 % of the quiet throughput; quiet
no loss against gomp_default (within noise). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLICIES = {"gomp_default": {"RLHF_THREAD_POLICY": "off"}, "rlhf": {},
            "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}


def _child_pretrain(seconds: float) -> dict:
    import torch
    sys.path.insert(0, str(HERE))
    from ppo_throughput import build
    from rlhf.models import load_model
    with tempfile.TemporaryDirectory() as d:
        model = load_model(build(Path(d))["policy"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (32, 128), generator=g)
    tokens, steps = 0, 0
    t0 = None
    while True:
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
        if steps == 2:                     # warm-up steps excluded
            t0, tokens = time.perf_counter(), 0
        elif t0 is not None:
            tokens += ids.numel()
            if time.perf_counter() - t0 >= seconds:
                break
    return {"tokens_per_s": tokens / (time.perf_counter() - t0), "threads": torch.get_num_threads()}


def _child_ppo(iterations: int) -> dict:
    import torch
    sys.path.insert(0, str(HERE))
    from ppo_throughput import build
    from rlhf.config import Config
    from rlhf.train.ppo import ppo
    times: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        w = build(Path(d))
        cfg = Config.model_validate({"seed": 0, "ppo": {
            "policy": str(w["policy"]), "reward_model": str(w["rm"]),
            "prompts_file": str(w["prompts"]), "iterations": iterations,
            "episodes_per_iteration": 64, "rollout_batch_size": 64, "minibatch_size": 32,
            "micro_batch_size": 16, "max_new_tokens": 48, "max_prompt_length": 64,
            "lr": 1e-5, "value_lr": 1e-5, "save_every": 1000}})
        last = [time.perf_counter()]

        def hooks(event, s):
            if event == "iteration":
                now = time.perf_counter()
                times.append(now - last[0])
                last[0] = now
        ppo(cfg, Path(d) / "run", hooks=hooks)
    use = times[1:]
    return {"iterations_per_s": len(use) / sum(use), "threads": torch.get_num_threads()}


def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(policy: str, workload: str, loaded: bool, args) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "RLHF_THREAD_POLICY",
                        "OMP_NUM_THREADS")}
    env.update(POLICIES[policy])
    arg = str(args.seconds if workload == "pretrain" else args.ppo_iterations)
    busy = _busy() if loaded else None
    try:
        out = subprocess.run([sys.executable, __file__, "--child", workload, arg], env=env,
                             check=True, capture_output=True, text=True).stdout
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--ppo-iterations", type=int, default=6)
    ap.add_argument("--policies", nargs="*", default=list(POLICIES))
    ap.add_argument("--out", default=str(HERE / "results" / "thread_contention.json"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import rlhf  # noqa: F401  (applies the thread policy before torch loads)
        kind, arg = args.child
        res = _child_pretrain(float(arg)) if kind == "pretrain" else _child_ppo(int(arg))
        print(json.dumps(res))
        return
    sys.path.insert(0, str(HERE))
    from _bench import write_result

    rows = []
    for workload in ("pretrain", "ppo"):
        for policy in args.policies:
            quiet = measure(policy, workload, False, args)
            loaded = measure(policy, workload, True, args)
            key = "tokens_per_s" if workload == "pretrain" else "iterations_per_s"
            row = {"workload": workload, "policy": policy, "metric": key,
                   "quiet": round(quiet[key], 3), "one_core_busy": round(loaded[key], 3),
                   "loaded_share": round(loaded[key] / quiet[key], 3),
                   "threads": quiet["threads"]}
            rows.append(row)
            print(f"{workload:8s} {policy:13s} {key:17s} quiet {row['quiet']:>10.2f}   one core "
                  f"busy {row['one_core_busy']:>10.2f}   ({row['loaded_share']:.0%})", flush=True)
    base = {r["workload"]: r["quiet"] for r in rows if r["policy"] == "gomp_default"}
    for r in rows:
        if r["workload"] in base:
            r["quiet_vs_gomp_default"] = round(r["quiet"] / base[r["workload"]], 3)
    write_result(Path(args.out), {"rows": rows, "seconds": args.seconds,
                                  "ppo_iterations": args.ppo_iterations,
                                  "targets": {"loaded_share": ">= 0.40",
                                              "quiet_vs_gomp_default": "~1.0 (within noise)"}})


if __name__ == "__main__":
    main()

"""Our PPO against Hugging Face TRL's trainers: same model, prompts, reward, rollout shape, machine.

    .venv/bin/python benchmarks/ppo_vs_trl.py [--steps 50] [--threads 1] [--match ppo,rloo]
        [--model .peer/tiny-gpt2] [--peer ../shared/peer] [--trl112 .peer/trl112]
        [--trl116 .peer/trl116] [--deps .peer/site-packages] [--bare-every 5]
        [--out benchmarks/results/ppo_vs_trl.json]

TRL is never a dependency of `rlhf`: the peer runs in its own process from a `pip install
--no-deps --target` folder (see RESULTS.md), through the harness scripts of `../shared/peer`
(`peer_ppo.py`, `peer_rloo.py`, their `common.py` reward and prompts), unchanged: this script only
swaps their timing callback for one that waits for a go-ahead between steps and caps the threads.

Match-ups (each run = one process, all started at once; one step at a time, round robin, the
order rotated each step, so every run sees the same machine load):

    ppo  : TRL 1.12 PPOTrainer (peer_ppo.py: 32 completions x 64 tokens, 4 PPO epochs, one
           minibatch, lr 5e-4, beta 0.05, value = GPT2ForSequenceClassification of the same
           checkpoint) vs our PPO at the same settings (value model: the policy trunk + a zero
           head, a separate network, as TRL's), in fp32 and with bf16 autocast.
    rloo : TRL 1.16 RLOOTrainer (peer_rloo.py: 8 prompts x 4 completions x 64 tokens, one
           optimizer step per batch, lr 1e-3, beta 0.05, no value model) vs our PPO at the
           paper's own plan: 32 episodes, 1 PPO epoch, 4 minibatches of 8, lr 5e-4, beta 0.05
           (policy + a separate value network trained), fp32 and bf16 autocast.

Reward (harness `common.py`): the count of response tokens whose id % 16 == 0 (`ppo`; TRL PPO
counts up to its first PAD), 64 x the fraction of such tokens (`rloo`); ours gets the token ids
through the recipe's `response_ids` reward argument, so both score the very same ids.

Per run: seconds per step (median; step 0, the warm-up, excluded), generated tokens per step,
generated tokens per second of step time and of generation time, peak RSS, the reward curve,
and for TRL PPO the fraction of responses cut short by a sampled PAD (its collapse mode). Our
runs also time, every `--bare-every` steps on that step's batch, the bare phases the step must
do, with the same model objects and precision: HF `generate` (sampling, KV cache), plain
forwards of the reference and the value model, plain LM-loss / MSE forward+backward of policy and
value over the same tokens and micro-batches for every epoch, and default `torch.optim.Adam`
steps; "floor ratio" = median step / median sum of those. The bf16 runs also report log-prob
parity: the bf16 sampler's log-probs against an fp32 forward of the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PEER = (ROOT / ".." / "shared" / "peer").resolve()

# our PPO at the peer's settings ("ppo") and at the paper's plan ("paper")
OURS = {
    "ppo": dict(episodes_per_iteration=32, rollout_batch_size=32, minibatch_size=32,
                micro_batch_size=32, ppo_epochs=4, lr=5e-4, value_lr=5e-4),
    "paper": dict(episodes_per_iteration=32, rollout_batch_size=32, minibatch_size=8,
                  micro_batch_size=8, ppo_epochs=1, lr=5e-4, value_lr=5e-4),
}
COMMON = dict(max_new_tokens=64, max_prompt_length=64, prompt_template="{prompt}",
              temperature=1.0, no_eos_penalty=None, beta_kl=0.05, warmup_iterations=0,
              ema_decay=None, save_every=0, value_model="separate", whiten_rewards=False,
              gamma=1.0, gae_lambda=0.95, clip_range=0.2, clip_range_value=0.2)
MATCHES = {
    "ppo": {"peer": ("trl_ppo", "peer_ppo.py", "trl112"),
            "ours": [("ours_fp32", "ppo", "fp32"), ("ours_bf16", "ppo", "bf16")],
            "reward": "count"},
    "rloo": {"peer": ("trl_rloo", "peer_rloo.py", "trl116"),
             "ours": [("ours_paper_fp32", "paper", "fp32"), ("ours_paper_bf16", "paper", "bf16")],
             "reward": "scaled_fraction"},
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ============================================================================ child plumbing

class Channel:
    """Child side: JSON messages out on one fd, 'go' lines in on another."""

    def __init__(self, out_fd: int, in_fd: int):
        self.out = os.fdopen(out_fd, "w", buffering=1)
        self.inp = os.fdopen(in_fd, "r")

    def send(self, **msg) -> None:
        self.out.write(json.dumps(msg, default=float) + "\n")
        self.out.flush()

    def wait(self) -> None:
        line = self.inp.readline()
        if not line:                      # the driver went away
            os._exit(3)


def set_threads(n: int) -> None:
    import torch
    torch.set_num_threads(n)
    torch.set_num_interop_threads(1) if hasattr(torch, "set_num_interop_threads") else None


# ------------------------------------------------------------------------------- TRL child

def child_peer(args) -> None:
    ch = Channel(args.out_fd, args.in_fd)
    import torch
    try:
        set_threads(args.threads)
    except RuntimeError:
        pass
    torch.set_num_threads = lambda n, _f=torch.set_num_threads: _f(args.threads)  # harness: 2
    sys.path.insert(0, str(args.peer))
    import common  # the harness's own module
    gen_s = {"t": 0.0}

    class Lockstep(common.TimingLog):
        """common.TimingLog, but each step's clock starts at the driver's go-ahead."""

        def on_train_begin(self, a, state, control, **kw):
            ch.send(type="ready", rss_mb=peak_rss_mb())
            ch.wait()
            self.t0 = self.last = time.perf_counter()
            gen_s["t"] = 0.0

        def on_step_end(self, a, state, control, **kw):
            now = time.perf_counter()
            ch.send(type="step", step=state.global_step - 1, step_s=now - self.last,
                    gen_s=gen_s["t"], rss_mb=peak_rss_mb())
            ch.wait()
            gen_s["t"] = 0.0
            self.last = time.perf_counter()

        def on_log(self, a, state, control, logs=None, **kw):
            ch.send(type="log", step=state.global_step - 1, log=logs or {})

    common.TimingLog = Lockstep

    def timed(fn):
        def wrap(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                gen_s["t"] += time.perf_counter() - t
        return wrap

    if args.script == "peer_ppo.py":
        import trl.experimental.ppo.ppo_trainer as ppo_mod
        ppo_mod.batch_generation = timed(ppo_mod.batch_generation)
    else:
        from trl import RLOOTrainer
        RLOOTrainer._generate = timed(RLOOTrainer._generate)
    import runpy
    sys.argv = [str(args.peer / args.script), args.run_dir, str(args.steps)]
    runpy.run_path(str(args.peer / args.script), run_name="__main__")
    stats = Path(args.run_dir) / "rollout_stats.jsonl"
    rows = [json.loads(x) for x in stats.read_text().splitlines()] if stats.exists() else []
    ch.send(type="done", rss_mb=peak_rss_mb(), rollout_stats=rows)


# ------------------------------------------------------------------------------- our child

def _rewards(kind: str):
    mod = 16

    def count(prompts, responses, response_ids):
        return [float(sum(1 for t in ids if t % mod == 0)) for ids in response_ids]

    def scaled_fraction(prompts, responses, response_ids):
        return [64.0 * sum(1 for t in ids if t % mod == 0) / max(len(ids), 1)
                for ids in response_ids]

    return {"count": count, "scaled_fraction": scaled_fraction}[kind]


def bare_phases(ep, actors, cfg, autocast) -> dict[str, float]:
    """Seconds of each bare phase on this batch: what the step cannot avoid doing."""
    import torch

    from rlhf.models.cpu import autocast_context

    p = cfg.ppo
    ref, policy, value = actors.ref, actors.lm, actors.value.rm
    tok = actors.tokenizer
    ids = torch.cat([ep.query, ep.response], 1)
    mask = torch.cat([ep.query_mask, ep.mask], 1)
    tr = ep.response.size(1)
    out: dict[str, float] = {}

    def clock(name, fn):
        t = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t

    ac = lambda: autocast_context(autocast, torch.device("cpu"))

    @torch.no_grad()
    def gen():
        with ac():
            ref.generate(input_ids=ep.query, attention_mask=ep.query_mask, do_sample=True,
                         top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=tr,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    @torch.no_grad()
    def fwd_ref():
        with ac():
            ref(input_ids=ids, attention_mask=mask)

    @torch.no_grad()
    def fwd_value():
        with ac():
            value.token_values(ids, mask)

    def fwd_bwd():
        micro = p.micro_batch_size
        for _ in range(p.ppo_epochs):
            for s in range(0, len(ids), micro):
                b, m = ids[s:s + micro], mask[s:s + micro]
                with ac():
                    logits = policy(input_ids=b, attention_mask=m).logits
                torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.size(-1)),
                    b[:, 1:].reshape(-1)).backward()
                with ac():
                    v = value.token_values(b, m)
                (v.float() ** 2).mean().backward()
        policy.zero_grad(set_to_none=True)
        value.zero_grad(set_to_none=True)

    steps = p.ppo_epochs * (p.episodes_per_iteration // p.minibatch_size)
    shadow = [torch.zeros_like(q) for q in list(policy.parameters()) + list(value.parameters())]
    for q in shadow:
        q.grad = torch.zeros_like(q)
    opt = torch.optim.Adam(shadow, lr=1e-4, betas=(0.9, 0.95), eps=1e-5)

    def adam():
        for _ in range(steps):
            opt.step()

    clock("generate", gen)
    clock("forward_ref", fwd_ref)
    clock("forward_value", fwd_value)
    clock("fwd_bwd_policy_value", fwd_bwd)
    clock("optimizer", adam)
    return out


def child_ours(args) -> None:
    ch = Channel(args.out_fd, args.in_fd)
    set_threads(args.threads)
    import torch

    sys.path.insert(0, str(args.peer))
    from common import synthetic_prompts  # the harness's prompts

    from rlhf.config import Config
    from rlhf.models.value import response_logprobs
    from rlhf.train.ppo import ppo

    autocast = "bf16" if args.precision == "bf16" else None
    d = Path(args.run_dir)
    d.mkdir(parents=True, exist_ok=True)
    prompts = d / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": x}) + "\n" for x in synthetic_prompts(256)))
    cfg = Config.model_validate({"seed": 0, "ppo": {
        "policy": str(args.model), "prompts_file": str(prompts), "iterations": args.steps,
        **COMMON, **OURS[args.setting]}})
    state: dict = {"last": None}

    def hooks(event, s):
        if event == "setup":
            ch.send(type="ready", rss_mb=peak_rss_mb())
            ch.wait()
            state["last"] = time.perf_counter()
        elif event == "rollout":
            state["ep"] = s["episodes"]
            if autocast and s["iteration"] == 0:
                ep, a = s["episodes"], s["models"]
                with torch.no_grad():
                    lp32 = response_logprobs(a.lm, ep.query, ep.query_mask, ep.response,
                                               ep.mask, cfg.ppo.temperature,
                                               a.tokenizer.pad_token_id)
                m = ep.mask.bool()
                dlt = (ep.logprobs - lp32)[m]
                state["parity"] = {"tokens": int(m.sum()),
                                   "max_abs": float(dlt.abs().max()),
                                   "mean_abs": float(dlt.abs().mean()),
                                   "mean": float(dlt.mean()),
                                   "max_abs_ratio_minus_1": float(dlt.exp().sub(1).abs().max())}
        elif event == "iteration":
            step_s = time.perf_counter() - state["last"]
            m, ep, it = s["metrics"], state["ep"], s["iteration"]
            msg = {"type": "step", "step": it, "step_s": step_s,
                   "gen_s": m.get("time/generation"), "rss_mb": peak_rss_mb(),
                   "tokens": int(ep.mask.sum()), "decode_steps": int(ep.response.size(1)),
                   "phases": {k[5:]: v for k, v in m.items() if k.startswith("time/")},
                   "log": {k: m[k] for k in ("objective/raw_score", "objective/score",
                                             "objective/kl", "response/length",
                                             "response/eos_fraction", "policy/entropy",
                                             "policy/first_minibatch_ratio_dev") if k in m}}
            if args.bare_every and args.setting == "ppo" and it % args.bare_every == 0 and it:
                msg["bare"] = bare_phases(ep, s["models"], cfg, s["models"].autocast)
            ch.send(**msg)
            ch.wait()
            state["last"] = time.perf_counter()

    ppo(cfg, d / "run", hooks=hooks, reward_fn=_rewards(args.reward),
        precision="bf16" if autocast else "fp32")
    ch.send(type="done", rss_mb=peak_rss_mb(), parity=state.get("parity"))


# ============================================================================ the driver

class Run:
    def __init__(self, name: str, cmd: list[str], env: dict, log: Path):
        self.name = name
        r_out, w_out = os.pipe()          # child -> driver
        r_in, w_in = os.pipe()            # driver -> child
        self.log = open(log, "w")
        cmd = cmd + ["--out-fd", str(w_out), "--in-fd", str(r_in)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     pass_fds=(w_out, r_in), cwd=str(ROOT))
        os.close(w_out)
        os.close(r_in)
        self.rd = r_out
        self.buf = b""
        self.wr = os.fdopen(w_in, "w", buffering=1)
        self.steps: list[dict] = []
        self.logs: list[dict] = []
        self.done: dict | None = None
        self.ready: dict | None = None

    def _line(self, t_end: float) -> bytes:
        while b"\n" not in self.buf:
            r, _, _ = select.select([self.rd], [], [], max(1.0, t_end - time.time()))
            if not r:
                raise TimeoutError(f"{self.name}: no message in time")
            chunk = os.read(self.rd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"{self.name} exited (rc {self.proc.wait()}); see "
                                   f"{self.log.name}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def read_until(self, kind: str, timeout: float = 3600) -> dict:
        t_end = time.time() + timeout
        while True:
            line = self._line(t_end)
            msg = json.loads(line)
            if msg["type"] == "log":
                self.logs.append(msg)
            elif msg["type"] == "step":
                self.steps.append(msg)
            elif msg["type"] == "done":
                self.done = msg
            elif msg["type"] == "ready":
                self.ready = msg
            if msg["type"] == kind:
                return msg

    def go(self) -> None:
        self.wr.write("go\n")
        self.wr.flush()


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def response_lengths(run: Run, batch: int = 32) -> list[float]:
    """Mean response length of each step: ours from its metrics, TRL RLOO from its log
    (`completions/mean_length`), TRL PPO always decodes the full 64 tokens."""
    if run.steps and "log" in run.steps[0]:
        return [s["log"].get("response/length", 64.0) for s in run.steps]
    by_step: dict[int, dict] = {}
    for lg in run.logs:
        by_step.setdefault(lg["step"], {}).update(lg["log"])
    return [float(by_step.get(i, {}).get("completions/mean_length", 64.0))
            for i in range(len(run.steps))]


def summarize(run: Run, reward_key: str, batch: int = 32) -> dict:
    lengths = response_lengths(run, batch)
    for s, n in zip(run.steps, lengths):
        s.setdefault("tokens", n * batch)
    steps = run.steps[1:] if len(run.steps) > 1 else run.steps     # step 0 = warm-up
    step_s = [s["step_s"] for s in steps]
    gen_s = [s.get("gen_s") for s in steps]
    tokens = [s["tokens"] for s in steps]
    med = _median(step_s)
    out = {"steps": len(run.steps), "median_step_s": med,
           "min_step_s": min(step_s) if step_s else None,
           "mean_step_s": statistics.mean(step_s) if step_s else None,
           "median_generation_s": _median(gen_s),
           "median_generated_tokens": _median(tokens),
           "generated_tokens_per_s": _median(tokens) / med if med else None,
           "generation_tokens_per_s": (_median(tokens) / _median(gen_s)) if _median(gen_s)
           else None,
           "peak_rss_mb": max([s.get("rss_mb", 0) for s in run.steps] +
                              [(run.done or {}).get("rss_mb", 0)]),
           "step_s": [round(s["step_s"], 4) for s in run.steps]}
    if run.steps and "log" in run.steps[0]:                           # ours
        logs = [s["log"] for s in run.steps]
        out["reward"] = [lg.get("objective/raw_score") for lg in logs]
        out["kl"] = [lg.get("objective/kl") for lg in logs]
        out["response_length"] = [lg.get("response/length") for lg in logs]
        out["eos_fraction"] = [lg.get("response/eos_fraction") for lg in logs]
        phases = {}
        for k in steps[0]["phases"]:
            phases[k] = _median([s["phases"].get(k) for s in steps])
        out["median_phases_s"] = phases
        bare = [s["bare"] for s in run.steps if "bare" in s]
        if bare:
            keys = bare[0].keys()
            med_bare = {k: _median([b[k] for b in bare]) for k in keys}
            paired = [s["step_s"] / sum(s["bare"].values()) for s in run.steps if "bare" in s]
            out["bare_phases_median_s"] = med_bare
            out["bare_sum_median_s"] = sum(med_bare.values())
            out["step_vs_bare_sum"] = med / sum(med_bare.values())
            out["step_vs_bare_sum_paired_median"] = _median(paired)
            out["bare_samples"] = len(bare)
        if run.done and run.done.get("parity"):
            out["bf16_logprob_parity"] = run.done["parity"]
    else:                                                              # TRL
        by_step: dict[int, dict] = {}
        for lg in run.logs:
            by_step.setdefault(lg["step"], {}).update(lg["log"])
        rew = [by_step.get(i, {}).get(reward_key) for i in range(len(run.steps))]
        out["reward"] = [None if r is None else float(r) for r in rew]
        kl = [by_step.get(i, {}).get("objective/kl", by_step.get(i, {}).get("kl"))
              for i in range(len(run.steps))]
        out["kl"] = [None if k is None else float(k) for k in kl]
        out["response_length"] = lengths
        stats = (run.done or {}).get("rollout_stats") or []
        if stats:
            out["frac_truncated_by_pad"] = [r["frac_truncated_by_pad"] for r in stats]
            out["mean_valid_len"] = [r["mean_valid_len"] for r in stats]
    r = [x for x in out.get("reward", []) if x is not None]
    if r:
        k = max(1, len(r) // 5)
        out["reward_first_fifth"] = statistics.mean(r[:k])
        out["reward_last_fifth"] = statistics.mean(r[-k:])
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_match(name: str, args, tmp: Path) -> dict:
    spec = MATCHES[name]
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "TINY_MODEL": str(args.model),
           "TRL_EXPERIMENTAL_SILENCE": "1", "PYTHONUNBUFFERED": "1"}
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    me = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads),
          "--peer", str(args.peer), "--model", str(args.model), "--steps", str(args.steps)]
    runs: list[Run] = []
    peer_name, script, trl = spec["peer"]
    trl_dir = Path(getattr(args, trl))
    if not (trl_dir / "trl").exists():
        raise SystemExit(f"TRL not found in {trl_dir}: see benchmarks/RESULTS.md (pip install "
                         "--no-deps --target)")
    penv = {**env, "PYTHONPATH": os.pathsep.join([str(trl_dir), str(args.deps)])}
    runs.append(Run(peer_name, me + ["--child", "peer", "--script", script,
                                     "--run-dir", str(tmp / peer_name)], penv,
                    tmp / f"{peer_name}.log"))
    oenv = {**env, "PYTHONPATH": str(ROOT / "src")}
    for run_name, setting, precision in spec["ours"]:
        runs.append(Run(run_name, me + ["--child", "ours", "--setting", setting, "--precision",
                                        precision, "--reward", spec["reward"],
                                        "--bare-every", str(args.bare_every),
                                        "--run-dir", str(tmp / run_name)], oenv,
                        tmp / f"{run_name}.log"))
    try:
        for r in runs:
            r.read_until("ready", timeout=1800)
        for i in range(args.steps):
            order = runs[i % len(runs):] + runs[:i % len(runs)]
            for r in order:
                r.go()
                msg = r.read_until("step")
                print(f"  [{name}] step {i:3d} {r.name:16s} {msg['step_s']:7.2f} s", flush=True)
        for r in runs:
            r.go()                                    # let each finish and report
            r.read_until("done", timeout=1800)
            r.proc.wait(timeout=600)
    finally:
        for r in runs:
            if r.proc.poll() is None:
                r.proc.kill()
    reward_key = "objective/scores" if name == "ppo" else "reward"
    res = {r.name: summarize(r, reward_key) for r in runs}
    peer = res[peer_name]
    # The same rollout shape: the steps (warm-up excluded) where every run still generated
    # full-length responses (>= 60 of 64 tokens on average). A reward that pays for stopping
    # early (rloo's fraction: an EOS-only response scores 64) shortens them later on.
    lens = [response_lengths(r) for r in runs]
    full = [i for i in range(1, args.steps) if all(ln[i] >= 60 for ln in lens)]
    for r in runs:
        res[r.name]["full_length_steps"] = len(full)
        res[r.name]["median_step_s_full_length"] = _median([r.steps[i]["step_s"] for i in full])
    for r in runs[1:]:
        o = res[r.name]
        o["speedup_vs_" + peer_name] = peer["median_step_s"] / o["median_step_s"]
        paired = [a["step_s"] / b["step_s"] for a, b in zip(runs[0].steps[1:], r.steps[1:])]
        o["speedup_vs_" + peer_name + "_paired_median"] = _median(paired)
        if full:
            o["speedup_vs_" + peer_name + "_full_length"] = (
                peer["median_step_s_full_length"] / o["median_step_s_full_length"])
            o["speedup_vs_" + peer_name + "_full_length_paired_median"] = _median(
                [runs[0].steps[i]["step_s"] / r.steps[i]["step_s"] for i in full])
    return res


def report(name: str, res: dict) -> list[str]:
    lines = []
    for run, o in res.items():
        rr = o.get("reward") or []
        curve = " ".join("-" if x is None else f"{x:.1f}" for x in rr[::5])
        lines.append(f"  {run:16s} step {o['median_step_s']:6.2f} s (median; min "
                     f"{o['min_step_s']:.2f}; full-length steps "
                     f"{o['median_step_s_full_length'] or float('nan'):.2f})  gen tok/s {o['generated_tokens_per_s']:6.0f} "
                     f"(of generation time {o['generation_tokens_per_s'] or 0:6.0f})  peak RSS "
                     f"{o['peak_rss_mb']:6.0f} MB  reward {o.get('reward_first_fifth', 0):.2f} -> "
                     f"{o.get('reward_last_fifth', 0):.2f}")
        lines.append(f"  {'':16s} reward every 5th step: {curve}")
        if "frac_truncated_by_pad" in o:
            f = o["frac_truncated_by_pad"]
            lines.append(f"  {'':16s} responses cut by a sampled PAD: first {f[0]:.2f}, max "
                         f"{max(f):.2f}, last {f[-1]:.2f}; mean valid length last "
                         f"{o['mean_valid_len'][-1]:.1f}/64")
        if "response_length" in o:
            lens = [x for x in o["response_length"] if x is not None]
            lines.append(f"  {'':16s} mean response length first {lens[0]:.1f}, min "
                         f"{min(lens):.1f}, last {lens[-1]:.1f}" +
                         (" (PAD is never sampled)" if "eos_fraction" in o else ""))
        for k, v in list(o.items()):
            if k.startswith("speedup_vs_") and not k.endswith(("paired_median", "full_length")):
                lines.append(f"  {'':16s} {k.replace('_', ' ')}: {v:.2f}x (paired per-step "
                             f"median {o[k + '_paired_median']:.2f}x); at full length "
                             f"({o['full_length_steps']} steps): "
                             f"{o.get(k + '_full_length', float('nan')):.2f}x (paired "
                             f"{o.get(k + '_full_length_paired_median', float('nan')):.2f}x)")
        if "step_vs_bare_sum" in o:
            b = o["bare_phases_median_s"]
            lines.append(f"  {'':16s} floor: step / sum of bare phases = "
                         f"{o['step_vs_bare_sum']:.3f} (paired {o['step_vs_bare_sum_paired_median']:.3f}; "
                         f"{o['bare_samples']} samples); bare: " +
                         ", ".join(f"{k} {v:.2f}" for k, v in b.items()) +
                         f" = {o['bare_sum_median_s']:.2f} s")
            ph = o["median_phases_s"]
            lines.append(f"  {'':16s} ours: " + ", ".join(
                f"{k} {ph[k]:.2f}" for k in ("generation", "score_ref", "score_reward",
                                             "score_value", "advantages", "train_ppo",
                                             "train_step") if k in ph))
        if "bf16_logprob_parity" in o:
            p = o["bf16_logprob_parity"]
            lines.append(f"  {'':16s} bf16 log-prob parity vs fp32 ({p['tokens']} tokens): "
                         f"max |dlogp| {p['max_abs']:.4f}, mean {p['mean_abs']:.5f}, bias "
                         f"{p['mean']:+.5f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--match", default="ppo,rloo")
    ap.add_argument("--model", type=Path, default=ROOT / ".peer" / "tiny-gpt2")
    ap.add_argument("--peer", type=Path, default=DEFAULT_PEER)
    ap.add_argument("--trl112", type=Path, default=ROOT / ".peer" / "trl112")
    ap.add_argument("--trl116", type=Path, default=ROOT / ".peer" / "trl116")
    ap.add_argument("--deps", type=Path, default=ROOT / ".peer" / "site-packages")
    ap.add_argument("--bare-every", type=int, default=5)
    ap.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE"],
                    help="OMP_WAIT_POLICY for every run (PASSIVE: >1 thread on a shared box)")
    ap.add_argument("--work-dir", type=Path, help="keep the runs' folders and logs here")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                    "ppo_vs_trl.json")
    # child processes
    ap.add_argument("--child", choices=["peer", "ours"])
    ap.add_argument("--script")
    ap.add_argument("--setting", choices=list(OURS))
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--reward", default="count")
    ap.add_argument("--run-dir")
    ap.add_argument("--out-fd", type=int)
    ap.add_argument("--in-fd", type=int)
    args = ap.parse_args()
    if args.child == "peer":
        return child_peer(args)
    if args.child == "ours":
        return child_ours(args)

    args.model = args.model.resolve()
    if not (args.model / "config.json").exists():
        print(f"building the harness model in {args.model}", flush=True)
        subprocess.run([sys.executable, str(args.peer / "build_tiny_model.py"), str(args.model)],
                       check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    load0 = os.getloadavg()
    t0 = time.time()
    results: dict = {}
    with tempfile.TemporaryDirectory() as d:
        work = args.work_dir.resolve() if args.work_dir else Path(d)
        for name in [m.strip() for m in args.match.split(",") if m.strip()]:
            print(f"match-up '{name}': {args.steps} steps each, {args.threads} thread(s); logs in "
                  f"{work / name}", flush=True)
            results[name] = run_match(name, args, work / name)
    import torch
    out = {"machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": args.threads,
                       "omp_wait_policy": args.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY"),
                       "torch": torch.__version__, "python": platform.python_version(),
                       "load_average_start": load0, "load_average_end": os.getloadavg()},
           "settings": {"ours": {k: {**COMMON, **v} for k, v in OURS.items()},
                        "peer_scripts": str(args.peer), "steps": args.steps,
                        "bare_every": args.bare_every},
           "wall_s": round(time.time() - t0, 1), **results}
    print(f"\nPPO vs TRL on {cpu_model()}, {args.threads} thread(s)"
          + (f" (OMP_WAIT_POLICY={args.omp_wait_policy})" if args.omp_wait_policy else "")
          + f", {args.steps} steps per run, load average {load0[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    for name, res in results.items():
        print(f"[{name}]")
        print("\n".join(report(name, res)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

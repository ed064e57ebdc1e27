"""rlhf: the InstructGPT recipe end to end (SFT, K-way ranking reward model, PPO/PPO-ptx,
labeling app, simulated labelers, evaluation)."""

import os as _os

__version__ = "0.1.0"


def _thread_policy() -> None:
    """How torch's OpenMP threads wait, set before torch loads (GNU OpenMP reads it once).

    By default an idle GNU OpenMP thread spins for 300,000 rounds before it sleeps. When another
    process holds a core, our spinning threads and the ones doing work fight over the cores
    left, and throughput falls several-fold. Sleeping at once (OMP_WAIT_POLICY=PASSIVE) fixes
    that but costs a third of the speed on a quiet machine, where tiny models wake their threads
    thousands of times a second. A short spin of 3,000 rounds keeps both: measured on the
    demo's sampler (2 cores, 64 prompts x 4 samples x 48 tokens), quiet 3.0 s against OpenMP's
    3.4 s, with one core busy 6.9 s against 14.7 s (benchmarks/thread_contention.py measures
    PPO and pretraining). Only the waiting changes, never the thread count, so results do not
    depend on the machine's load. A user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT win;
    RLHF_THREAD_POLICY=off leaves OpenMP's defaults.
    """
    if _os.environ.get("RLHF_THREAD_POLICY", "").lower() == "off":
        return
    if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
        _os.environ["GOMP_SPINCOUNT"] = "3000"


_thread_policy()

"""rlhf: the InstructGPT recipe end to end (SFT, K-way ranking reward model, PPO/PPO-ptx,
labeling app, simulated labelers, evaluation)."""

import os as _os

__version__ = "0.1.0"


def _thread_policy() -> None:
    """How torch's OpenMP threads wait, set before torch loads (GNU OpenMP reads it once).

    By default an idle OpenMP thread spins for a long while before it sleeps. When another
    process holds a core, our spinning threads and the ones doing work fight over the cores
    left, and throughput falls to a few percent (benchmarks/thread_contention.py). Passive
    waiting makes an idle thread sleep at once, so a busy machine costs us only the core it
    took. A user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT win; RLHF_THREAD_POLICY=off leaves
    OpenMP's defaults.
    """
    if _os.environ.get("RLHF_THREAD_POLICY", "").lower() == "off":
        return
    if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
        _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


_thread_policy()

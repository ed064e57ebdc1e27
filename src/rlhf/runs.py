"""A run folder: resolved config, metrics.jsonl, TensorBoard events, checkpoints, summary.json."""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from rlhf.io import write_json_atomic, write_text_atomic


def log(tag: str, msg: str) -> None:
    """A progress line for long multi-stage work: `[tag HH:MM:SS] msg`, flushed."""
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Run:
    """Writes one run's outputs. Only the process with `is_main=True` writes anything."""

    def __init__(self, out_dir: str | Path, config_yaml: str | None = None, *,
                 is_main: bool = True, resume: bool = False):
        self.dir = Path(out_dir)
        self.is_main = is_main
        self._tb = None
        self._metrics = None
        self.start = time.time()
        if not is_main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if config_yaml is not None:
            write_text_atomic(self.dir / "config.yaml", config_yaml)
        self._metrics = open(self.dir / "metrics.jsonl", "a" if resume else "w", encoding="utf-8")

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    def _writer(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.dir / "tb"))
        return self._tb

    def log(self, step: int, metrics: dict[str, Any], prefix: str = "") -> None:
        if not self.is_main:
            return
        row = {"step": step, **{f"{prefix}{k}": v for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row, default=float) + "\n")
        self._metrics.flush()
        tb = self._writer()
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                tb.add_scalar(k, v, step)

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.is_main:
            return
        summary = {**summary, "wall_time_s": round(time.time() - self.start, 2)}
        write_json_atomic(self.dir / "summary.json", summary)
        self.close()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


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

"""What every benchmark script writes beside its figures: the machine, and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch


def machine() -> dict:
    """The platform, Python, torch, torch's thread count and the CPU count."""
    return {"platform": platform.platform(), "python": sys.version.split()[0],
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count()}


def write_result(path: Path, result: dict) -> None:
    """Stamp `result` with the machine and today's date, write it as indented JSON to `path`
    (folders created) and say so."""
    result.update(machine=machine(), date=time.strftime("%Y-%m-%d"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")

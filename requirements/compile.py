"""Write requirements/lock.txt: every package `make test` / `make demo` install, pinned with
hashes, for any platform (uv's universal resolution), from pyproject.toml (see lockspec.py).

    python3 -m venv /tmp/uv && /tmp/uv/bin/pip install uv
    /tmp/uv/bin/python requirements/compile.py [--prefer .venv]   # needs the package index

--prefer ENV keeps the versions installed in that environment wherever pyproject.toml allows them
(so re-locking after adding one dependency does not move the others). After any change to the
dependencies in pyproject.toml, run this and commit the lock: CI (.ci/run ->
requirements/check_lock.py) fails while they disagree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lockspec import (INPUT_LINE, LOCK, OUTSIDE_LOCK, ROOT, canonicalize_name,  # noqa: E402
                      inputs_digest, lock_inputs, outside_lock_pins)


def installed_versions(env: Path) -> list[str]:
    """`name==version` of every distribution in a virtual environment (but OUTSIDE_LOCK and
    this project), read from its metadata."""
    out = subprocess.run([str(env / "bin" / "python"), "-c",
                          "import importlib.metadata as m\n"
                          "for d in m.distributions(): print(d.metadata['Name'], d.version)"],
                         check=True, capture_output=True, text=True).stdout
    pins = []
    for line in sorted(set(out.splitlines())):
        name, version = line.split(" ", 1)
        if canonicalize_name(name) not in (*OUTSIDE_LOCK, "rlhf", "pip"):
            pins.append(f"{name}=={version.split('+')[0]}")
    return pins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefer", type=Path, help="a virtual environment whose versions to keep")
    parser.add_argument("--out", type=Path, default=LOCK)
    parser.add_argument("--wheels", type=Path, default=Path("/opt/wheels"),
                        help="folder holding the CPU torch wheel (torch-2.13.0+cpu-*.whl)")
    args = parser.parse_args()
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists() and not shutil.which(uv):
        raise SystemExit("uv not found: pip install uv (in a virtual environment of its own)")
    inputs = lock_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        req_in = Path(tmp) / "requirements.in"
        req_in.write_text("\n".join(inputs + ["torch"]) + "\n")
        # torch takes part in the resolution (accelerate needs it) as the CPU wheel, whose
        # dependencies are TORCH_DEPENDENCIES, and is left out of the file
        torch_pins = [f"{n}=={v}" for n, v in outside_lock_pins().items()]
        constraints = Path(tmp) / "torch.txt"
        constraints.write_text("\n".join(f"{p}+cpu" for p in torch_pins) + "\n")
        cmd = [uv, "pip", "compile", str(req_in), "--universal", "--python-version", "3.11",
               "--generate-hashes", "--no-header", "--no-annotate", "--quiet",
               "-o", str(Path(tmp) / "lock.txt"),
               "--constraint", str(constraints), "--find-links", str(args.wheels),
               *[arg for name in OUTSIDE_LOCK for arg in ("--no-emit-package", name)]]
        if args.prefer:
            prefer = Path(tmp) / "prefer.txt"
            prefer.write_text("\n".join(installed_versions(args.prefer)) + "\n")
            cmd += ["--constraint", str(prefer)]
        subprocess.run(cmd, check=True, env={**os.environ, "UV_NO_CONFIG": "1"})
        body = (Path(tmp) / "lock.txt").read_text()
    torch = ", ".join(f"{n}=={v}" for n, v in outside_lock_pins().items())
    header = [
        "# requirements/lock.txt: every package of the environment, pinned with hashes, for",
        "# `make test` and `make demo` (pip install --require-hashes --no-deps -r this file).",
        "# Written by requirements/compile.py with uv (universal, Python 3.11) from",
        "# pyproject.toml:",
        "# its dependencies and the extras dev and postgres, plus torch's own dependencies.",
        f"# Outside this file: {torch}, pinned in pyproject.toml and installed on its own",
        "# (the local CPU wheel here, whose hash is not PyPI's; PyPI's Linux wheel would pull",
        "# several GB of CUDA packages). CI checks that this file matches pyproject.toml",
        "# (requirements/check_lock.py); after changing the dependencies, run compile.py.",
        f"{INPUT_LINE}{inputs_digest(inputs)}",
    ]
    args.out.write_text("\n".join(header) + "\n" + body)
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()

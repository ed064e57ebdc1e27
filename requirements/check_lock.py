"""Is requirements/lock.txt in sync with pyproject.toml? Offline (no package index needed), run by
.ci/run before the tests. Exits 1 naming each disagreement:

- the lock was compiled from other requirements than pyproject.toml's (its input digest differs:
  a dependency, range or extra changed without re-running requirements/compile.py);
- a requirement of pyproject.toml has no pin in the lock, or its pin is outside the range;
- a pin has no hash; torch (kept outside the lock) is not pinned with == in pyproject.toml or
  the Makefile installs another torch;
- the lock holds torch or CUDA packages (they would come with PyPI's torch wheel).

    python3 requirements/check_lock.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lockspec import (LOCK, OUTSIDE_LOCK, ROOT, canonicalize_name, inputs_digest,  # noqa: E402
                      lock_inputs, lock_pins, outside_lock_pins, project_requirements,
                      stated_digest)

COMPILE = "python requirements/compile.py --prefer .venv (with uv installed)"


def problems(pyproject: Path = ROOT / "pyproject.toml", lock: Path = LOCK,
             makefile: Path = ROOT / "Makefile") -> list[str]:
    if not lock.exists():
        return [f"{lock} is missing; write it with {COMPILE}"]
    out = []
    digest = inputs_digest(lock_inputs(pyproject))
    stated = stated_digest(lock)
    if stated != digest:
        out.append(f"{lock.name} was compiled from other requirements than {pyproject.name} "
                   f"states now (input digest {stated} != {digest}): re-run {COMPILE}")
    try:
        pins = lock_pins(lock)
    except SystemExit as e:
        return out + [str(e)]
    for req in project_requirements(pyproject):
        name = canonicalize_name(req.name)
        if name in OUTSIDE_LOCK:
            continue
        if name not in pins:
            out.append(f"{req.name}: required by {pyproject.name} ({req}) but not pinned in "
                       f"{lock.name}")
            continue
        for version, marker in pins[name]:
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                where = f" (where {marker})" if marker else ""
                out.append(f"{req.name}: {lock.name} pins {version}{where}, outside "
                           f"{pyproject.name}'s range {req.specifier}")
    for name in pins:
        if name in OUTSIDE_LOCK or name.startswith(("nvidia-", "cuda-")) or name == "triton":
            out.append(f"{lock.name} pins {name}: torch and its CUDA packages stay outside the "
                       "lock (the CPU wheel is installed on its own)")
    try:
        torch_pins = outside_lock_pins(pyproject)
    except SystemExit as e:
        return out + [str(e)]
    make = makefile.read_text(encoding="utf-8") if makefile.exists() else ""
    for name, version in torch_pins.items():
        installed = re.findall(rf'"{name}==([^"]+)"', make)
        if installed != [version]:
            out.append(f"Makefile installs {name} {installed or 'nowhere'}; {pyproject.name} "
                       f"pins {name}=={version}")
    return out


def main() -> int:
    found = problems()
    for p in found:
        print(f"lock check: {p}", file=sys.stderr)
    if found:
        return 1
    n = sum(len(v) for v in lock_pins(LOCK).values())
    print(f"lock check: {LOCK.relative_to(ROOT)} is in sync with pyproject.toml "
          f"({n} hashed pins; torch=={outside_lock_pins()['torch']} outside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

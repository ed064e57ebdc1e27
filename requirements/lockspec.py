"""What requirements/lock.txt is compiled from, read from pyproject.toml; shared by compile.py
(writes the lock) and check_lock.py (CI: is the lock in sync?). Standard library only, plus
`packaging` (pip's own copy when it is not installed).

The lock pins, with hashes, every package `make test` / `make demo` install: the dependencies and
the `dev` and `postgres` extras of pyproject.toml, and what they and torch need. torch itself is
not in it: it is pinned `==` in pyproject.toml and installed on its own, because the build used
here is the local CPU wheel (torch-2.13.0+cpu), whose hash is not PyPI's, and PyPI's Linux wheel
would bring several GB of CUDA packages. TORCH_DEPENDENCIES are that wheel's requirements, locked
like the rest.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # pragma: no cover - a bare interpreter: pip's vendored copy
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
EXTRAS = ("dev", "postgres")
OUTSIDE_LOCK = ("torch",)
# torch 2.13.0+cpu's Requires-Dist (no extras): locked with the rest
TORCH_DEPENDENCIES = ("filelock", "typing-extensions>=4.10.0", "setuptools>=77.0.3",
                      "sympy>=1.13.3", "networkx>=2.5.1", "jinja2", "fsspec>=0.8.5")
INPUT_LINE = "# input-sha256: "


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The dependencies and the EXTRAS of pyproject.toml, as written there."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(line) for line in lines]


def lock_inputs(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The requirement lines the lock is compiled from (everything but OUTSIDE_LOCK, plus torch's
    own dependencies), sorted."""
    reqs = [str(r) for r in project_requirements(pyproject)
            if canonicalize_name(r.name) not in OUTSIDE_LOCK]
    return sorted(set(reqs) | set(TORCH_DEPENDENCIES), key=str.lower)


def inputs_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def outside_lock_pins(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """{name: version} of the packages pinned `==` in pyproject.toml but installed outside the
    lock (torch)."""
    pins = {}
    for r in project_requirements(pyproject):
        name = canonicalize_name(r.name)
        if name in OUTSIDE_LOCK:
            exact = [s.version for s in r.specifier if s.operator == "=="]
            if len(exact) != 1:
                raise SystemExit(f"pyproject.toml: {r.name} must be pinned with == (it is "
                                 "installed outside the hashed lock); got {r}")
            pins[name] = exact[0]
    return pins


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)\s*(;[^\\]*)?")


def lock_pins(lock: Path = LOCK) -> dict[str, list[tuple[Version, str]]]:
    """{name: [(version, marker text)]} of the lock's pins (a name may be pinned once per
    platform marker); SystemExit names a pin without a hash or a line that is not understood."""
    pins: dict[str, list[tuple[Version, str]]] = {}
    pending: tuple[int, str] | None = None  # a pin still waiting for its first hash
    for n, line in enumerate(lock.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash=sha256:"):
            pending = None
            continue
        if pending is not None:
            raise SystemExit(f"{lock}:{pending[0]}: {pending[1]} has no --hash")
        match = _PIN.match(line)
        if not match:
            raise SystemExit(f"{lock}:{n}: not a pinned requirement: {stripped[:80]}")
        name, _, version, marker = match.groups()
        pins.setdefault(canonicalize_name(name), []).append(
            (Version(version), (marker or "").lstrip("; ").strip()))
        pending = (n, f"{name}=={version}")
    if pending is not None:
        raise SystemExit(f"{lock}:{pending[0]}: {pending[1]} has no --hash")
    return pins


def stated_digest(lock: Path = LOCK) -> str | None:
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(INPUT_LINE):
            return line[len(INPUT_LINE):].strip()
    return None

"""requirements/check_lock.py (run by .ci/run): the lock is in sync with pyproject.toml, and each
kind of drift is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "requirements"))

from check_lock import problems  # noqa: E402


@pytest.fixture
def copies(tmp_path):
    for name in ("pyproject.toml", "Makefile", "requirements/lock.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path / "pyproject.toml", tmp_path / "requirements/lock.txt", tmp_path / "Makefile"


def test_the_committed_lock_is_in_sync():
    out = subprocess.run([sys.executable, str(ROOT / "requirements/check_lock.py")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "in sync" in out.stdout and "torch==2.13.0 outside it" in out.stdout


def test_a_changed_range_or_new_dependency_is_caught(copies):
    pyproject, lock, makefile = copies
    assert problems(pyproject, lock, makefile) == []
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"sqlalchemy>=2.0"', '"sqlalchemy>=99"'))
    found = problems(pyproject, lock, makefile)
    assert any("compiled from other requirements" in p for p in found)
    assert any(p.startswith("sqlalchemy: lock.txt pins") and ">=99" in p for p in found)
    pyproject.write_text(text.replace('"jinja2>=3.1",', '"jinja2>=3.1", "left-pad>=1",'))
    assert any("left-pad: required by pyproject.toml" in p
               for p in problems(pyproject, lock, makefile))


def test_a_pin_without_hash_torch_in_the_lock_or_another_torch_is_caught(copies):
    pyproject, lock, makefile = copies
    text = lock.read_text()
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if "==" in line and not line.startswith("#"))
    name = lines[first].split("==")[0]
    unhashed = lines[:first] + [lines[first].rstrip(" \\")] + lines[first + 1:]
    while unhashed[first + 1].strip().startswith("--hash="):
        del unhashed[first + 1]
    lock.write_text("\n".join(unhashed) + "\n")
    assert any(f"{name}==" in p and "no --hash" in p for p in problems(pyproject, lock, makefile))
    lock.write_text(text + "nvidia-cublas==13.4.1.3 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    assert any("pins nvidia-cublas" in p for p in problems(pyproject, lock, makefile))
    lock.write_text(text)
    makefile.write_text(makefile.read_text().replace('"torch==2.13.0"', '"torch==2.14.0"'))
    assert any("Makefile installs torch" in p for p in problems(pyproject, lock, makefile))

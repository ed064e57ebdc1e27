"""The OpenMP thread policy `import rlhf` sets before torch loads (see rlhf/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SHOW = "import rlhf, os; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"


def _run(**env: str) -> str:
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "RLHF_THREAD_POLICY")}
    return subprocess.run([sys.executable, "-c", SHOW], env={**base, **env}, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("env, expected", [
    ({}, "None 3000"),                                      # a short spin, then sleep
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE None"),         # the user's choice wins
    ({"GOMP_SPINCOUNT": "1000"}, "None 1000"),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "PASSIVE None"),
    ({"RLHF_THREAD_POLICY": "off"}, "None None"),           # OpenMP's own defaults
])
def test_import_sets_a_short_spin_unless_told_otherwise(env, expected):
    assert _run(**env) == expected

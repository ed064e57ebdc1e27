"""The package's layers: each imports only those below it, and no module imports itself back
through others (function-level imports included). The order is README.md's reading order:

    errors, io, config, dist, runs  <  rl  <  models  <  data, world  <  train  <  eval
    <  pipeline  <  cli, labeling
"""

from __future__ import annotations

import ast
from pathlib import Path

import rlhf

SRC = Path(rlhf.__file__).resolve().parent
LAYERS = {"errors": 0, "io": 0, "config": 0, "dist": 0, "runs": 0, "rl": 1, "models": 2,
          "data": 3, "world": 3, "train": 4, "eval": 5, "pipeline": 6, "cli": 7, "labeling": 7}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(source: str, pkg: str) -> set[str]:
    """Every rlhf module a module's `source` imports, at any depth of its code (TYPE_CHECKING
    blocks aside); `pkg` is its package, for relative imports."""
    tree = ast.parse(source)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("rlhf")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.startswith("rlhf"):
                out.add(base)
                out |= {f"{base}.{a.name}" for a in node.names}
    return out


def graph() -> dict[str, set[str]]:
    """module -> the rlhf modules it imports; a module's own packages (imported by Python
    before it anyway) are left out."""
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    out = {}
    for m, p in files.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        deps = imports_of(p.read_text(encoding="utf-8"), pkg)
        out[m] = {i for i in deps if i in files and i != m and not m.startswith(i + ".")}
    return out


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_module_imports_a_higher_layer():
    bad = [f"{m} (layer {layer(m)}) imports {i} (layer {layer(i)})"
           for m, deps in sorted(graph().items()) for i in sorted(deps)
           if layer(i) > layer(m)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    g = graph()
    # a package's __init__ re-exporting its own modules is not a cycle of ideas
    g = {m: {i for i in deps if not (m == i.rsplit(".", 1)[0])} for m, deps in g.items()}
    state, stack, cycles = {}, [], []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_function_level_and_relative_imports():
    source = ("import os\nfrom rlhf import rl\n\ndef f():\n    from rlhf.train.ppo import ppo\n"
              "    from . import lm\n")
    assert imports_of(source, "rlhf.models") == {
        "rlhf", "rlhf.rl", "rlhf.train.ppo", "rlhf.train.ppo.ppo", "rlhf.models",
        "rlhf.models.lm"}

"""No import circles: the import graph of src/rlhf, read with `ast` (imports inside functions and
under `if TYPE_CHECKING:` count too), has no cycle through the packages in CHECKED.

An edge A -> B means module A has an `import` or `from ... import` naming module B;
`from rlhf.pkg import name` points to rlhf.pkg.name when that is a module, else to rlhf.pkg
(its __init__). The implicit import of a module's parent packages is not an edge: otherwise every
package whose __init__ re-exports its submodules would be a circle with each of them.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
CHECKED = ("rlhf.labeling", "rlhf.world", "rlhf.data")


def _modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is_package)} for every module under src/rlhf."""
    out = {}
    for path in sorted((src / "rlhf").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def import_graph(src: Path = SRC) -> dict[str, dict[str, int]]:
    """{module: {imported rlhf module: line of the first such import}}."""
    modules = _modules(src)
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in modules.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package of this module, up level - 1
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[:len(package) - (node.level - 1)]
                    base = ".".join(package + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (the circles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def shortest_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest circle through the first module of a component: [a, b, ..., a]."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w == start:  # back at the start: walk the parents from v
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1] + [start]
            if w in members and w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + \
        f" -> {cycle[-1]}"


def checked_circles(graph: dict[str, dict[str, int]]) -> list[str]:
    def checked(module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in CHECKED)
    return [describe(graph, shortest_cycle(graph, component))
            for component in strongly_connected(graph) if any(map(checked, component))]


def test_no_import_circles():
    graph = import_graph()
    assert "rlhf.labeling.app" in graph and graph["rlhf.world.world"]  # the graph was read
    circles = checked_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_check_finds_a_circle(tmp_path):
    """The detector itself: a function-level import closing a circle is reported."""
    package = tmp_path / "rlhf" / "data"
    package.mkdir(parents=True)
    (tmp_path / "rlhf" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from rlhf.data.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from rlhf.data import a\n    return a\n")
    (package / "c.py").write_text("from . import a\n")
    graph = import_graph(tmp_path)
    assert graph["rlhf.data.c"] == {"rlhf.data.a": 1}
    assert checked_circles(graph) == ["rlhf.data.a (line 1) -> rlhf.data.b (line 2) -> rlhf.data.a"]

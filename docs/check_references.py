"""Check that every citation in the code is defined in docs/references.md.

    python docs/check_references.py            # scans src/ and tests/
    python docs/check_references.py PATH...    # scans these files or folders instead

Two kinds of citation are checked, in comments and docstrings of Python files only (code such
as ``list[Path]`` or ``x[B]`` is never read):

- tags: a bracketed token such as ``[IGPT]``, ``[LMHP]``, ``[N+]``, ``[N-blog]``. A token counts
  as a tag when references.md defines it, or when it looks like one: 2 to 8 characters, an
  upper-case letter first, then upper-case letters, digits, ``+`` or ``-`` (so the shape
  annotations ``[B]``, ``[N]``, ``[B, T]`` are not tags);
- spec items: ``spec 7.19``, ``spec 1, 4, 7.22``, ``spec 4 and 7.13``, ``spec §8.16``,
  ``§8.1``, ``pitfall 8.9``, ``pitfalls 8.2, 8.7``, ``spec §8 items 3 and 4``, and a bare
  ``7.x``/``8.x`` in parentheses, in a list next to one of those, or in the last column of a
  table (``rl/__init__.py``). Sections are written
  ``spec 2`` or ``§7``. Paper sections (``paper §3.5``, ``§4.1``, ``App. C.4``) are the
  paper's own and are not checked.

references.md defines a tag or an item with a list entry that starts with it in bold:
``- **[IGPT]** ...``, ``- **7.19** ...``, ``- **§2** ...``. Exit status 1 lists what is cited
but not defined, with the first file and line that cites it. Standard library only.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "docs" / "references.md"
DEFAULT_ROOTS = (ROOT / "src", ROOT / "tests")

DEFINITION = re.compile(r"^\s*[-*]\s+\*\*(\[[^\]\s]+\]|§?\d+(?:\.\d+)?)\*\*", re.M)
BRACKETED = re.compile(r"\[([^\[\]\s,]{1,12})\]")
TAG_SHAPE = re.compile(r"[A-Z][A-Z0-9+\-]{1,7}")
NUM = r"§?\d+(?:\.\d+)?"
# "spec 1, 4, 7.22, 7.23" / "spec 4 and 7.13" / "pitfalls 8.2, 8.7" / "spec §8.16"
SPEC_LIST = re.compile(rf"\b(spec|pitfalls?)\s+({NUM}(?:(?:\s*,\s*|\s+and\s+){NUM}(?![\w%]))*)",
                       re.I)
# "§8 items 3 and 4"
SECTION_ITEMS = re.compile(r"§([78])\s+items?\s+(\d+(?:(?:\s*,\s*|\s+and\s+)\d+)*)")
SECTION_MARK = re.compile(r"§(\d+(?:\.\d+)?)")
# a bare 7.x / 8.x in parentheses or a list: "(7.10)", "(§3.5, 7.7)", "(7.4)"
BARE_ITEM = re.compile(r"(?<=[(,;]\s)([78]\.\d{1,2})(?![\w.%])|(?<=\()([78]\.\d{1,2})(?![\w.%])")
# the last column of a table such as rl/__init__.py's: "...   7.13, 8.8" at the end of a line
TABLE_CELL = re.compile(r"\s{2,}((?:Eq\. \d+|\d+(?:\.\d+)?)(?:,\s*(?:Eq\. \d+|\d+(?:\.\d+)?))*)[ \t]*$", re.M)


def comments_and_docstrings(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every comment and docstring in a Python file."""
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                yield body[0].lineno, body[0].value.value
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string


def spec_items(text: str) -> set[str]:
    """Spec item and section numbers cited in one comment or docstring ("7.19", "§2", "§8")."""
    found: set[str] = set()
    for m in TABLE_CELL.finditer(text):
        found.update(re.findall(r"(?<![\w.])[78]\.\d{1,2}(?![\w.])", m.group(1)))
    text = re.sub(r"\s+", " ", text)
    for m in SPEC_LIST.finditer(text):
        for n in re.findall(NUM, m.group(2)):
            n = n.lstrip("§")
            found.add(n if "." in n else "§" + n)
    for m in SECTION_ITEMS.finditer(text):
        found.update(f"{m.group(1)}.{i}" for i in re.findall(r"\d+", m.group(2)))
    for m in SECTION_MARK.finditer(text):
        n = m.group(1)
        if n.split(".")[0] in ("7", "8"):        # §1-§6 and appendices are the paper's
            found.add(n if "." in n else "§" + n)
    for m in BARE_ITEM.finditer(text):
        found.add(m.group(1) or m.group(2))
    return found


def defined(references: Path = REFERENCES) -> set[str]:
    """Tags ("[IGPT]") and spec numbers ("7.19", "§2") that references.md defines."""
    out = set()
    for d in DEFINITION.findall(references.read_text(encoding="utf-8")):
        out.add(d if d.startswith("[") or d.startswith("§") or "." in d else "§" + d)
    return out


def citations(paths: Iterable[Path], known: set[str]) -> dict[str, str]:
    """Every tag and spec number cited under `paths` -> its first place ("file:line")."""
    files: list[Path] = []
    for p in paths:
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    where: dict[str, str] = {}
    for f in files:
        for line, text in comments_and_docstrings(f):
            cited = {f"[{t}]" for t in BRACKETED.findall(text)
                     if f"[{t}]" in known or TAG_SHAPE.fullmatch(t)}
            cited |= spec_items(text)
            for c in cited:
                where.setdefault(c, f"{_rel(f)}:{line}")
    return where


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def undefined(paths: Iterable[Path], references: Path = REFERENCES) -> dict[str, str]:
    """Citations under `paths` that `references` does not define -> where each is first cited."""
    known = defined(references)
    return {c: w for c, w in sorted(citations(paths, known).items()) if c not in known}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] or [p for p in DEFAULT_ROOTS if p.exists()]
    missing = undefined(paths)
    if missing:
        print(f"cited but not defined in {_rel(REFERENCES)} (line = the comment or docstring):")
        for c, where in missing.items():
            print(f"  {c:10s} first cited at {where}")
        return 1
    n = len(citations(paths, defined()))
    print(f"{n} tags and spec numbers cited, all defined in {_rel(REFERENCES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

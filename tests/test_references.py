"""docs/check_references.py: every citation tag and spec number in src/ and tests/ is defined in
docs/references.md, and type subscripts or tensor shapes are not taken for tags."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_references", ROOT / "docs" / "check_references.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def test_every_citation_in_src_and_tests_is_defined():
    assert check.undefined([ROOT / "src", ROOT / "tests"]) == {}


def test_an_undefined_tag_or_spec_item_fails(tmp_path, capsys):
    f = tmp_path / "cites.py"
    f.write_text('"""Uses [XYZW] and [IGPT] (spec 7.99, pitfall 8.9)."""\n'
                 "x = 1  # as [LMHP] does, see §8.77\n", encoding="utf-8")
    assert set(check.undefined([f])) == {"[XYZW]", "7.99", "8.77"}
    assert check.main([str(f)]) == 1
    assert "[XYZW]" in capsys.readouterr().out


def test_code_subscripts_and_shapes_are_not_tags(tmp_path):
    f = tmp_path / "code.py"
    f.write_text("from typing import Any\n"
                 "def f(p: list[Path], d: dict[str, Any]) -> Tensor:\n"
                 '    """Scores [B] and logits [B, T, V]; see x[N] (T = 0.7, 7.5 % of rows)."""\n'
                 "    return MAP[KEY]  # shape [N]\n", encoding="utf-8")
    assert check.undefined([f]) == {}


def test_spec_lists_and_sections_are_read():
    items = check.spec_items("(spec 1, 4, 7.22, 7.23); spec 4 and 7.13; pitfalls 8.2, 8.7;\n"
                             "spec §8 items 3 and 4; divided by T (7.10); (§3.5, spec\n7.7)")
    assert items == {"§1", "§4", "7.22", "7.23", "7.13", "8.2", "8.7", "§8", "8.3", "8.4",
                     "7.10", "7.7"}

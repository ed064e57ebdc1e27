"""File helpers shared by every layer: JSONL reading with precise errors, atomic writes."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rlhf.errors import UserError


def open_text(path: str | os.PathLike) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file (optionally .gz); a decoding error names the line."""
    path = Path(path)
    if not path.exists():
        raise UserError("file not found", path=str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path=str(path),
                                line=i) from None


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, object) for each non-blank line; malformed lines raise UserError."""
    for i, line in enumerate(open_text(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON ({e.msg} at column {e.colno})", path=str(path),
                            line=i) from None
        if not isinstance(obj, dict):
            raise UserError("each line must be a JSON object", path=str(path), line=i)
        yield i, obj


def require_str(obj: dict, key: str, path: str, line: int, *, allow_empty: bool = False) -> str:
    """Return obj[key] as a non-empty string, or raise a UserError naming file, line and field."""
    if key not in obj:
        raise UserError("missing field", path=path, line=line, field=key)
    value = obj[key]
    if not isinstance(value, str):
        raise UserError(f"must be a string, got {type(value).__name__}", path=path, line=line,
                        field=key)
    if not allow_empty and not value.strip():
        raise UserError("must not be empty", path=path, line=line, field=key)
    return value


@contextmanager
def atomic_path(final: str | os.PathLike, *, is_dir: bool = False):
    """Yield a temporary path beside `final`; on success rename it into place (never half-written)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir and final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

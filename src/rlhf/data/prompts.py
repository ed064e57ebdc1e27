"""Prompts for sampling (PPO, SFT selection, evaluation): JSONL records or plain lines."""

from __future__ import annotations

from pathlib import Path

from rlhf.errors import UserError
from rlhf.io import read_jsonl, require_str


def load_prompts(path: str | Path, field: str | None = None) -> list[str]:
    """Prompts from JSONL records with a "prompt" field, or a text file with one per line.
    `field` names the setting that gave the path, for the error messages."""
    if not path:
        raise UserError(f"say where the prompts are: {field or 'a prompts file'}", field=field)
    p = Path(path)
    if not p.exists():
        raise UserError("prompts file not found", path=str(p), field=field)
    if p.suffix in (".jsonl", ".json") or p.name.endswith(".jsonl.gz"):
        prompts = [require_str(obj, "prompt", str(p), line) for line, obj in read_jsonl(p)]
    else:
        prompts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    if not prompts:
        raise UserError("no prompts in this file", path=str(p), field=field)
    return prompts

"""Demonstrations for step 1 (SFT): JSONL readers, the LIMA adapter, tokenisation, collation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from rlhf.data.records import Demonstration
from rlhf.models.format import DEFAULT_TEMPLATE, encode_example
from rlhf.errors import UserError
from rlhf.io import read_jsonl, require_str
from rlhf.models.lm import IGNORE_INDEX

IGNORE = IGNORE_INDEX  # label value that carries no loss


def parse_messages_record(obj: dict, path: str, line: int) -> Demonstration:
    """A chat record {"messages": [{"role", "content"}, ...]} as a Demonstration: the last
    message (the assistant's) is the response, the message before it the prompt, the earlier
    pairs of turns the history; system messages go before the prompt of a single-turn dialogue
    (and are dropped from a longer one)."""
    msgs = obj["messages"]
    if not isinstance(msgs, list) or len(msgs) < 2:
        raise UserError("must be a list of at least a user and an assistant message", path=path,
                        line=line, field="messages")
    turns = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise UserError("each message needs 'role' and 'content'", path=path, line=line,
                            field=f"messages[{j}]")
        turns.append((m["role"], m["content"]))
    if turns[-1][0] != "assistant":
        raise UserError("the last message must be the assistant's", path=path, line=line,
                        field=f"messages[{len(turns) - 1}].role")
    if not str(turns[-1][1]).strip():
        raise UserError("must not be empty", path=path, line=line,
                        field=f"messages[{len(turns) - 1}].content")
    system = " ".join(c for r, c in turns if r == "system")
    dialog = [(r, c) for r, c in turns if r != "system"]
    history, i = [], 0
    while i + 1 < len(dialog) - 1:
        history.append((dialog[i][1], dialog[i + 1][1]))
        i += 2
    user = dialog[-2][1] if len(dialog) >= 2 else ""
    if system:
        user = f"{system}\n{user}" if not history else user
    return Demonstration(prompt=user, response=dialog[-1][1], history=history,
                         labeler_id=obj.get("labeler_id"))


def load_demonstrations(path: str | Path, data_format: str = "auto") -> list[Demonstration]:
    """Read demonstrations: JSONL {"prompt","response"} or {"messages"}, or LIMA JSON."""
    path = str(path)
    if data_format == "lima" or (data_format == "auto" and path.endswith((".json", ".json.gz"))):
        return load_lima(path)
    demos = []
    for line, obj in read_jsonl(path):
        if "messages" in obj:
            demos.append(parse_messages_record(obj, path, line))
            continue
        prompt = require_str(obj, "prompt", path, line)
        response = require_str(obj, "response", path, line)
        demos.append(Demonstration(prompt, response, labeler_id=obj.get("labeler_id")))
    if not demos:
        raise UserError("no demonstrations in file", path=path)
    return demos


def load_lima(path: str | Path) -> list[Demonstration]:
    """The LIMA release in Alpaca form: a JSON array of {instruction, input, output, history}."""
    import gzip
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            records = json.load(f)
    except FileNotFoundError:
        raise UserError("file not found", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"not a valid LIMA JSON array: {e}", path=path) from None
    if not isinstance(records, list):
        raise UserError("expected a JSON array of records", path=path)
    demos = []
    for i, r in enumerate(records):
        where = dict(path=path, line=None, field=f"[{i}]")
        if not isinstance(r, dict):
            raise UserError("record must be an object", **where)
        for key in ("instruction", "output"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise UserError("missing or empty", path=path, field=f"[{i}].{key}")
        prompt = r["instruction"] + (f"\n{r['input']}" if r.get("input") else "")
        history = [(h[0], h[1]) for h in r.get("history") or []]
        demos.append(Demonstration(prompt, r["output"], history))
    return demos


def encode_demonstration(tokenizer, demo: Demonstration, max_length: int,
                         template: str = DEFAULT_TEMPLATE,
                         loss_on_prompt: bool = False) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, truncated): `rlhf.models.format.encode_example` (the prompt with its
    earlier turns, in the chat template when the tokenizer has one). Labels are IGNORE on prompt
    tokens unless loss_on_prompt; the response and its EOS (under a chat template: exactly the
    assistant's tokens) always carry loss. Over-long examples keep the prompt's end."""
    prompt_ids, resp_ids = encode_example(tokenizer, demo.prompt, demo.response, template,
                                          demo.history)
    truncated = False
    if len(prompt_ids) + len(resp_ids) > max_length:
        truncated = True
        keep_resp = min(len(resp_ids), max(max_length - len(prompt_ids), max_length // 2))
        keep_prompt = min(len(prompt_ids), max_length - keep_resp)
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt:]
        resp_ids = resp_ids[:keep_resp]
    ids = prompt_ids + resp_ids
    labels = (list(prompt_ids) if loss_on_prompt else [IGNORE] * len(prompt_ids)) + resp_ids
    return ids, labels, truncated


def encode_all(tokenizer, demos: list[Demonstration], max_length: int, template: str,
               loss_on_prompt: bool, source: str = "") -> list[tuple[list[int], list[int]]]:
    out, n_trunc = [], 0
    for d in demos:
        ids, labels, truncated = encode_demonstration(tokenizer, d, max_length, template,
                                                      loss_on_prompt)
        n_trunc += truncated
        out.append((ids, labels))
    if n_trunc:
        warnings.warn(f"{source}: {n_trunc} of {len(demos)} examples longer than max_length="
                      f"{max_length} tokens were truncated", stacklevel=2)
    return out


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; labels IGNORE on padding."""
    n = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}

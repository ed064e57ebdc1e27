"""Rankings for step 2 (the reward model): records, validation, tokenisation and collation.

A ranking record (JSONL, one per line):

    {"prompt": str, "responses": [str × K], "ranking": [[i, ...], [j, ...], ...],
     "labeler_id"?: str}

`ranking` lists tie groups best to worst; every index 0..K-1 appears exactly once (a plain int
is read as a group of one, so [2, 0, 1] is a strict order). A pairwise record
{"prompt", "chosen", "rejected"} is read as K = 2 with ranking [[0], [1]]. The public HH-RLHF
and summarize-from-feedback (TL;DR) comparison formats are read by `rlhf.data.adapters`.
Every mistake is a UserError naming the file, the line and the field.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf.data.adapters import parse_hh_rlhf_record, parse_tldr_record
from rlhf.data.records import RankingExample
from rlhf.data.sft import parse_messages_record
from rlhf.models.format import (DEFAULT_TEMPLATE, TruncationCounter, encode_pair, encode_prompt,
                                pad_sequences)
from rlhf.errors import UserError
from rlhf.io import read_jsonl, require_str
from rlhf.rl.ranking import preference_matrix

FORMATS = ("auto", "rankings", "pairwise", "hh_rlhf", "tldr")


@dataclass
class EncodedRanking:
    sequences: list[list[int]]        # K token-id lists: prompt ids + response ids + EOS
    ranking: list[list[int]]
    labeler_id: str | None = None


# ----------------------------------------------------------------------------- validation

def check_ranking(ranking, k: int, path: str, line: int | None,
                  field: str = "ranking") -> list[list[int]]:
    """Validate a tie-group ranking of K responses; return it as a list of int lists."""
    def err(msg: str):
        return UserError(msg, path=path, line=line, field=field)

    if not isinstance(ranking, list) or not ranking:
        raise err("must be a non-empty list of tie groups, best first, e.g. [[2], [0, 3], [1]]")
    groups, seen = [], set()
    for g in ranking:
        group = [g] if isinstance(g, int) and not isinstance(g, bool) else g
        if not isinstance(group, list) or not group:
            raise err(f"each tie group must be a non-empty list of response indices, got {g!r}")
        for i in group:
            if not isinstance(i, int) or isinstance(i, bool):
                raise err(f"response index must be an integer, got {i!r}")
            if not 0 <= i < k:
                raise err(f"index {i} is out of range for {k} responses (0..{k - 1})")
            if i in seen:
                raise err(f"response {i} appears more than once")
            seen.add(i)
        groups.append([int(i) for i in group])
    missing = sorted(set(range(k)) - seen)
    if missing:
        raise err(f"response(s) {missing} are not ranked; every response must appear once")
    return groups


def check_responses(responses, path: str, line: int | None, max_k: int,
                    field: str = "responses") -> list[str]:
    if not isinstance(responses, list):
        raise UserError(f"must be a list of strings, got {type(responses).__name__}", path=path,
                        line=line, field=field)
    k = len(responses)
    if k < 2:
        raise UserError(f"needs at least 2 responses to rank, got {k}", path=path, line=line,
                        field=field)
    if k > max_k:
        raise UserError(f"{k} responses is more than the limit max_k={max_k}", path=path,
                        line=line, field=field)
    for i, r in enumerate(responses):
        if not isinstance(r, str):
            raise UserError(f"must be a string, got {type(r).__name__}", path=path, line=line,
                            field=f"{field}[{i}]")
        if not r.strip():
            raise UserError("response must not be empty", path=path, line=line,
                            field=f"{field}[{i}]")
    return list(responses)


def _labeler(obj: dict, path: str, line: int) -> str | None:
    lab = obj.get("labeler_id")
    if lab is None:
        return None
    if not isinstance(lab, (str, int)) or isinstance(lab, bool):
        raise UserError("must be a string", path=path, line=line, field="labeler_id")
    return str(lab)


def parse_ranking_record(obj: dict, path: str, line: int, max_k: int = 9) -> RankingExample:
    prompt = require_str(obj, "prompt", path, line)
    if "responses" not in obj:
        raise UserError("missing field", path=path, line=line, field="responses")
    responses = check_responses(obj["responses"], path, line, max_k)
    if "ranking" not in obj:
        raise UserError("missing field", path=path, line=line, field="ranking")
    ranking = check_ranking(obj["ranking"], len(responses), path, line)
    return RankingExample(prompt, responses, ranking, _labeler(obj, path, line))


def parse_pairwise_record(obj: dict, path: str, line: int, max_k: int = 9) -> RankingExample:
    prompt = require_str(obj, "prompt", path, line)
    chosen = require_str(obj, "chosen", path, line)
    rejected = require_str(obj, "rejected", path, line)
    if max_k < 2:
        raise UserError(f"a pair has 2 responses, more than max_k={max_k}", path=path, line=line)
    return RankingExample(prompt, [chosen, rejected], [[0], [1]], _labeler(obj, path, line))


def detect_format(obj: dict) -> str:
    if "responses" in obj or "ranking" in obj:
        return "rankings"
    if "chosen" in obj and "rejected" in obj:
        return "pairwise" if "prompt" in obj else "hh_rlhf"
    if "summaries" in obj and "choice" in obj:
        return "tldr"
    return "unknown"


def load_rankings(path: str | Path, max_k: int = 9, data_format: str = "auto",
                  skip_invalid: bool = False) -> list[RankingExample]:
    """Read ranking, pairwise, HH-RLHF or TL;DR comparison records (JSONL, optionally .gz).

    With data_format="auto" each line's format is recognised from its keys. An invalid record
    raises a UserError naming file, line and field; with `skip_invalid` (for public sets, where
    a few records have e.g. an empty reply) it is skipped and the count is warned about.
    Malformed JSON is always an error.
    """
    if data_format not in FORMATS:
        raise UserError(f"unknown data_format '{data_format}' (one of {', '.join(FORMATS)})",
                        field="data_format")
    path = str(path)
    parsers = {"rankings": parse_ranking_record, "pairwise": parse_pairwise_record,
               "hh_rlhf": parse_hh_rlhf_record, "tldr": parse_tldr_record}
    out, skipped = [], []
    for line, obj in read_jsonl(path):
        fmt = detect_format(obj) if data_format == "auto" else data_format
        if fmt == "unknown":
            raise UserError("unrecognised record: expected 'prompt'+'responses'+'ranking', "
                            "'prompt'+'chosen'+'rejected', HH-RLHF 'chosen'+'rejected', or "
                            "TL;DR 'summaries'+'choice'", path=path, line=line)
        try:
            out.append(parsers[fmt](obj, path, line, max_k=max_k))
        except UserError as e:
            if not skip_invalid:
                raise
            skipped.append(str(e))
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} invalid record(s); first: {skipped[0]}",
                      stacklevel=2)
    if not out:
        raise UserError("no ranking records in file", path=path)
    return out


# ----------------------------------------------------------------------------- (prompt, response)

def load_prompt_responses(path: str | Path) -> list[tuple[str, str]]:
    """(prompt, response) pairs from JSONL {"prompt", "response"} or chat {"messages"} records
    (demonstrations for normalisation, inputs for `rlhf rm score`)."""
    path = str(path)
    out = []
    for line, obj in read_jsonl(path):
        if "messages" in obj and "prompt" not in obj:
            d = parse_messages_record(obj, path, line)
            out.append((d.prompt, d.response))
            continue
        out.append((require_str(obj, "prompt", path, line),
                    require_str(obj, "response", path, line)))
    if not out:
        raise UserError("no records in file", path=path)
    return out


# ----------------------------------------------------------------------------- tokenisation

def encode_rankings(tokenizer, examples: list[RankingExample], max_length: int,
                    template: str = DEFAULT_TEMPLATE, source: str = "") -> list[EncodedRanking]:
    counter = TruncationCounter()
    out = []
    for ex in examples:
        p = encode_prompt(tokenizer, ex.prompt, template)
        seqs = [encode_pair(tokenizer, ex.prompt, r, max_length, template, counter, p)
                for r in ex.responses]
        out.append(EncodedRanking(seqs, ex.ranking, ex.labeler_id))
    counter.warn(source, max_length)
    return out


def collate_rankings(batch: list[EncodedRanking], pad_id: int) -> dict[str, torch.Tensor]:
    """All K responses of all prompts in one padded tensor (one forward pass per response).

    input_ids/attention_mask: [N, T] with N = ΣK; slot: [N, 2] (prompt b, response k) so the N
    scores scatter into a [B, Kmax] matrix; pref: [B, Kmax, Kmax] (see rl.ranking).
    """
    seqs, slot = [], []
    for b, ex in enumerate(batch):
        for k, s in enumerate(ex.sequences):
            seqs.append(s)
            slot.append((b, k))
    ids, mask = pad_sequences(seqs, pad_id)
    k_max = max(len(ex.sequences) for ex in batch)
    return {"input_ids": ids, "attention_mask": mask, "slot": torch.tensor(slot),
            "pref": preference_matrix([ex.ranking for ex in batch], k_max)}


def scores_to_matrix(scores: torch.Tensor, slot: torch.Tensor, n_prompts: int,
                     k_max: int) -> torch.Tensor:
    """Scatter per-sequence scores [N] into [B, Kmax] (differentiable; empty slots are 0)."""
    slot = slot.to(scores.device)
    mat = scores.new_zeros(n_prompts, k_max)
    return mat.index_put((slot[:, 0], slot[:, 1]), scores)

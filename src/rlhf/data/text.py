"""Plain-text pretraining data: documents (separated by blank lines) packed into fixed blocks."""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf.errors import UserError
from rlhf.io import open_text


def read_documents(files: list[str]) -> list[str]:
    """Documents from UTF-8 text files (optionally .gz); a blank line separates documents."""
    if not files:
        raise UserError("no text files given", field="train_files")
    docs: list[str] = []
    for f in files:
        if not Path(f).exists():
            raise UserError("text file not found", path=str(f))
        buf: list[str] = []
        for line in open_text(f):
            if line.strip():
                buf.append(line.rstrip("\n"))
            elif buf:
                docs.append("\n".join(buf))
                buf = []
        if buf:
            docs.append("\n".join(buf))
    return docs


def pack_blocks(tokenizer, docs: list[str], block_size: int,
                max_tokens: int | None = None) -> torch.Tensor:
    """Tokenise documents, join them with EOS, and cut the stream into [N, block_size] blocks."""
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    batch = 1024
    for i in range(0, len(docs), batch):
        for ids in tokenizer(docs[i:i + batch], add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos)
        if max_tokens is not None and len(stream) >= max_tokens:
            stream = stream[:max_tokens]
            break
    n = len(stream) // block_size
    if n == 0:
        raise UserError(f"text too short for one block of {block_size} tokens",
                        field="block_size")
    return torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)


def repeat_blocks(n: int, block_size: int, token_ids: torch.Tensor, generator: torch.Generator,
                  span: tuple[int, int] | None = None) -> torch.Tensor:
    """[n, block_size] synthetic copy blocks: p random tokens (p drawn from `span`, inclusive;
    default block_size // 5 .. block_size // 2, i.e. 25..64 for 128-token blocks),
    then the same p tokens again, cyclically from a random offset, to the end of the block.

    Past the first p tokens every next token is predictable only by looking back for the
    current token's earlier occurrence and copying what followed it (an induction head); the
    random length and offset leave no fixed-distance shortcut. `token_ids` are the ids to draw
    from (e.g. the tokenizer's ids without its special tokens)."""
    lo, hi = span or (max(1, block_size // 5), block_size // 2)
    if not 1 <= lo <= hi < block_size:
        raise UserError(f"repeat span {span} must lie within 1..{block_size - 1}", field="span")
    ids = token_ids[torch.randint(len(token_ids), (n, block_size), generator=generator)]
    p = torch.randint(lo, hi + 1, (n, 1), generator=generator)
    offset = (torch.rand(n, 1, generator=generator) * p).long()
    pos = torch.arange(block_size)[None, :]
    source = torch.where(pos < p, pos, (offset + pos - p) % p)
    return ids.gather(1, source)


def block_examples(blocks: torch.Tensor) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) pairs of packed blocks: every token is a target."""
    return [(b.tolist(), b.tolist()) for b in blocks]


def collate_blocks(examples) -> dict[str, torch.Tensor]:
    ids = torch.tensor([e[0] for e in examples], dtype=torch.long)
    return {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}

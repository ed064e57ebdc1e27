"""How a prompt and a response become token ids (shared by SFT, RM, PPO and evaluation).

The prompt is formatted with a template and tokenised alone; the response is tokenised alone as
" " + response and followed by EOS. The two id lists are concatenated, never re-tokenised
together, so the loss-mask boundary in SFT and the start of generation in PPO agree exactly.
"""

from __future__ import annotations

import warnings

import torch

from rlhf.config import DEFAULT_TEMPLATE



def format_prompt(prompt: str, template: str = DEFAULT_TEMPLATE) -> str:
    return template.replace("{prompt}", prompt)


def encode_prompt(tokenizer, prompt: str, template: str = DEFAULT_TEMPLATE) -> list[int]:
    return tokenizer(format_prompt(prompt, template), add_special_tokens=False)["input_ids"]


def encode_response(tokenizer, response: str, add_eos: bool = True) -> list[int]:
    ids = tokenizer(" " + response.strip(), add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if add_eos else ids


def decode_response(tokenizer, ids) -> str:
    """Text of response ids, stopping at the first EOS and dropping PAD."""
    out = []
    for t in ids:
        t = int(t)
        if t == tokenizer.eos_token_id:
            break
        if t != tokenizer.pad_token_id:
            out.append(t)
    return tokenizer.decode(out, skip_special_tokens=True).strip()


class TruncationCounter:
    def __init__(self):
        self.prompts = self.responses = self.total = 0

    def warn(self, source: str = "", max_length: int = 0) -> None:
        if self.prompts or self.responses:
            warnings.warn(f"{source}: of {self.total} sequences longer than max_length="
                          f"{max_length}: {self.prompts} prompts were cut from the left, "
                          f"{self.responses} responses were cut at the end (their EOS lost)",
                          stacklevel=3)


def encode_pair(tokenizer, prompt: str, response: str, max_length: int,
                template: str = DEFAULT_TEMPLATE, counter: TruncationCounter | None = None,
                prompt_ids: list[int] | None = None) -> list[int]:
    """Prompt ids (template applied) + " " + response ids + EOS, at most max_length tokens.

    Too long: the prompt is cut from the left; a response that alone exceeds max_length is cut
    at the end (it loses its EOS). Both are counted in `counter`.
    """
    p = prompt_ids if prompt_ids is not None else encode_prompt(tokenizer, prompt, template)
    r = encode_response(tokenizer, response)
    if counter is not None:
        counter.total += 1
    if len(p) + len(r) > max_length:
        if len(r) > max_length:
            r = r[:max_length]
            if counter is not None:
                counter.responses += 1
        keep = max_length - len(r)
        if keep < len(p):
            p = p[len(p) - keep:] if keep > 0 else []
            if counter is not None:
                counter.prompts += 1
    return list(p) + list(r)


def pad_sequences(seqs: list[list[int]], pad_id: int, side: str = "right"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [N, T], attention_mask [N, T]) padded to the longest sequence."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not s:
            continue
        if side == "right":
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        else:
            ids[i, n - len(s):] = torch.tensor(s)
            mask[i, n - len(s):] = 1
    return ids, mask

"""How a prompt and a response become token ids (shared by SFT, RM, PPO and evaluation).

The prompt is formatted with a template and tokenised alone; the response is tokenised alone as
" " + response and followed by EOS. The two id lists are concatenated, never re-tokenised
together, so the loss-mask boundary in SFT and the start of generation in PPO agree exactly.
"""

from __future__ import annotations

DEFAULT_TEMPLATE = "User: {prompt}\nAssistant:"


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

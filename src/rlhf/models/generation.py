"""Batched sampling with the KV cache: left-padded queries, temperature, stop at EOS.

The sampler returns the log-probabilities of the tokens it drew, computed from the same
temperature-scaled logits (with the PAD logit removed) that training uses, `rl.policy_logits`,
so rollout and training log-probs agree (spec §8.1). Everything after a row's first EOS is PAD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rlhf import rl
from rlhf.models.format import DEFAULT_TEMPLATE, decode_response, encode_prompt, pad_sequences
from rlhf.models.lm import position_ids_from_mask


@dataclass
class Sample:
    query: torch.Tensor          # [B, Tq] left-padded prompt ids
    query_mask: torch.Tensor     # [B, Tq]
    response: torch.Tensor       # [B, Tr] sampled ids; PAD after the first EOS
    response_mask: torch.Tensor  # [B, Tr] 1 up to and including the first EOS
    logprobs: torch.Tensor       # [B, Tr] log π(token) under temperature-scaled logits (0 on pad)
    has_eos: torch.Tensor        # [B] bool
    hidden: torch.Tensor | None = None  # [B, Tr, d] final hidden state that scored each token

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query, self.response], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)


#: `generate(sampler=...)`: "multinomial" (`torch.multinomial`, one exponential draw per vocab
#: entry) or "inverse_cdf" (one uniform draw per row, looked up in the float64 cumulative
#: distribution: the same distribution, ~20x cheaper per step on CPU, other samples per seed).
SAMPLERS = ("multinomial", "inverse_cdf")


def _sample_inverse_cdf(probs: torch.Tensor, generator) -> torch.Tensor:
    """One draw per row of the (unnormalised, non-negative) `probs` [B, V]: the first index whose
    cumulative sum exceeds u · total, u ~ U[0, 1). Zero-probability entries (PAD, top-p cut) are
    never drawn: their bin in the cumulative sum is empty."""
    cdf = probs.double().cumsum(-1)
    u = torch.rand(probs.size(0), 1, generator=generator, dtype=torch.float64,
                   device=probs.device) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    over = idx >= probs.size(-1)          # u·total rounded up to total: take the last non-zero
    if bool(over.any()):
        last = probs.size(-1) - 1 - (probs.flip(-1) > 0).long().argmax(-1)
        idx = torch.where(over, last, idx)
    return idx


def _sample(logits: torch.Tensor, top_p: float, generator,
            sampler: str = "multinomial") -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    draw = _sample_inverse_cdf if sampler == "inverse_cdf" else \
        (lambda q, g: torch.multinomial(q, 1, generator=g).squeeze(-1))
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        choice = draw(sorted_p, generator)
        return order.gather(-1, choice[:, None]).squeeze(-1)
    return draw(probs, generator)


@torch.no_grad()
def generate(model, tokenizer, prompt_ids: list[list[int]], *, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0,
             generator: torch.Generator | None = None, sampler: str = "multinomial",
             return_hidden: bool = False,
             all_done: Callable[[bool], bool] | None = None) -> Sample:
    """Sample one response per prompt. temperature = 0 decodes greedily (logprobs at T = 1).

    `sampler` (see `SAMPLERS`) picks how a token is drawn from the same distribution. The
    log-probs are a log-softmax of the same float32 logits (under autocast too).
    `all_done(finished) -> bool` (FSDP: `rlhf.dist.all_true`) makes every process stop at the
    same step, as a sharded model's forwards are collective. `return_hidden` also keeps the last
    layer's hidden state at the position that scored each
    response token (what a value head on the policy trunk reads), at no extra forward."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    dev = next(model.parameters()).device
    query, qmask = pad_sequences(prompt_ids, pad, side="left")
    query, qmask = query.to(dev), qmask.to(dev)
    B = query.size(0)
    mask = qmask
    pos = position_ids_from_mask(mask)
    hid_kw = {"output_hidden_states": True} if return_hidden else {}
    out = model(input_ids=query, attention_mask=mask, position_ids=pos, use_cache=True, **hid_kw)
    past, next_logits = out.past_key_values, out.logits[:, -1]
    hiddens = [out.hidden_states[-1][:, -1]] if return_hidden else []
    last_pos = pos[:, -1]
    tokens, logps = [], []
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    for t in range(max_new_tokens):
        scaled = rl.policy_logits(next_logits, temperature if temperature > 0 else 1.0, pad)
        if temperature > 0:
            tok = _sample(scaled, top_p, generator, sampler)
        else:
            tok = scaled.argmax(-1)
        # log_softmax + gather: `rl.logprobs_from_logits` to rounding (tested), one kernel less
        lp = torch.log_softmax(scaled, -1).gather(-1, tok[:, None]).squeeze(-1)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        lp = torch.where(done, torch.zeros_like(lp), lp)
        tokens.append(tok)
        logps.append(lp)
        done = done | (tok == eos)
        finished = bool(done.all())
        if all_done is not None:          # a sharded model: every process steps in lockstep
            finished = all_done(finished)
        if finished or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, (~done | (tok == eos)).long()[:, None]], dim=1)
        last_pos = last_pos + 1
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                    past_key_values=past, use_cache=True, **hid_kw)
        past, next_logits = out.past_key_values, out.logits[:, -1]
        if return_hidden:
            hiddens.append(out.hidden_states[-1][:, -1])
    response = torch.stack(tokens, dim=1)
    logprobs = torch.stack(logps, dim=1)
    response_mask = rl.response_mask_from_eos(response, eos, pad).long()
    return Sample(query, qmask, response, response_mask, logprobs * response_mask,
                   rl.has_eos(response, eos), torch.stack(hiddens, 1) if return_hidden else None)


@torch.no_grad()
def generate_texts(model, tokenizer, prompts: list[str], n: int = 1, *, max_new_tokens: int = 64,
                   temperature: float = 1.0, top_p: float = 1.0,
                   template: str = DEFAULT_TEMPLATE, batch_size: int = 32,
                   seed: int | None = 0, prefix: str = "") -> list[list[str]]:
    """n sampled responses (text, cut at EOS) per prompt, formatted by `encode_prompt` (the chat
    template when the tokenizer has one). `prefix` is prepended to every formatted prompt (e.g.
    few-shot examples for a prompted base model)."""
    was_training = model.training
    model.eval()
    gen = None
    if seed is not None:
        gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    flat = [p for p in prompts for _ in range(n)]
    texts: list[str] = []
    for i in range(0, len(flat), batch_size):
        chunk = flat[i:i + batch_size]
        ids = [tokenizer(prefix, add_special_tokens=False)["input_ids"] +
               encode_prompt(tokenizer, p, template) if prefix else
               encode_prompt(tokenizer, p, template) for p in chunk]
        ro = generate(model, tokenizer, ids, max_new_tokens=max_new_tokens,
                      temperature=temperature, top_p=top_p, generator=gen)
        texts.extend(decode_response(tokenizer, r) for r in ro.response.tolist())
    model.train(was_training)
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

"""PPO's rollout: which prompts an iteration uses, sampling, and scoring every episode.

    prompts  <- episodes_per_iteration prompts (a fixed function of seed and iteration)
    sample   <- y ~ π(·|x) with the KV cache, T, stop at EOS; PAD after the first EOS;
                old log-probs = the sampler's own (temperature-scaled, PAD logit removed)
    score    <- r(x, y) (−1 when y has no EOS), log π_ref (one forward), V (one forward)
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass, fields
from typing import Callable, Sequence

import torch
from torch import Tensor

from rlhf import dist
from rlhf.config import PPOConfig
from rlhf.errors import UserError
from rlhf.models.cpu import autocast_context
from rlhf.models.format import decode_response, encode_prompt
from rlhf.models.generation import Sample, generate
from rlhf.models.value import response_logprobs, value_forward
from rlhf.runs import Timer
from rlhf.train.ppo.checks import check_rollout, check_scores
from rlhf.train.ppo.models import PPOModels


def encode_prompts(tokenizer, prompts: list[str], template: str,
                   max_length: int) -> tuple[list[str], list[list[int]], int]:
    """Prompts as `encode_prompt` renders them (the chat template when the tokenizer has one);
    longer than `max_length` tokens are dropped (paper: > 1k)."""
    kept, ids, dropped = [], [], 0
    for text in prompts:
        enc = encode_prompt(tokenizer, text, template)
        if not enc or len(enc) > max_length:
            dropped += 1
            continue
        kept.append(text)
        ids.append(enc)
    if not kept:
        raise UserError(f"every prompt is longer than ppo.max_prompt_length ({max_length}) "
                        "tokens (or empty)", field="ppo.max_prompt_length")
    return kept, ids, dropped


def mix_seed(*parts: int) -> int:
    """One seed from several integers (seed, purpose, iteration, ...), for a generator whose
    draws must not depend on anything else (process count, resume)."""
    s = 0x5EED
    for x in parts:
        s = (s * 1_000_003 + int(x) + 1) % (2**61 - 1)
    return s


def iteration_prompts(n_prompts: int, seed: int, iteration: int, count: int) -> list[int]:
    """Prompt indices of one iteration: a slice of an endless stream of seeded permutations,
    so every prompt is used once per pass, and iteration i is the same after a resume."""
    out, perms = [], {}
    for pos in range(iteration * count, (iteration + 1) * count):
        epoch, k = divmod(pos, n_prompts)
        if epoch not in perms:
            order = list(range(n_prompts))
            random.Random(mix_seed(seed, 7, epoch)).shuffle(order)
            perms[epoch] = order
        out.append(perms[epoch][k])
    return out


@dataclass
class Episodes:
    """A batch of episodes: left-padded queries, right-padded responses and per-token data."""
    query: Tensor            # [N, Tq] left padded
    query_mask: Tensor       # [N, Tq]
    response: Tensor         # [N, Tr] PAD after the first EOS
    mask: Tensor             # [N, Tr] 1 up to and including the first EOS
    logprobs: Tensor         # [N, Tr] rollout log π (temperature-scaled)
    ref_logprobs: Tensor     # [N, Tr] log π_ref
    values: Tensor           # [N, Tr] V before the update
    scores: Tensor           # [N] score used as reward (after the no-EOS penalty)
    raw_scores: Tensor       # [N] score before the penalty
    has_eos: Tensor          # [N] bool
    advantages: Tensor | None = None
    returns: Tensor | None = None

    def __len__(self) -> int:
        return self.query.size(0)

    def select(self, idx: Tensor) -> "Episodes":
        """Rows `idx`, with all-padding columns trimmed (left of queries, right of responses)."""
        qm, rm = self.query_mask[idx], self.mask[idx]
        q0 = int(qm.any(0).long().argmax())
        r1 = int(rm.any(0).nonzero().max()) + 1
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                out[f.name] = None
            elif f.name in ("query", "query_mask"):
                out[f.name] = v[idx][:, q0:]
            elif v.dim() == 2:
                out[f.name] = v[idx][:, :r1]
            else:
                out[f.name] = v[idx]
        return Episodes(**out)

    @staticmethod
    def cat(chunks: Sequence["Episodes"], pad_id: int) -> "Episodes":
        tq = max(c.query.size(1) for c in chunks)
        tr = max(c.response.size(1) for c in chunks)
        out = {}
        for f in fields(Episodes):
            vals = [getattr(c, f.name) for c in chunks]
            if vals[0] is None:
                out[f.name] = None
                continue
            if f.name in ("query", "query_mask"):
                fill = pad_id if f.name == "query" else 0
                vals = [torch.nn.functional.pad(v, (tq - v.size(1), 0), value=fill) for v in vals]
            elif vals[0].dim() == 2:
                fill = pad_id if f.name == "response" else 0
                vals = [torch.nn.functional.pad(v, (0, tr - v.size(1)), value=fill) for v in vals]
            out[f.name] = torch.cat(vals, 0)
        return Episodes(**out)


def reward_fn_kwargs(fn: Callable) -> frozenset[str]:
    """Which of `prompt_ids` / `response_ids` a reward callable takes (by name, or **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params):
        return frozenset({"prompt_ids", "response_ids"})
    return frozenset(q.name for q in params if q.name in ("prompt_ids", "response_ids")
                     and q.kind in (inspect.Parameter.KEYWORD_ONLY,
                                    inspect.Parameter.POSITIONAL_OR_KEYWORD))


@torch.no_grad()
def rollout(models: PPOModels, p: PPOConfig, prompts: list[str], prompt_ids: list[list[int]],
            generator: torch.Generator | Callable[[int], torch.Generator] | None,
            timer: Timer | None = None, iteration: int = 0) -> Episodes:
    """Sample, then score: one batched call per model per chunk of `rollout_batch_size`.

    `generator` may be a function of the chunk's first episode index, so that the samples do
    not depend on how the episodes are split over processes."""
    timer = timer or Timer()
    tok = models.tokenizer
    models.lm.eval()
    device = next(models.lm.parameters()).device
    chunks = []
    for s in range(0, len(prompt_ids), p.rollout_batch_size):
        texts, ids = prompts[s:s + p.rollout_batch_size], prompt_ids[s:s + p.rollout_batch_size]
        gen = generator(s) if callable(generator) else generator
        with timer("generation"), autocast_context(models.autocast, device):
            sample = generate(models.lm, tok, ids, max_new_tokens=p.max_new_tokens,
                              temperature=p.temperature, generator=gen, sampler="inverse_cdf",
                              return_hidden=models.shared,
                              all_done=dist.all_true if dist.is_sharded(models.lm) else None)
        query, query_mask = sample.query, sample.query_mask
        response, mask = sample.response, sample.response_mask
        ref, ref_mode = models.reference()
        with timer("score_ref"), autocast_context(models.autocast, device), ref_mode:
            ref_logprobs = response_logprobs(ref, query, query_mask, response, mask,
                                             temperature=p.temperature, pad_id=tok.pad_token_id)
        with timer("score_reward"):
            raw = score_episodes(models, list(texts), ids, sample, iteration)
        score = raw
        if p.no_eos_penalty is not None:                   # spec 7.19
            score = torch.where(sample.has_eos, raw, torch.full_like(raw, p.no_eos_penalty))
        with timer("score_value"), autocast_context(models.autocast, device):
            if models.shared:     # the sampler's own hidden states: no forward at all
                values = models.policy.v_head(sample.hidden).squeeze(-1).float()
            else:
                values = value_forward(models.value, query, query_mask, response, mask)
        check_rollout(sample.logprobs, ref_logprobs, values, mask, list(texts), iteration)
        chunks.append(Episodes(query, query_mask, response, mask, sample.logprobs, ref_logprobs,
                               values.float(), score, raw, sample.has_eos))
    return Episodes.cat(chunks, tok.pad_token_id)


def score_episodes(models: PPOModels, texts: list[str], prompt_ids: list[list[int]],
                   sample: Sample, iteration: int) -> Tensor:
    """The reward of each sampled episode [N]: the RM's score at the last valid token, or the
    reward callable's (given the texts and, if it asks for them, the token ids)."""
    tok = models.tokenizer
    query, response, mask = sample.query, sample.response, sample.response_mask
    if models.reward_model is not None:
        with autocast_context(models.autocast, query.device):
            raw = models.reward_model(torch.cat([query, response], 1),
                                      torch.cat([sample.query_mask, mask], 1)).float()
    else:
        rows = response.tolist()
        responses = [decode_response(tok, row) for row in rows]
        kw = {}
        wants = reward_fn_kwargs(models.reward_fn)
        if "prompt_ids" in wants:
            kw["prompt_ids"] = [list(x) for x in prompt_ids]
        if "response_ids" in wants:
            kw["response_ids"] = [row[:n] for row, n in zip(rows, mask.sum(1).tolist())]
        out = models.reward_fn(texts, responses, **kw)
        try:
            raw = torch.as_tensor(out, dtype=torch.float32).flatten().to(query.device)
        except (TypeError, ValueError) as e:
            raise UserError(f"{models.reward_name} must return one number per episode; "
                            f"got {type(out).__name__} ({e})") from None
        if raw.numel() != len(texts):
            raise UserError(f"{models.reward_name} returned {raw.numel()} scores for "
                            f"{len(texts)} episodes")
    if not bool(torch.isfinite(raw).all()):
        check_scores(raw, texts, [decode_response(tok, row) for row in response.tolist()],
                     models.reward_name, iteration)
    return raw

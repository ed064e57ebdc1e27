"""Token log-probabilities, entropies and EOS masking of sampled responses.

Shapes: ``logits [B, T, V]`` (position t scores token ``ids[:, t]``; the caller shifts),
``ids [B, T]``. Temperature T divides the logits in sampling *and* in training, for the
policy and the reference alike (spec 7.10, pitfall 8.10).
"""

from __future__ import annotations

import torch
from torch import Tensor

def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def policy_logits(logits: Tensor, temperature: float, pad_id: int | None, *,
                  inplace: bool = False, vocab_size: int | None = None) -> Tensor:
    """The logits the policy samples from: PAD can never be drawn (spec 7.5), divided by T (7.10).

    float32. Half-precision input is copied once; float32 input is left untouched unless
    ``inplace`` (then the caller's tensor is overwritten: use it on a model output nobody else
    holds). Columns at and beyond ``vocab_size`` (padding rows of a padded unembedding) are
    also set to −inf. The PAD fill and the division by T (skipped at T = 1) run on that one
    copy, so there is no further ``[..., V]`` temporary.
    """
    z = logits.float()
    fresh = inplace or z is not logits            # .float() of a half tensor is already a copy
    v = z.size(-1) if vocab_size is None else vocab_size
    if not fresh and (pad_id is not None and pad_id < v or z.size(-1) > v):
        z = z.clone()
    if pad_id is not None and pad_id < v:
        z[..., pad_id] = float("-inf")
    if z.size(-1) > v:
        z[..., v:] = float("-inf")
    if temperature > 0 and temperature != 1:
        z = z.div_(temperature) if (fresh or z is not logits) else z / temperature
    return z


def logprobs_from_logits(logits: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probability of each chosen token under ``softmax(logits / T)``.

    ``log π(y_t) = z_t[y_t] − logsumexp_v z_t[v]`` with ``z_t = logits_t / T``.

    Computed as a gather minus a logsumexp, so no ``[B, T, V]`` log-softmax copy is kept
    (beyond the ``logits / T`` copy when T ≠ 1). Half-precision logits are upcast to float32 one
    batch row at a time. Returns float32 (or float64 for float64 logits), shape ``ids.shape``.
    """
    _check_temperature(temperature)
    if logits.shape[:-1] != ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ids {tuple(ids.shape)} do not match")
    ids = ids.long().unsqueeze(-1)
    if logits.dtype in (torch.float16, torch.bfloat16):
        rows = []
        for row_logits, row_ids in zip(logits, ids):
            z = row_logits.float()
            if temperature != 1.0:
                z = z / temperature
            rows.append(z.gather(-1, row_ids).squeeze(-1) - torch.logsumexp(z, dim=-1))
        return torch.stack(rows)
    z = logits / temperature if temperature != 1.0 else logits
    return z.gather(-1, ids).squeeze(-1) - torch.logsumexp(z, dim=-1)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of ``softmax(logits / T)`` at every position, shape ``logits.shape[:-1]``.

    ``H_t = −Σ_v p_v log p_v``, ``p = softmax(z_t)``, ``z_t = logits_t / T``, computed as
    ``Σ entr(p)`` so that −inf logits (PAD removed by `policy_logits`) contribute exactly 0.
    float32 for half-precision input.
    """
    _check_temperature(temperature)
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        z = z / temperature
    return torch.special.entr(torch.softmax(z, dim=-1)).sum(-1)


def response_mask_from_eos(response_ids: Tensor, eos_id: int, pad_id: int | None = None) -> Tensor:
    """Bool mask ``[B, T]`` of valid response tokens: everything up to and including the first EOS.

    ``m_t = 1`` iff no EOS occurs strictly before t (and, when ``pad_id`` is given and differs
    from ``eos_id``, ``y_t ≠ PAD``, so right padding of a response with no EOS is also invalid).
    A response with no EOS is valid over its whole (truncated) length.
    """
    is_eos = response_ids == eos_id
    eos_before = (torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()) > 0
    valid = ~eos_before
    if pad_id is not None and pad_id != eos_id:
        valid = valid & (response_ids != pad_id)
    return valid


def has_eos(response_ids: Tensor, eos_id: int) -> Tensor:
    """Bool ``[B]``: whether each response contains an EOS (spec 7.19: if not, score := −1)."""
    return (response_ids == eos_id).any(dim=-1)


def last_valid_index(mask: Tensor) -> Tensor:
    """Index ``[B]`` of the last valid position of each row (the EOS, or the last token when
    truncated); −1 for a row with no valid position."""
    m = mask.bool().long()
    t = torch.arange(m.shape[-1], device=m.device)
    return (m * (t + 1)).amax(dim=-1) - 1

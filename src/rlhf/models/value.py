"""The policy's forward over query + response: response log-probs, entropy and values.

    score_response   one forward -> log π(y_t) [B, Tr], entropy, values (shared head)
    value_forward    V_t of a separate value model (a `TokenValues` around the RM)

Conventions: queries are left padded, responses right padded; position ids come from the mask,
so padding never shifts a position. The value of response token t is read at the position
*before* it (the state the token was chosen in), so V_t estimates the return of y_t.. ([LMHP],
[N+]). The logits are `rl.policy_logits` (PAD removed, ÷T): exactly what the sampler drew from.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlhf import dist, rl
from rlhf.models.fused_head import FUSED_HEAD_CLASSES, fused_head_logprobs
from rlhf.models.lm import position_ids_from_mask


class PolicyWithValueHead(nn.Module):
    """The "shared" option ([LMHP]): the policy's trunk feeds a zero-initialised scalar head.

    forward returns (logits of the last `logits_to_keep` positions, values at every position).
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        d = lm.config.hidden_size
        self.v_head = nn.Linear(d, 1, dtype=next(lm.parameters()).dtype)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids, attention_mask, position_ids,
                logits_to_keep: int | Tensor = 0):
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids, use_cache=False, output_hidden_states=True,
                      logits_to_keep=logits_to_keep)
        values = self.v_head(out.hidden_states[-1]).squeeze(-1).float()
        return out.logits, values


class TokenValues(nn.Module):
    """`RewardModel.token_values` as a module forward (so DDP sees and syncs the call)."""

    def __init__(self, rm: nn.Module):
        super().__init__()
        self.rm = rm

    def forward(self, input_ids, attention_mask):
        return self.rm.token_values(input_ids, attention_mask)


def logits_to_keep_mode(model: nn.Module) -> str | None:
    """How the model's forward takes `logits_to_keep`: "tensor" (positions, so exactly the
    response's are unembedded), "int" (the last n), or None (not at all)."""
    m = dist.unwrap(model)
    if isinstance(m, PolicyWithValueHead):
        m = m.lm
    return _keep_mode_of(type(m))


_KEEP_MODES: dict[type, str | None] = {}


def _keep_mode_of(cls: type) -> str | None:
    if cls not in _KEEP_MODES:
        try:
            param = inspect.signature(cls.forward).parameters.get("logits_to_keep")
        except (TypeError, ValueError):
            param = None
        _KEEP_MODES[cls] = None if param is None else \
            ("tensor" if "Tensor" in str(param.annotation) else "int")
    return _KEEP_MODES[cls]


def token_logprobs(logits: Tensor, ids: Tensor) -> Tensor:
    """`rl.logprobs_from_logits(logits, ids)` (tested equal) as one fused log-softmax + NLL (what
    `F.cross_entropy` runs): the same kernels as the sampler's log-softmax, and half the time
    and temporaries of a gather minus a logsumexp, forward and backward. float32 `logits`."""
    v = logits.size(-1)
    return -F.cross_entropy(logits.reshape(-1, v), ids.reshape(-1).long(),
                            reduction="none").view(ids.shape)


def fused_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Linear] | None:
    """(causal LM, base transformer, unembedding) when the fused path applies to `model`: an
    allow-listed LM (or PolicyWithValueHead on one), not wrapped in DDP (whose forward must run),
    with a bias-free linear unembedding."""
    if dist.unwrap(model) is not model or dist.is_sharded(model):
        return None
    lm = model.lm if isinstance(model, PolicyWithValueHead) else model
    if type(lm).__name__ not in FUSED_HEAD_CLASSES:
        return None
    base = getattr(lm, "base_model", None)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if base is None or base is lm or not isinstance(head, nn.Linear) or head.bias is not None \
            or getattr(lm.config, "final_logit_softcapping", None):
        return None
    return lm, base, head


def score_response(model: nn.Module, query: Tensor, query_mask: Tensor, response: Tensor,
                   response_mask: Tensor, temperature: float, pad_id: int | None,
                   want_entropy: bool = False, keep_logits: bool | str | None = None,
                   fused: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One forward -> (log π(y_t) [B, Tr], entropy [B, Tr] if asked, values [B, Tr] if shared).

    What `forward_response` + `token_logprobs` + `entropy` compute, through the fused head
    (`fused_head_logprobs`) where `fused_parts` allows it."""
    parts = fused_parts(model) if fused else None
    if parts is None:
        logits, values = forward_response(model, query, query_mask, response, response_mask,
                                          temperature, pad_id, keep_logits)
        lp = token_logprobs(logits, response)
        ent = None
        if want_entropy:
            with torch.no_grad():
                ent = rl.entropy_from_logits(logits.detach())
        return lp, ent, values
    _, base, head = parts
    ids = torch.cat([query, response], 1)
    mask = torch.cat([query_mask, response_mask], 1)
    tq, tr = query.size(1), response.size(1)
    hidden = base(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                  use_cache=False).last_hidden_state
    lp, ent = fused_head_logprobs(hidden[:, tq - 1:tq + tr - 1], head.weight, response,
                                  temperature, pad_id, want_entropy)
    values = None
    if isinstance(model, PolicyWithValueHead):
        values = model.v_head(hidden[:, tq - 1:-1]).squeeze(-1).float()
    return lp, ent, values


def forward_response(model: nn.Module, query: Tensor, query_mask: Tensor, response: Tensor,
                     response_mask: Tensor, temperature: float, pad_id: int | None,
                     keep_logits: bool | str | None = None) -> tuple[Tensor, Tensor | None]:
    """One forward over query+response -> (logits scoring each response token, values).

    The logits are `policy_logits` (PAD removed, divided by T: spec 7.5, 7.10), i.e. exactly what
    the sampler drew from; row t scores `response[:, t]`. Values (shared head only) are read at
    the position before each response token. Only the response positions are unembedded.
    `keep_logits`: None/True (ask the model), "tensor", "int", or False (full logits).
    """
    ids = torch.cat([query, response], 1)
    mask = torch.cat([query_mask, response_mask], 1)
    pos = position_ids_from_mask(mask)
    tq, tr = query.size(1), response.size(1)
    mode = logits_to_keep_mode(model) if keep_logits in (None, True) else (keep_logits or None)
    if mode == "tensor":      # exactly the tr positions that score a response token
        kw = {"logits_to_keep": torch.arange(tq - 1, tq + tr - 1, device=ids.device)}
    elif mode == "int":
        kw = {"logits_to_keep": tr + 1}
    else:
        kw = {}
    if isinstance(dist.unwrap(model), PolicyWithValueHead):
        logits, values = model(ids, mask, pos, **kw)
        values = values[:, tq - 1:-1]
    else:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                       **kw).logits
        values = None
    if mode != "tensor":
        logits = logits[:, -(tr + 1):-1]
    # the model's output is ours alone: PAD fill and ÷T in place when it is float32
    return rl.policy_logits(logits, temperature, pad_id, inplace=True), values


def response_logprobs(model: nn.Module, query: Tensor, query_mask: Tensor, response: Tensor,
                      response_mask: Tensor, temperature: float = 1.0,
                      pad_id: int | None = None) -> Tensor:
    """log π(y_t | x, y_<t) of the response tokens under `model` (temperature-scaled, PAD
    removed): the training-side twin of the sampler's log-probs."""
    return score_response(model, query, query_mask, response, response_mask, temperature,
                          pad_id)[0]


def value_forward(value: nn.Module, query: Tensor, query_mask: Tensor, response: Tensor,
                  response_mask: Tensor) -> Tensor:
    """V_t of a separate value model: its head at the position before response token t."""
    ids = torch.cat([query, response], 1)
    mask = torch.cat([query_mask, response_mask], 1)
    tq = query.size(1)
    return value(ids, mask)[:, tq - 1:-1]

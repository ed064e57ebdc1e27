"""The reward model: the SFT model's transformer with the unembedding replaced by a scalar head.

    r(x, y) = w · h_T + b_head + reward_bias

h_T is the final hidden state at the last non-pad token of prompt+response (spec 7.2), the head
weight is drawn from N(0, 1/√(d_model + 1)) with bias 0 (spec 7.6), and `reward_bias` is the
normalisation offset set after training so that labeler demonstrations score mean 0 (§3.5, spec
7.7). Position ids are cumsum(mask) − 1, so left and right padding give the same score (7.4).
Dropout is off.

On disk it is a plain Hugging Face `...ForSequenceClassification` (num_labels=1,
problem_type="regression"), so `AutoModelForSequenceClassification.from_pretrained(path)` loads
it. HF's `score` layer has no bias, so the constant c = b_head + reward_bias is folded in:

- GPT-2-like backbones (a final LayerNorm with a bias that feeds only the head): add
  δ = c·w/‖w‖² to that LayerNorm's bias. Then w·(h + δ) = w·h + c, so plain transformers
  gives exactly our scores (right padding, or left padding with position_ids passed).
- Others (e.g. Llama's RMSNorm has no bias): plain transformers scores are offset by −c.
  `config.rlhf_reward["reward_bias"]` / `["head_bias"]` hold c; `RewardModel.from_pretrained`
  applies them.

`config.rlhf_reward` records what was folded; `from_pretrained` undoes the fold, so the backbone,
head bias and reward_bias come back exactly as they were and normalisation stays idempotent.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from rlhf import dist
from rlhf.errors import UserError
from rlhf.models.format import DEFAULT_TEMPLATE, encode_pair, pad_sequences
from rlhf.models.lora import adapter_info, merged_adapter
from rlhf.models.lm import (context_length, disable_dropout, load_model,
                            position_ids_from_mask)

_FINAL_NORMS = ("ln_f", "final_layer_norm")  # GPT-2, GPT-J, GPT-Neo, Bloom; GPT-NeoX


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] index of the last non-pad token of each row (works for left and right padding)."""
    mask = attention_mask.long()
    t = mask.shape[-1]
    return (t - 1 - mask.flip(-1).argmax(-1)).clamp(min=0)


def _final_norm(backbone: nn.Module) -> tuple[str, nn.Module] | None:
    """The final LayerNorm whose bias feeds only the head, if the backbone has one."""
    if getattr(backbone, "project_out", None) is not None:  # OPT-350m projects after the norm
        return None
    for name in _FINAL_NORMS:
        m = getattr(backbone, name, None)
        if isinstance(m, nn.LayerNorm) and m.bias is not None:
            return name, m
    return None


class RewardModel(nn.Module):
    """backbone (a base transformer, e.g. `GPT2Model`) + scalar `head` + normalisation bias."""

    def __init__(self, backbone: PreTrainedModel, head: nn.Linear | None = None,
                 reward_bias: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        d = self.config.hidden_size
        if head is None:
            head = nn.Linear(d, 1)
            nn.init.normal_(head.weight, std=1.0 / math.sqrt(d + 1))  # spec 7.6
            nn.init.zeros_(head.bias)
            head.to(dtype=next(backbone.parameters()).dtype)
        self.head = head
        # not trained (the ranking loss is shift-invariant); set by `normalize`
        self.register_buffer("reward_bias", torch.tensor(float(reward_bias), dtype=torch.float32))
        disable_dropout(self)

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def from_causal_lm(cls, path_or_model, dtype: torch.dtype | None = None) -> "RewardModel":
        """Start from an SFT model (path or loaded causal LM): drop the unembedding, new head."""
        lm = load_model(path_or_model, dtype) if isinstance(path_or_model, (str, Path)) \
            else path_or_model
        backbone = lm.base_model if lm.base_model is not lm else lm
        if backbone is lm and hasattr(lm, "lm_head"):
            raise UserError("cannot find the base transformer of this causal LM")
        return cls(backbone)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None) -> "RewardModel":
        """Reload a reward model written by `save_pretrained` (undoing the bias fold)."""
        p = Path(path)
        if not (p / "config.json").exists():
            raise UserError("no reward model here (config.json missing)", path=str(p))
        conf = json.loads((p / "config.json").read_text())
        archs = conf.get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            raise UserError(f"not a reward model (architectures {archs}); start one from an "
                            "SFT model with RewardModel.from_causal_lm", path=str(p))
        seq = AutoModelForSequenceClassification.from_pretrained(
            str(p), dtype=dtype or torch.float32)
        if seq.config.num_labels != 1:
            raise UserError(f"a reward model has one label, this one has {seq.config.num_labels}",
                            path=str(p))
        meta = dict(getattr(seq.config, "rlhf_reward", None) or {})
        backbone = seq.base_model
        w = seq.score.weight.detach()
        head = nn.Linear(w.shape[1], 1, dtype=w.dtype)
        with torch.no_grad():
            head.weight.copy_(w)
            head.bias.fill_(float(meta.get("head_bias", 0.0)))
            folded = meta.get("folded_into")
            if folded:
                norm = getattr(backbone, folded)
                c = float(meta.get("head_bias", 0.0)) + float(meta.get("reward_bias", 0.0))
                norm.bias.sub_(_fold_delta(w, c).to(norm.bias.dtype))
        if hasattr(backbone.config, "rlhf_reward"):
            del backbone.config.rlhf_reward
        return cls(backbone, head, float(meta.get("reward_bias", 0.0)))

    def save_pretrained(self, path: str | Path, tokenizer=None, **kwargs) -> None:
        """Write an HF `...ForSequenceClassification` checkpoint (+ tokenizer if given)."""
        path = Path(path)
        conf = copy.deepcopy(self.backbone.config)
        conf.num_labels = 1
        conf.problem_type = "regression"
        conf.architectures = None
        if getattr(conf, "pad_token_id", None) is None and tokenizer is not None:
            conf.pad_token_id = tokenizer.pad_token_id
        head_bias, reward_bias = float(self.head.bias.detach()), float(self.reward_bias)
        c = head_bias + reward_bias
        w = self.head.weight.detach()
        norm = _final_norm(self.backbone)
        fold = norm is not None and c != 0.0 and float(w.float().norm()) > 0.0
        conf.rlhf_reward = {"head_bias": head_bias, "reward_bias": reward_bias,
                            "folded_into": norm[0] if fold else None}
        with torch.device("meta"):
            seq = AutoModelForSequenceClassification.from_config(conf)
        setattr(seq, seq.base_model_prefix, self.backbone)   # share, don't copy, the weights
        seq.score = nn.Linear(w.shape[1], 1, bias=False, dtype=w.dtype)
        with torch.no_grad():
            seq.score.weight.copy_(w)
        saved_bias = norm[1].bias.detach().clone() if fold else None
        try:
            if fold:
                with torch.no_grad():
                    norm[1].bias.add_(_fold_delta(w, c).to(norm[1].bias.dtype))
            seq.config.architectures = [type(seq).__name__]
            seq.save_pretrained(str(path), **kwargs)
        finally:
            if fold:
                with torch.no_grad():
                    norm[1].bias.copy_(saved_bias)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(path))

    # ------------------------------------------------------------------ forward
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        return out.last_hidden_state

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1).float() + self.reward_bias

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores [B] (fp32): the head at the last non-pad token, normalisation included."""
        h = self.hidden_states(input_ids, attention_mask)
        idx = last_token_index(attention_mask)
        return self._head(h[torch.arange(h.shape[0], device=h.device), idx])

    def token_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T] (fp32): the head at every position, normalisation included (the value model)."""
        return self._head(self.hidden_states(input_ids, attention_mask))

    def set_reward_bias(self, value: float) -> None:
        self.reward_bias.fill_(float(value))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device


def _fold_delta(w: torch.Tensor, c: float) -> torch.Tensor:
    """δ with w·δ = c (the minimum-norm one): c·w/‖w‖²; computed in float64."""
    w64 = w.detach().double().reshape(-1)
    return (c * w64 / w64.dot(w64)).float()


def load_reward_model(path: str | Path, dtype: torch.dtype | None = None) -> RewardModel:
    """An RM checkpoint, (a fresh head on) a causal LM when the path holds one, or a reward
    model's LoRA adapter folder (its base with the adapter folded in, its head and bias)."""
    info = adapter_info(path)
    if info is not None:
        if info["kind"] != "reward":
            raise UserError("this is a causal LM's LoRA adapter, not a reward model's",
                            path=str(path))
        return merged_adapter(load_reward_model(info["base"], dtype), path, "reward")
    conf_path = Path(path) / "config.json"
    if conf_path.exists():
        archs = json.loads(conf_path.read_text()).get("architectures") or []
        if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
            return RewardModel.from_causal_lm(path, dtype)
    return RewardModel.from_pretrained(path, dtype)


# ----------------------------------------------------------------------------- scoring

@torch.no_grad()
def score_sequences(rm: RewardModel, seqs: list[list[int]], pad_id: int,
                    batch_size: int = 32, raw: bool = False) -> list[float]:
    """Scores of token-id sequences (batched by length, returned in input order).
    raw=True leaves out the normalisation bias."""
    was_training = rm.training
    rm.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = [0.0] * len(seqs)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        ids, mask = pad_sequences([seqs[j] for j in idx], pad_id)
        s = rm(ids.to(rm.device), mask.to(rm.device))
        if raw:
            s = s - rm.reward_bias
        for j, v in zip(idx, s.tolist()):
            out[j] = v
    rm.train(was_training)
    return out


def score_texts(rm: RewardModel, tokenizer, prompts: list[str], responses: list[str],
                batch_size: int = 32, template: str = DEFAULT_TEMPLATE,
                max_length: int | None = None, raw: bool = False) -> list[float]:
    """RM scores of (prompt, response) pairs, tokenised exactly as in training."""
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length")
    max_length = max_length or context_length(rm.backbone)
    seqs = [encode_pair(tokenizer, p, r, max_length, template) for p, r in zip(prompts, responses)]
    return score_sequences(rm, seqs, tokenizer.pad_token_id, batch_size, raw)


def normalize_reward(rm: RewardModel, tokenizer, prompts: list[str], responses: list[str],
                     batch_size: int = 32, template: str = DEFAULT_TEMPLATE,
                     max_length: int | None = None) -> dict:
    """Set rm.reward_bias so the (prompt, response) pairs — labeler demonstrations — score
    mean 0 (§3.5). Computed from the un-normalised score, so running it twice is idempotent.
    Under DDP each rank scores a shard and the mean is all-reduced."""
    idx = dist.rank_share(len(prompts))           # equal shares: FSDP's forwards are collective
    mine = [i for i in idx if i is not None]
    pick = mine + [0] * (len(idx) - len(mine))
    raw = score_texts(rm, tokenizer, [prompts[i] for i in pick], [responses[i] for i in pick],
                      batch_size, template, max_length, raw=True)[:len(mine)]
    tot = dist.all_reduce_sum(torch.tensor([sum(raw), len(raw)], dtype=torch.float64))
    mean = float(tot[0] / max(float(tot[1]), 1.0))
    rm.set_reward_bias(-mean)
    return {"demonstrations": int(tot[1]), "raw_mean": mean, "reward_bias": -mean}

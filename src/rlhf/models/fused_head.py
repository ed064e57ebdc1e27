"""Fused unembedding + log-softmax for the PPO forward (CPU).

The response log-probs need log softmax over the vocabulary at every response token. Done as
"logits = lm_head(h); log_softmax; gather" the [N, vocab] float32 tensor is written and read
some ten times (logits, PAD fill, log-softmax, its backward, NLL's zero-filled gradient, …),
which on CPU costs more than the unembedding matmuls themselves. `fused_head_logprobs` does the
one matmul, then the log-sum-exp, gather, entropy and (backward) softmax gradient a cache-sized
block of rows at a time, in place on the logits, and the two gradient matmuls at full size.

It computes `rl.logprobs_from_logits(rl.policy_logits(h @ Wᵀ, T, PAD), y)` and
`rl.entropy_from_logits` of the same logits (tested equal, values and gradients, to 1e-5).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf import rl

#: Causal LMs whose logits are exactly `get_output_embeddings()(base_model(...)[0])`.
FUSED_HEAD_CLASSES = frozenset({"GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM",
                                "Qwen2ForCausalLM", "Qwen3ForCausalLM"})


def _block_rows(v: int) -> int:
    return max(8, (1 << 18) // max(v, 1))       # ~1 MiB of float32 logits per block


def _autocast_dtype_of(t: Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def _head_weight(weight: Tensor, dt: torch.dtype) -> Tensor:
    """The unembedding in the matmul dtype; bf16/fp16 rows padded to a multiple of 64 (a vocab of
    8194 runs the bf16 matmul at half the speed of 8192)."""
    w = weight.detach().to(dt)
    v = w.size(0)
    if dt in (torch.bfloat16, torch.float16) and v % 64:
        w = torch.cat([w, w.new_zeros(64 - v % 64, w.size(1))])
    return w


class _FusedHeadLogprobs(torch.autograd.Function):
    """(h [N, d], unembedding weight [V, d], targets [N]) -> log π(target) [N], entropy [N]."""

    @staticmethod
    def forward(ctx, h, weight, targets, temperature, pad_id, want_entropy):
        v = weight.size(0)
        dt = _autocast_dtype_of(h)
        hd, w = h.detach().to(dt), _head_weight(weight, dt)
        z = hd @ w.t()                                   # [N, Vp], one matmul
        n, rows = z.size(0), _block_rows(z.size(1))
        lp = torch.empty(n, dtype=torch.float32, device=z.device)
        lse = torch.empty_like(lp)
        ent = torch.empty_like(lp) if want_entropy else None
        exact = z.dtype == torch.float32
        for s in range(0, n, rows):
            zb = z[s:s + rows]
            zb = rl.policy_logits(zb, temperature, pad_id, inplace=True, vocab_size=v)
            lb = torch.logsumexp(zb, -1)
            lse[s:s + rows] = lb
            lp[s:s + rows] = zb.gather(1, targets[s:s + rows, None]).squeeze(1) - lb
            if ent is not None:
                ent[s:s + rows] = torch.special.entr(torch.exp(zb - lb[:, None])).sum(-1)
        ctx.save_for_backward(hd, w, targets, lse, z)
        ctx.cfg = (v, temperature, pad_id, exact, h.dtype, weight.dtype)
        ctx.used = False
        if ent is not None:
            ctx.mark_non_differentiable(ent)
        return lp, ent

    @staticmethod
    def backward(ctx, g, _g_ent):
        if ctx.used:
            raise RuntimeError("fused_head_logprobs: backward twice (its logits are reused in "
                               "place); recompute the forward instead of retain_graph=True")
        ctx.used = True
        hd, w, targets, lse, z = ctx.saved_tensors
        v, temperature, pad_id, exact, h_dtype, w_dtype = ctx.cfg
        g = g.float()
        n, rows = z.size(0), _block_rows(z.size(1))
        for s in range(0, n, rows):
            gb = g[s:s + rows, None]
            zb = z[s:s + rows] if exact else rl.policy_logits(z[s:s + rows], temperature,
                                                              pad_id, inplace=True, vocab_size=v)
            # d log π(y) / dz = onehot(y) − softmax(z), then ÷T for the scaling
            p = zb.sub_(lse[s:s + rows, None]).exp_().mul_(-gb)
            p.scatter_add_(1, targets[s:s + rows, None], gb)
            if temperature > 0 and temperature != 1:
                p.div_(temperature)
            if not exact:
                z[s:s + rows] = p                        # back into the logits' storage
        grad_h = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_h = (z @ w).to(h_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (z.t() @ hd)[:v].to(w_dtype)
        return grad_h, grad_w, None, None, None, None


def fused_head_logprobs(h: Tensor, weight: Tensor, targets: Tensor, temperature: float = 1.0,
                        pad_id: int | None = None, want_entropy: bool = False
                        ) -> tuple[Tensor, Tensor | None]:
    """log softmax(policy_logits(h @ weightᵀ))[targets] (float32) and, if asked, the entropy of
    that distribution, without [N, vocab] temporaries beyond the logits themselves. The matmuls
    run in the autocast dtype when autocast is on (the soft-max in float32)."""
    h2, t2 = h.reshape(-1, h.size(-1)), targets.reshape(-1).long()
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        lp, ent = _FusedHeadLogprobs.apply(h2, weight, t2, temperature, pad_id, want_entropy)
    else:
        with torch.no_grad():
            lp, ent = _FusedHeadLogprobs.forward(_NoCtx(), h2, weight, t2, temperature, pad_id,
                                                 want_entropy)
    return lp.view(targets.shape), None if ent is None else ent.view(targets.shape)


class _NoCtx:
    """A stand-in autograd ctx for running the forward alone (no graph, nothing kept)."""

    def save_for_backward(self, *tensors):
        pass

    def mark_non_differentiable(self, *tensors):
        pass

"""Pure tensor math for PPO / PPO-ptx (no I/O, no model code).

Spec items refer to the project's InstructGPT reproduction spec (§7 checklist, §8 pitfalls).

==============================  ==================================================  ==========
function / class                equation                                            spec
==============================  ==================================================  ==========
masked_sum / masked_mean        Σ m·x ;  Σ m·x / Σ m                                7.20
masked_var                      Σ m·(x − μ)² / Σ m   (population)                   7.14
whiten                          (x − μ)/sqrt(σ² + 1e-8) [+ μ if not shift_mean]      7.14, 7.15
explained_variance              1 − Var[R − V]/Var[R]                               (logging)
logprobs_from_logits            log softmax(logits/T)[y]                            7.10, 8.10
entropy_from_logits             logsumexp(z) − Σ p·z,  z = logits/T                 7.10
INVALID_LOGPROB, fill_invalid   post-EOS log-prob sentinel (KL = 0 there)           7.20
response_mask_from_eos          m_t = 1 iff no EOS before t (and y_t ≠ PAD)          7.19, 7.20
truncate_after_eos, has_eos     PAD after the first EOS; EOS present?               7.19
last_valid_index                t_last per row (where the score lands)              7.2, 7.20
kl_k1 / kl_k2 / kl_k3           d ;  d²/2 ;  e^{−d} − 1 + d,  d = logπ − logπ_ref   7.11
compute_rewards                 r_t = −β·kl_t + 1[t = t_last]·score                 Eq. 2, 7.11
FixedKLController               β constant (paper: 0.02)                            4
AdaptiveKLController            β ← β(1 + clip(KL/target − 1, ±0.2)·n/horizon)      7.12
best_of_n_kl                    log n − (n − 1)/n                                   (tests)
gae                             δ_t = r_t + γV_{t+1} − V_t; A_t = δ_t + γλA_{t+1}    7.13, 8.8
policy_loss                     mean max(−Aρ, −A·clip(ρ, 1 ± ε)); clipfrac, approxKL 7.17
value_loss                      ½ mean max((V − R)², (clip(V, V_old ± ε) − R)²)      7.16
lm_nll                          −mean log π(y_t) over valid tokens (ptx term)       7.28
TFAdam                          θ −= lr·sqrt(1−β2^t)/(1−β1^t)·m/(√v + ε̂)            1, 7.23
EMA                             θ̄ ← d·θ̄ + (1 − d)·θ,  d = 0.992                     4
constant_with_warmup            s: 0.1 → 1 over W steps, then 1                     4, 7.22
linear_decay                    1 − s/total                                         7.22
cosine_to_fraction              warmup, then cosine 1 → 0.1                         7.8
==============================  ==================================================  ==========

Conventions: ``[B, T]`` tensors cover the response tokens; ``mask`` is 1 on valid tokens (up
to and including the first EOS). Every mean is over valid tokens only, and invalid positions
can hold anything (they reach neither a result nor a gradient).
"""

from rlhf.rl.gae import gae
from rlhf.rl.kl import (
    AdaptiveKLController,
    FixedKLController,
    best_of_n_kl,
    compute_rewards,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_per_token,
)
from rlhf.rl.logprobs import (
    INVALID_LOGPROB,
    entropy_from_logits,
    fill_invalid,
    has_eos,
    last_valid_index,
    logprobs_from_logits,
    response_mask_from_eos,
    truncate_after_eos,
)
from rlhf.rl.losses import lm_nll, policy_loss, value_loss
from rlhf.rl.masked import explained_variance, masked_mean, masked_sum, masked_var, whiten
from rlhf.rl.optim import EMA, TFAdam, constant_with_warmup, cosine_to_fraction, linear_decay

__all__ = [
    "INVALID_LOGPROB",
    "EMA",
    "AdaptiveKLController",
    "FixedKLController",
    "TFAdam",
    "best_of_n_kl",
    "compute_rewards",
    "constant_with_warmup",
    "cosine_to_fraction",
    "entropy_from_logits",
    "explained_variance",
    "fill_invalid",
    "gae",
    "has_eos",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_per_token",
    "last_valid_index",
    "linear_decay",
    "lm_nll",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "policy_loss",
    "response_mask_from_eos",
    "truncate_after_eos",
    "value_loss",
    "whiten",
]

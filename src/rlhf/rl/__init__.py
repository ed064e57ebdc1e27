"""Pure tensor math for PPO / PPO-ptx (no I/O, no model code).

Every function here is on the run path. "spec 7.x" / "8.x" items and the bracketed tags such
as [LMHP] are defined in docs/references.md (the implementation checklist and pitfalls, and the
papers and code cited).

==============================  ==================================================  ==========
function / class                equation                                            spec
==============================  ==================================================  ==========
masked_sum / masked_mean        Σ m·x ;  Σ m·x / Σ m                                7.20
masked_var                      Σ m·(x − μ)² / Σ m   (population)                   7.14
whiten                          (x − μ)/sqrt(σ² + 1e-8) [+ μ if not shift_mean]      7.14, 7.15
explained_variance              1 − Var[R − V]/Var[R]                               (logging)
policy_logits                   z = logits/T, the PAD logit set to −∞              7.5, 7.10
logprobs_from_logits            log softmax(logits/T)[y]                            7.10, 8.10
entropy_from_logits             −Σ p log p,  p = softmax(logits/T)                  7.10
response_mask_from_eos          m_t = 1 iff no EOS before t (and y_t ≠ PAD)          7.19, 7.20
has_eos                         EOS present? (if not, the score is −1)              7.19
last_valid_index                t_last per row (where the score lands)              7.2, 7.20
kl_k1 / kl_k2 / kl_k3           d ;  d²/2 ;  e^{−d} − 1 + d,  d = logπ − logπ_ref   7.11
compute_rewards                 r_t = −β·kl_t + 1[t = t_last]·score                 Eq. 2, 7.11
FixedKLController               β constant (paper: 0.02)                            4
AdaptiveKLController            β ← β(1 + clip(KL/target − 1, ±0.2)·n/horizon)      7.12
gae                             δ_t = r_t + γV_{t+1} − V_t; A_t = δ_t + γλA_{t+1}    7.13, 8.8
policy_loss                     mean max(−Aρ, −A·clip(ρ, 1 ± ε)); clipfrac, approxKL 7.17
value_loss                      ½ mean max((V − R)², (clip(V, V_old ± ε) − R)²)      7.16
lm_nll                          −mean log π(y_t) over valid tokens (ptx term)       7.28
batched_ranking_loss            Eq. 1: mean over pairs of −log σ(r_w − r_l)         Eq. 1, 8.3
pair_stats                      pairwise accuracy (score ties 0.5), log loss        (metrics)
TFAdam                          θ −= lr·sqrt(1−β2^t)/(1−β1^t)·m/(√v + ε̂)            1, 7.23
EMA                             θ̄ ← d·θ̄ + (1 − d)·θ,  d = 0.992                     4
constant_with_warmup            s: 0.1 → 1 over W steps, then 1                     4, 7.22
linear_decay                    1 − s/total                                         7.22
cosine_to_fraction              warmup, then cosine 1 → 0.1                         7.8
==============================  ==================================================  ==========

Conventions: ``[B, T]`` tensors cover the response tokens; ``mask`` is 1 on valid tokens (up
to and including the first EOS). Every mean is over valid tokens only, and invalid positions
can hold anything (they reach neither a result nor a gradient; the sampler writes 0 there).
"""

from rlhf.rl.gae import gae
from rlhf.rl.kl import (
    AdaptiveKLController,
    FixedKLController,
    compute_rewards,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_per_token,
)
from rlhf.rl.logprobs import (
    entropy_from_logits,
    has_eos,
    last_valid_index,
    logprobs_from_logits,
    policy_logits,
    response_mask_from_eos,
)
from rlhf.rl.losses import lm_nll, policy_loss, value_loss
from rlhf.rl.masked import explained_variance, masked_mean, masked_sum, masked_var, whiten
from rlhf.rl.ranking import batched_ranking_loss, pair_stats
from rlhf.rl.optim import EMA, TFAdam, constant_with_warmup, cosine_to_fraction, linear_decay

__all__ = [
    "EMA",
    "AdaptiveKLController",
    "FixedKLController",
    "TFAdam",
    "batched_ranking_loss",
    "compute_rewards",
    "constant_with_warmup",
    "cosine_to_fraction",
    "entropy_from_logits",
    "explained_variance",
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
    "pair_stats",
    "policy_logits",
    "policy_loss",
    "response_mask_from_eos",
    "value_loss",
    "whiten",
]

"""Step 3, PPO / PPO-ptx. Start at recipe.py: the loop, top to bottom.

    recipe.py      ppo(): setup, then rollout -> rewards -> GAE -> whiten -> update -> log/ckpt
    rollout.py     which prompts an iteration uses, sampling, scoring (`Episodes`)
    update.py      `Learner`: optimisers, LR schedule, micro-batch losses, ptx, steps
    models.py      `PPOModels`: policy, reference, reward, value; `build_models`
    checks.py      runtime invariants and finiteness checks, with their tolerances
    checkpoint.py  resumable checkpoints and the final outputs
    plan.py        `PPOPlan`: every batch size, in its units, checked before launch
"""

from rlhf.train.ppo.plan import PPOPlan
from rlhf.train.ppo.recipe import ppo

__all__ = ["PPOPlan", "ppo"]

"""rlhf: the InstructGPT recipe end to end (SFT, K-way ranking reward model, PPO/PPO-ptx,
labeling app, simulated labelers, evaluation)."""

__version__ = "0.1.0"

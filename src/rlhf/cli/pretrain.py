"""`rlhf pretrain`: causal-LM pretraining on plain text."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rlhf.cli import ConfigOpt, OutOpt, ResumeOpt, SetOpt, load_run_config, print_summary


def pretrain(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt,
             out: Optional[Path] = OutOpt, resume: bool = ResumeOpt):
    """Causal-LM pretraining on plain text (packed blocks); reports held-out perplexity."""
    from rlhf.train.pretrain import pretrain as run

    cfg, out_dir = load_run_config(config, set_, out)
    print_summary(run(cfg, out_dir, resume=resume), out_dir,
                  ("model", "valid_ppl", "final_train_loss", "steps"))

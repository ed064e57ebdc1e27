"""`python -m rlhf.cli ...` (what `torchrun ... -m rlhf.cli` runs): the `rlhf` command."""

from rlhf.cli import main

main()

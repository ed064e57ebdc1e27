"""CLI command groups, mounted by rlhf.cli."""

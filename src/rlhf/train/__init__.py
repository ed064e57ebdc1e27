"""Training recipes: plain loops that read top to bottom like the paper."""

"""Evaluation like InstructGPT §3.6 / §4 / App. D, for the tiny world and any HF causal LM.

- `samples`:    responses of a model to evaluation prompts (greedy by default), few-shot prefix
                for the "GPT prompted" baseline, held-out perplexity (alignment tax).
- `judging`:    win rate against a reference with 95 % CI (ties count half) and a
                length-controlled win rate; Likert and metadata rates, overall and per category;
                the gold judge's view; inter-labeler agreement. Duck-typed labelers / judge.
- `stats`:      Wilson / normal CIs, bootstrap, the length-control logistic regression.
- `truthfulqa`: TruthfulQA MC1 / MC2 by log-likelihood.
- `overopt`:    proxy and gold score against √KL, Gao et al.'s fits, the plot.
- `harness`:    evaluate a set of models end to end into the `results` dict.
- `report`:     report.json / report.html / PNGs and the text summary (the results schema).
Import the submodules directly; this package imports nothing heavy.
"""

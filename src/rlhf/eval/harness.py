"""Evaluate several models on the same held-out prompts into one `results` dict (see
rlhf.eval.report for the schema).

For each model: greedy responses to every prompt (a "prompted" model gets a few-shot prefix),
then against the reference model's responses: the held-out labelers' win rate (+ length
control), their Likert and metadata, optionally the gold judge's view, the mean proxy RM score,
held-out pretraining perplexity and TruthfulQA MC1/MC2. Samples are written to
`out_dir/samples/<name>.jsonl` when `out_dir` is given.

Comparisons are paired: on each prompt, every model's answer is judged against the reference's
by the same labeler, shown in the same order (one seed for all models). So a model's figures do
not depend on which other models are evaluated with it or on their order, and the difference
between two models' win rates comes from their answers, not from different labeler draws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rlhf.eval.judging import (DEFAULT_CLOSED_DOMAIN, compare_by_judge, compare_to_reference,
                               judge_responses, prompt_text, rate_responses)
from rlhf.eval.samples import model_perplexity, sample_model
from rlhf.eval.truthfulqa import mc_scores
from rlhf.io import write_jsonl_atomic
from rlhf.models import disable_dropout, load_model, load_tokenizer
from rlhf.models.format import DEFAULT_TEMPLATE
from rlhf.models.reward import RewardModel, score_texts
from rlhf.world.prompts import CLOSED_DOMAIN as WORLD_CLOSED_DOMAIN
from rlhf.runs import log


@dataclass
class ModelSpec:
    """One model to evaluate. `prefix` (few-shot text) makes a prompted base model; `stop`
    cuts its answers (e.g. ["\\nUser:"])."""
    name: str
    path: str | Path
    kind: str | None = None
    round: int | None = None
    prefix: str = ""
    stop: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def world_closed_domain() -> set[str]:
    """The Instruction World's closed-domain categories: rlhf.eval.judging's default ones
    (closed_qa, summarization, extract) and rewrite."""
    return set(WORLD_CLOSED_DOMAIN)


def rm_mean_score(rm_path, prompts: Sequence, responses: Sequence[str], *,
                  template: str = DEFAULT_TEMPLATE, batch_size: int = 32) -> float:
    """Mean (normalised) proxy RM score of the responses."""
    rm = RewardModel.from_pretrained(rm_path)
    tok = load_tokenizer(rm_path)
    s = score_texts(rm, tok, [prompt_text(p) for p in prompts], list(responses), batch_size,
                    template)
    return sum(s) / max(len(s), 1)


def evaluate_models(specs: Sequence[ModelSpec], prompts: Sequence, *, labelers: Sequence,
                    reference: str = "sft", judge: Callable | None = None,
                    max_new_tokens: int = 64, temperature: float = 0.0,
                    template: str = DEFAULT_TEMPLATE, batch_size: int = 32,
                    ppl_files: Sequence[str] | None = None, ppl_block_size: int | None = None,
                    ppl_max_tokens: int | None = None, reward_model: str | Path | None = None,
                    truthfulqa: Sequence | None = None, truthfulqa_style: str = "qa",
                    closed_domain: Iterable[str] = DEFAULT_CLOSED_DOMAIN, seed: int = 0,
                    n_boot: int = 200, keep_samples: int = 5,
                    out_dir: str | Path | None = None,
                    responses: dict[str, list[str]] | None = None) -> dict:
    """Evaluate `specs` (one must be named `reference`) on `prompts` (records or strings).
    `responses` may hold already sampled answers by model name (they are not re-sampled); the
    dict is filled in with every model's answers.
    Returns the results dict (models, reference, timings, config)."""
    names = [s.name for s in specs]
    if reference not in names:
        raise ValueError(f"the reference model {reference!r} is not among {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"model names repeat: {names}")
    closed = set(closed_domain)
    timings: dict[str, float] = {}
    resp: dict[str, list[str]] = responses if responses is not None else {}
    for s in specs:
        if s.name in resp:
            continue
        t0 = time.time()
        resp[s.name] = sample_model(s.path, prompts, max_new_tokens=max_new_tokens,
                                    temperature=temperature, prefix=s.prefix, template=template,
                                    stop=s.stop, batch_size=batch_size, seed=seed)
        timings[f"sample/{s.name}"] = round(time.time() - t0, 2)
        log("eval", f"sampled {len(prompts)} responses from {s.name} in "
                    f"{timings[f'sample/{s.name}']}s")
    if out_dir is not None:
        for s in specs:
            write_jsonl_atomic(Path(out_dir) / "samples" / f"{s.name}.jsonl",
                               [{"prompt": prompt_text(p),
                                 "category": p.get("category") if isinstance(p, dict) else None,
                                 "response": r} for p, r in zip(prompts, resp[s.name])])
    models: dict[str, dict] = {}
    ref = resp[reference]
    for s in specs:
        t0 = time.time()
        m: dict[str, Any] = {"kind": s.kind, "round": s.round, "path": str(s.path), **s.extra}
        if s.name == reference:
            m["is_reference"] = True
        else:
            m.update(compare_to_reference(prompts, resp[s.name], ref, labelers,
                                          seed=seed, n_boot=n_boot))
        m.update(rate_responses(prompts, None, resp[s.name], labelers, seed=seed + 104729,
                                closed_domain=closed))
        if judge is not None:
            m["gold"] = judge_responses(prompts, resp[s.name], judge, closed_domain=closed)
            if s.name != reference:
                m["gold_win_rate"] = compare_by_judge(prompts, resp[s.name], ref, judge,
                                                      n_boot=0)
        timings[f"judge/{s.name}"] = round(time.time() - t0, 2)
        if reward_model is not None:
            m["rm_score"] = rm_mean_score(reward_model, prompts, resp[s.name], template=template)
        if ppl_files:
            t0 = time.time()
            m["ppl"] = model_perplexity(s.path, ppl_files, block_size=ppl_block_size,
                                        max_tokens=ppl_max_tokens)
            timings[f"ppl/{s.name}"] = round(time.time() - t0, 2)
        if truthfulqa:
            t0 = time.time()
            model = load_model(s.path)
            disable_dropout(model)
            m["truthfulqa"] = mc_scores(model, load_tokenizer(s.path), truthfulqa,
                                        truthfulqa_style)
            timings[f"truthfulqa/{s.name}"] = round(time.time() - t0, 2)
        m["samples"] = [{"prompt": prompt_text(p),
                         "category": p.get("category") if isinstance(p, dict) else None,
                         "response": r} for p, r in list(zip(prompts, resp[s.name]))[:keep_samples]]
        models[s.name] = m
        wr = m.get("win_rate")
        log("eval", f"{s.name}: win rate {wr if wr is None else round(wr, 3)}, "
             f"Likert {m.get('likert') if m.get('likert') is None else round(m['likert'], 2)}")
    return {"reference": reference, "models": models, "timings": timings,
            "config": {"n_prompts": len(prompts), "max_new_tokens": max_new_tokens,
                       "temperature": temperature, "seed": seed, "n_labelers": len(labelers),
                       "labelers": [str(getattr(x, "id", "?")) for x in labelers],
                       "closed_domain": sorted(closed)}}

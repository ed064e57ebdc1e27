"""The pipeline's evaluation stage (called by rlhf.pipeline): every model of the loop on the
world's held-out test prompts, judged by the held-out labelers, into report.html / report.json.

Models: `base` (the pretrained LM), `base_prompted` (the same with the world's few-shot prefix,
the paper's "GPT prompted"), `sft` (the reference of every win rate), and per round r
`ppo_r{r}` / `ppo_ptx_r{r}`. Over-optimisation: for the plain-PPO run of every round, its saved
policies (checkpoints/iter-*, final) are sampled on `pipeline.curve_prompts` test prompts at the
PPO temperature and scored by that round's RM (proxy) and the gold judge against √KL(π‖SFT).
Copying: every model's accuracy on the copy probe (rlhf.eval.copying), the skill that
closed-domain answers need and the few-shot prompt relies on.
The PPO runs' own metrics (objective/kl, objective/score) go to `kl_curve_train`.
Ceiling: the world's gold writer's answers against SFT's, judged by the same labelers; labeler
noise and ties keep even perfect answers well below 100 %. RM: each round's validation accuracy
sits beside the agreement of the two labelers who ranked the same validation samples.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlhf.eval.copying import copy_probe
from rlhf.eval.harness import ModelSpec, evaluate_models, world_closed_domain
from rlhf.eval.judging import (compare_to_reference, judge_responses, labeler_agreement,
                               paired_agreement)
from rlhf.eval.overopt import (checkpoint_curve, fit_kl_curve, kl_curve_from_metrics,
                               ppo_checkpoints)
from rlhf.eval.report import summary_text, write_report
from rlhf.io import read_jsonl


def _rm_agreement(r: dict) -> dict:
    """How often two labelers (the training labeler who ranked an RM validation prompt and the
    held-out labeler who ranked the same samples again) order a pair alike: the rate the RM's
    accuracy is compared with, on the same samples. Files that are missing or do not line up
    give no figure (with the reason), never a failed evaluation."""
    a, b = r.get("rankings_valid"), r.get("rankings_valid_heldout")
    if not (a and b and Path(a).exists() and Path(b).exists()):
        return {}
    try:
        rows = [[obj for _, obj in read_jsonl(f)] for f in (a, b)]
        return {"labeler_agreement": paired_agreement(*rows)}
    except (ValueError, KeyError) as e:   # UserError is a ValueError
        return {"labeler_agreement": {"error": f"{a} vs {b}: {e}"}}


def evaluate_pipeline(cfg, world, pool, root: str | Path, *, base: str, sft: str,
                      rounds: list[dict], fewshot: str, valid_text: list[str],
                      out: str | Path) -> dict:
    out = Path(out)
    p = cfg.pipeline
    t_all = time.time()
    prompts = list(world.prompts("test"))
    n = p.eval_prompts or cfg.eval.n_prompts
    prompts = prompts[:n] if n else prompts
    template = cfg.ppo.prompt_template
    specs = [ModelSpec("base", base, kind="base"),
             ModelSpec("base_prompted", base, kind="prompted", prefix=fewshot,
                       stop=["\nUser:", "User:"]),
             ModelSpec("sft", sft, kind="sft")]
    for r in rounds:
        for key, kind in (("ppo", "ppo"), ("ppo_ptx", "ppo-ptx")):
            if r.get(key):
                specs.append(ModelSpec(f"{key}_r{r['round']}", r[key], kind=kind,
                                       round=r["round"]))
    responses: dict[str, list[str]] = {}
    closed = world_closed_domain()
    results = evaluate_models(
        specs, prompts, labelers=pool.heldout_labelers, judge=world.judge, reference="sft",
        max_new_tokens=cfg.eval.max_new_tokens, temperature=cfg.eval.temperature,
        template=template, ppl_files=valid_text, ppl_block_size=cfg.pretrain.block_size,
        reward_model=rounds[-1]["rm"] if rounds else None, closed_domain=closed,
        seed=cfg.seed, out_dir=out, responses=responses)
    timings: dict[str, Any] = dict(results.pop("timings"))

    # inter-labeler agreement on the evaluated models' answers (K = number of models)
    t0 = time.time()
    per_prompt = [[responses[s.name][i] for s in specs] for i in range(len(prompts))]
    results["labeler_agreement"] = {
        "train": labeler_agreement(prompts, per_prompt, pool.train_labelers, seed=cfg.seed),
        "heldout": labeler_agreement(prompts, per_prompt, pool.heldout_labelers,
                                     seed=cfg.seed + 1)}
    timings["agreement"] = round(time.time() - t0, 2)
    if rounds:
        results["rm"] = {k: v for k, v in (rounds[-1].get("rm_metrics") or {}).items()
                         if not isinstance(v, (dict, list))}
        results["rm"]["rounds"] = [{"round": r["round"], **(r.get("rm_metrics") or {}),
                                    **_rm_agreement(r)} for r in rounds]

    # the ceiling: the gold writer's answers (gold score 1 on every prompt) against SFT's, judged
    # by the same held-out labelers: what perfect answers get from them (not a strict bound: a
    # policy may beat it slightly by chance or by suiting the labelers' length biases)
    t0 = time.time()
    best = [world.good_response(q) for q in prompts]
    results["ceiling"] = {
        "name": "gold writer",
        # paired like the models in evaluate_models: the same labeler and order per prompt
        **compare_to_reference(prompts, best, responses["sft"], pool.heldout_labelers,
                               seed=cfg.seed),
        "gold": judge_responses(prompts, best, world.judge, closed_domain=closed)}
    timings["ceiling"] = round(time.time() - t0, 2)

    # can each model copy a detail from its context (what closed-domain tasks need)?
    if p.copy_probe_stories:
        t0 = time.time()
        results["copying"] = copy_probe(
            {s.name: s.path for s in specs if s.kind != "prompted"}, world.universe,
            n=p.copy_probe_stories, seed=cfg.seed, template=template)
        timings["copy_probe"] = round(time.time() - t0, 2)

    # over-optimisation: proxy and gold against sqrt(KL from SFT) along plain PPO
    t0 = time.time()
    curve: list[dict] = []
    train_curve: list[dict] = []
    curve_prompts = prompts[: p.curve_prompts]
    for i, r in enumerate(rounds):
        if not r.get("ppo"):
            continue
        run_dir = Path(r["ppo"]).parent
        if (run_dir / "metrics.jsonl").exists():
            train_curve += [{**pt, "round": r["round"]} for pt in kl_curve_from_metrics(run_dir)]
        ckpts = ppo_checkpoints(run_dir)
        if curve_prompts and ckpts:
            curve += checkpoint_curve(ckpts, sft, curve_prompts, reward_model=r["rm"],
                                      judge=world.judge, temperature=cfg.ppo.temperature,
                                      max_new_tokens=cfg.ppo.max_new_tokens, template=template,
                                      seed=cfg.seed, include_reference=(i == 0),
                                      extra={"round": r["round"]})
    results["kl_curve"] = curve
    results["kl_fit"] = fit_kl_curve(curve) if curve else {}
    results["kl_curve_train"] = train_curve
    timings["kl_curve"] = round(time.time() - t0, 2)
    timings["eval_total"] = round(time.time() - t_all, 1)
    results["timings"] = timings
    results["config"] = {**results.get("config", {}), "root": str(root),
                         "n_test_prompts": len(prompts), "curve_prompts": len(curve_prompts)}
    written = write_report(results, out)
    text = summary_text(results)
    print(text, flush=True)
    models = results["models"]
    return {"report_html": str(written["report.html"]),
            "report_json": str(written["report.json"]), "summary": text,
            "win_rate": {k: m.get("win_rate") for k, m in models.items()},
            "lc_win_rate": {k: m.get("length_controlled_win_rate") for k, m in models.items()},
            "likert": {k: m.get("likert") for k, m in models.items()},
            "ppl": {k: m.get("ppl") for k, m in models.items()}}

"""Oracle PPO: how far does PPO get in the demo's budget when the reward is perfect?

    .venv/bin/python experiments/oracle_ppo.py --run runs/demo [--reward gold --reward rm]
        [--iterations 30 --iterations 100] [--set ppo.lr=3e-4 ...] [--prompts 300]
        [--out experiments/results/oracle_ppo.json]

For a finished pipeline run, trains PPO from the run's SFT model (its KL reference too) with the
run's own PPO settings, once per (reward, iterations):

- `gold`: the world's gold judge as the reward (`World.gold_reward`, scores in [0, 1]): an RM
  with no error, which no labeler data can give;
- `rm`: the run's round-1 reward model (what the pipeline trains against).

Each policy is then evaluated as the pipeline's evaluation does (greedy answers to the held-out
test prompts): win rate against the run's SFT model by the held-out labelers with its 95 % CI,
the gold score, and the closed-domain hallucination rate. If `gold` cannot beat SFT by much,
the RM's accuracy is not the only limit on PPO's win rate: the policy-optimisation budget is.
Prints a table and writes JSON (with the machine and the wall time of every run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # for _bench
from _bench import write_result  # noqa: E402

def train_policy(cfg, run: Path, summary: dict, reward: str, iterations: int, out: Path,
                 world) -> dict:
    """PPO from the run's SFT model against `reward` ("gold" or "rm"); returns the summary.
    `summary` is the run's summary.json."""
    from rlhf.pipeline import with_sections
    from rlhf.train.ppo import ppo

    sft = summary["sft"]
    overrides = {"policy": sft, "reference": sft, "iterations": iterations,
                 "prompts_file": str(run / "world/data/prompts/ppo.jsonl"),
                 "gamma_ptx": 0.0, "reward_fn": None, "reward_model": None}
    reward_fn = None
    if reward == "gold":
        reward_fn = world.gold_reward
    elif reward == "rm":
        overrides["reward_model"] = summary["rounds"][0]["rm"]
    else:
        raise ValueError(f"unknown reward {reward!r} (gold or rm)")
    c = with_sections(cfg, ppo=overrides)
    return ppo(c, out, reward_fn=reward_fn)


def evaluate(world, sft: str, policies: dict[str, str], n_prompts: int | None, cfg) -> dict:
    """Greedy test answers of every policy against the SFT model `sft` (held-out labelers)."""
    from rlhf.eval.harness import ModelSpec, evaluate_models, world_closed_domain

    prompts = world.prompts("test")[:n_prompts or None]
    specs = [ModelSpec("sft", sft)] + [ModelSpec(n, p) for n, p in policies.items()]
    res = evaluate_models(specs, prompts, labelers=world.labeler_pool().heldout_labelers,
                          judge=world.judge, reference="sft",
                          max_new_tokens=cfg.eval.max_new_tokens,
                          temperature=cfg.eval.temperature, template=cfg.ppo.prompt_template,
                          closed_domain=world_closed_domain(), seed=cfg.seed, keep_samples=0)
    out = {}
    for name, m in res["models"].items():
        out[name] = {"win_rate": m.get("win_rate"), "ci": m.get("ci"),
                     "gold": m["gold"]["score"],
                     "hallucination": m["gold"]["flags"].get("hallucination"),
                     "n": len(prompts)}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished pipeline run folder")
    ap.add_argument("--reward", action="append", choices=["gold", "rm"],
                    help="rewards to train against (default: gold and rm)")
    ap.add_argument("--iterations", action="append", type=int,
                    help="PPO iterations per run (default: the run's ppo.iterations)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides for every run, e.g. ppo.lr=3e-4")
    ap.add_argument("--prompts", type=int, default=None, help="test prompts (default: all)")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder for the PPO runs (default: RUN/oracle_ppo)")
    ap.add_argument("--out", type=Path, default=Path("experiments/results/oracle_ppo.json"))
    args = ap.parse_args(argv)

    from rlhf.config import load_config
    from rlhf.world import World

    run = args.run
    if not (run / "summary.json").exists():
        ap.error(f"{run} is not a finished pipeline run (no summary.json)")
    cfg = load_config(run / "config.yaml", args.set)
    summary = json.loads((run / "summary.json").read_text())
    world = World.load(run / "world/data")
    rewards = args.reward or ["gold", "rm"]
    iterations = args.iterations or [cfg.ppo.iterations]
    work = args.work or run / "oracle_ppo"
    policies, runs = {}, []
    for reward in rewards:
        for it in iterations:
            name = f"{reward}_{it}"
            t0 = time.time()
            s = train_policy(cfg, run, summary, reward, it, work / name, world)
            runs.append({"name": name, "reward": reward, "iterations": it,
                         "episodes": s["episodes"], "first_score": s["first_score"],
                         "final_score": s["final_score"], "final_kl": s["final_kl"],
                         "reward_source": s["reward"],
                         "wall_s": round(time.time() - t0, 1)})
            policies[name] = s["model"]
    t0 = time.time()
    ev = evaluate(world, summary["sft"], policies, args.prompts, cfg)
    eval_s = round(time.time() - t0, 1)

    print(f"Oracle PPO from {run} (seed {cfg.seed}; overrides: {args.set or 'none'})")
    print(f"{'policy':12s} {'episodes':>8s} {'train score':>17s} {'KL':>6s} {'win vs SFT':>10s} "
          f"{'95% CI':>16s} {'gold':>6s} {'halluc':>7s} {'wall':>6s}")
    sft = ev["sft"]
    print(f"{'sft':12s} {'':>8s} {'':>17s} {'':>6s} {'':>10s} {'':>16s} "
          f"{sft['gold']:6.3f} {sft['hallucination']:7.1%}")
    for r in runs:
        m = ev[r["name"]]
        ci = m["ci"] or [float("nan")] * 2
        print(f"{r['name']:12s} {r['episodes']:8d} {r['first_score']:7.3f} -> {r['final_score']:6.3f} "
              f"{r['final_kl']:6.2f} {m['win_rate']:10.1%} [{ci[0]:5.1%}, {ci[1]:5.1%}] "
              f"{m['gold']:6.3f} {m['hallucination']:7.1%} {r['wall_s']:5.0f}s")
    result = {"run": str(run), "config": cfg.model_dump(mode="json"), "seed": cfg.seed,
              "overrides": args.set, "runs": runs,
              "eval": ev, "eval_s": eval_s}
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()

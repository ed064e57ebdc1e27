"""The demo's results over seeds: one table from the runs' report.json files, against the
targets of the demo issue. This is what the README's results table is.

    .venv/bin/python experiments/demo_seeds.py runs/demo_s0 runs/demo_s1 runs/demo_s2
            [--out experiments/results/demo_seeds.json]

Each run is `rlhf pipeline --config configs/demo.yaml --set seed=N --out runs/demo_sN` (seed 0
is `make demo`). Prints a markdown table per run, the targets met or not, and the wall time of
each run with its stage times; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # for _bench
from _bench import write_result  # noqa: E402

ROWS = ("base", "base_prompted", "sft", "ppo_r1", "ppo_ptx_r1", "ppo_r2", "ppo_ptx_r2")


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def summarize(run: Path) -> dict:
    rep = json.loads((run / "eval" / "report.json").read_text())
    summ = json.loads((run / "summary.json").read_text())
    cfg = rep["config"]
    models = rep["models"]
    out = {"run": str(run), "seed": cfg.get("seed"), "models": {}, "rm": [],
           "ceiling": rep["ceiling"]["win_rate"],
           "stage_seconds": summ.get("stage_seconds"),
           "wall_s": summ.get("wall_s_this_invocation")}
    for name in ROWS:
        m = models.get(name)
        if m is None:
            continue
        out["models"][name] = {
            "win_rate": m.get("win_rate"), "ci": m.get("ci"), "likert": m.get("likert"),
            "follows": m["flags"]["follows_instruction"],
            "constraint": m["flags"]["satisfies_constraint"],
            "hallucination": m["flags"]["hallucination"],
            "hallucination_ci": m.get("flags_ci", {}).get("hallucination"),
            "ppl": m.get("ppl")}
    for r in rep["rm"].get("rounds", []):
        acc = r["valid"].get("heldout_labelers/accuracy")
        agree = (r.get("labeler_agreement") or {}).get("agreement")
        out["rm"].append({"round": r["round"], "heldout_accuracy": acc, "agreement": agree,
                          "gap_points": None if acc is None or agree is None
                          else round(100 * (agree - acc), 1)})
    out["targets"] = targets(out)
    return out


def targets(s: dict) -> dict:
    m = s["models"]
    final = "ppo_r2" if "ppo_r2" in m else "ppo_r1"
    final_ptx = final.replace("ppo", "ppo_ptx")
    ppo, sft, base, ptx = m[final], m["sft"], m["base"], m.get(final_ptx)
    ppl_tax = ppo["ppl"] - sft["ppl"]
    res = {
        "ppo_win_ge_60": ppo["win_rate"] >= 0.60,
        "ppo_ci_low_gt_50": ppo["ci"][0] > 0.50,
        "order_base_prompted_sft_ppo": m["base"]["win_rate"] < m["base_prompted"]["win_rate"]
        < 0.5 < ppo["win_rate"],
        "rm_within_5_points_every_round": all(r["gap_points"] is not None
                                              and r["gap_points"] <= 5 for r in s["rm"]),
        "halluc_ppo_below_sft_cis_apart": ppo["hallucination_ci"][1] < sft["hallucination_ci"][0],
        "halluc_ppo_at_most_half_base": ppo["hallucination"] <= base["hallucination"] / 2,
    }
    if ptx:
        res["ptx_win_gt_50"] = ptx["win_rate"] > 0.5
        res["ptx_ppl_increase_at_most_half_ppo"] = (ptx["ppl"] - sft["ppl"]) <= ppl_tax / 2
    return res


def table(s: dict) -> str:
    lines = ["| model | win vs SFT [95 % CI] | Likert | follows | constraint | closed-domain "
             "halluc. | ppl |", "|---|---|---|---|---|---|---|"]
    for name, m in s["models"].items():
        win = "–" if name == "sft" else f"{pct(m['win_rate'])} [{100 * m['ci'][0]:.1f}, " \
                                         f"{100 * m['ci'][1]:.1f}]"
        lines.append(f"| {name} | {win} | {m['likert']:.2f} | {pct(m['follows'])} | "
                     f"{pct(m['constraint'])} | {pct(m['hallucination'])} | {m['ppl']:.1f} |")
    return "\n".join(lines)


def combined(runs: list[dict]) -> str:
    """One table over seeds: win rate [CI], closed-domain hallucination and perplexity."""
    seeds = " / ".join(str(s["seed"]) for s in runs)
    lines = [f"| model | win vs SFT, seeds {seeds} | closed-domain halluc. | ppl (held-out prose) |",
             "|---|---|---|---|"]
    for name in ROWS:
        ms = [s["models"].get(name) for s in runs]
        if any(m is None for m in ms):
            continue
        win = "–" if name == "sft" else " / ".join(
            f"{100 * m['win_rate']:.1f} [{100 * m['ci'][0]:.0f}, {100 * m['ci'][1]:.0f}]"
            for m in ms)
        hal = " / ".join(f"{100 * m['hallucination']:.1f}" for m in ms)
        ppl = " / ".join(f"{m['ppl']:.1f}" for m in ms)
        lines.append(f"| {name} | {win} | {hal} | {ppl} |")
    lines.append("| ceiling (gold writer) | " + " / ".join(f"{100 * s['ceiling']:.1f}"
                                                      for s in runs) + " | 0 | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "demo_seeds.json")
    args = ap.parse_args()
    runs = [summarize(r) for r in args.runs]
    for s in runs:
        print(f"\n### seed {s['seed']} ({s['run']}; wall {s['wall_s']} s)\n")
        print(table(s))
        print(f"\nceiling (gold writer) {pct(s['ceiling'])}; RM held-out accuracy vs two "
              "labelers' agreement on the same samples: " + "; ".join(
                  f"round {r['round']} {pct(r['heldout_accuracy'])} vs {pct(r['agreement'])} "
                  f"({r['gap_points']} points)" for r in s["rm"]))
        print("stage seconds: " + ", ".join(f"{k} {v}" for k, v in
                                             (s["stage_seconds"] or {}).items()))
        print("targets: " + ", ".join(f"{k} {'yes' if v else 'NO'}"
                                      for k, v in s["targets"].items()))
    if len(runs) > 1:
        print("\n### all seeds\n")
        print(combined(runs))
        print("\nRM held-out accuracy vs agreement (points below), round 1 / 2: " + "; ".join(
            f"seed {s['seed']}: " + " / ".join(f"{100 * r['heldout_accuracy']:.1f} vs "
                                                f"{100 * r['agreement']:.1f} ({r['gap_points']})"
                                                for r in s["rm"]) for s in runs))
    write_result(args.out, {"runs": runs})


if __name__ == "__main__":
    main()

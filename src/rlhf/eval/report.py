"""The evaluation report: report.json (every number), report.html (static, offline) and PNG plots.

`results` schema (every key optional unless marked; numbers are floats, rates in [0, 1]; a
value that does not apply is null):

    {
      "reference": "sft",                       # the model every win rate is against
      "models": {                               # display order = insertion order
        name: {
          "kind": "base" | "prompted" | "sft" | "ppo" | "ppo-ptx" | ...,  "round": int | None,
          # win rate against the reference (rlhf.eval.judging.compare_to_reference)
          "win_rate", "ci": [lo, hi], "ci_method", "n", "wins", "ties", "losses",
          "length_controlled_win_rate", "lc_ci": [lo, hi], "lc_slope",
          "length_matched_win_rate", "length_matched_n", "length_matched_ci",
          "mean_length", "ref_mean_length", "win_rate_by_category": {cat: rate},
          # held-out labelers' ratings (rlhf.eval.judging.rate_responses)
          "likert", "likert_ci": [lo, hi], "n_rated",
          "flags": {flag: rate}, "flags_ci": {flag: [lo, hi]}, "flags_n": {flag: n},
          "flags_by_category": {cat: {flag: rate}}, "likert_by_category": {cat: mean},
          "n_by_category": {cat: n},
          # the noiseless gold judge (rlhf.eval.judging.judge_responses / compare_by_judge)
          "gold": {"score", "score_ci", "likert", "flags", ...},
          "gold_win_rate": {... same keys as the win-rate block ...},
          "ppl": float,                          # held-out pretraining perplexity (alignment tax)
          "rm_score": float,                     # mean proxy RM score of its responses
          "truthfulqa": {"mc1", "mc2", "mc1_sum", "n", "prompt_style"},
          "samples": [{"prompt", "category", "response"}, ...]   # a few examples
        }
      },
      "ceiling": {"name", "win_rate", "ci", "wins", "ties", "losses", ..., "gold": {...}},
                                                # the best answers (e.g. the world's gold writer)
                                                # against the reference, same labelers
      "rm": {..., "rounds": [{"round", "valid": {"accuracy", ...},
                              "labeler_agreement": {"agreement", "ci", "pairs", "prompts"}},
                             ...]},
                                                # reward model metrics, free-form; a round's
                                                # agreement is on its own validation comparisons
      "labeler_agreement": {"train": {"agreement", "ci", "pairs"}, "heldout": {...}}
                           | {"agreement", "ci", "pairs"} | float,
      "copying": {"n_cases", "chance": {detail: p},            # rlhf.eval.copying
                  "models": {name: {"accuracy", "prose": {...}, "chat": {...}}}},
      "kl_curve": [{"step", "kl", "sqrt_kl", "proxy", "gold"}, ...],
      "kl_fit": {"proxy": {"alpha", "beta", "rmse", "baseline", "form", "n"}, "gold": {...}},
      "kl_summary": {"last": {"sqrt_kl", "proxy_gain", "gold_gain"}, "gold_best": {...},
                     "gold_peak_sqrt_kl_fit"},            # filled in by write_report
      "kl_curve_train": [...],                  # PPO's own logged (objective/kl, score) rows
      "timings": {stage: seconds},
      "config": {...}                           # anything that describes the run
    }

`write_report(results, out_dir)` writes report.json, report.html and the PNGs named in
`PLOTS` that have data (win_rate.png ≈ the paper's Fig. 1, metadata.png ≈ Fig. 4, ptx.png = the
alignment tax of SFT / PPO / PPO-ptx, kl_curve.png = proxy and gold vs √KL, truthfulqa.png).
The HTML links the PNGs by relative path, so the folder opens offline.
`summary_text(results)` is the short text summary printed at the end of the pipeline.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.data.records import RATING_FLAGS
from rlhf.eval.overopt import curve_summary, fit_kl_curve, plot_reward_vs_kl
from rlhf.io import write_text_atomic

PLOTS = ("win_rate.png", "metadata.png", "ptx.png", "kl_curve.png", "truthfulqa.png")

FLAG_LABELS = {
    "follows_instruction": "Attempts correct instruction (↑)",
    "satisfies_constraint": "Follows explicit constraints (↑)",
    "hallucination": "Hallucinations, closed domain (↓)",
    "harmful_compliance": "Complies with harmful request (↓)",
    "appropriate_for_customer": "Appropriate for customer assistant (↑)",
}
KIND_COLOURS = {"base": "tab:gray", "prompted": "tab:olive", "sft": "tab:green",
                "ppo": "tab:red", "ppo-ptx": "tab:blue"}


# --------------------------------------------------------------------------- helpers
def json_safe(obj: Any) -> Any:
    """Replace NaN / inf with None and numpy scalars with Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _num(x) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(x, digits: int = 3) -> str:
    f = _num(x)
    return "–" if f is None else f"{f:.{digits}f}"


def _pct(x) -> str:
    f = _num(x)
    return "–" if f is None else f"{100 * f:.1f}%"


def _ci(ci) -> str:
    if not ci or len(ci) != 2 or _num(ci[0]) is None or _num(ci[1]) is None:
        return ""
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def _colour(m: dict, i: int) -> str:
    return KIND_COLOURS.get(str(m.get("kind", "")), f"C{i % 10}")


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: Path, title: str | None = None) -> Path:
    """Lay out, write the PNG and free the figure (every plot ends this way)."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _err(val, ci) -> list[float]:
    """[below, above] error-bar lengths from a CI (0 when missing)."""
    v = _num(val)
    if v is None or not ci or _num(ci[0]) is None or _num(ci[1]) is None:
        return [0.0, 0.0]
    return [max(v - float(ci[0]), 0.0), max(float(ci[1]) - v, 0.0)]


# --------------------------------------------------------------------------- plots
def plot_win_rates(results: dict, path: Path) -> Path | None:
    """Fig. 1 style: win rate against the reference per model, 95 % CI error bars; the
    length-controlled win rate as a hollow marker beside it; the ceiling (what perfect answers
    get from the same labelers), when the results have one, as a dotted line."""
    ref = results.get("reference")
    models = [(n, m) for n, m in results.get("models", {}).items()
              if _num(m.get("win_rate")) is not None or n == ref]
    if not any(_num(m.get("win_rate")) is not None for _, m in models):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(models) + 2), 4))
    xs = np.arange(len(models))
    for i, (n, m) in enumerate(models):
        c = _colour(m, i)
        if _num(m.get("win_rate")) is None:      # the reference itself: 50 % by definition
            ax.plot(xs[i], 0.5, "D", color=c, label="reference")
            continue
        ax.errorbar(xs[i] - 0.1, m["win_rate"], yerr=np.array(_err(m["win_rate"], m.get("ci")))
                    [:, None], fmt="o", color=c, capsize=4, label="raw" if i == 0 else None)
        lc = _num(m.get("length_controlled_win_rate"))
        if lc is not None:
            ax.errorbar(xs[i] + 0.1, lc, yerr=np.array(_err(lc, m.get("lc_ci")))[:, None],
                        fmt="o", mfc="white", color=c, capsize=3,
                        label="length-controlled" if i == 0 else None)
    ax.axhline(0.5, ls="--", color="k", lw=0.8)
    top = _num((results.get("ceiling") or {}).get("win_rate"))
    if top is not None:
        ax.axhline(top, ls=":", color="tab:green", lw=1.2,
                   label=f"ceiling: {results['ceiling'].get('name', 'best answers')}")
    ax.set_xticks(xs, [n for n, _ in models], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"win rate against {results.get('reference', 'reference')}")
    ax.set_title("Preference of held-out labelers (95% CI)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


def plot_metadata(results: dict, path: Path) -> Path | None:
    """Fig. 4 style: one panel per metadata flag (and Likert), a bar per model, Wilson CIs."""
    models = [(n, m) for n, m in results.get("models", {}).items() if m.get("flags")]
    if not models:
        return None
    flags = [f for f in RATING_FLAGS if any(_num(m["flags"].get(f)) is not None for _, m in models)]
    panels = flags + (["likert"] if any(_num(m.get("likert")) is not None for _, m in models)
                      else [])
    plt = _plt()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    xs = np.arange(len(models))
    for k, panel in enumerate(panels):
        ax = axes[k // cols][k % cols]
        if panel == "likert":
            vals = [_num(m.get("likert")) for _, m in models]
            errs = [_err(m.get("likert"), m.get("likert_ci")) for _, m in models]
            ax.set_ylim(1, 7)
            ax.set_title("Likert score 1–7 (↑)", fontsize=9)
        else:
            vals = [_num(m["flags"].get(panel)) for _, m in models]
            errs = [_err(m["flags"].get(panel), (m.get("flags_ci") or {}).get(panel))
                    for _, m in models]
            ax.set_ylim(0, 1)
            ax.set_title(FLAG_LABELS.get(panel, panel), fontsize=9)
        heights = [v if v is not None else 0.0 for v in vals]
        base = 1 if panel == "likert" else 0
        ax.bar(xs, [h - base for h in heights], bottom=base,
               color=[_colour(m, i) for i, (_, m) in enumerate(models)],
               yerr=np.array(errs).T, capsize=3)
        ax.set_xticks(xs, [n for n, _ in models], rotation=35, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    return _save(plt, fig, path, "Metadata from held-out labelers (95% CI)")


def plot_ptx(results: dict, path: Path) -> Path | None:
    """Alignment tax: held-out pretraining perplexity per model (left) beside the win rate
    (right), so SFT vs PPO vs PPO-ptx reads at a glance."""
    models = [(n, m) for n, m in results.get("models", {}).items() if _num(m.get("ppl"))]
    if not models:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(7, 1.6 * len(models) + 3), 3.6))
    xs = np.arange(len(models))
    cols = [_colour(m, i) for i, (_, m) in enumerate(models)]
    a1.bar(xs, [float(m["ppl"]) for _, m in models], color=cols)
    a1.set_title("Held-out pretraining perplexity (↓)", fontsize=10)
    a1.set_xticks(xs, [n for n, _ in models], rotation=30, ha="right", fontsize=8)
    ref = results.get("reference")
    wr = [0.5 if n == ref and _num(m.get("win_rate")) is None else _num(m.get("win_rate"))
          for n, m in models]
    a2.bar(xs, [w if w is not None else 0.0 for w in wr], color=cols,
           yerr=np.array([_err(m.get("win_rate"), m.get("ci")) for _, m in models]).T,
           capsize=3)
    a2.axhline(0.5, ls="--", color="k", lw=0.8)
    a2.set_ylim(0, 1)
    a2.set_title(f"Win rate against {results.get('reference', 'reference')} (↑)", fontsize=10)
    a2.set_xticks(xs, [n for n, _ in models], rotation=30, ha="right", fontsize=8)
    for a in (a1, a2):
        a.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path, "Alignment tax and the ptx mix")


def plot_truthfulqa(results: dict, path: Path) -> Path | None:
    models = [(n, m["truthfulqa"]) for n, m in results.get("models", {}).items()
              if isinstance(m.get("truthfulqa"), dict)]
    if not models:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(models) + 2), 3.6))
    xs = np.arange(len(models))
    for j, key in enumerate(("mc1", "mc2")):
        ax.bar(xs + (j - 0.5) * 0.38, [_num(t.get(key)) or 0.0 for _, t in models], 0.38,
               label=key.upper())
    ax.set_xticks(xs, [n for n, _ in models], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("TruthfulQA multiple choice")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


# --------------------------------------------------------------------------- text + html
def summary_text(results: dict) -> str:
    """A short fixed-width summary: one row per model, then the ceiling, the RM beside the
    labelers' agreement, agreement and KL fit."""
    ref = results.get("reference", "reference")
    lines = [f"Evaluation against {ref} (held-out labelers; win rate: ties count half, "
             f"95% Wilson CI)"]
    head = (f"{'model':<16}{'win':>7} {'95% CI':<17}{'LC win':>7}{'Likert':>7}{'follow':>7}"
            f"{'constr':>7}{'halluc':>7}{'harm':>7}{'cust':>7}{'ppl':>9}{'gold':>7}")
    lines.append(head)
    for name, m in results.get("models", {}).items():
        f = m.get("flags") or {}
        gold = (m.get("gold") or {}).get("score")
        ci = _ci(m.get("ci"))
        lines.append(
            f"{name[:15]:<16}{_pct(m.get('win_rate')):>7} {ci:<17}"
            f"{_pct(m.get('length_controlled_win_rate')):>7}{_fmt(m.get('likert'), 2):>7}"
            f"{_pct(f.get('follows_instruction')):>7}{_pct(f.get('satisfies_constraint')):>7}"
            f"{_pct(f.get('hallucination')):>7}{_pct(f.get('harmful_compliance')):>7}"
            f"{_pct(f.get('appropriate_for_customer')):>7}{_fmt(m.get('ppl'), 2):>9}"
            f"{_fmt(gold, 3):>7}")
    tqa = [(n, m["truthfulqa"]) for n, m in results.get("models", {}).items()
           if isinstance(m.get("truthfulqa"), dict)]
    if tqa:
        lines.append("TruthfulQA MC1/MC2: " + "; ".join(
            f"{n} {_fmt(t.get('mc1'))}/{_fmt(t.get('mc2'))}" for n, t in tqa))
    ceiling = results.get("ceiling")
    if isinstance(ceiling, dict) and _num(ceiling.get("win_rate")) is not None:
        gold = (ceiling.get("gold") or {}).get("score")
        wtl = [ceiling.get(k) for k in ("wins", "ties", "losses")]
        lines.append(f"Ceiling: {ceiling.get('name', 'best answers')} (gold {_fmt(gold, 3)}) wins "
                     f"{_pct(ceiling['win_rate'])} {_ci(ceiling.get('ci'))} against {ref} with "
                     "the same labelers"
                     + (" (W/T/L {}/{}/{})".format(*wtl) if None not in wtl else ""))
    rm = results.get("rm")
    rm_rounds = [x for x in (rm or {}).get("rounds") or [] if isinstance(x, dict)] \
        if isinstance(rm, dict) else []
    if rm_rounds:
        lines += [_rm_line(x) for x in rm_rounds]
    elif isinstance(rm, dict) and rm:
        lines.append("RM: " + ", ".join(f"{k}={_fmt(v, 4) if _num(v) is not None else v}"
                                        for k, v in rm.items() if not isinstance(v, (dict, list))))
    ag = results.get("labeler_agreement")
    if ag is not None:
        if isinstance(ag, dict) and "agreement" not in ag:
            lines.append("Labeler agreement: " + ", ".join(
                f"{k} {_pct((v or {}).get('agreement') if isinstance(v, dict) else v)}"
                for k, v in ag.items()))
        else:
            v = ag.get("agreement") if isinstance(ag, dict) else ag
            lines.append(f"Labeler agreement: {_pct(v)}")
    cp = results.get("copying") or {}
    if cp.get("models"):
        chance = cp.get("chance") or {}
        details = list(chance) or [d for d in next(iter(cp["models"].values())).get("chat", {})
                                   if d != "accuracy"]
        lines.append(f"Copies a detail from its context ({'/'.join(details)}; chance "
                     + "/".join(_pct(chance.get(d)) for d in details) + "): "
                     + "; ".join(f"{n} " + "/".join(_pct(c.get("chat", {}).get(d))
                                                   for d in details)
                                 for n, c in cp["models"].items()))
    fit = results.get("kl_fit") or {}
    ks = results.get("kl_summary") or {}
    if results.get("kl_curve"):
        fit = fit or fit_kl_curve(results["kl_curve"])
        ks = ks or curve_summary(results["kl_curve"], fit)
    for key in ("proxy", "gold"):
        f = fit.get(key)
        if f and f.get("alpha") is not None:
            lines.append(f"{key} vs √KL: R(d)=d(α−β·log d), α={f['alpha']:.4g}, "
                         f"β={f['beta']:.4g}, rmse={f['rmse']:.3g} (n={f['n']})")
    last = ks.get("last") or {}
    if last:
        lines.append(f"last checkpoint √KL={_fmt(last.get('sqrt_kl'), 2)}: proxy gain "
                     f"{_fmt(last.get('proxy_gain'))}, gold gain {_fmt(last.get('gold_gain'))}"
                     + (f"; best gold at √KL={_fmt(ks['gold_best']['sqrt_kl'], 2)}"
                        if ks.get("gold_best") else ""))
    t = results.get("timings")
    if t:
        lines.append("Timings: " + ", ".join(f"{k} {_fmt(v, 1)}s" for k, v in t.items()))
    return "\n".join(lines)


def _rm_line(r: dict) -> str:
    """One round's reward model: validation accuracy (by training and by held-out labelers)
    beside how often two labelers agree on the same samples; the gap is taken against the
    held-out labelers' accuracy, as the paper compares them (§4.1)."""
    v = r.get("valid") or {}
    text = f"RM round {r.get('round', '?')}: validation accuracy {_pct(v.get('accuracy'))}"
    held = _num(v.get("heldout_labelers/accuracy"))
    if held is not None:
        text += (f" (training labelers {_pct(v.get('train_labelers/accuracy'))}, held-out "
                 f"labelers {_pct(held)})")
    ag = _num((r.get("labeler_agreement") or {}).get("agreement"))
    if ag is not None:
        text += f"; two labelers agree on {_pct(ag)} of the pairs in the same samples"
        acc = held if held is not None else _num(v.get("accuracy"))
        if acc is not None:
            text += (f"; the RM is {100 * (ag - acc):.1f} points "
                     f"{'below' if ag >= acc else 'above'} that")
    return text


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:12px}"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>")
    return "\n".join(out) + "</table>"


def render_html(results: dict, plots: dict[str, str]) -> str:
    e = html.escape
    models = results.get("models", {})
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             "<title>rlhf evaluation report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>Evaluation report</h1>",
             f"<pre>{e(summary_text(results))}</pre>"]
    rows = []
    for n, m in models.items():
        f = m.get("flags") or {}
        rows.append([n, m.get("kind", ""), _pct(m.get("win_rate")), _ci(m.get("ci")),
                     f"{m.get('wins', '')}/{m.get('ties', '')}/{m.get('losses', '')}",
                     _pct(m.get("length_controlled_win_rate")), _ci(m.get("lc_ci")),
                     _pct(m.get("length_matched_win_rate")), _fmt(m.get("mean_length"), 1),
                     _fmt(m.get("likert"), 2)] + [_pct(f.get(k)) for k in RATING_FLAGS] +
                    [_fmt(m.get("ppl"), 2), _fmt((m.get("gold") or {}).get("score"))])
    parts += ["<h2>Models</h2>", _table(
        ["model", "kind", "win rate", "95% CI", "W/T/L", "LC win", "LC 95% CI", "len-matched",
         "mean words", "Likert"] + [FLAG_LABELS[k] for k in RATING_FLAGS] + ["ppl", "gold"], rows)]
    captions = {"win_rate.png": "Win rate against the reference (cf. paper Fig. 1)",
                "metadata.png": "Metadata rates (cf. paper Fig. 4)",
                "ptx.png": "Alignment tax: perplexity on held-out pretraining text",
                "kl_curve.png": "Proxy and gold score against √KL (over-optimisation)",
                "truthfulqa.png": "TruthfulQA MC1 / MC2"}
    for name, rel in plots.items():
        parts.append(f"<h2>{e(captions.get(name, name))}</h2><img src='{e(rel)}' "
                     f"alt='{e(name)}'>")
    cats = sorted({c for m in models.values() for c in (m.get("flags_by_category") or {})})
    if cats:
        parts.append("<h2>Metadata by category</h2>")
        for n, m in models.items():
            by = m.get("flags_by_category") or {}
            if not by:
                continue
            rows = [[c, str((m.get("n_by_category") or {}).get(c, "")),
                     _pct((m.get("win_rate_by_category") or {}).get(c)),
                     _fmt((m.get("likert_by_category") or {}).get(c), 2)] +
                    [_pct(by.get(c, {}).get(k)) for k in RATING_FLAGS] for c in cats if c in by]
            parts += [f"<h3>{e(n)}</h3>", _table(["category", "n", "win rate", "Likert"] +
                                                 [FLAG_LABELS[k] for k in RATING_FLAGS], rows)]
    for n, m in models.items():
        s = m.get("samples")
        if s:
            parts.append(f"<h3>Samples: {e(n)}</h3>")
            parts.append(_table(["prompt", "category", "response"],
                                [[x.get("prompt", ""), x.get("category", ""),
                                  x.get("response", "")] for x in s]))
    for key, title in (("ceiling", "Ceiling: the best answers against the reference"),
                       ("rm", "Reward model"), ("labeler_agreement", "Labeler agreement"),
                       ("copying", "Copying a detail from the context (rlhf.eval.copying)"),
                       ("kl_fit", "Gao fit of score vs √KL"),
                       ("kl_summary", "Proxy vs gold along PPO"), ("timings", "Timings (s)"),
                       ("config", "Configuration")):
        if results.get(key) is not None:
            parts.append(f"<h2>{title}</h2><pre>"
                         f"{e(json.dumps(json_safe(results[key]), indent=2))}</pre>")
    parts.append("<p>All numbers: <a href='report.json'>report.json</a></p></body></html>")
    return "\n".join(parts)


def write_report(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, the PNGs that have data, and report.html into out_dir; returns
    {file name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = dict(results)
    if results.get("kl_curve"):
        if not results.get("kl_fit"):
            results["kl_fit"] = fit_kl_curve(results["kl_curve"])
        if not results.get("kl_summary"):
            results["kl_summary"] = curve_summary(results["kl_curve"], results["kl_fit"])
    results = json_safe(results)
    written: dict[str, Path] = {}
    makers = {"win_rate.png": plot_win_rates, "metadata.png": plot_metadata,
              "ptx.png": plot_ptx, "truthfulqa.png": plot_truthfulqa,
              "kl_curve.png": lambda r, p: plot_reward_vs_kl(r["kl_curve"], p,
                                                             fits=r.get("kl_fit"))
              if r.get("kl_curve") else None}
    for name in PLOTS:
        tmp = out / f".{name}.tmp.png"
        try:
            made = makers[name](results, tmp)
            if made is not None:
                os.replace(tmp, out / name)
                written[name] = out / name
            else:
                (out / name).unlink(missing_ok=True)  # stale plot of an earlier report
        finally:
            tmp.unlink(missing_ok=True)
    # not sorted: the order of "models" is the display order
    write_text_atomic(out / "report.json", json.dumps(results, indent=2, allow_nan=False) + "\n")
    os.chmod(out / "report.json", 0o644)
    written["report.json"] = out / "report.json"
    write_text_atomic(out / "report.html", render_html(results, {n: n for n in written
                                                                 if n.endswith(".png")}))
    os.chmod(out / "report.html", 0o644)
    written["report.html"] = out / "report.html"
    return written

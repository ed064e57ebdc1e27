"""Over-optimisation: proxy (RM) and gold score against d = √KL(π‖π_init) along PPO (Gao et al.).

Gao et al. fit the gold score gain as a function of d:
    RL:  R(d) = d·(α − β·log d)        best-of-n:  R(d) = d·(α − β·d)
Both are linear in (α, β), so `fit_gao` solves an ordinary least-squares problem on the design
[d, −d·log d] (or [d, −d²]), with d·log d = 0 at d = 0. R is the score *gain* over the initial
policy: by default (`baseline="first"`) the score at the smallest d (the initial checkpoint, d = 0
when it is in the list) is subtracted first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from rlhf import rl
from rlhf.models import context_length, disable_dropout, load_model, load_tokenizer
from rlhf.models.format import DEFAULT_TEMPLATE, decode_response, encode_prompt
from rlhf.models.generation import generate
from rlhf.models.lm import position_ids_from_mask
from rlhf.models.reward import RewardModel, score_texts


def _points(points: Sequence) -> list[dict]:
    out = []
    for p in points:
        if isinstance(p, dict):
            d = p.get("sqrt_kl")
            if d is None and p.get("kl") is not None:
                d = math.sqrt(max(float(p["kl"]), 0.0))
            if d is None or not math.isfinite(float(d)):
                continue  # no usable KL estimate for this point
            out.append({**p, "sqrt_kl": float(d), "proxy": p.get("proxy"), "gold": p.get("gold")})
        else:
            d, proxy, gold = (list(p) + [None, None])[:3]
            out.append({"sqrt_kl": float(d), "proxy": proxy, "gold": gold})
    return sorted(out, key=lambda q: q["sqrt_kl"])


def kl_curve_from_metrics(rows_or_path, *, kl_key: str = "objective/kl",
                          proxy_key: str = "objective/score", gold_key: str = "gold/score",
                          step_key: str = "step") -> list[dict]:
    """Points {"step", "kl", "sqrt_kl", "proxy", "gold"} from PPO metrics rows (a list of dicts
    or a metrics.jsonl path); rows without `kl_key` are skipped; gold is None if absent."""
    rows = rows_or_path
    if isinstance(rows_or_path, (str, Path)):
        p = Path(rows_or_path)
        p = p / "metrics.jsonl" if p.is_dir() else p
        rows = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    out = []
    for r in rows:
        if r.get(kl_key) is None:
            continue
        kl = float(r[kl_key])
        out.append({"step": r.get(step_key), "kl": kl, "sqrt_kl": math.sqrt(max(kl, 0.0)),
                    "proxy": r.get(proxy_key), "gold": r.get(gold_key)})
    return out


def gao_design(d: np.ndarray, form: str = "rl") -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if form == "rl":
        dlogd = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
        return np.stack([d, -dlogd], axis=1)
    if form == "bon":
        return np.stack([d, -d * d], axis=1)
    raise ValueError(f"unknown form {form!r} (rl | bon)")


def gao_curve(d, alpha: float, beta: float, form: str = "rl") -> np.ndarray:
    return gao_design(np.asarray(d, dtype=np.float64), form) @ np.array([alpha, beta])


def fit_gao(d: Sequence[float], r: Sequence[float], *, form: str = "rl",
            baseline: float | str | None = "first") -> dict:
    """Least-squares (α, β) of R(d) = d(α − β log d) ("rl") or d(α − β d) ("bon").

    Returns {"alpha", "beta", "rmse", "baseline", "form", "n"}; None values with < 2 points."""
    d = np.asarray(d, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    ok = np.isfinite(d) & np.isfinite(r)
    d, r = d[ok], r[ok]
    if baseline == "first":
        base = float(r[np.argmin(d)]) if d.size else 0.0
    else:
        base = float(baseline or 0.0)
    if d.size < 2:
        return {"alpha": None, "beta": None, "rmse": None, "baseline": base, "form": form,
                "n": int(d.size)}
    y = r - base
    X = gao_design(d, form)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    rmse = float(np.sqrt(np.mean((X @ coef - y) ** 2)))
    return {"alpha": float(coef[0]), "beta": float(coef[1]), "rmse": rmse, "baseline": base,
            "form": form, "n": int(d.size)}


def fit_kl_curve(points: Sequence, form: str = "rl") -> dict:
    """Fits of the proxy and the gold series: {"proxy": fit | None, "gold": fit | None}."""
    pts = _points(points)
    out: dict[str, Any] = {}
    for key in ("proxy", "gold"):
        xs = [(p["sqrt_kl"], float(p[key])) for p in pts if p.get(key) is not None]
        out[key] = fit_gao([x for x, _ in xs], [y for _, y in xs], form=form) if xs else None
    return out


def plot_reward_vs_kl(points: Sequence, path: str | Path, *, fits: dict | None = None,
                      title: str = "Reward vs √KL (over-optimisation)") -> Path:
    """Proxy and gold scores against √KL, with the fitted Gao RL curves; writes a PNG.
    Points: (sqrt_kl, proxy, gold) tuples or dicts. Fits default to `fit_kl_curve(points)`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = _points(points)
    fits = fit_kl_curve(pts) if fits is None else fits
    fig, ax = plt.subplots(figsize=(6.5, 4))
    axes = {"proxy": ax, "gold": ax.twinx()}  # the two scores live on different scales
    colours = {"proxy": "tab:blue", "gold": "tab:orange"}
    labels = {"proxy": "proxy RM score", "gold": "gold score"}
    handles = []
    for key in ("proxy", "gold"):
        xs = [(p["sqrt_kl"], float(p[key])) for p in pts if p.get(key) is not None]
        a = axes[key]
        a.set_ylabel(labels[key] + (" (left)" if key == "proxy" else " (right)"),
                     color=colours[key])
        if not xs:
            continue
        handles += a.plot([x for x, _ in xs], [y for _, y in xs], "o", ms=4,
                          color=colours[key], label=labels[key])
        f = (fits or {}).get(key)
        if f and f.get("alpha") is not None:
            grid = np.linspace(0, max(x for x, _ in xs), 100)
            handles += a.plot(grid, f["baseline"] + gao_curve(grid, f["alpha"], f["beta"],
                                                              f["form"]),
                              "-", color=colours[key], alpha=0.7,
                              label=f"{key} fit: α={f['alpha']:.3g}, β={f['beta']:.3g}")
    ax.set_xlabel("√KL(π ‖ π_init)  (nats^½)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- from checkpoints
def ppo_checkpoints(run_dir: str | Path, include_final: bool = True) -> list[tuple[int | None, Path]]:
    """(iteration, folder) of a PPO run's saved policies: checkpoints/iter-N (HF format), then
    final (iteration from summary.json's "iterations" when known)."""
    run = Path(run_dir)
    out: list[tuple[int | None, Path]] = sorted(
        (int(p.name[5:]), p) for p in (run / "checkpoints").glob("iter-*")
        if p.name[5:].isdigit() and (p / "config.json").exists())
    if include_final and (run / "final" / "config.json").exists():
        step = None
        try:
            step = json.loads((run / "summary.json").read_text()).get("iterations")
        except (OSError, ValueError):
            pass
        if not out or step is None or step > out[-1][0]:
            out.append((step, run / "final"))
    return out


def sequence_kl(policy, reference, tokenizer, prompt_ids: list[list[int]], *,
                max_new_tokens: int, temperature: float = 1.0, generator=None):
    """Sample from `policy` and estimate KL(π‖π_ref) per sequence as Σ_t (log π − log π_ref) at
    the sampled tokens (the estimator PPO logs as objective/kl). Returns (rollout, kl [B])."""
    ro = generate(policy, tokenizer, prompt_ids, max_new_tokens=max_new_tokens,
                  temperature=temperature, generator=generator)
    with torch.no_grad():
        ids, mask = ro.input_ids, ro.attention_mask
        tr = ro.response.size(1)
        logits = reference(input_ids=ids, attention_mask=mask,
                           position_ids=position_ids_from_mask(mask)).logits[:, -(tr + 1):-1]
        lp_ref = torch.log_softmax(rl.policy_logits(logits, temperature, tokenizer.pad_token_id),
                                   -1).gather(-1, ro.response[..., None]).squeeze(-1)
        # PAD after EOS has log π_ref = -inf (PAD is never sampled): select, don't multiply
        kl = (ro.logprobs - lp_ref).masked_fill(ro.response_mask == 0, 0.0).sum(1)
    return ro, kl


def checkpoint_curve(checkpoints: Sequence[tuple[Any, str | Path]], reference: str | Path,
                     prompts: Sequence, *, reward_model: str | Path | None = None,
                     judge=None, temperature: float = 1.0, max_new_tokens: int = 48,
                     template: str | None = None, batch_size: int = 32, seed: int = 0,
                     include_reference: bool = True, extra: dict | None = None) -> list[dict]:
    """Proxy RM score, gold score and KL from π_ref for each checkpoint (Gao et al.'s curve).

    Each policy answers `prompts` (records or strings) by sampling at `temperature` (seeded);
    KL is the mean per-sequence estimate of `sequence_kl`; proxy = mean RM score; gold = mean
    judge score. The reference itself (d = 0) comes first when `include_reference`.
    Returns [{"step", "path", "kl", "sqrt_kl", "proxy", "gold", "length", **extra}]."""
    template = template or DEFAULT_TEMPLATE
    tok = load_tokenizer(reference)
    ref = disable_dropout_eval(load_model(reference))
    rm = None
    if reward_model is not None:
        rm = RewardModel.from_pretrained(reward_model)
        rm.eval()
    texts = [p["prompt"] if isinstance(p, dict) else str(p) for p in prompts]
    room = max(1, context_length(ref) - max_new_tokens)   # long prompts are cut from the left
    ids = [encode_prompt(tok, t, template)[-room:] for t in texts]
    todo = ([(0, Path(reference))] if include_reference else []) + \
        [(s, Path(p)) for s, p in checkpoints]
    points = []
    for step, path in todo:
        pol = ref if Path(path) == Path(reference) else disable_dropout_eval(load_model(path))
        gen = torch.Generator().manual_seed(seed)
        kls, responses, lengths = [], [], []
        for i in range(0, len(ids), batch_size):
            ro, kl = sequence_kl(pol, ref, tok, ids[i:i + batch_size],
                                 max_new_tokens=max_new_tokens, temperature=temperature,
                                 generator=gen)
            kls += kl.tolist()
            lengths += ro.response_mask.sum(1).tolist()
            responses += [decode_response(tok, r) for r in ro.response.tolist()]
        kl_mean = float(np.mean(kls)) if kls else 0.0
        pt: dict[str, Any] = {"step": step, "path": str(path), "kl": kl_mean,
                              "sqrt_kl": math.sqrt(max(kl_mean, 0.0)),
                              "length": float(np.mean(lengths)) if lengths else 0.0,
                              "proxy": None, "gold": None, **(extra or {})}
        if rm is not None:
            pt["proxy"] = float(np.mean(score_texts(rm, tok, texts, responses, batch_size,
                                                    template)))
        if judge is not None:
            js = [judge(p, r) for p, r in zip(prompts, responses)]
            pt["gold"] = float(np.mean([float(j["score"] if isinstance(j, dict) else j.score)
                                        for j in js]))
        points.append(pt)
        if pol is not ref:
            del pol
    return points


def disable_dropout_eval(model):
    disable_dropout(model)
    model.eval()
    return model


def curve_summary(points: Sequence, fits: dict | None = None) -> dict:
    """The proxy-vs-gold gap along the curve: gains over d = 0 at the last (largest-√KL)
    checkpoint, the measured gold optimum, and the fitted one (RL form: d* = exp(α/β − 1))."""
    pts = _points(points)
    fits = fit_kl_curve(pts) if fits is None else fits
    out: dict[str, Any] = {}
    if not pts:
        return out
    first, last = pts[0], pts[-1]

    def gain(key):
        if first.get(key) is None or last.get(key) is None:
            return None
        return float(last[key]) - float(first[key])
    out["last"] = {"sqrt_kl": last["sqrt_kl"], "proxy_gain": gain("proxy"),
                   "gold_gain": gain("gold")}
    golds = [p for p in pts if p.get("gold") is not None]
    if golds:
        best = max(golds, key=lambda p: float(p["gold"]))
        out["gold_best"] = {"sqrt_kl": best["sqrt_kl"], "gold": float(best["gold"]),
                            "step": best.get("step")}
    g = (fits or {}).get("gold") or {}
    if g.get("form") == "rl" and g.get("alpha") is not None and (g.get("beta") or 0) > 0:
        out["gold_peak_sqrt_kl_fit"] = float(math.exp(min(g["alpha"] / g["beta"] - 1, 50)))
    return out

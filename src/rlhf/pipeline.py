"""The whole InstructGPT loop, resumable stage by stage (`rlhf pipeline`).

    world -> pretrain (base) -> SFT on simulated demonstrations
      -> round r = 1..R:
           K = 4..9 samples per RM prompt from the current policy -> training labelers rank them
           -> RM on all rankings so far (normalised on demonstrations)
           -> (round 1) pick the SFT epoch by RM score (paper §3.5)
           -> PPO and PPO-ptx against the RM (KL reference = the selected SFT model)
      -> evaluation by held-out labelers (win rate vs SFT, Likert, metadata, alignment tax,
         proxy/gold reward vs sqrt(KL)) -> report.html, report.json

Every stage writes its own folder and a `DONE` marker last; a stage whose marker exists is
skipped, and an interrupted stage resumes from its own checkpoints. So an interrupted pipeline
continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import transformers
import yaml

from rlhf.config import Config, dump_config
from rlhf.errors import UserError
from rlhf.eval.pipeline_eval import evaluate_pipeline
from rlhf.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from rlhf.models import load_model, load_tokenizer
from rlhf.models.generation import generate_texts
from rlhf.runs import log
from rlhf.train.ppo import PPOPlan, ppo
from rlhf.train.pretrain import pretrain
from rlhf.train.reward import select_sft_checkpoint, train_rm
from rlhf.train.sft import sft
from rlhf.world import World, build_world


class Stages:
    """Runs named stages once: a finished stage leaves `<dir>/DONE` with its result."""

    def __init__(self, root: Path):
        self.root = root
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[Path], dict]) -> dict:
        d = self.root / name
        done = d / "DONE"
        if done.exists():
            log("pipeline", f"{name}: done already, skipped")
            return json.loads(done.read_text())
        log("pipeline", f"{name}: running")
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        result = fn(d) or {}
        self.timings[name] = round(time.time() - t0, 1)
        result = {**result, "seconds": self.timings[name]}
        write_json_atomic(done, result)
        log("pipeline", f"{name}: finished in {self.timings[name]} s")
        return result


def with_sections(cfg: Config, **sections) -> Config:
    """`cfg` with some fields of some sections replaced: with_sections(cfg, ppo={"lr": 1e-5})."""
    data = cfg.model_dump()
    for section, values in sections.items():
        data[section] = {**data[section], **values}
    return Config.model_validate(data)


#: Section fields the pipeline sets itself, stage by stage, and where to say what you want
#: instead (None: the pipeline decides it; there is nothing to set).
PIPELINE_OWNED = {
    "pretrain.train_files": None, "pretrain.valid_files": None,
    "sft.model": None, "sft.train_file": None, "sft.valid_file": None,
    "rm.model": None, "rm.train_file": None, "rm.valid_file": None,
    "rm.demonstrations_file": None,
    "ppo.policy": None, "ppo.reference": None, "ppo.reward_model": None,
    "ppo.prompts_file": None, "ppo.ptx_files": None,
    "ppo.gamma_ptx": "pipeline.ppo_ptx_gamma (and pipeline.ppo_ptx)",
}


def check_owned_fields(cfg: Config) -> None:
    """Refuse a config that sets a section field the pipeline overwrites (it would be ignored
    without a word). `ppo.iterations` is honoured: round 1 and, unless
    pipeline.ppo_iterations_later_rounds is set, the later rounds."""
    for key, instead in PIPELINE_OWNED.items():
        section, field = key.split(".")
        if field in getattr(cfg, section).model_fields_set:
            hint = f"set {instead} instead" if instead else \
                "the pipeline sets it for each stage (the world's files, the previous stage's " \
                "model)"
            raise UserError(f"{key} cannot be set in a pipeline config: {hint}", field=key)


# ------------------------------------------------------------------ comparisons from labelers

def sample_and_rank(policy_dir: str, prompts: list[str], labelers: list, cfg: Config,
                    out: Path, round_idx: int) -> dict:
    """K = k_min..k_max samples per prompt from the policy, each prompt ranked by one labeler."""
    p = cfg.pipeline
    rng = random.Random(cfg.seed * 7919 + round_idx)
    ks = [rng.randint(p.k_min, p.k_max) for _ in prompts]
    model, tok = load_model(policy_dir), load_tokenizer(policy_dir)
    responses: list[list[str] | None] = [None] * len(prompts)
    for k in sorted(set(ks)):
        idx = [i for i, kk in enumerate(ks) if kk == k]
        outs = generate_texts(model, tok, [prompts[i] for i in idx], k,
                              max_new_tokens=p.sample_max_new_tokens,
                              temperature=p.sample_temperature,
                              template=cfg.sft.prompt_template, seed=rng.randrange(2**31))
        for i, o in zip(idx, outs):
            responses[i] = o
    n_valid = int(len(prompts) * p.rm_valid_fraction)
    train_rows, valid_rows = [], []
    for i, (prompt, resp) in enumerate(zip(prompts, responses)):
        resp = [r if r.strip() else "..." for r in resp]  # an empty sample still gets ranked
        lab = labelers[rng.randrange(len(labelers))]
        row = {"prompt": prompt, "responses": resp, "ranking": lab.rank(prompt, resp),
               "labeler_id": lab.id}
        (valid_rows if i < n_valid else train_rows).append(row)
    write_jsonl_atomic(out / "rankings_train.jsonl", train_rows)
    write_jsonl_atomic(out / "rankings_valid.jsonl", valid_rows)
    return {"train": str(out / "rankings_train.jsonl"), "valid": str(out / "rankings_valid.jsonl"),
            "n_train": len(train_rows), "n_valid": len(valid_rows),
            "mean_k": sum(ks) / len(ks)}


def heldout_valid_rankings(valid_file: str, labelers: list, out: Path, seed: int) -> str:
    """The same validation samples ranked again by held-out labelers (for the split metric)."""
    rng = random.Random(seed)
    rows = [json.loads(x) for x in Path(valid_file).read_text().splitlines() if x.strip()]
    for r in rows:
        lab = labelers[rng.randrange(len(labelers))]
        r["ranking"], r["labeler_id"] = lab.rank(r["prompt"], r["responses"]), lab.id
    write_jsonl_atomic(out, rows)
    return str(out)


def choose_sft_checkpoint(checkpoints: list[str], rm_result: dict, min_accuracy: float,
                          out: Path, select: Callable[[Path], dict]) -> dict:
    """The SFT epoch for the rest of the loop: picked by RM score (paper §3.5) when the RM's
    held-out pairwise accuracy is at least `min_accuracy`; otherwise the last epoch, because an
    RM at chance level would pick an epoch at random (and often an undertrained one)."""
    acc = (rm_result.get("valid") or {}).get("accuracy")
    if acc is not None and acc >= min_accuracy:
        return select(out)
    result = {"selected": checkpoints[-1], "criterion": "last epoch",
              "reason": f"RM held-out accuracy {acc if acc is None else round(acc, 4)} is below "
                        f"pipeline.select_min_rm_accuracy = {min_accuracy}",
              "candidates": [{"checkpoint": c} for c in checkpoints]}
    write_json_atomic(out, result)
    log("pipeline", f"sft_select: kept the last epoch ({result['reason']})")
    return result


def _concat_jsonl(files: list[str], out: Path) -> str:
    write_text_atomic(out, "".join(Path(f).read_text() for f in files))
    return str(out)


def config_differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (added or removed keys
    included), in order."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix or "(root)"]
    keys = list(old) + [k for k in new if k not in old]
    return [d for k in keys for d in config_differences(old.get(k), new.get(k),
                                                          f"{prefix}{k}" if not prefix
                                                          else f"{prefix}.{k}")]


def check_resumable(root: Path, cfg: Config) -> None:
    """A run folder resumes only the config that made it. Its finished stages are skipped, so
    a changed config would otherwise report the old models under the new config's name."""
    path = root / "config.yaml"
    if not path.exists():
        return
    old, new = yaml.safe_load(path.read_text()) or {}, cfg.model_dump(mode="json")
    try:    # options added to rlhf since the run started count with their defaults
        old = Config.model_validate(old).model_dump(mode="json")
    except ValueError:
        pass                                        # an option since removed: compare as is
    old.pop("out", None), new.pop("out", None)      # the folder may be named another way
    diff = config_differences(old, new)
    if diff:
        shown = ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise UserError(f"this run folder was made with a different config ({shown} differ); "
                        "resume it with the same config, or give a new --out, or delete the "
                        "folder to start again", path=str(path), field=diff[0])


def ppo_iterations(cfg: Config, r: int) -> int:
    """PPO iterations of round r (1-based): ppo.iterations, later rounds
    pipeline.ppo_iterations_later_rounds when set."""
    later = cfg.pipeline.ppo_iterations_later_rounds
    return cfg.ppo.iterations if r == 1 or not later else later


def check_ppo_plans(cfg: Config) -> None:
    """Every round's PPO batch plan, checked before any stage runs (a plan that only breaks in
    round 2 would otherwise stop the run after its first PPO stages)."""
    p = cfg.pipeline
    gammas = [0.0] + ([p.ppo_ptx_gamma] if p.ppo_ptx else [])
    for r in range(1, p.rounds + 1):
        for gamma in gammas:
            ppo_cfg = cfg.ppo.model_copy(update={"iterations": ppo_iterations(cfg, r),
                                                 "gamma_ptx": gamma})
            errs = PPOPlan.from_config(ppo_cfg).problems()
            if errs:
                field = ("pipeline.ppo_iterations_later_rounds" if r > 1
                         and p.ppo_iterations_later_rounds else None)
                raise UserError(f"round {r}'s PPO{'-ptx' if gamma else ''} plan is "
                                "inconsistent:\n  - " + "\n  - ".join(errs), field=field)


# ------------------------------------------------------------------------------ base cache

BASE_CACHE_VERSION = 1


def cache_root(cfg: Config) -> Path:
    """pipeline.cache_dir, else $RLHF_CACHE_DIR, else $XDG_CACHE_HOME/rlhf, else ~/.cache/rlhf."""
    if cfg.pipeline.cache_dir:
        return Path(cfg.pipeline.cache_dir).expanduser()
    if os.environ.get("RLHF_CACHE_DIR"):
        return Path(os.environ["RLHF_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rlhf"


def _file_digest(paths: list[str]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def base_cache_key(cfg: Config, train_files: list[str], valid_files: list[str]) -> str:
    """What fixes a pretrained base: the corpus text, the pretrain section (its file paths
    aside), the seed, and the library versions that compute it."""
    section = cfg.pretrain.model_dump(mode="json")
    section.pop("train_files", None), section.pop("valid_files", None)
    ident = {"version": BASE_CACHE_VERSION, "seed": cfg.seed, "pretrain": section,
             "train": _file_digest(train_files), "valid": _file_digest(valid_files),
             "torch": torch.__version__, "transformers": transformers.__version__}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def cached_base(cfg: Config, train_files: list[str], valid_files: list[str], out: Path,
                train: Callable[[Path], dict]) -> dict:
    """The pretrain stage through the base cache: a hit copies the cached `final/` into `out`;
    a miss runs `train(out)` and then publishes its `final/` (copied to a temporary folder,
    then renamed, so a half-written entry is never seen)."""
    if not cfg.pipeline.base_cache:
        return train(out)
    entry = cache_root(cfg) / "bases" / base_cache_key(cfg, train_files, valid_files)
    if (entry / "summary.json").exists():
        summary = json.loads((entry / "summary.json").read_text())
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".final-"))
        shutil.copytree(entry / "final", tmp, dirs_exist_ok=True)
        if (out / "final").exists():
            shutil.rmtree(out / "final")
        os.replace(tmp, out / "final")
        log("pipeline", f"pretrain: base taken from the cache {entry}")
        return {**summary, "model": str(out / "final"), "cached_from": str(entry)}
    summary = train(out)
    if summary.get("halted") or entry.exists():
        return summary
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}-"))
        shutil.copytree(out / "final", tmp / "final")
        write_json_atomic(tmp / "summary.json", {k: v for k, v in summary.items()
                                                 if k != "model"})
        os.replace(tmp, entry)
    except OSError as e:      # a read-only or full cache folder costs the reuse, not the run
        log("pipeline", f"pretrain: could not store the base in the cache {entry} ({e})")
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


# ------------------------------------------------------------------------------ the pipeline

class Loop:
    """What the stages of one pipeline run share: the config, the world's files and the
    simulated labelers. Each stage is a method taking its folder and returning its result."""

    def __init__(self, cfg: Config, root: Path, world: World):
        self.cfg, self.root, self.world = cfg, root, world
        self.pool = world.labeler_pool()    # the same labelers that wrote the demonstrations
        self.wdir = root / "world" / "data"
        self.pretrain_text = [str(self.wdir / "pretrain/train.txt")]
        self.valid_text = [str(self.wdir / "pretrain/valid.txt")]

    def pretrain(self, d: Path) -> dict:
        c = with_sections(self.cfg, pretrain={"train_files": self.pretrain_text,
                                              "valid_files": self.valid_text})
        return cached_base(c, self.pretrain_text, self.valid_text, d,
                           lambda out: pretrain(c, out, resume=True))

    def sft(self, d: Path, base: str) -> dict:
        c = with_sections(self.cfg, sft={
            "model": base, "train_file": str(self.wdir / "demonstrations/sft.jsonl"),
            "valid_file": str(self.wdir / "demonstrations/sft_valid.jsonl")})
        return sft(c, d, resume=True)

    def comparisons(self, d: Path, policy: str, prompts: list[str], r: int) -> dict:
        return sample_and_rank(policy, prompts, self.pool.train_labelers, self.cfg, d, r)

    def reward_model(self, d: Path, sft_model: str, rankings_train: list[str],
                     rankings_valid: str, r: int) -> dict:
        """The RM on every round's rankings so far, validated on this round's held-out
        samples ranked by a training and a held-out labeler."""
        train_file = _concat_jsonl(rankings_train, d / "train.jsonl")
        heldout = heldout_valid_rankings(rankings_valid, self.pool.heldout_labelers,
                                         d / "valid_heldout.jsonl", self.cfg.seed + r)
        valid_file = _concat_jsonl([rankings_valid, heldout], d / "valid.jsonl")
        c = with_sections(self.cfg, rm={
            "model": sft_model, "train_file": train_file, "valid_file": valid_file,
            "demonstrations_file": str(self.wdir / "demonstrations/sft_valid.jsonl")})
        return train_rm(c, d, resume=True)

    def sft_select(self, d: Path, sft_res: dict, rm_res: dict) -> dict:
        p = self.cfg.pipeline
        epochs = sft_res["epoch_checkpoints"]
        return choose_sft_checkpoint(epochs, rm_res, p.select_min_rm_accuracy,
                                     d / "selection.json", lambda out: select_sft_checkpoint(
                                         epochs, str(self.wdir / "prompts/sft_valid.jsonl"),
                                         rm_res["model"], out, n_prompts=p.select_prompts,
                                         max_new_tokens=p.sample_max_new_tokens,
                                         template=self.cfg.sft.prompt_template,
                                         seed=self.cfg.seed))

    def ppo(self, d: Path, start: str, sft_model: str, rm_path: str, gamma: float,
            iterations: int) -> dict:
        c = with_sections(self.cfg, ppo={
            "policy": start, "reference": sft_model, "reward_model": rm_path,
            "prompts_file": str(self.wdir / "prompts/ppo.jsonl"),
            "ptx_files": self.pretrain_text, "gamma_ptx": gamma, "iterations": iterations})
        return ppo(c, d, resume=True)

    def evaluate(self, d: Path, base: str, sft_model: str, rounds: list[dict]) -> dict:
        return evaluate_pipeline(self.cfg, self.world, self.pool, self.root, base=base,
                                 sft=sft_model, rounds=rounds,
                                 fewshot=(self.wdir / "fewshot.txt").read_text(),
                                 valid_text=self.valid_text, out=d)


def run_pipeline(cfg: Config, out_dir: str | Path) -> dict:
    """The whole loop (see the module docstring) in `out_dir`; returns summary.json's content."""
    root = Path(out_dir)
    check_owned_fields(cfg)
    check_ppo_plans(cfg)
    root.mkdir(parents=True, exist_ok=True)
    check_resumable(root, cfg)
    write_text_atomic(root / "config.yaml", dump_config(cfg))
    st = Stages(root)
    p = cfg.pipeline
    t_start = time.time()

    w = st.run("world", lambda d: build_world(d / "data", seed=cfg.seed,
                                              n_labelers=p.n_labelers, **p.world))
    world = World.load(root / "world" / "data")
    loop = Loop(cfg, root, world)
    base = st.run("pretrain", loop.pretrain)["model"]
    sft_res = st.run("sft", lambda d: loop.sft(d, base))
    sft_model = policy = sft_res["model"]
    rm_prompts = [r["prompt"] for r in world.prompts("rm")]
    rankings_train: list[str] = []
    rounds: list[dict] = []
    per_round = p.rm_prompts_per_round
    for r in range(1, p.rounds + 1):
        # ---- fresh comparisons of the current policy, then the RM on all of them so far ----
        chunk = rm_prompts[(r - 1) * per_round: r * per_round] or rm_prompts[:per_round]
        comparisons = st.run(f"r{r}_comparisons",
                             lambda d: loop.comparisons(d, policy, chunk, r))
        rankings_train.append(comparisons["train"])
        rm_res = st.run(f"r{r}_rm", lambda d: loop.reward_model(
            d, sft_model, rankings_train, comparisons["valid"], r))
        if r == 1 and p.select_sft_by_rm and len(sft_res.get("epoch_checkpoints", [])) > 1:
            sft_model = policy = st.run("sft_select",
                                        lambda d: loop.sft_select(d, sft_res, rm_res))["selected"]
        # ---- PPO and PPO-ptx against this RM (KL reference: the SFT model) -----------------
        variants = [("ppo", 0.0)] + ([("ppo_ptx", p.ppo_ptx_gamma)] if p.ppo_ptx else [])
        results = {}
        for name, gamma in variants:
            start = policy if r == 1 else rounds[-1][name]
            results[name] = st.run(f"r{r}_{name}", lambda d: loop.ppo(
                d, start, sft_model, rm_res["model"], gamma, ppo_iterations(cfg, r)))["model"]
        rounds.append({"round": r, "rm": rm_res["model"], **results,
                       "rm_metrics": {k: v for k, v in rm_res.items() if k != "model"},
                       # the RM's validation samples, ranked by a training and a held-out labeler
                       "rankings_valid": str(root / f"r{r}_comparisons" / "rankings_valid.jsonl"),
                       "rankings_valid_heldout": str(root / f"r{r}_rm" / "valid_heldout.jsonl")})
        # the next round's comparisons come from the current policy (InstructGPT's PPO-ptx)
        policy = results.get("ppo_ptx", results["ppo"])

    ev = st.run("eval", lambda d: loop.evaluate(d, base, sft_model, rounds))
    summary = {"run": str(root), "world": w, "base": base, "sft": sft_model, "rounds": rounds,
               "eval": ev, "stage_seconds": st.timings,
               "wall_s_this_invocation": round(time.time() - t_start, 1)}
    write_json_atomic(root / "summary.json", summary)
    return summary

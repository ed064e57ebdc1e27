"""Step 2, the reward model: learn r(x, y) from K-way rankings (paper §3.5, App. C.2).

    SFT model -> drop the unembedding, add a scalar head N(0, 1/√(d+1)), bias 0     (spec 7.6)
    for each global batch of `batch_size` prompts (1 epoch, AdamW β2 = 0.95, cosine to 10 %):
        score all K responses of every prompt: K forward passes, not C(K,2)         (§3.5 fn. 5)
        loss = mean over prompts of mean over non-tied pairs of −log σ(r_w − r_l)  (Eq. 1)
    normalise: set the bias so that labeler demonstrations score mean 0            (§3.5, 7.7)
    report held-out pairwise accuracy and log loss, by training vs held-out labelers (§4.1)

Runs in one process or under torchrun (DDP): the global batch is split over ranks, and the
gradient equals the single-process one.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from rlhf import dist
from rlhf.config import Config, dump_config
from rlhf.data.prompts import load_prompts
from rlhf.data.rankings import (EncodedRanking, collate_rankings, encode_rankings,
                                load_prompt_responses, load_rankings, scores_to_matrix)
from rlhf.errors import UserError
from rlhf.io import write_json_atomic
from rlhf.models import context_length, load_model, load_tokenizer
from rlhf.models.format import DEFAULT_TEMPLATE
from rlhf.models.generation import generate_texts
from rlhf.models.lora import is_lora, load_lora_weights
from rlhf.models.reward import RewardModel, normalize_reward, score_texts
from rlhf.rl.ranking import batched_ranking_loss, pair_stats
from rlhf.runs import Run
from rlhf.train.checkpoint import save_final_model
from rlhf.train.loop import fit, prepare_model


def _forward_batch(rm, batch: dict, device) -> torch.Tensor:
    """Scores [B, Kmax] of a collated ranking batch (one forward over all ΣK sequences)."""
    scores = rm(batch["input_ids"].to(device), batch["attention_mask"].to(device))
    b, k = batch["pref"].shape[:2]
    return scores_to_matrix(scores, batch["slot"], b, k)


@torch.no_grad()
def evaluate_rankings(rm, data: list[EncodedRanking], pad_id: int, batch_size: int = 8,
                      train_labelers: set[str] | None = None) -> dict:
    """Held-out metrics: pairwise accuracy (score ties count 0.5), log loss per comparison, and
    Eq. 1 loss per prompt; split into train_labelers/heldout_labelers when labeler ids exist."""
    was_training = rm.training
    rm.eval()
    dev = dist.unwrap(rm).device
    groups = ["all"] + (["train_labelers", "heldout_labelers"] if train_labelers else [])
    sums = torch.zeros(len(groups), 5, dtype=torch.float64)  # correct, logloss, pairs, elems, loss
    idx = dist.rank_share(len(data))
    for i in range(0, len(idx), batch_size):
        chunk = [data[j] for j in idx[i:i + batch_size] if j is not None]
        batch = collate_rankings(chunk or [data[0]], pad_id)   # a stand-in keeps FSDP in step
        S = _forward_batch(rm, batch, dev).cpu()
        per_elem = batched_ranking_loss(S, batch["pref"], reduction="none")
        for b, ex in enumerate(chunk):
            st = pair_stats(S[b:b + 1], batch["pref"][b:b + 1])
            row = torch.tensor([float(st["correct"]), float(st["log_loss"]),
                                float(st["n_pairs"]), float(st["n_elements"]),
                                float(per_elem[b]) * float(st["n_elements"])], dtype=torch.float64)
            sums[0] += row
            if train_labelers and ex.labeler_id is not None:
                sums[1 if ex.labeler_id in train_labelers else 2] += row
    sums = dist.all_reduce_sum(sums)
    rm.train(was_training)
    out = {}
    for g, (correct, logloss, pairs, elems, loss) in zip(groups, sums.tolist()):
        if pairs == 0:
            continue
        key = "" if g == "all" else f"{g}/"
        out[f"{key}accuracy"] = correct / pairs
        out[f"{key}log_loss"] = logloss / pairs
        out[f"{key}loss"] = loss / max(elems, 1)
        out[f"{key}pairs"] = int(pairs)
        out[f"{key}prompts"] = int(elems)
    return out


# ----------------------------------------------------------------------------- the recipe

class RankingObjective:
    """Eq. 1 for the supervised loop: each prompt (all C(K,2) pairs of its K responses) is one
    batch element, so the loss is summed per prompt and normalised by the global prompt count."""

    def __init__(self, device):
        self.device = device

    def count(self, batch: dict) -> float:
        return batch["pref"].shape[0]

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        S = _forward_batch(model, batch, self.device)
        loss_sum = batched_ranking_loss(S, batch["pref"], reduction="sum")
        st = pair_stats(S.detach(), batch["pref"])
        return loss_sum, torch.tensor([float(loss_sum.detach()), float(st["correct"]),
                                       float(st["n_pairs"]), float(st["n_elements"])],
                                      dtype=torch.float64)

    def metrics(self, stats: torch.Tensor, n_global: float) -> dict[str, float]:
        return {"train/loss": float(stats[0] / n_global),
                "train/accuracy": float(stats[1] / stats[2].clamp(min=1)),
                "train/comparisons": int(stats[2])}


def _drop_unranked(data: list[EncodedRanking]) -> tuple[list[EncodedRanking], int]:
    """Records whose responses are all tied carry no comparison (ties are dropped, App. C.2)."""
    kept = [d for d in data if len(d.ranking) > 1]
    return kept, len(data) - len(kept)


def train_rm(cfg: Config, out_dir: str | Path, resume: bool = False,
             halt_after: int | None = None) -> dict:
    """Train a reward model from rankings; write run folder `out_dir` and `out_dir/final`."""
    dist.init()
    dist.seed_everything(cfg.seed)
    r = cfg.rm
    if not r.model:
        raise UserError("path to the SFT model is required", field="rm.model")
    if not r.train_file:
        raise UserError("path to the rankings is required", field="rm.train_file")
    out = Path(out_dir)
    run = Run(out, dump_config(cfg), is_main=dist.is_main(), resume=resume)
    device = dist.device()
    tokenizer = load_tokenizer(r.model)
    rm = RewardModel.from_causal_lm(r.model).to(device)   # dropout off (spec 7.9)
    rm, precision = prepare_model(rm, r, "rm")
    # Eq. 1 is shift-invariant: the head bias gets an exactly-zero gradient, which Adam would
    # turn into ±lr noise steps. Keep it at 0; the normalisation bias sets the offset instead.
    rm.head.bias.requires_grad_(False)
    max_len = min(r.max_length, context_length(rm.backbone))

    train_ex = load_rankings(r.train_file, r.max_k, r.data_format, r.skip_invalid)
    train, n_unranked = _drop_unranked(
        encode_rankings(tokenizer, train_ex, max_len, r.prompt_template, source=r.train_file))
    if n_unranked and len(train) < r.batch_size:  # else BatchPlan's "lower batch_size" misleads
        raise UserError(f"{n_unranked} of the {len(train_ex)} rankings tie all their responses, "
                        "which gives no comparison to learn from; "
                        f"{len(train)} remain for a global batch of {r.batch_size}",
                        path=r.train_file, field="ranking")
    train_labelers = {e.labeler_id for e in train_ex if e.labeler_id is not None}
    valid = None
    if r.valid_file:
        valid_ex = load_rankings(r.valid_file, r.max_k, r.data_format, r.skip_invalid)
        valid = encode_rankings(tokenizer, valid_ex, max_len, r.prompt_template,
                                source=r.valid_file)
    pad_id = tokenizer.pad_token_id
    micro_eval = r.micro_batch_size or max(1, r.batch_size // dist.world_size())

    def on_eval(step: int) -> dict:
        held_out = evaluate_rankings(rm, valid, pad_id, micro_eval, train_labelers)
        return {f"valid/{k}": v for k, v in held_out.items()}

    def load_checkpoint(path: Path) -> None:     # undoes the bias fold of the HF format
        if is_lora(rm):
            load_lora_weights(rm, path)
        else:
            rm.load_state_dict(RewardModel.from_pretrained(path).state_dict())

    metrics = fit(rm, tokenizer, train, partial(collate_rankings, pad_id=pad_id), r,
                  epochs=r.epochs, run=run, seed=cfg.seed, objective=RankingObjective(device),
                  resume=resume, save_every=r.save_every, halt_after=halt_after,
                  max_steps=r.max_steps, on_eval=on_eval if valid else None,
                  eval_every=r.eval_every, load_checkpoint=load_checkpoint,
                  autocast=precision.autocast_dtype, section="rm", desc="rm")
    if metrics["halted"]:
        run.close()
        return {"steps": metrics["step"], "halted": True}

    step = metrics["step"]
    summary: dict = {"prompts": len(train), "unranked_dropped": n_unranked, "steps": step,
                     "forward_passes": metrics["sequences"],
                     "final_train_loss": metrics.get("train/loss"),
                     "final_train_accuracy": metrics.get("train/accuracy"),
                     "tokens_per_s": metrics.get("train/tokens_per_s")}
    if r.demonstrations_file:
        demos = load_prompt_responses(r.demonstrations_file)
        summary["normalization"] = normalize_reward(
            rm, tokenizer, [p for p, _ in demos], [a for _, a in demos], micro_eval,
            r.prompt_template, max_len)
        run.log(step, {"normalization/reward_bias": summary["normalization"]["reward_bias"]})
    if valid:
        summary["valid"] = evaluate_rankings(rm, valid, pad_id, micro_eval, train_labelers)
        run.log(step, summary["valid"], prefix="valid/")
    summary.update(save_final_model(rm, tokenizer, out / "final"))
    run.finish(summary)
    return summary


# ----------------------------------------------------------------------------- SFT selection

def select_sft_checkpoint(checkpoints: list[str | Path], prompts_file: str | Path,
                          reward_model: str | Path, out_file: str | Path | None = None, *,
                          n_prompts: int | None = None, max_new_tokens: int = 64,
                          temperature: float = 1.0, template: str = DEFAULT_TEMPLATE,
                          batch_size: int = 16, seed: int = 0) -> dict:
    """The paper's SFT model selection (§3.5, App. C.1): sample one response per validation
    prompt from each checkpoint, score with the RM, pick the highest mean score."""
    if not checkpoints:
        raise UserError("give at least one SFT checkpoint", field="checkpoints")
    prompts = load_prompts(prompts_file)[:n_prompts]
    rm = RewardModel.from_pretrained(reward_model)
    rm_tok = load_tokenizer(reward_model)
    rm_len = context_length(rm.backbone)
    results = []
    for ck in checkpoints:
        model = load_model(ck)
        tok = load_tokenizer(ck)
        texts = [t[0] for t in generate_texts(model, tok, prompts, 1,
                                              max_new_tokens=max_new_tokens,
                                              temperature=temperature, template=template,
                                              batch_size=batch_size, seed=seed)]
        empty = sum(not t.strip() for t in texts)
        scores = score_texts(rm, rm_tok, prompts, texts, batch_size, template, rm_len)
        results.append({"checkpoint": str(ck), "mean_score": sum(scores) / len(scores),
                        "empty_responses": empty, "prompts": len(prompts)})
        del model
    best = max(results, key=lambda x: x["mean_score"])
    selection = {"selected": best["checkpoint"], "mean_score": best["mean_score"],
                 "criterion": "mean RM score of one sample per validation prompt",
                 "reward_model": str(reward_model), "temperature": temperature, "seed": seed,
                 "candidates": results}
    if out_file is not None:
        write_json_atomic(out_file, selection)
    return selection


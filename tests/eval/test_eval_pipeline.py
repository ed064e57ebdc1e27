"""The pipeline's evaluation stage on a tiny real Instruction World with tiny models."""

from __future__ import annotations

import json

import pytest

from helpers import tiny_lm


def test_evaluate_pipeline_end_to_end(tmp_path):
    world_mod = pytest.importorskip("rlhf.world")
    from rlhf.config import Config
    from rlhf.eval.pipeline_eval import evaluate_pipeline
    from rlhf.models.reward import RewardModel

    world_mod.build_world(tmp_path / "w", seed=0, n_pretrain_tokens=3000, n_valid_tokens=600,
                          n_sft=10, n_sft_valid=5, n_rm=5, n_ppo=5, n_test=12)
    world = world_mod.World.load(tmp_path / "w")
    pool = world_mod.LabelerPool(world, n=6, n_heldout=2, seed=0)
    lm = tiny_lm(tmp_path)
    rm_dir = tmp_path / "rm"
    RewardModel.from_causal_lm(str(lm)).save_pretrained(str(rm_dir))
    from rlhf.models import load_tokenizer
    load_tokenizer(lm).save_pretrained(str(rm_dir))
    run = tmp_path / "r1_ppo"                      # a PPO run: metrics, a checkpoint, final
    (run / "checkpoints").mkdir(parents=True)
    import shutil
    shutil.copytree(lm, run / "checkpoints" / "iter-2")
    shutil.copytree(lm, run / "final")
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(
        {"step": i, "objective/kl": 0.1 * i, "objective/score": 0.2 * i}) for i in range(3)))
    cfg = Config.model_validate({"pipeline": {"eval_prompts": 6, "curve_prompts": 3},
                                 "eval": {"max_new_tokens": 6}, "ppo": {"max_new_tokens": 6},
                                 "pretrain": {"block_size": 32}})
    # round 2's validation samples, ranked by a training and by a held-out labeler
    row = {"prompt": "p", "responses": ["a", "b", "c"]}
    first, second, other = tmp_path / "v.jsonl", tmp_path / "vh.jsonl", tmp_path / "vx.jsonl"
    first.write_text(json.dumps({**row, "ranking": [[0], [1], [2]]}) + "\n")
    second.write_text(json.dumps({**row, "ranking": [[1], [0], [2]]}) + "\n")
    other.write_text(json.dumps({**row, "responses": ["x", "y", "z"], "ranking": [[0], [1, 2]]})
                     + "\n")
    rounds = [{"round": 1, "rm": str(rm_dir), "ppo": str(run / "final"),
               "ppo_ptx": str(lm), "rm_metrics": {"valid": {"accuracy": 0.6}, "steps": 3}},
              {"round": 2, "rm": str(rm_dir), "rm_metrics": {"valid": {"accuracy": 0.6}},
               "rankings_valid": str(first), "rankings_valid_heldout": str(second)},
              {"round": 3, "rm": str(rm_dir), "rm_metrics": {"valid": {"accuracy": 0.6}},
               "rankings_valid": str(first), "rankings_valid_heldout": str(other)}]
    out = evaluate_pipeline(cfg, world, pool, tmp_path, base=str(lm), sft=str(lm),
                            rounds=rounds, fewshot=(tmp_path / "w" / "fewshot.txt").read_text(),
                            valid_text=[str(tmp_path / "w" / "pretrain" / "valid.txt")],
                            out=tmp_path / "eval")
    rep = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert list(rep["models"]) == ["base", "base_prompted", "sft", "ppo_r1", "ppo_ptx_r1"]
    m = rep["models"]["ppo_r1"]
    assert m["win_rate"] == 0.5 and m["ties"] == 6        # same weights as SFT: all ties
    assert m["rm_score"] is not None and m["ppl"] > 1 and 0 <= m["gold"]["score"] <= 1
    assert [p["step"] for p in rep["kl_curve"]] == [0, 2, None]
    assert rep["kl_curve"][0]["kl"] == pytest.approx(0, abs=1e-5)
    assert len(rep["kl_curve_train"]) == 3
    assert rep["labeler_agreement"]["heldout"]["pairs"] >= 0
    assert (tmp_path / "eval" / "report.html").exists() and out["win_rate"]["ppo_r1"] == 0.5
    assert "rewrite" in rep["config"]["closed_domain"]
    # the ceiling: the gold writer's answers, perfect by the gold judge, against SFT's
    assert rep["ceiling"]["gold"]["score"] == pytest.approx(1.0)
    assert rep["ceiling"]["n"] == 6 and 0.0 <= rep["ceiling"]["win_rate"] <= 1.0
    r1, r2, r3 = rep["rm"]["rounds"]
    assert "labeler_agreement" not in r1                   # no ranking files given
    assert r2["labeler_agreement"]["agreement"] == pytest.approx(2 / 3)
    assert "different samples" in r3["labeler_agreement"]["error"]   # reported, not raised

"""The pipeline lets the RM pick the SFT epoch only when the RM is better than chance."""

from __future__ import annotations

import json

from rlhf.pipeline import choose_sft_checkpoint

CKPTS = ["sft/checkpoints/epoch-01", "sft/checkpoints/epoch-02", "sft/checkpoints/epoch-03"]


def test_accurate_rm_picks_by_score(tmp_path):
    calls = []

    def select(out):
        calls.append(out)
        return {"selected": CKPTS[0], "criterion": "mean RM score"}

    res = choose_sft_checkpoint(CKPTS, {"valid": {"accuracy": 0.62}}, 0.55,
                                tmp_path / "selection.json", select)
    assert calls == [tmp_path / "selection.json"]
    assert res["selected"] == CKPTS[0]


def test_chance_level_rm_keeps_the_last_epoch(tmp_path):
    def select(out):
        raise AssertionError("a chance-level RM must not choose the SFT epoch")

    for rm_result in ({"valid": {"accuracy": 0.51}}, {}):
        res = choose_sft_checkpoint(CKPTS, rm_result, 0.55, tmp_path / "selection.json", select)
        assert res["selected"] == CKPTS[-1]
        assert "select_min_rm_accuracy" in res["reason"]
        written = json.loads((tmp_path / "selection.json").read_text())
        assert written["selected"] == CKPTS[-1] and len(written["candidates"]) == 3

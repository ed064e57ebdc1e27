"""`rlhf pipeline` on configs/quick.yaml: every stage runs, the report is complete, and a rerun
resumes (skips finished stages). Structure and sanity, not the demo's quality."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quick") / "run"
    r = subprocess.run([sys.executable, "-m", "rlhf.cli", "pipeline", "--config",
                        str(ROOT / "configs/quick.yaml"), "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    (out / "stdout.txt").write_text(r.stdout)
    return out


def test_every_stage_finished_and_report_is_complete(quick_run):
    stages = ["world", "pretrain", "sft", "r1_comparisons", "r1_rm", "sft_select", "r1_ppo",
              "r1_ppo_ptx", "r2_comparisons", "r2_rm", "r2_ppo", "r2_ppo_ptx", "eval"]
    for s in stages:
        assert (quick_run / s / "DONE").exists(), s
    report = json.loads((quick_run / "eval/report.json").read_text())
    models = report["models"]
    assert list(models)[:3] == ["base", "base_prompted", "sft"]
    assert {"ppo_r1", "ppo_ptx_r1", "ppo_r2", "ppo_ptx_r2"} <= set(models)
    for name, m in models.items():
        if name != "sft":
            assert 0.0 <= m["win_rate"] <= 1.0 and m["ci"][0] <= m["win_rate"] <= m["ci"][1]
        assert 1.0 <= m["likert"] <= 7.0
        assert math.isfinite(m["ppl"]) and m["ppl"] > 1.0
        assert set(m["flags"]) >= {"follows_instruction", "satisfies_constraint",
                                   "hallucination", "harmful_compliance",
                                   "appropriate_for_customer"}
    assert report["kl_curve"] and all(p["sqrt_kl"] >= 0 for p in report["kl_curve"])
    copying = report["copying"]["models"]
    assert set(copying) == set(models) - {"base_prompted"}
    assert all(0.0 <= c["accuracy"] <= 1.0 and set(c) >= {"prose", "chat"}
               for c in copying.values())
    ceiling = report["ceiling"]   # the gold writer's answers: gold score 1 everywhere
    assert ceiling["gold"]["score"] == pytest.approx(1.0)
    assert ceiling["ci"][0] <= ceiling["win_rate"] <= ceiling["ci"][1]
    assert ceiling["wins"] + ceiling["ties"] + ceiling["losses"] == ceiling["n"]
    for r in report["rm"]["rounds"]:   # labelers' agreement on the RM's own valid comparisons
        ag = r["labeler_agreement"]
        assert ag["pairs"] > 0 and ag["prompts"] > 0 and 0.0 <= ag["agreement"] <= 1.0
    html = (quick_run / "eval/report.html").read_text()
    for png in ("win_rate.png", "metadata.png", "ptx.png", "kl_curve.png"):
        assert png in html and (quick_run / "eval" / png).stat().st_size > 1000
    assert "win" in (quick_run / "stdout.txt").read_text()


def test_rankings_have_k_between_4_and_9_and_labeler_ids(quick_run):
    rows = [json.loads(x) for x in
            (quick_run / "r1_comparisons/rankings_train.jsonl").read_text().splitlines()]
    assert rows
    for r in rows:
        assert 4 <= len(r["responses"]) <= 9
        assert sorted(i for g in r["ranking"] for i in g) == list(range(len(r["responses"])))
        assert r["labeler_id"]


def test_later_rounds_keep_the_sft_model_as_kl_reference(quick_run):
    import yaml
    cfg = yaml.safe_load((quick_run / "r2_ppo/config.yaml").read_text())
    assert cfg["ppo"]["policy"].endswith("r1_ppo/final")
    assert "sft" in cfg["ppo"]["reference"]


def test_rerun_skips_finished_stages(quick_run):
    r = subprocess.run([sys.executable, "-m", "rlhf.cli", "pipeline", "--config",
                        str(ROOT / "configs/quick.yaml"), "--out", str(quick_run)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done already, skipped") == 13
    before = (quick_run / "config.yaml").read_text()
    r = subprocess.run([sys.executable, "-m", "rlhf.cli", "pipeline", "--config",
                        str(ROOT / "configs/quick.yaml"), "--out", str(quick_run),
                        "--set", "pipeline.rounds=3", "--set", "ppo.lr=1e-3"],
                       capture_output=True, text=True, timeout=300)
    # a changed config is refused, not answered with the old models under the new config
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "different config (ppo.lr, pipeline.rounds differ)" in r.stderr, r.stderr[-2000:]
    assert "done already" not in r.stdout and (quick_run / "config.yaml").read_text() == before


def test_config_differences_name_dotted_keys():
    from rlhf.pipeline import config_differences
    old = {"seed": 0, "ppo": {"lr": 1e-4, "kl": {"beta": 0.02}}, "gone": 1}
    new = {"seed": 0, "ppo": {"lr": 2e-4, "kl": {"beta": 0.02}}, "added": {"x": 1}}
    assert config_differences(old, new) == ["ppo.lr", "gone", "added"]
    assert config_differences(old, old) == []

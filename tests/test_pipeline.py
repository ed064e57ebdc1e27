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


def test_a_run_from_before_a_new_option_still_resumes(tmp_path):
    """A run folder whose config.yaml predates an option (here ppo.critic_warmup_iterations)
    resumes when the option is at its default, and is refused when it is not."""
    import yaml

    from rlhf.config import dump_config, load_config
    from rlhf.errors import UserError
    from rlhf.pipeline import check_resumable

    cfg = load_config(ROOT / "configs/quick.yaml")
    old = yaml.safe_load(dump_config(cfg))
    del old["ppo"]["critic_warmup_iterations"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_resumable(tmp_path, cfg)
    changed = load_config(ROOT / "configs/quick.yaml", ["ppo.critic_warmup_iterations=1"])
    with pytest.raises(UserError, match=r"different config \(ppo.critic_warmup_iterations "
                                        r"differ\)"):
        check_resumable(tmp_path, changed)


def test_a_ppo_plan_that_breaks_in_round_2_is_refused_before_any_stage(tmp_path):
    """A critic warm-up of 3 fits round 1's 5 PPO iterations but not round 2's 3: the pipeline
    says so, naming the field, before it creates the run folder."""
    from rlhf.config import load_config
    from rlhf.errors import UserError
    from rlhf.pipeline import run_pipeline

    cfg = load_config(ROOT / "configs/quick.yaml",
                      ["ppo.iterations=5", "ppo.critic_warmup_iterations=3",
                       "pipeline.ppo_iterations_later_rounds=3"])
    want = (r"(?s)field 'pipeline.ppo_iterations_later_rounds'.*round 2's PPO plan is "
            r"inconsistent.*critic_warmup_iterations \(3\) must be")
    with pytest.raises(UserError, match=want):
        run_pipeline(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_config_differences_name_dotted_keys():
    from rlhf.pipeline import config_differences
    old = {"seed": 0, "ppo": {"lr": 1e-4, "kl": {"beta": 0.02}}, "gone": 1}
    new = {"seed": 0, "ppo": {"lr": 2e-4, "kl": {"beta": 0.02}}, "added": {"x": 1}}
    assert config_differences(old, new) == ["ppo.lr", "gone", "added"]
    assert config_differences(old, old) == []


def test_oracle_ppo_benchmark_trains_against_the_gold_judge_and_the_rm(quick_run, tmp_path):
    import importlib.util
    path = ROOT / "experiments" / "oracle_ppo.py"
    spec = importlib.util.spec_from_file_location("oracle_ppo", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--run", str(quick_run), "--iterations", "1", "--prompts", "6",
                      "--work", str(tmp_path / "work"), "--out", str(tmp_path / "o.json")])
    assert [(r["reward"], r["iterations"], r["episodes"]) for r in out["runs"]] == \
        [("gold", 1, 32), ("rm", 1, 32)]
    gold, rm = out["runs"]
    assert "gold_reward" in gold["reward_source"]
    assert str(json.loads((quick_run / "summary.json").read_text())["rounds"][0]["rm"]) \
        in rm["reward_source"]
    assert gold["first_score"] != rm["first_score"]    # two rewards of the same samples
    assert set(out["eval"]) == {"sft", "gold_1", "rm_1"}
    for name in ("gold_1", "rm_1"):
        m = out["eval"][name]
        assert 0.0 <= m["win_rate"] <= 1.0 and m["ci"][0] <= m["win_rate"] <= m["ci"][1]
        assert 0.0 <= m["gold"] <= 1.0 and m["n"] == 6
        assert (tmp_path / "work" / name / "final" / "config.json").exists()
    assert json.loads((tmp_path / "o.json").read_text())["runs"] == out["runs"]


def test_rm_oracle_benchmark_trains_on_labeler_and_gold_rankings(quick_run, tmp_path):
    import importlib.util
    path = ROOT / "experiments" / "rm_oracle.py"
    spec = importlib.util.spec_from_file_location("rm_oracle", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # hand-worked: pairs (0>1), (0>2), (1>2) from [[0], [1], [2]]; ties give no pair
    rows = [{"ranking": [[0], [1], [2]]}, {"ranking": [[0, 1]]}]
    assert bench.pair_accuracy(rows, [[3.0, 1.0, 2.0], [0.0, 5.0]]) == \
        {"accuracy": 2 / 3, "pairs": 3}
    assert bench.pair_accuracy(rows[:1], [[1.0, 1.0, 0.0]])["accuracy"] == 2.5 / 3

    out = bench.main(["--run", str(quick_run), "--work", str(tmp_path / "work"),
                      "--out", str(tmp_path / "r.json")])
    assert [(r["rankings"], r["epochs"]) for r in out["runs"]] == [("labelers", 1), ("gold", 1)]
    for r in out["runs"]:
        assert 0.0 <= r["vs_labelers"] <= 1.0 and 0.0 <= r["vs_gold"] <= 1.0 and r["steps"] > 0
    assert 0.5 < out["gold_vs_labelers"]["accuracy"] <= 1.0   # labelers see the gold score
    from rlhf.world import World
    world = World.load(quick_run / "world/data")
    gold = [json.loads(x) for x in (tmp_path / "work/train_gold.jsonl").read_text().splitlines()]
    for r in gold[:5]:
        s = [world.judge(world.record(r["prompt"]), x).score for x in r["responses"]]
        flat = [i for g in r["ranking"] for i in g]
        assert sorted(flat) == list(range(len(s)))
        assert all(s[a] >= s[b] for a, b in zip(flat, flat[1:]))  # best first
        assert all(len({s[i] for i in g}) == 1 for g in r["ranking"])  # a group shares a score
    assert json.loads((tmp_path / "r.json").read_text())["runs"] == out["runs"]

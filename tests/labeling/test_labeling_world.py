"""The Instruction World's simulated labelers fill the app's queues through the JSON API, and
what they entered exports in the formats the trainers read (skipped until rlhf.world exists)."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient

from rlhf.labeling.app import create_app
from rlhf.labeling.simulate import fill_queues, register_labelers

ADMIN = "admin-token-for-world"
A = {"Authorization": f"Bearer {ADMIN}"}


def test_world_labelers_fill_queues_through_the_api(tmp_path):
    world_mod = pytest.importorskip("rlhf.world")
    world = world_mod.World(0, n_pretrain_tokens=0, n_valid_tokens=0, n_sft=4, n_sft_valid=0,
                            n_rm=6, n_ppo=0, n_test=0, n_labelers=4)
    rng = random.Random(0)
    records = [{**rec, "responses": world_mod.policy_samples(world.universe, rec, rng, 4)}
               for rec in world.prompts("rm")]
    with TestClient(create_app(f"sqlite:///{tmp_path / 'world.db'}", ADMIN)) as client:
        client.post("/api/projects", json={"name": "world"}, headers=A)
        r = client.post("/api/projects/world/prompts", json={"prompts": records}, headers=A)
        assert r.status_code == 200, r.text
        client.post("/api/projects/world/prompts", json={"prompts": world.prompts("sft")},
                    headers=A)
        pool = world.labeler_pool().train_labelers
        tokens = register_labelers(client, ADMIN, pool)
        for kind, overlap in (("ranking", 2), ("rating", 1), ("demonstration", 1)):
            r = client.post("/api/projects/world/tasks", json={"kind": kind, "overlap": overlap},
                            headers=A)
            assert r.status_code == 200, r.text
        report = fill_queues(client, "world", tokens)
        # 6 rm prompts ranked twice, 24 candidates rated once, 10 prompts demonstrated once
        assert report.total == 6 * 2 + 24 + 10
        dash = client.get("/api/projects/world/dashboard", headers=A).json()
        assert dash["agreement"]["ranking"]["tasks_with_overlap"] == 6
        assert set(dash["labelers"]) == {lab.id for lab in pool}
        out = tmp_path / "export"
        client.app.state.store.export_to_dir("world", out)

    rankings = pytest.importorskip("rlhf.data.rankings").load_rankings(out / "rankings.jsonl")
    assert len(rankings) == 12 and {r.labeler_id for r in rankings} <= {lab.id for lab in pool}
    demos = pytest.importorskip("rlhf.data.sft").load_demonstrations(out / "demonstrations.jsonl")
    assert len(demos) == 10 and all(d.response for d in demos)

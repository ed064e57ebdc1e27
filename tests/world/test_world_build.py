"""Building a world to disk: layout, formats, determinism, disjoint splits, a clean corpus."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhf.errors import UserError
from rlhf.io import read_jsonl
from rlhf.world import CATEGORIES, SPLITS, World, WorldSizes, build_world
from rlhf.world.cli import app
from rlhf.world.prompts import category_quotas
from rlhf.world.text import words
from rlhf.world.vocab import is_known

SIZES = dict(n_pretrain_tokens=30_000, n_valid_tokens=3_000, n_sft=120, n_sft_valid=20,
             n_rm=100, n_ppo=60, n_test=40, n_labelers=8, n_heldout=3)
EXPECTED_FILES = [
    "pretrain/train.txt", "pretrain/valid.txt", "prompts/sft.jsonl", "prompts/sft_valid.jsonl",
    "prompts/rm.jsonl", "prompts/ppo.jsonl", "prompts/test.jsonl", "demonstrations/sft.jsonl",
    "demonstrations/sft_valid.jsonl", "fewshot.txt", "universe.json", "world.json",
]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("worlds") / "w0"
    build_world(out, seed=0, **SIZES)
    return out


def test_layout_and_formats(built: Path):
    files = tree_bytes(built)
    assert sorted(files) == sorted(EXPECTED_FILES)
    meta = json.loads(files["world.json"])
    assert meta["schema_version"] == 1 and meta["seed"] == 0
    assert meta["prompts"] == {"sft": 120, "sft_valid": 20, "rm": 100, "ppo": 60, "test": 40}
    assert len(meta["labelers"]["train"]) == 5 and len(meta["labelers"]["heldout"]) == 3
    for split in SPLITS:
        for _, r in read_jsonl(built / "prompts" / f"{split}.jsonl"):
            assert isinstance(r["id"], str) and isinstance(r["prompt"], str)
            assert r["category"] in CATEGORIES and r["harmful"] == (r["category"] == "harmful")
            assert len(r["prompt"].split()) <= 60
    for split in ("sft", "sft_valid"):
        prompts = [r["prompt"] for _, r in read_jsonl(built / "prompts" / f"{split}.jsonl")]
        demos = [d for _, d in read_jsonl(built / "demonstrations" / f"{split}.jsonl")]
        assert [d["prompt"] for d in demos] == prompts
        for d in demos:
            assert d["labeler_id"] in meta["labelers"]["train"]
            assert 1 <= len(d["response"].split()) <= 45
    turns = files["fewshot.txt"].decode().split("\n\n")
    assert turns[-1] == "" and len(turns) == 4
    for turn in turns[:3]:
        assert re.fullmatch(r"User: .+\nAssistant: .+", turn, flags=re.DOTALL), turn
    text = files["pretrain/train.txt"].decode()
    assert len(text.split()) >= SIZES["n_pretrain_tokens"] and "\n\n" in text


def test_same_seed_is_byte_identical_and_other_seed_differs(built: Path, tmp_path: Path):
    again = tmp_path / "again"
    build_world(again, seed=0, **SIZES)
    assert tree_bytes(again) == tree_bytes(built)
    other = tmp_path / "other"
    build_world(other, seed=1, **SIZES)
    a, b = tree_bytes(built), tree_bytes(other)
    for name in EXPECTED_FILES:
        if name != "world.json":
            assert a[name] != b[name], name


def test_prompt_splits_are_disjoint_and_mixed(built: Path):
    world = World.load(built)
    seen_text: set[str] = set()
    seen_id: set[str] = set()
    for split in SPLITS:
        records = world.prompts(split)
        texts = {r["prompt"] for r in records}
        ids = {r["id"] for r in records}
        assert len(texts) == len(records) and not texts & seen_text
        assert not ids & seen_id
        seen_text |= texts
        seen_id |= ids
        counts = {c: sum(r["category"] == c for r in records) for c in CATEGORIES}
        assert counts == category_quotas(len(records))
        assert counts["harmful"] >= 1, split  # harmful requests in every split
    big = category_quotas(2000)
    assert big["generation"] == 500 and big["harmful"] == 100 and sum(big.values()) == 2000


def test_corpus_has_no_prompt_text(built: Path):
    world = World.load(built)
    corpus = ((built / "pretrain" / "train.txt").read_text()
              + (built / "pretrain" / "valid.txt").read_text())
    for split in SPLITS:
        for r in world.prompts(split):
            assert r["prompt"] not in corpus
            if r.get("source"):
                assert r["source"] not in corpus
    for cue in ("?", "User:", "Assistant:", "Text:", "Question:", "Write ", "List ", "Rewrite",
                "Summarize", "Answer", "Describe", "Tell me", "Explain", "On Monday,"):
        assert cue not in corpus, cue


def test_vocabulary_is_small_and_closed(built: Path):
    world = World.load(built)
    corpus = (built / "pretrain" / "train.txt").read_text()
    corpus_words = set(words(corpus))
    assert len(corpus_words) < 600
    assert all(is_known(w) for w in corpus_words), [w for w in corpus_words if not is_known(w)]
    for split in SPLITS:
        for r in world.prompts(split):
            text = r["prompt"] + " " + world.good_response(r)
            unknown = [w for w in words(text) if not is_known(w)]
            assert not unknown, (r["prompt"], unknown)


def test_load_round_trip(built: Path):
    world = World.load(built)
    fresh = World(0, WorldSizes.from_options(**SIZES))
    for split in SPLITS:
        assert world.prompts(split) == fresh.prompts(split)
    r = world.prompts("test")[0]
    assert world.judge(r["prompt"], world.good_response(r)).score >= 0.95


def test_rebuild_replaces_atomically_and_bad_options_fail(built: Path, tmp_path: Path):
    out = tmp_path / "w"
    build_world(out, seed=2, **SIZES)
    (out / "stale.txt").write_text("old")
    build_world(out, seed=2, **SIZES)
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(UserError):
        build_world(tmp_path / "bad", n_sft=-1)
    with pytest.raises(UserError):
        build_world(tmp_path / "bad", n_prompts=3)
    with pytest.raises(UserError):
        World.load(tmp_path / "missing")
    assert not (tmp_path / "bad").exists()


def test_tiny_world_scales_down(tmp_path: Path):
    start = time.perf_counter()
    summary = build_world(tmp_path / "tiny", seed=5, n_pretrain_tokens=2000, n_valid_tokens=200,
                          n_sft=10, n_sft_valid=2, n_rm=10, n_ppo=10, n_test=10, n_labelers=4,
                          n_heldout=1)
    assert time.perf_counter() - start < 10
    assert summary["prompts"]["sft_valid"] == 2 and summary["demonstrations"]["sft"] == 10


def test_default_corpus_size_is_at_least_two_million_words():
    assert WorldSizes().n_pretrain_tokens >= 2_000_000


@pytest.mark.slow
def test_full_default_build(tmp_path: Path):
    start = time.perf_counter()
    summary = build_world(tmp_path / "full", seed=0)
    assert time.perf_counter() - start < 30
    assert summary["pretrain_tokens"]["train"] >= 2_000_000


def test_cli_build_and_stats(tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["build", "--out", str(out), "--seed", "3",
                                 "--pretrain-tokens", "5000", "--valid-tokens", "500",
                                 "--sft", "40", "--sft-valid", "10", "--rm", "40", "--ppo", "20",
                                 "--test", "20", "--labelers", "6", "--heldout", "2"])
    assert result.exit_code == 0, result.output
    assert "Built world" in result.output
    result = runner.invoke(app, ["stats", str(out), "--agreement-prompts", "20"])
    assert result.exit_code == 0, result.output
    for needle in ("generation", "harmful", "pretrain/train.txt", "agreement", "train", "heldout"):
        assert needle in result.output


def test_load_reports_bad_prompt_files(built: Path, tmp_path: Path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    path = copy / "prompts" / "rm.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"id": "x", "prompt": "Hi", "category": "poetry"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as err:
        World.load(copy)
    assert err.value.line == 3 and err.value.field == "category" and "rm.jsonl" in str(err.value)


def test_module_docstring_explains_why_rlhf_is_needed():
    import rlhf.world
    doc = rlhf.world.__doc__
    assert "Why SFT on the demonstrations alone cannot reach the gold optimum" in doc
    for category in CATEGORIES:
        assert category in doc

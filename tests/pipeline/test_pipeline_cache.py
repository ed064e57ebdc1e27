"""The pipeline's base cache: a base pretrained once is reused by runs with the same corpus,
pretrain section and seed, and by no other."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.config import load_config
from rlhf.pipeline import base_cache_key, cache_root, cached_base


def _corpus(tmp_path: Path, text: str = "one two three\n") -> tuple[list[str], list[str]]:
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "valid.txt").write_text("four five\n")
    return [str(tmp_path / "train.txt")], [str(tmp_path / "valid.txt")]


def _fake_pretrain(calls: list[Path]):
    def train(out: Path) -> dict:
        calls.append(out)
        (out / "final").mkdir(parents=True)
        (out / "final" / "model.safetensors").write_text(f"weights from {out.name}")
        return {"model": str(out / "final"), "valid_ppl": 1.5, "steps": 3}
    return train


def test_a_second_run_takes_the_base_from_the_cache(tmp_path):
    cfg = load_config(overrides=[f"pipeline.cache_dir={tmp_path / 'cache'}"])
    train, valid = _corpus(tmp_path)
    calls: list[Path] = []
    first, second = tmp_path / "run1", tmp_path / "run2"
    first.mkdir(), second.mkdir()
    a = cached_base(cfg, train, valid, first, _fake_pretrain(calls))
    b = cached_base(cfg, train, valid, second, _fake_pretrain(calls))
    assert calls == [first]                           # trained once
    assert b["model"] == str(second / "final") and b["valid_ppl"] == a["valid_ppl"]
    assert b["cached_from"].startswith(str(tmp_path / "cache" / "bases"))
    assert (second / "final" / "model.safetensors").read_text() == "weights from run1"
    entry = Path(b["cached_from"])
    assert json.loads((entry / "summary.json").read_text())["steps"] == 3
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_the_key_follows_corpus_pretrain_section_and_seed_but_not_file_paths(tmp_path):
    cfg = load_config()
    train, valid = _corpus(tmp_path)
    key = base_cache_key(cfg, train, valid)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    assert base_cache_key(cfg, *_corpus(moved)) == key
    assert base_cache_key(load_config(overrides=["pretrain.lr=1e-3"]), train, valid) != key
    assert base_cache_key(load_config(overrides=["seed=1"]), train, valid) != key
    assert base_cache_key(cfg, *_corpus(moved, "one two four\n")) != key
    assert base_cache_key(load_config(overrides=["pretrain.train_files=[x]"]), train, valid) == key


def test_the_cache_can_be_switched_off_and_its_folder_chosen(tmp_path, monkeypatch):
    cfg = load_config(overrides=["pipeline.base_cache=false",
                                 f"pipeline.cache_dir={tmp_path / 'cache'}"])
    train, valid = _corpus(tmp_path)
    calls: list[Path] = []
    for name in ("run1", "run2"):
        (tmp_path / name).mkdir()
        cached_base(cfg, train, valid, tmp_path / name, _fake_pretrain(calls))
    assert len(calls) == 2 and not (tmp_path / "cache").exists()
    monkeypatch.setenv("RLHF_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(load_config()) == tmp_path / "env"
    monkeypatch.delenv("RLHF_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(load_config()) == tmp_path / "xdg" / "rlhf"


def test_a_halted_pretraining_is_not_cached(tmp_path):
    cfg = load_config(overrides=[f"pipeline.cache_dir={tmp_path / 'cache'}"])
    train, valid = _corpus(tmp_path)
    (tmp_path / "run").mkdir()
    cached_base(cfg, train, valid, tmp_path / "run", lambda out: {"halted": True})
    assert not (tmp_path / "cache" / "bases").exists() or \
        not any((tmp_path / "cache" / "bases").iterdir())

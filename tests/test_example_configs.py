"""The example configs (configs/examples/, shipped as rlhf/configs/examples/): each validates,
its header's commands launch it, its model paths chain SFT -> RM -> PPO; with tiny random
stand-ins of the same architecture its PPO batch plan and its SFT, RM and PPO memory plans run;
and for the real models' shapes (their published config.json, built on the meta device) the
memory plan fits the GPU memory its header names. Nothing here runs on a GPU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from transformers import LlamaConfig, Qwen2Config

import archs
import rlhf
from rlhf.config import load_config
from rlhf.train.memory_plan import STEPS, memory_plan, memory_report, model_context_length
from rlhf.train.ppo.plan import PPOPlan

EXAMPLES = Path(rlhf.__file__).resolve().parent / "configs" / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))

#: the tiny stand-in's architecture (tests/archs.py) and the real config.json's shapes
MODELS = {
    "smollm2-135m": ("llama", lambda: LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
        rope_theta=100000.0, tie_word_embeddings=True)),
    "qwen2.5-0.5b": ("qwen2", lambda: Qwen2Config(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
        rope_theta=1000000.0, tie_word_embeddings=True)),
}
MODEL_FIELDS = ("sft.model", "rm.model", "ppo.policy", "ppo.reward_model")


def test_every_model_has_a_one_gpu_and_an_eight_gpu_example():
    assert [p.name for p in FILES] == sorted(f"{m}-{n}gpu.yaml" for m in MODELS for n in (1, 8))
    assert (EXAMPLES / "README.md").is_file()


def _header(path: Path) -> tuple[int, str, list[str]]:
    """(processes, device memory, the commands) from the comment at the top of `path`."""
    text = path.read_text(encoding="utf-8")
    top = text[:text.index("\nseed:")]
    world = int(m.group(1)) if (m := re.search(r"--nproc_per_node (\d+)", top)) else 1
    memory = re.search(r"--device-memory (\S+)", top).group(1)
    return world, memory, [line[4:] for line in top.splitlines() if line.startswith("#   ")]


def _with_models(path: Path, folder: Path):
    return load_config(path, [f"{f}={folder}" for f in MODEL_FIELDS])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_config(path, tmp_path):
    family = path.name.rsplit("-", 1)[0]
    arch, real_config = MODELS[family]
    world, memory, commands = _header(path)
    assert world == int(path.stem.rsplit("-", 1)[1].removesuffix("gpu"))
    cfg = load_config(path)

    # the header: download, plan, then SFT -> RM -> PPO, each run folder feeding the next step
    here = f"--config configs/examples/{path.name}"
    launch = "rlhf" if world == 1 else f"torchrun --nproc_per_node {world} -m rlhf.cli"
    download, plan, *steps = commands
    assert download.endswith(f"--local-dir {cfg.sft.model}")
    assert plan == f"rlhf ppo plan {here}" + (f" --world-size {world}" if world > 1 else "") + \
        f" --device-memory {memory}"
    outs = {}
    for step, line in zip(("sft", "rm train", "ppo"), steps, strict=True):
        assert line.startswith(f"{launch} {step} {here} --out "), line
        outs[step] = line.rsplit(" ", 1)[1]
    assert cfg.rm.model == cfg.ppo.policy == f"{outs['sft']}/final"
    assert cfg.ppo.reward_model == f"{outs['rm train']}/final"

    # tiny stand-ins of the same architecture: the batch plan and every memory plan run
    tiny = _with_models(path, archs.save_model(tmp_path, arch, positions=2048))
    PPOPlan.from_config(tiny.ppo, world).validate(context_length=2048)
    for step in STEPS:
        assert memory_plan(tiny, step, world).peak > 0

    # the real shapes (config.json only): the context holds the PPO episode, the plan fits
    real_dir = tmp_path / "real"
    real_config().save_pretrained(str(real_dir))
    real = _with_models(path, real_dir)
    PPOPlan.from_config(real.ppo, world).validate(
        context_length=model_context_length(str(real_dir), "ppo.policy"))
    for step in STEPS:
        assert "fits: peak" in memory_report(real, step, world, memory)

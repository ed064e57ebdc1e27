"""Bringing your own model: SFT -> RM -> PPO -> evaluation on tiny random Llama, Qwen2, Qwen3,
Mistral and GPT-NeoX models (built locally), with and without LoRA; the LoRA, precision and
gradient-checkpointing settings of the recipes."""

from __future__ import annotations

import json
import random

import archs
import pytest
import torch
from helpers import WORDS, write_demos
from safetensors.torch import load_file

from rlhf.config import Config
from rlhf.errors import UserError
from rlhf.eval.samples import sample_model
from rlhf.models import load_model
from rlhf.models.lora import adapter_info, is_lora
from rlhf.models.reward import RewardModel, load_reward_model
from rlhf.train.ppo import ppo
from rlhf.train.reward import train_rm
from rlhf.train.sft import sft

LORA = {"r": 4, "alpha": 8}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("own")
    r = random.Random(0)
    rows = []
    for i in range(16):
        w = [r.choice(WORDS) for _ in range(3)]
        responses = [" ".join(w[:k]) or "no" for k in (3, 2, 1, 0)]
        rows.append({"prompt": f"Repeat: {' '.join(w)}", "responses": responses,
                     "ranking": [[0], [1], [2], [3]]})
    rankings = tmp / "rankings.jsonl"
    rankings.write_text("".join(json.dumps(x) + "\n" for x in rows))
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": x["prompt"]}) + "\n" for x in rows))
    return {"tmp": tmp, "demos": write_demos(tmp / "demos.jsonl", 16), "rankings": rankings,
            "prompts": prompts}


def cfg(**sections) -> Config:
    return Config.model_validate({"seed": 0, **sections})


def sft_section(model, data, **over) -> dict:
    return {"model": str(model), "train_file": str(data["demos"]), "epochs": 1,
            "batch_size": 8, "lr": 1e-3, "max_length": 64, **over}


def ppo_section(policy, rm, data, **over) -> dict:
    return {"policy": str(policy), "reward_model": str(rm), "prompts_file": str(data["prompts"]),
            "iterations": 2, "episodes_per_iteration": 8, "minibatch_size": 4,
            "micro_batch_size": 4, "rollout_batch_size": 8, "max_new_tokens": 6,
            "max_prompt_length": 32, "lr": 1e-3, "value_lr": 1e-3, "warmup_iterations": 0,
            "save_every": 100, **over}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral", "gpt_neox"])
def test_sft_rm_ppo_eval_on_real_architectures(data, tmp_path, arch, lora):
    base = archs.save_model(data["tmp"], arch)
    extra = {"lora": LORA} if lora else {}
    s = sft(cfg(sft=sft_section(base, data, **extra)), tmp_path / "sft")
    r = train_rm(cfg(rm={"model": s["model"], "train_file": str(data["rankings"]),
                         "batch_size": 8, "lr": 1e-3, "max_length": 64, **extra}),
                 tmp_path / "rm")
    seen = {}
    p = ppo(cfg(ppo=ppo_section(s["model"], r["model"], data, **extra)), tmp_path / "ppo",
            hooks=lambda e, st: seen.setdefault("ref", st["models"].ref) if e == "setup"
            else None)
    assert (seen["ref"] is None) == lora            # LoRA: the policy is its own reference
    for run in (s, r):
        assert ("adapter" in run) == lora
    # every final/ is a plain Hugging Face model; the adapters load to the same function
    policy = load_model(p["model"])
    assert not is_lora(policy) and type(policy) is type(archs.build_model(arch))
    rm = RewardModel.from_pretrained(r["model"])
    if lora:
        assert adapter_info(r["adapter"])["kind"] == "reward"
        ids = torch.tensor([[5, 6, 7, 8]])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            torch.testing.assert_close(load_reward_model(r["adapter"])(ids, mask),
                                       rm(ids, mask), atol=1e-4, rtol=1e-4)
    answers = sample_model(p["model"], ["Repeat: the cat sat"], max_new_tokens=4)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_lora_sft_trains_only_the_adapter_and_resumes_exactly(data, tmp_path):
    base = archs.save_model(data["tmp"], "llama")
    c = cfg(sft=sft_section(base, data, lora=LORA, epochs=3, micro_batch_size=4))
    full = sft(c, tmp_path / "full")
    halted = sft(c, tmp_path / "part", halt_after=3)      # mid-epoch 2: last ckpt epoch-01
    assert halted.get("halted")
    assert adapter_info(tmp_path / "part/checkpoints/epoch-01") is not None
    done = sft(c, tmp_path / "part", resume=True)
    a = load_file(str(tmp_path / "full/final_adapter/adapter_model.safetensors"))
    b = load_file(str(tmp_path / "part/final_adapter/adapter_model.safetensors"))
    assert a.keys() == b.keys() and all("lora_" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the merged model differs from the base only where the adapter adds B·A
    merged = load_model(done["model"]).state_dict()
    start = load_model(base).state_dict()
    changed = [k for k in start if not torch.equal(start[k], merged[k])]
    assert changed and all(k.endswith("_proj.weight") for k in changed)
    assert full["model"].endswith("final") and done["adapter"].endswith("final_adapter")


def test_lora_ppo_reference_stays_the_base_and_resume_is_exact(data, tmp_path):
    base = archs.save_model(data["tmp"], "qwen2")
    rm = RewardModel.from_causal_lm(load_model(base))
    rm.save_pretrained(tmp_path / "rm", archs.tokenizer())
    c = cfg(ppo=ppo_section(base, tmp_path / "rm", data, lora=LORA, iterations=3,
                            save_every=1, keep_checkpoints=0))
    got = {}

    def hooks(event, state):
        if event == "iteration":
            got["kl"] = state["metrics"]["objective/kl"]

    straight = ppo(c, tmp_path / "straight", hooks=hooks)   # KL = 0 at iteration 0 (checked)
    assert got["kl"] != 0.0               # ... and later the adapter has moved the policy off
    moved = load_model(straight["model"]).state_dict()       # its reference, the base
    assert any(not torch.equal(v, moved[k]) for k, v in load_model(base).state_dict().items())
    ppo(c, tmp_path / "split", halt_after=1)
    split = ppo(c, tmp_path / "split", resume=True)
    a = load_file(str(tmp_path / "straight/final_adapter/adapter_model.safetensors"))
    b = load_file(str(tmp_path / "split/final_adapter/adapter_model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert split["value_model"].endswith("value")
    assert (tmp_path / "straight/value_adapter/adapter_model.safetensors").exists()


def test_gradient_checkpointing_gives_the_same_training(data, tmp_path):
    """The switch turns checkpointing on (for a causal LM, a reward model's backbone and a LoRA
    model) and training gives the same weights as without it."""
    from rlhf.config import RMConfig, SFTConfig
    from rlhf.train.loop import prepare_model

    on = SFTConfig(gradient_checkpointing=True)
    for model in (archs.build_model("llama"), load_model(archs.save_model(data["tmp"], "llama"))):
        m, _ = prepare_model(model, on, "sft")
        assert m.is_gradient_checkpointing
    m, _ = prepare_model(archs.build_model("qwen2"),
                         SFTConfig(gradient_checkpointing=True, lora=LORA), "sft")
    assert is_lora(m) and m.get_base_model().is_gradient_checkpointing
    rm, _ = prepare_model(RewardModel.from_causal_lm(archs.build_model("gpt_neox")),
                          RMConfig(gradient_checkpointing=True), "rm")
    assert rm.backbone.is_gradient_checkpointing
    assert not prepare_model(archs.build_model("llama"), SFTConfig(), "sft")[0] \
        .is_gradient_checkpointing
    base = archs.save_model(data["tmp"], "llama")
    a = sft(cfg(sft=sft_section(base, data)), tmp_path / "a")
    b = sft(cfg(sft=sft_section(base, data, gradient_checkpointing=True)), tmp_path / "b")
    wa, wb = load_model(a["model"]).state_dict(), load_model(b["model"]).state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-5)


def test_precision_settings(data, tmp_path):
    base = archs.save_model(data["tmp"], "llama")
    s = sft(cfg(sft=sft_section(base, data, precision="bf16")), tmp_path / "bf16")
    assert s["final_train_loss"] == pytest.approx(s["final_train_loss"]) and \
        s["final_train_loss"] > 0
    with pytest.raises(UserError, match="only for frozen models") as e:
        sft(cfg(sft=sft_section(base, data, precision="bf16-weights")), tmp_path / "bad")
    assert e.value.field == "sft.precision"
    # a LoRA run's frozen base may be held in bf16; the adapter stays fp32
    s = sft(cfg(sft=sft_section(base, data, precision="bf16-weights", lora=LORA)),
            tmp_path / "lora_bf16")
    adapter = load_file(str(tmp_path / "lora_bf16/final_adapter/adapter_model.safetensors"))
    assert all(v.dtype == torch.float32 for v in adapter.values())
    with pytest.raises(Exception, match="ppo.precision"):
        cfg(ppo={"precision": "fp8"})

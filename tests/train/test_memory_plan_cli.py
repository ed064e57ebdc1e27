"""The memory plan of a configured run (rlhf.train.memory_plan) and `rlhf sft|rm|ppo plan`: the
table from the models' config.json, the batch it assumes, and the refusal of a plan over
--device-memory (exit 2, no traceback) naming a setting the config has."""

from __future__ import annotations

import re
import sys

import pytest
from transformers import AutoConfig

import archs
from rlhf.config import Config, load_config
from rlhf.errors import UserError
from rlhf.models.memory import estimate_memory
from rlhf.train.memory_plan import memory_plan, model_config


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny Llama folder (config.json, weights, tokenizer); context 128."""
    return archs.save_model(tmp_path_factory.mktemp("models"), "llama")


def _cfg(model, **sections) -> Config:
    base = {"sft": {"model": str(model)}, "rm": {"model": str(model)},
            "ppo": {"policy": str(model), "reward_model": str(model), "max_prompt_length": 64,
                    "max_new_tokens": 32}}
    for name, fields in sections.items():
        base[name] = {**base[name], **fields}
    return load_config(base=base)


def _rlhf(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """`rlhf ARGV` in this process, as the console script runs it: (exit code, stdout,
    stderr)."""
    from rlhf.cli import main

    monkeypatch.setattr(sys, "argv", ["rlhf", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def _exists(cfg: Config, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, part):
            return False
        node = getattr(node, part)
    return True


# ---------------------------------------------------------------------------- the plans

def test_plans_read_the_models_config_and_the_sections_batch(model):
    conf = AutoConfig.from_pretrained(str(model))
    cfg = _cfg(model, sft={"batch_size": 16, "max_length": 512},
               rm={"batch_size": 8, "micro_batch_size": 2, "max_k": 4, "max_length": 64})
    sft = memory_plan(cfg, "sft", world_size=4)
    assert sft == estimate_memory(conf, precision="fp32", batch_size=4, seq_len=128,  # context
                                  name="SFT model")
    # the RM's K responses of a prompt go through one forward: micro x K sequences
    rm = memory_plan(cfg, "rm")
    assert rm.total == estimate_memory(conf, precision="fp32", batch_size=2 * 4, seq_len=64,
                                       scalar_head=True).total
    ppo = memory_plan(cfg, "ppo")
    assert [p.name for p in ppo.parts] == ["policy", "reference", "reward model", "value model",
                                           "rollout"]
    assert ppo.parts[0].inputs["seq_len"] == 96 and ppo.parts[2].weights > 0
    bf16 = memory_plan(_cfg(model, ppo={"precision": "bf16"}), "ppo")
    assert "bf16" in bf16.parts[0].note and bf16.peak != ppo.peak


def test_a_reward_function_has_no_reward_model_in_the_plan(model):
    plan = memory_plan(_cfg(model, ppo={"reward_model": None, "reward_fn": "m:f"}), "ppo")
    reward = plan.parts[2]
    assert reward.total == 0 and reward.note == "a reward function scores"
    assert plan.peak < memory_plan(_cfg(model), "ppo").peak


def test_models_are_read_from_local_folders_only(tmp_path):
    with pytest.raises(UserError, match="config.json missing") as e:
        model_config(str(tmp_path), "sft.model")
    assert e.value.field == "sft.model"
    with pytest.raises(UserError, match="config.json missing") as e:
        model_config("no-such-owner/no-such-model", "ppo.policy")
    assert e.value.field == "ppo.policy"
    with pytest.raises(UserError, match="needs the model") as e:
        memory_plan(Config(), "rm")
    assert e.value.field == "rm.model"


def test_supervised_batch_split_is_checked(model):
    with pytest.raises(UserError) as e:
        memory_plan(_cfg(model), "sft", world_size=3)
    assert e.value.field == "sft.batch_size"
    with pytest.raises(UserError) as e:
        memory_plan(_cfg(model, rm={"batch_size": 8, "micro_batch_size": 3}), "rm")
    assert e.value.field == "rm.micro_batch_size"


# ---------------------------------------------------------------------------- the commands

def test_ppo_plan_prints_the_batch_plan_then_the_memory_table(model, monkeypatch, capsys):
    sets = ["--set", f"ppo.policy={model}", "--set", f"ppo.reward_model={model}",
            "--set", "ppo.max_prompt_length=64", "--set", "ppo.max_new_tokens=32"]
    code, out, _ = _rlhf(["ppo", "plan", *sets, "--world-size", "2", "--device-memory", "80GB"],
                         monkeypatch, capsys)
    assert code == 0
    assert out.index("PPO batch plan (2 processes)") < out.index("PPO memory plan: peak")
    for row in ("policy", "reference", "reward model", "value model", "rollout"):
        assert re.search(rf"^{row} ", out, re.M), row
    assert "fits: peak" in out and "of 80.00 GiB per device" in out
    # the batch plan is checked against the policy's context (128 tokens)
    code, _, err = _rlhf(["ppo", "plan", *sets, "--set", "ppo.max_prompt_length=120"],
                         monkeypatch, capsys)
    assert code == 2 and "exceeds" in err and "Traceback" not in err


@pytest.mark.parametrize("step,sets,setting", [
    ("sft", ["sft.model"], "sft.micro_batch_size"),
    ("rm", ["rm.model"], "rm.micro_batch_size"),
    ("ppo", ["ppo.policy", "ppo.reward_model", "ppo.max_prompt_length=64"],
     "ppo.micro_batch_size"),
])
def test_a_plan_over_the_device_memory_exits_2_naming_a_setting(model, monkeypatch, capsys,
                                                                 step, sets, setting):
    argv = [step, "plan", "--device-memory", "1MB"]
    for s in sets:
        argv += ["--set", s if "=" in s else f"{s}={model}"]
    code, out, err = _rlhf(argv, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: field '") and "more than the 1.00 MiB available" in err
    named = re.findall(r"^  set (\S+) = ", err, re.M)
    assert setting in named and f"error: field '{named[0]}'" in err
    assert all(_exists(Config(), n) for n in named), named     # only settings the config has
    code, out, _ = _rlhf([a if a != "1MB" else "64GB" for a in argv], monkeypatch, capsys)
    assert code == 0 and "fits: peak" in out


def test_supervised_plans_say_which_batch_they_assume(model, monkeypatch, capsys):
    code, out, _ = _rlhf(["sft", "plan", "--set", f"sft.model={model}", "-n", "4"],
                         monkeypatch, capsys)
    assert code == 0
    assert out.startswith("SFT memory plan (4 processes): batch 32 = 4 processes x 1 "
                          "micro-batch of 8 demonstrations of up to 128 tokens")
    assert "SFT model" in out and "total per device" in out
    code, out, _ = _rlhf(["rm", "plan", "--set", f"rm.model={model}", "--set",
                          "rm.micro_batch_size=16"], monkeypatch, capsys)
    assert code == 0
    assert out.startswith("RM memory plan (1 process): batch 64 = 1 process x 4 micro-batches "
                          "of 16 prompts x up to 9 responses of up to 128 tokens")


def test_fsdp_divides_the_sharded_parts_by_the_world_size(tmp_path):
    """With sft.dist = fsdp the plan for 4 processes holds less of the weights, gradients and
    optimizer state per device (their shards, plus the block being gathered); with ddp every
    process holds them whole."""
    model = archs.save_model(tmp_path, "llama")
    ddp = memory_plan(_cfg(model, sft={"batch_size": 8}), "sft", world_size=4)
    fsdp = memory_plan(_cfg(model, sft={"batch_size": 8, "dist": "fsdp"}), "sft", world_size=4)
    assert fsdp.weights < ddp.weights and fsdp.optimizer < ddp.optimizer
    assert fsdp.gradients < ddp.gradients
    one = memory_plan(_cfg(model, sft={"batch_size": 8, "dist": "fsdp"}), "sft", world_size=1)
    assert one == memory_plan(_cfg(model, sft={"batch_size": 8}), "sft", world_size=1)

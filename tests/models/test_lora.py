"""LoRA: what trains, the adapter-disabled reference is exactly the base, adapters and merged
models round-trip through disk, and a missing base is a clean error."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import archs
from rlhf.errors import UserError
from rlhf.models.lm import load_model
from rlhf.models.lora import (DEFAULT_TARGETS, adapter_info, apply_lora, is_lora,
                              reference_context, save_lora)
from rlhf.models.reward import RewardModel, load_reward_model


def _ids(n: int = 3, t: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, len(archs.tokenizer()), (n, t),
                         generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def _train(model, steps: int = 3, lr: float = 1e-2, seed: int = 0) -> None:
    """A few AdamW steps on the LM loss (or the RM score) over the trainable parameters."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for i in range(steps):
        ids = _ids(4, 12, seed + i)
        if isinstance(model, RewardModel):
            loss = -model(ids, torch.ones_like(ids)).mean()
        else:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.mark.parametrize("arch", archs.ARCHS)
def test_defaults_adapt_every_projection_and_only_lora_trains(arch):
    model = archs.build_model(arch)
    total = sum(p.numel() for p in model.parameters())
    names = DEFAULT_TARGETS[model.config.model_type]
    # what LoRA of rank r adds: r · (in + out) for every targeted projection
    expected = 0
    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] in names:
            w = mod.weight
            expected += 4 * (w.shape[0] + w.shape[1])
    lm = apply_lora(model, r=4, alpha=8)
    assert is_lora(lm)
    trainable = {n: p.numel() for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert sum(trainable.values()) == expected
    assert expected < 0.3 * total
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == set(names)               # every default name exists in this family


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_reference_is_exactly_the_base_while_the_adapter_trains(arch):
    base = archs.build_model(arch)
    frozen = copy.deepcopy(base)
    ids = _ids()
    before = _logits(frozen, ids)
    lm = apply_lora(base, r=4, alpha=8)
    assert torch.equal(_logits(lm, ids), before)         # B = 0: starts exactly at the base
    _train(lm)
    after = _logits(lm, ids)
    assert (after - before).abs().max() > 1e-3            # the adapter changed the outputs
    with reference_context(lm):
        assert torch.equal(_logits(lm, ids), before)      # the KL reference: the base, exactly
    assert torch.equal(_logits(lm, ids), after)           # and the adapter is back on


def test_adapter_on_a_bf16_base_stays_fp32_and_reference_is_the_base():
    from rlhf.models.precision import resolve_precision
    prec = resolve_precision("bf16-weights", trainable=False)    # the frozen base may be bf16
    base = prec.cast(archs.build_model("llama"))
    frozen = copy.deepcopy(base)
    lm = apply_lora(base, r=4, alpha=8)
    assert {p.dtype for p in lm.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in lm.parameters() if not p.requires_grad} == {torch.bfloat16}
    with prec.autocast("cpu"):
        _train(lm)
        ids = _ids()
        with reference_context(lm):
            assert torch.equal(_logits(lm, ids), _logits(frozen, ids))


def test_reference_context_needs_an_adapter():
    with pytest.raises(ValueError, match="LoRA"):
        reference_context(archs.build_model("gpt2"))


def test_reward_model_keeps_its_head_trainable_and_reference_backbone():
    rm = RewardModel.from_causal_lm(archs.build_model("llama"))
    original = copy.deepcopy(rm)
    ids = _ids()
    apply_lora(rm, r=4, alpha=8)
    trainable = [n for n, p in rm.named_parameters() if p.requires_grad]
    assert "head.weight" in trainable and "head.bias" in trainable
    assert all(n.startswith("head.") or ".lora_" in n for n in trainable)
    head0 = rm.head.weight.detach().clone()
    _train(rm)
    assert not torch.equal(rm.head.weight, head0)
    mask = torch.ones_like(ids)
    assert not torch.allclose(rm.hidden_states(ids, mask), original.hidden_states(ids, mask))
    with reference_context(rm):
        assert torch.equal(rm.hidden_states(ids, mask), original.hidden_states(ids, mask))


def test_bad_settings_name_the_field():
    with pytest.raises(UserError) as e:
        apply_lora(archs.build_model("gpt2"), r=0, field="sft.lora")
    assert e.value.field == "sft.lora.r"
    with pytest.raises(UserError) as e:
        apply_lora(archs.build_model("gpt2"), r=4, target_modules=["no_such_layer"])
    assert e.value.field == "lora.target_modules"


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_adapter_and_merged_model_round_trip(tmp_path, arch):
    base_dir = archs.save_model(tmp_path, arch)
    lm = apply_lora(load_model(base_dir), r=4, alpha=8)
    assert lm.peft_config["default"].base_model_name_or_path == str(base_dir.resolve())
    _train(lm)
    ids = _ids()
    want = _logits(lm, ids)
    out = save_lora(lm, tmp_path / "adapter", archs.tokenizer(), merged=True)
    assert torch.equal(_logits(lm, ids), want)            # saving left the live model alone
    assert (out["adapter"] / "adapter_model.safetensors").exists()
    assert adapter_info(out["adapter"])["kind"] == "causal_lm"

    adapter = load_model(out["adapter"])      # an adapter folder loads as base + adapter, merged
    assert not is_lora(adapter)
    torch.testing.assert_close(_logits(adapter, ids), want, atol=2e-5, rtol=1e-5)
    assert not torch.allclose(_logits(load_model(base_dir), ids), want, atol=1e-3)

    merged = load_model(out["merged"])
    assert not is_lora(merged) and adapter_info(out["merged"]) is None
    torch.testing.assert_close(_logits(merged, ids), want, atol=2e-5, rtol=1e-5)


def test_reward_adapter_and_merged_round_trip(tmp_path):
    base_dir = archs.save_model(tmp_path, "llama")
    rm = apply_lora(RewardModel.from_causal_lm(base_dir), r=4, alpha=8)
    _train(rm)
    rm.set_reward_bias(0.25)
    ids = _ids()
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = rm(ids, mask)
    out = save_lora(rm, tmp_path / "rm_adapter", archs.tokenizer(), merged=True)
    assert adapter_info(out["adapter"])["kind"] == "reward"
    back = load_reward_model(out["adapter"])
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask), want, atol=1e-5, rtol=1e-5)
        merged = load_reward_model(out["merged"])
        torch.testing.assert_close(merged(ids, mask), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="reward model's LoRA adapter"):
        load_model(out["adapter"])


def test_adapter_without_its_base_is_a_clean_error(tmp_path):
    base_dir = archs.save_model(tmp_path, "gpt2")
    out = save_lora(apply_lora(load_model(base_dir), r=2), tmp_path / "a")["adapter"]
    conf_path = out / "adapter_config.json"
    conf = json.loads(conf_path.read_text())
    conf["base_model_name_or_path"] = str(tmp_path / "gone")
    conf_path.write_text(json.dumps(conf))
    with pytest.raises(UserError) as e:
        load_model(out)
    assert e.value.field == "base_model_name_or_path" and str(tmp_path / "gone") in str(e.value)
    assert e.value.path == str(conf_path)
    conf["base_model_name_or_path"] = None
    conf_path.write_text(json.dumps(conf))
    with pytest.raises(UserError, match="which model it adapts") as e:
        load_model(out)
    assert e.value.field == "base_model_name_or_path"

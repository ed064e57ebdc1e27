"""The memory plan: shapes read from configs, how each component scales with LoRA, sharding and
precision, PPO's phases, the refusal naming what to change, and one estimate against a measured
training step."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

import archs
from rlhf.errors import UserError
from rlhf.models.lora import apply_lora
from rlhf.models.memory import (GiB, MemoryPlan, TensorMemoryTracker, check_fits,
                                estimate_memory, measured_error, model_shape, parse_bytes,
                                ppo_memory, rollout_memory)

#: a Llama-3.2-1B-like config (1.24B parameters); built on the meta device only
LLAMA_1B = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                       tie_word_embeddings=True)


def _tiny(arch: str):
    return archs.config(arch, len(archs.tokenizer()))


# ---------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("arch", archs.ARCHS)
def test_shape_counts_parameters_and_lora_like_the_real_model(arch):
    model = archs.build_model(arch)
    s = model_shape(model.config)
    assert s.n_params == sum(p.numel() for p in model.parameters())
    lora = apply_lora(model, r=4)
    assert s.lora_params(4) == sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert s.layers == 2 and s.vocab == len(archs.tokenizer())


def test_shape_reads_grouped_query_attention_and_tied_embeddings():
    s = model_shape(LLAMA_1B)
    assert s.kv_dim == 8 * 64 and s.intermediate == 8192 and s.lm_head_params == 0
    assert 1.23e9 < s.n_params < 1.25e9
    assert model_shape(_tiny("qwen3")).kv_dim == 2 * 16           # explicit head_dim
    assert model_shape(_tiny("mistral")).lm_head_params > 0       # untied


# ---------------------------------------------------------------------------- scaling

def test_lora_cuts_gradients_and_optimizer_state_to_the_adapter():
    full = estimate_memory(LLAMA_1B, precision="bf16", batch_size=1, seq_len=512)
    lora = estimate_memory(LLAMA_1B, precision="bf16", batch_size=1, seq_len=512, lora_rank=16)
    s = model_shape(LLAMA_1B)
    assert full.optimizer == 8 * s.n_params and full.gradients == 4 * s.n_params
    assert lora.optimizer == 8 * s.lora_params(16) and lora.gradients == 4 * s.lora_params(16)
    assert lora.optimizer < 0.02 * full.optimizer
    assert lora.weights == full.weights + 4 * s.lora_params(16)   # + the fp32 adapter


def test_sharding_divides_the_sharded_parts_only():
    one = estimate_memory(LLAMA_1B, precision="fp32", batch_size=2, seq_len=256,
                          kv_cache_tokens=1000)
    four = estimate_memory(LLAMA_1B, precision="fp32", batch_size=2, seq_len=256,
                           kv_cache_tokens=1000, n_shards=4)
    s = model_shape(LLAMA_1B)
    assert four.optimizer == one.optimizer // 4 and four.gradients == one.gradients // 4
    assert four.weights == one.weights // 4 + 2 * 4 * s.largest_layer_params   # + gathered
    assert (four.activations, four.kv_cache) == (one.activations, one.kv_cache)


def test_precision_halves_frozen_weights_and_bf16_activations():
    kw = dict(batch_size=4, seq_len=256, trainable=False, kv_cache_tokens=512)
    fp32 = estimate_memory(LLAMA_1B, precision="fp32", **kw)
    bf16w = estimate_memory(LLAMA_1B, precision="bf16-weights", **kw)
    assert bf16w.weights * 2 == fp32.weights and bf16w.kv_cache * 2 == fp32.kv_cache
    train32 = estimate_memory(LLAMA_1B, precision="fp32", batch_size=4, seq_len=256)
    train16 = estimate_memory(LLAMA_1B, precision="bf16", batch_size=4, seq_len=256)
    assert train16.weights == train32.weights                    # fp32 master weights
    copies = 2 * model_shape(LLAMA_1B).n_params                   # + autocast's bf16 copies
    assert train16.activations - copies < 0.8 * train32.activations
    with pytest.raises(ValueError, match="frozen"):
        estimate_memory(LLAMA_1B, precision="bf16-weights", trainable=True)
    # ... but a LoRA run's frozen base may be bf16 (the adapter stays fp32)
    lora16 = estimate_memory(LLAMA_1B, precision="bf16-weights", lora_rank=16)
    lora32 = estimate_memory(LLAMA_1B, precision="bf16", lora_rank=16)
    s = model_shape(LLAMA_1B)
    assert lora16.weights == 2 * s.n_params + 4 * s.lora_params(16)
    assert lora16.total < lora32.total
    with pytest.raises(ValueError, match="resolved"):
        estimate_memory(LLAMA_1B, precision="auto")


def test_activations_scale_with_tokens_and_checkpointing_saves_them():
    a = estimate_memory(LLAMA_1B, precision="bf16", batch_size=2, seq_len=512)
    b = estimate_memory(LLAMA_1B, precision="bf16", batch_size=4, seq_len=512)
    copies = 2 * model_shape(LLAMA_1B).n_params                   # autocast's bf16 weights
    assert b.activations - copies == 2 * (a.activations - copies)
    ckpt = estimate_memory(LLAMA_1B, precision="bf16", batch_size=4, seq_len=512,
                           gradient_checkpointing=True)
    logits = 12 * LLAMA_1B.vocab_size * 4 * 512                  # kept: the loss needs them
    keep = estimate_memory(LLAMA_1B, precision="bf16", batch_size=4, seq_len=512, logit_len=128)
    assert b.activations - keep.activations == 12 * LLAMA_1B.vocab_size * 4 * (512 - 128)
    layers = b.activations - copies - logits
    assert b.activations - ckpt.activations > 0.8 * layers


def test_kv_cache_is_layers_x_2_x_kv_width_per_token():
    s = model_shape(LLAMA_1B)
    e = estimate_memory(LLAMA_1B, precision="bf16", trainable=False, kv_cache_tokens=1000)
    assert e.kv_cache == 1000 * s.layers * 2 * s.kv_dim * 2
    r = rollout_memory(LLAMA_1B, precision="fp32", batch_size=8, prompt_length=100,
                       new_tokens=156)
    assert r.kv_cache == 8 * 256 * s.layers * 2 * s.kv_dim * 4 and r.activations > 0


# ---------------------------------------------------------------------------- PPO

def test_ppo_plan_parts_and_phases():
    kw = dict(precision="bf16", micro_batch_size=4, rollout_batch_size=32,
              max_prompt_length=256, max_new_tokens=256)
    full = ppo_memory(LLAMA_1B, **kw)
    names = [p.name for p in full.parts]
    assert names == ["policy", "reference", "reward model", "value model", "rollout"]
    assert set(full.phases) == {"rollout", "scoring", "training"}
    assert full.peak == max(full.phases.values()) and isinstance(full, MemoryPlan)
    lora = ppo_memory(LLAMA_1B, lora_rank=16, **kw)
    assert lora.parts[1].weights == 0 and "adapter disabled" in lora.parts[1].note
    shared = ppo_memory(LLAMA_1B, value_model="shared", **kw)
    assert "value model" not in [p.name for p in shared.parts]
    assert lora.peak < shared.peak < full.peak
    frozen16 = ppo_memory(LLAMA_1B, frozen_precision="bf16-weights", **kw)
    assert frozen16.parts[1].weights * 2 == full.parts[1].weights
    callable_reward = ppo_memory(LLAMA_1B, reward_model=False, **kw)
    assert callable_reward.parts[2].total == 0
    assert callable_reward.peak < full.peak
    big = ppo_memory(LLAMA_1B, **{**kw, "rollout_batch_size": 64})
    assert big.parts[-1].kv_cache == 2 * full.parts[-1].kv_cache
    text = full.table()
    for word in ("weights", "optimizer", "activations", "KV cache", "policy", "peak"):
        assert word in text


# ---------------------------------------------------------------------------- the check

def test_check_fits_passes_a_plan_that_fits():
    e = estimate_memory(LLAMA_1B, precision="bf16", lora_rank=16, batch_size=1, seq_len=256)
    check_fits(e, 80 * GiB)


def test_check_fits_refuses_naming_the_setting_that_makes_it_fit():
    plan = ppo_memory(LLAMA_1B, precision="fp32", micro_batch_size=4, rollout_batch_size=32,
                      max_prompt_length=256, max_new_tokens=256)
    with pytest.raises(UserError) as e:
        check_fits(plan, 40 * GiB, section="ppo")
    assert e.value.field == "ppo.lora.r"                     # LoRA saves the most and fits
    msg = str(e.value)
    assert "per device" in msg and "(fits)" in msg and "ppo.gradient_checkpointing" in msg
    # the recipe's own setting names
    with pytest.raises(UserError) as e:
        check_fits(plan, 40 * GiB, fields={"lora": "ppo.lora_rank"})
    assert e.value.field == "ppo.lora_rank"


def test_check_fits_leaves_out_remedies_without_a_setting():
    plan = ppo_memory(LLAMA_1B, precision="fp32", micro_batch_size=4, rollout_batch_size=32,
                      max_prompt_length=256, max_new_tokens=256)
    with pytest.raises(UserError) as e:
        check_fits(plan, 40 * GiB, fields={"lora": None, "gradient_checkpointing": None})
    assert e.value.field != "ppo.lora.r"
    assert "lora" not in str(e.value) and "gradient_checkpointing" not in str(e.value)


def test_check_fits_on_activations_points_at_the_batch_or_checkpointing():
    e = estimate_memory(LLAMA_1B, precision="bf16", lora_rank=16, batch_size=16, seq_len=2048)
    with pytest.raises(UserError) as err:
        check_fits(e, 24 * GiB, section="sft")
    assert err.value.field in ("sft.gradient_checkpointing", "sft.micro_batch_size")


def test_parse_bytes():
    assert parse_bytes("80GB") == parse_bytes("80 GiB") == 80 * GiB
    assert parse_bytes("512MiB") == 512 << 20 and parse_bytes("1.5g") == int(1.5 * GiB)
    assert parse_bytes(1234) == 1234
    with pytest.raises(UserError) as e:
        parse_bytes("lots", field="ppo.device_memory")
    assert e.value.field == "ppo.device_memory"


# ---------------------------------------------------------------------------- measured

@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_estimate_matches_a_measured_training_step(arch):
    """One micro-batch with accumulated gradients + the AdamW step of a tiny model, measured
    as live tensor bytes: within the module's stated error (benchmarks/memory_plan.py)."""
    conf = archs.config(arch, 512, hidden=64, layers=2)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_config(conf).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(2, 512, (4, 64), generator=torch.Generator().manual_seed(0))

    def micro_batch():
        model(input_ids=ids, labels=ids).loss.backward()

    micro_batch(); opt.step(); opt.zero_grad(); micro_batch()   # noqa: E702
    tracker = TensorMemoryTracker().add(
        [*model.parameters(), *model.buffers(), *(p.grad for p in model.parameters()),
         *(v for s in opt.state.values() for v in s.values())])
    with tracker:
        micro_batch()
        opt.step()
    est = estimate_memory(conf, precision="fp32", batch_size=4, seq_len=64, optimizer="adamw")
    assert abs(measured_error(est.total, tracker.peak)) < 0.1, (est.total, tracker.peak)

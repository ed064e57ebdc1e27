"""The architectures users bring, as tiny random models saved to disk (tests/archs.py): each loads
with rlhf's loader, samples with rlhf's generator (whose log-probs a full forward reproduces,
left padding and all), trains a step, and serves as a reward model backbone."""

from __future__ import annotations

import pytest
import torch

import archs
from rlhf.models.format import encode_prompt
from rlhf.models import load_model, load_tokenizer, position_ids_from_mask
from rlhf.models.reward import RewardModel

from rlhf.models.generation import generate
from rlhf.rl import policy_logits

PROMPTS = ["Repeat: the cat", "Repeat: Anna sees the red bird near the river town",
           "the dog"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    return {arch: archs.save_model(root, arch) for arch in archs.ARCHS}


@pytest.mark.parametrize("arch", archs.ARCHS)
def test_loads_samples_and_reproduces_its_logprobs(saved, arch):
    tok = load_tokenizer(saved[arch])
    model = load_model(saved[arch]).eval()
    assert model.config.model_type == arch
    ids = [encode_prompt(tok, p) for p in PROMPTS]             # different lengths: left padding
    ro = generate(model, tok, ids, max_new_tokens=8, temperature=1.0,
                  generator=torch.Generator().manual_seed(0))
    assert ro.response.shape == (3, ro.response.shape[1]) and 0 < ro.response.shape[1] <= 8
    assert torch.isfinite(ro.logprobs).all() and (ro.logprobs <= 0).all()
    # the training-time forward (whole sequence, positions from the mask) gives the same
    # log-probs the sampler recorded one token at a time with the KV cache
    mask = ro.attention_mask
    with torch.no_grad():
        logits = model(input_ids=ro.input_ids, attention_mask=mask,
                       position_ids=position_ids_from_mask(mask)).logits
    tq = ro.query.shape[1]
    z = policy_logits(logits[:, tq - 1:-1], 1.0, tok.pad_token_id)
    lp = torch.log_softmax(z, -1).gather(-1, ro.response[..., None]).squeeze(-1)
    valid = ro.response_mask.bool()
    torch.testing.assert_close(lp[valid], ro.logprobs[valid], atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", archs.ARCHS)
def test_trains_one_step(saved, arch):
    tok = load_tokenizer(saved[arch])
    model = load_model(saved[arch]).train()
    batch = tok([p + " ok" for p in PROMPTS], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)
    opt.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)                        # every parameter trained
    with torch.no_grad():
        assert model(**batch, labels=labels).loss < loss      # and the step helped


@pytest.mark.parametrize("arch", archs.ARCHS)
def test_serves_as_a_reward_model_backbone(saved, arch, tmp_path):
    tok = load_tokenizer(saved[arch])
    rm = RewardModel.from_causal_lm(saved[arch])
    rm.set_reward_bias(0.5)
    seqs = [encode_prompt(tok, p) for p in PROMPTS]
    n = max(map(len, seqs))
    pad = tok.pad_token_id
    left = torch.tensor([[pad] * (n - len(s)) + s for s in seqs])
    right = torch.tensor([s + [pad] * (n - len(s)) for s in seqs])
    lmask, rmask = (left != pad).long(), (right != pad).long()
    with torch.no_grad():
        scores = rm(left, lmask)
        torch.testing.assert_close(scores, rm(right, rmask), atol=1e-5, rtol=0)
    rm.save_pretrained(tmp_path / "rm", tok)
    with torch.no_grad():
        torch.testing.assert_close(RewardModel.from_pretrained(tmp_path / "rm")(left, lmask),
                                   scores, atol=1e-5, rtol=0)

"""RewardModel: head init, reading position, padding invariance, HF save/load, normalisation."""

import math
import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhf.config import TinyModelConfig
from rlhf.models.format import pad_sequences
from rlhf.models import build_tiny_model, train_tokenizer
from rlhf.models.reward import RewardModel, last_token_index, load_reward_model
from rlhf.models.reward import normalize_reward, score_texts

from rm_helpers import WORDS, tiny_lm, tiny_rm_dir, tiny_tokenizer

@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _batch(seqs, pad_id, side="right"):
    return pad_sequences(seqs, pad_id, side)


SEQS = [[5, 9, 20, 31, 0], [7, 8, 0], [40, 41, 42, 43, 44, 45, 0]]


def test_last_token_index_left_and_right():
    right = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 0, 3]
    assert last_token_index(left).tolist() == [3, 3, 3]


def test_head_init_and_dropout(tok):
    torch.manual_seed(0)
    lm = build_tiny_model(TinyModelConfig(n_layer=1, n_head=2, n_embd=256, dropout=0.3), tok)
    rm = RewardModel.from_causal_lm(lm)
    w = rm.head.weight.detach()
    assert w.shape == (1, 256)
    assert float(w.std()) == pytest.approx(1 / math.sqrt(257), rel=0.15)   # spec 7.6
    assert float(rm.head.bias.detach()) == 0.0 and float(rm.reward_bias) == 0.0
    assert all(m.p == 0.0 for m in rm.modules() if isinstance(m, torch.nn.Dropout))
    assert not hasattr(rm.backbone, "lm_head")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_padding_invariance(tok, arch):
    """Pitfall 8.5: trailing PAD changes nothing; left vs right padding agree (fp32)."""
    rm = RewardModel.from_causal_lm(tiny_lm(tok, arch, n_layer=2)).eval()
    pad = tok.pad_token_id
    with torch.no_grad():
        ids, m = _batch(SEQS, pad, "right")
        right = rm(ids, m)
        # more trailing padding
        ids2 = torch.cat([ids, torch.full((3, 5), pad)], 1)
        m2 = torch.cat([m, torch.zeros(3, 5, dtype=torch.long)], 1)
        assert torch.equal(rm(ids2, m2), right) or torch.allclose(rm(ids2, m2), right, atol=1e-6)
        lids, lm_ = _batch(SEQS, pad, "left")
        left = rm(lids, lm_)
        assert torch.allclose(left, right, atol=1e-4)
        # each sequence alone (no padding) agrees too
        alone = torch.stack([rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0]
                             for s in SEQS])
        assert torch.allclose(alone, right, atol=1e-4)
        # the score is the head output at the last non-pad token; token_values agree there
        tv = rm.token_values(ids, m)
        idx = m.sum(1) - 1
        assert torch.allclose(tv[torch.arange(3), idx], right, atol=1e-6)
        assert torch.isfinite(rm.token_values(lids, lm_)).all()


def test_zeroed_head_scores_zero(tok):
    rm = RewardModel.from_causal_lm(tiny_lm(tok))
    torch.nn.init.zeros_(rm.head.weight)
    ids, m = _batch(SEQS, tok.pad_token_id)
    assert rm(ids, m).abs().max() == 0.0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_save_reload_same_scores_and_plain_transformers(tmp_path, tok, arch):
    rm = RewardModel.from_causal_lm(tiny_lm(tok, arch, n_layer=2))
    with torch.no_grad():
        rm.head.bias.fill_(0.37)
    rm.set_reward_bias(-1.25)
    ids, m = _batch(SEQS, tok.pad_token_id)
    before = rm(ids, m).detach()
    rm.save_pretrained(tmp_path / "rm", tokenizer=tok)
    # saving leaves the in-memory model untouched
    assert torch.equal(rm(ids, m).detach(), before)
    again = RewardModel.from_pretrained(tmp_path / "rm")
    assert torch.allclose(again(ids, m), before, atol=1e-5)
    assert float(again.reward_bias) == pytest.approx(-1.25)
    assert float(again.head.bias.detach()) == pytest.approx(0.37)
    assert torch.allclose(again.token_values(ids, m), rm.token_values(ids, m), atol=1e-5)
    assert (tmp_path / "rm" / "tokenizer.json").exists()
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm")).eval()
    assert hf.config.num_labels == 1 and hf.config.problem_type == "regression"
    assert hf.config.pad_token_id == tok.pad_token_id
    with torch.no_grad():
        plain = hf(input_ids=ids, attention_mask=m).logits.squeeze(-1)
    if arch == "gpt2":       # the bias is folded into ln_f: plain transformers is exact
        assert torch.allclose(plain, before, atol=1e-4)
    else:                    # no bias to fold into: offset recorded in the config
        c = hf.config.rlhf_reward["head_bias"] + hf.config.rlhf_reward["reward_bias"]
        assert torch.allclose(plain + c, before, atol=1e-4)
    # load_reward_model picks the right constructor
    assert torch.allclose(load_reward_model(tmp_path / "rm")(ids, m), before, atol=1e-5)


def test_from_pretrained_rejects_a_causal_lm(tmp_path, tok):
    from rlhf.errors import UserError
    tiny_lm(tok).save_pretrained(str(tmp_path / "lm"))
    with pytest.raises(UserError, match="not a reward model"):
        RewardModel.from_pretrained(tmp_path / "lm")
    rm = load_reward_model(tmp_path / "lm")             # a fresh head on the causal LM
    assert isinstance(rm, RewardModel)


def test_normalisation_mean_zero_and_idempotent(tmp_path, tok):
    """Pitfall 8.6: demonstrations score mean 0 ± 1e-3; calibrating twice changes nothing."""
    rm = RewardModel.from_causal_lm(tiny_lm(tok, n_layer=2))
    with torch.no_grad():
        rm.head.bias.fill_(3.0)
    rng = random.Random(3)
    prompts = [" ".join(rng.choices(WORDS, k=4)) for _ in range(23)]
    demos = [" ".join(rng.choices(WORDS, k=rng.randint(1, 9))) for _ in range(23)]
    info = normalize_reward(rm, tok, prompts, demos, batch_size=5)
    scores = score_texts(rm, tok, prompts, demos, batch_size=7)
    assert abs(sum(scores) / len(scores)) < 1e-3
    bias1 = float(rm.reward_bias)
    assert info["reward_bias"] == pytest.approx(bias1)
    normalize_reward(rm, tok, prompts, demos, batch_size=3)
    assert float(rm.reward_bias) == pytest.approx(bias1, abs=1e-5)
    # survives save/load
    rm.save_pretrained(tmp_path / "rm", tokenizer=tok)
    again = RewardModel.from_pretrained(tmp_path / "rm")
    assert abs(sum(score_texts(again, tok, prompts, demos)) / len(demos)) < 1e-3
    # raw scores leave out the bias
    raw = score_texts(again, tok, prompts, demos, raw=True)
    assert sum(raw) / len(raw) == pytest.approx(-bias1, abs=1e-3)


def test_score_texts_batch_size_and_order_independent(tok):
    rm = RewardModel.from_causal_lm(tiny_lm(tok))
    rng = random.Random(5)
    prompts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) for _ in range(9)]
    resp = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(9)]
    a = score_texts(rm, tok, prompts, resp, batch_size=1)
    b = score_texts(rm, tok, prompts, resp, batch_size=4)
    assert b == pytest.approx(a, abs=1e-4)

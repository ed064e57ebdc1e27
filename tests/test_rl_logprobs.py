"""rlhf.rl.logprobs: temperature-scaled log-probs, entropy, EOS masks (spec 7.10, 7.19, 7.20, 8.10)."""

import math

import pytest
import torch

from rlhf.rl import (
    entropy_from_logits,
    has_eos,
    last_valid_index,
    logprobs_from_logits,
    response_mask_from_eos,
)

LN2, LN3 = math.log(2.0), math.log(3.0)
# probabilities 1/6, 2/6, 3/6 at T = 1
LOGITS = torch.tensor([[[0.0, LN2, LN3], [0.0, LN2, LN3]]])


def ref_logprob(row, idx, temperature):
    """Explicit log(exp(z_i/T) / Σ_j exp(z_j/T))."""
    z = [v / temperature for v in row]
    return z[idx] - math.log(sum(math.exp(v) for v in z))


def test_logprobs_hand_numbers():
    lp = logprobs_from_logits(LOGITS, torch.tensor([[2, 0]]))
    assert torch.allclose(lp, torch.tensor([[math.log(0.5), math.log(1 / 6)]]))


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.5])
def test_temperature_matches_reference_loop_and_log_softmax(temperature):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 5, (2, 3), generator=g)
    lp = logprobs_from_logits(logits, ids, temperature=temperature)
    for b in range(2):
        for t in range(3):
            expected = ref_logprob(logits[b, t].tolist(), ids[b, t].item(), temperature)
            assert lp[b, t].item() == pytest.approx(expected, abs=1e-12)
    # spec 8.10 wording: equals log_softmax(logits / T) gathered at the sampled ids
    direct = torch.log_softmax(logits / temperature, -1).gather(-1, ids[..., None])[..., 0]
    assert torch.allclose(lp, direct)


def test_half_precision_logits_upcast_row_by_row():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, 11, generator=g)
    ids = torch.randint(0, 11, (3, 4), generator=g)
    lp16 = logprobs_from_logits(logits.bfloat16(), ids, temperature=0.7)
    assert lp16.dtype == torch.float32
    expected = logprobs_from_logits(logits.bfloat16().float(), ids, temperature=0.7)
    assert torch.allclose(lp16, expected, atol=1e-6)


def test_logprobs_gradient():
    logits = LOGITS.clone().requires_grad_(True)
    logprobs_from_logits(logits, torch.tensor([[2, 0]])).sum().backward()
    # d log p_y / d z = onehot(y) - p
    expected = [[[-1 / 6, -2 / 6, 1 - 3 / 6], [1 - 1 / 6, -2 / 6, -3 / 6]]]
    assert torch.allclose(logits.grad, torch.tensor(expected))


def test_entropy_hand_numbers_and_temperature():
    h = entropy_from_logits(LOGITS)
    expected = -sum(p * math.log(p) for p in (1 / 6, 2 / 6, 3 / 6))
    assert torch.allclose(h, torch.full((1, 2), expected))
    assert entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))
    # T = 2: p ∝ exp(z/2) = 1, √2, √3
    w = [1.0, math.sqrt(2), math.sqrt(3)]
    p = [v / sum(w) for v in w]
    assert entropy_from_logits(LOGITS, temperature=2.0)[0, 0].item() == pytest.approx(
        -sum(q * math.log(q) for q in p), abs=1e-6)
    assert entropy_from_logits(LOGITS.bfloat16()).dtype == torch.float32


def test_bad_temperature_or_shape():
    with pytest.raises(ValueError):
        logprobs_from_logits(LOGITS, torch.tensor([[0, 0]]), temperature=0.0)
    with pytest.raises(ValueError):
        entropy_from_logits(LOGITS, temperature=-1.0)
    with pytest.raises(ValueError):
        logprobs_from_logits(LOGITS, torch.tensor([[0, 0, 0]]))


EOS, PAD = 2, 0
IDS = torch.tensor([
    [5, 6, 2, 0, 0],   # EOS at 2, then padding
    [5, 2, 7, 2, 9],   # first EOS at 1; later tokens (even another EOS) are invalid
    [5, 6, 7, 8, 9],   # no EOS: truncated, all valid
    [2, 0, 0, 0, 0],   # EOS first
    [5, 6, 0, 0, 0],   # no EOS, right-padded
])


def test_response_mask_from_eos():
    expected = [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    mask = response_mask_from_eos(IDS, EOS, PAD)
    assert mask.dtype == torch.bool and mask.long().tolist() == expected
    # without pad_id, a padded response with no EOS counts its PADs as valid
    assert response_mask_from_eos(IDS, EOS)[4].long().tolist() == [1, 1, 1, 1, 1]
    # PAD == EOS (common for HF tokenizers): the first EOS stays valid
    same = torch.tensor([[5, 2, 2, 2]])
    assert response_mask_from_eos(same, 2, 2).long().tolist() == [[1, 1, 0, 0]]


def test_has_eos():
    assert has_eos(IDS, EOS).tolist() == [True, True, False, True, False]


def test_last_valid_index():
    mask = response_mask_from_eos(IDS, EOS, PAD)
    assert last_valid_index(mask).tolist() == [2, 1, 4, 0, 1]
    assert last_valid_index(torch.tensor([[0, 0, 0], [1, 1, 0]])).tolist() == [-1, 1]

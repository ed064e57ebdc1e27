"""The ranking loss (Eq. 1), hand-checked: spec §8 items 3 and 4."""

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

from rlhf.rl.ranking import (batched_ranking_loss, pair_stats, preference_matrix, ranking_agreement,
                             ranking_pairs)

LOG2 = math.log(2.0)


def pairwise_loss(r_w, r_l):
    """Reference: element-wise −log σ(r_w − r_l), written out."""
    return F.softplus(r_l - r_w)


def grouped_ranking_loss(scores, ranking):
    """Eq. 1 for one prompt through the batched loss the RM trains with (a batch of one)."""
    return batched_ranking_loss(scores.unsqueeze(0), preference_matrix([ranking], scores.shape[-1]))


def ranking_accuracy(scores, pref):
    st = pair_stats(scores, pref)
    return float(st["correct"] / st["n_pairs"].clamp(min=1))


def test_ranking_pairs_strict_and_ties():
    assert ranking_pairs([[1], [0]]) == [(1, 0)]
    assert sorted(ranking_pairs([[2], [0, 3], [1]])) == sorted(
        [(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)])       # (0, 3) is a tie: dropped
    assert ranking_pairs([[0, 1, 2]]) == []               # all tied: no comparison
    for k in range(2, 10):                                # strict order: C(K, 2) pairs
        assert len(ranking_pairs([[i] for i in range(k)])) == math.comb(k, 2)


def test_zero_scores_give_log2_everywhere():
    """Pitfall 8.3: zeroed head -> every pairwise loss is log 2, and so is the grouped loss."""
    zero = torch.tensor(0.0)
    assert float(pairwise_loss(zero, zero)) == pytest.approx(LOG2, abs=1e-7)
    for k in range(2, 10):
        loss = grouped_ranking_loss(torch.zeros(k), [[i] for i in range(k)])
        assert float(loss) == pytest.approx(LOG2, abs=1e-7)
    # batched with padding and ties: still log 2
    pref = preference_matrix([[[0], [1]], [[2], [0, 3], [1]], [[4], [3], [2], [1], [0]]], 5)
    assert float(batched_ranking_loss(torch.zeros(3, 5), pref)) == pytest.approx(LOG2, abs=1e-7)
    st = pair_stats(torch.zeros(3, 5), pref)
    assert float(st["correct"] / st["n_pairs"]) == 0.5     # tied scores count as half right


def test_grouped_loss_is_mean_of_explicit_pairwise_losses():
    g = torch.Generator().manual_seed(0)
    for k in range(2, 10):
        s = torch.randn(k, generator=g) * 2
        order = torch.randperm(k, generator=g).tolist()
        ranking = [[i] for i in order]
        explicit = [-F.logsigmoid(s[order[a]] - s[order[b]])
                    for a, b in itertools.combinations(range(k), 2)]
        expected = torch.stack(explicit).mean()
        assert float(grouped_ranking_loss(s, ranking)) == pytest.approx(float(expected), abs=1e-6)


def test_hand_worked_example():
    # scores r = [1, 0, 3]; ranking 2 > 0 > 1: pairs (2,0) gap 2, (2,1) gap 3, (0,1) gap 1
    s = torch.tensor([1.0, 0.0, 3.0])
    want = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-3)) + math.log1p(math.exp(-1))) / 3
    assert float(grouped_ranking_loss(s, [[2], [0], [1]])) == pytest.approx(want, abs=1e-6)
    # wrong order makes it larger
    assert float(grouped_ranking_loss(s, [[1], [0], [2]])) > want


def test_shuffling_the_k_responses_does_not_change_the_loss():
    g = torch.Generator().manual_seed(1)
    rng = random.Random(0)
    for k in (4, 7, 9):
        s = torch.randn(k, generator=g)
        ranking = [[0, 3], [1], [2]] + [[i] for i in range(4, k)]
        base = float(grouped_ranking_loss(s, ranking))
        for _ in range(5):
            perm = list(range(k))
            rng.shuffle(perm)                       # new position of old response i is perm[i]
            s2 = torch.empty(k)
            s2[perm] = s
            r2 = [[perm[i] for i in grp] for grp in ranking]
            assert float(grouped_ranking_loss(s2, r2)) == pytest.approx(base, abs=1e-6)


def test_ties_contribute_nothing():
    s = torch.tensor([0.3, -1.2, 2.0, 5.0])
    ranking = [[0, 3], [1], [2]]
    pairs = [(0, 1), (0, 2), (3, 1), (3, 2), (1, 2)]       # no (0, 3): tied
    want = torch.stack([-F.logsigmoid(s[w] - s[lo]) for w, lo in pairs]).mean()
    assert float(grouped_ranking_loss(s, ranking)) == pytest.approx(float(want), abs=1e-6)
    assert float(grouped_ranking_loss(torch.tensor([1.0, -4.0, 9.0]), [[0, 1, 2]])) == 0.0
    x = torch.tensor([0.5, -0.5, 0.0], requires_grad=True)
    grouped_ranking_loss(x, [[0, 1], [2]]).backward()
    # only pairs (0,2) and (1,2): d/dx0 depends on x0 − x2 alone, not on x1
    assert float(x.grad[0]) == pytest.approx(-torch.sigmoid(torch.tensor(-0.5)).item() / 2)
    assert float(x.grad[1]) == pytest.approx(-torch.sigmoid(torch.tensor(0.5)).item() / 2)


def test_batched_loss_is_mean_over_prompts_each_weighted_equally():
    g = torch.Generator().manual_seed(2)
    rankings = [[[1], [0]], [[3], [2], [1], [0], [4], [5], [6], [7], [8]], [[0], [1, 2]]]
    ks = [2, 9, 3]
    S = torch.zeros(3, 9)
    per = []
    for b, (r, k) in enumerate(zip(rankings, ks)):
        s = torch.randn(k, generator=g)
        S[b, :k] = s
        S[b, k:] = 100.0 * (b + 1)                  # padding slots must be ignored
        per.append(float(grouped_ranking_loss(s, r)))
    pref = preference_matrix(rankings, 9)
    assert float(batched_ranking_loss(S, pref)) == pytest.approx(sum(per) / 3, abs=1e-6)
    total = float(batched_ranking_loss(S, pref, reduction="sum"))
    assert total == pytest.approx(sum(per), abs=1e-5)
    none = batched_ranking_loss(S, pref, reduction="none")
    assert none.tolist() == pytest.approx(per, abs=1e-6)


def test_padding_slots_get_no_gradient_and_no_nan():
    S = torch.tensor([[2.0, -1.0, 1e4]], requires_grad=True)
    pref = preference_matrix([[[0], [1]]], 3)
    loss = batched_ranking_loss(S, pref)
    loss.backward()
    assert torch.isfinite(loss) and S.grad[0, 2] == 0.0


def test_accuracy_and_log_loss():
    s = torch.tensor([[3.0, 1.0, 1.0, 0.0]])
    pref = preference_matrix([[[0], [1], [2], [3]]], 4)   # 6 pairs; (1,2) tied in score
    st = pair_stats(s, pref)
    assert int(st["n_pairs"]) == 6
    assert float(st["correct"]) == 5.5
    assert ranking_accuracy(s, pref) == pytest.approx(5.5 / 6)
    gaps = [2, 2, 3, 0, 1, 1]
    want = sum(math.log1p(math.exp(-g)) for g in gaps)
    assert float(st["log_loss"]) == pytest.approx(want, abs=1e-5)


def test_large_gaps_are_stable():
    s = torch.tensor([1e4, -1e4])
    assert float(grouped_ranking_loss(s, [[0], [1]])) == 0.0
    assert float(grouped_ranking_loss(s, [[1], [0]])) == pytest.approx(2e4)


def test_pairwise_agreement_ignores_ties():
    # a: 0 > 1 > 2 ; b: 0 > 2 > 1 -> pairs (0,1) agree, (0,2) agree, (1,2) disagree
    assert ranking_agreement([[0], [1], [2]], [[0], [2], [1]]) == (2, 3)
    # ties on one side drop the pair
    assert ranking_agreement([[0], [1, 2]], [[0], [2], [1]]) == (2, 2)
    assert ranking_agreement([[2], [0, 1]], [[0, 1, 2]]) == (0, 0)
    assert ranking_agreement([[1], [0]], [[0], [1]]) == (0, 1)

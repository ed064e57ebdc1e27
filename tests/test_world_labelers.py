"""Simulated labelers: rankings, ties, determinism, demonstrations and agreement rate."""

from __future__ import annotations

import random

import pytest

from rlhf.world import RATING_FLAGS, LabelerPool, World, agreement_rate, measure_agreement
from rlhf.world.samples import policy_samples

SIZES = dict(n_sft=300, n_sft_valid=20, n_rm=200, n_ppo=20, n_test=20)


@pytest.fixture(scope="module")
def world() -> World:
    return World(0, **SIZES)


@pytest.fixture(scope="module")
def pool(world: World) -> LabelerPool:
    return world.labeler_pool()


def test_pool_split_and_ids(pool: LabelerPool):
    assert len(pool.labelers) == 40
    assert len(pool.train_labelers) == 30 and len(pool.heldout_labelers) == 10
    ids = [lab.id for lab in pool.labelers]
    assert len(set(ids)) == 40 and ids[0] == "sim-00"
    assert all(not lab.heldout for lab in pool.train_labelers)
    assert pool.get("sim-35").heldout
    with pytest.raises(ValueError):
        LabelerPool(pool.labelers[0].world, n=4, n_heldout=4)


def test_rank_covers_every_index_with_ties(world: World, pool: LabelerPool):
    rng = random.Random(0)
    lab = pool.train_labelers[0]
    for k, r in zip(range(4, 10), world.prompts("rm")):
        responses = policy_samples(world.universe, r, rng, k)
        groups = lab.rank(r["prompt"], responses)
        assert sorted(i for g in groups for i in g) == list(range(k))
        assert all(g == sorted(g) and g for g in groups)
    r = world.prompts("rm")[0]
    good = world.good_response(r)
    assert lab.rank(r, [good, good, ""]) in ([[0, 1], [2]], [[2], [0, 1]])  # identical: a tie
    assert lab.compare(r, good, good) == 0


def test_labelers_prefer_good_over_bad(world: World, pool: LabelerPool):
    wins = 0
    total = 0
    for r in world.prompts("rm")[:40]:
        good = world.good_response(r)
        for lab in pool.train_labelers[:10]:
            wins += lab.compare(r["prompt"], good, "") == 1
            total += 1
    assert wins / total > 0.9


def test_labelers_are_deterministic_and_differ(world: World, pool: LabelerPool):
    r = world.prompts("rm")[3]
    responses = policy_samples(world.universe, r, random.Random(1), 6)
    again = World(0, **SIZES).labeler_pool()
    for a, b in zip(pool.labelers, again.labelers):
        assert a.traits == b.traits
        assert a.rank(r, responses) == b.rank(r["prompt"], responses)
        assert a.demonstrate(r) == b.demonstrate(r["prompt"])
    perceived = {lab.perceived(r, responses[0]) for lab in pool.labelers}
    assert len(perceived) > 30  # each labeler has its own noise


def test_rate_gives_likert_and_flags(world: World, pool: LabelerPool):
    for r in world.prompts("rm")[:20]:
        rating = pool.labelers[5].rate(r, world.good_response(r))
        assert 1 <= rating["likert"] <= 7 and isinstance(rating["likert"], int)
        assert set(rating["flags"]) == set(RATING_FLAGS)


def test_demonstrations_slip_at_the_set_rate(world: World):
    prompts = world.prompts("sft")
    clean = LabelerPool(world, n=6, n_heldout=1, slip_rate=0.0)
    sloppy = LabelerPool(world, n=6, n_heldout=1, slip_rate=1.0)
    default = world.labeler_pool()

    def mean_score(p: LabelerPool) -> float:
        labs = p.train_labelers
        scores = [world.judge(r, labs[i % len(labs)].demonstrate(r)).score
                  for i, r in enumerate(prompts)]
        return sum(scores) / len(scores)

    clean_score, sloppy_score = mean_score(clean), mean_score(sloppy)
    default_score = mean_score(default)
    assert clean_score >= 0.99
    assert sloppy_score < default_score < clean_score
    assert sloppy_score < 0.85 and default_score > 0.93


def test_training_labelers_agree_like_the_paper(world: World, pool: LabelerPool):
    """Two training labelers agree on 72.6% +- 5 of strict pairwise orders of policy-like samples
    (ties left out)."""
    records = world.prompts("rm")[:150]
    rng = random.Random(7)
    samples = [policy_samples(world.universe, r, rng, 4) for r in records]
    rate = agreement_rate(pool.train_labelers, records, samples)
    assert 0.676 <= rate <= 0.776, rate
    heldout = measure_agreement(pool.heldout_labelers, [r["prompt"] for r in records], samples)
    assert 0.6 <= heldout.rate <= 0.85 and 0.0 < heldout.tie_rate < 0.3
    noisy = LabelerPool(world, noise=0.6)
    assert agreement_rate(noisy.train_labelers[:8], records, samples) < rate


def test_agreement_needs_two_labelers(pool: LabelerPool):
    with pytest.raises(ValueError):
        agreement_rate(pool.labelers[:1], [], [])


def test_small_pools_hold_out_a_quarter(world: World):
    assert len(LabelerPool(world, n=6).heldout_labelers) == 1
    assert len(LabelerPool(world, n=8).heldout_labelers) == 2
    small = World(0, n_sft=10, n_sft_valid=2, n_rm=10, n_ppo=10, n_test=10, n_labelers=6)
    assert len(small.labeler_pool().train_labelers) == 5


# ---------------------------------------------------------------- demonstrators' writing habits
def _habit_world(chatty: float, aside: float) -> World:
    return World(0, **SIZES, chatty_rate=chatty, aside_rate=aside)


def test_habits_off_leave_the_pool_and_its_demonstrations_as_they_were(world: World):
    plain, off = world.labeler_pool(), _habit_world(0.0, 0.0).labeler_pool()
    assert [lab.traits for lab in plain.labelers] == [lab.traits for lab in off.labelers]
    recs = world.prompts("sft")[:100]
    assert [plain.train_labelers[i % 30].demonstrate(r) for i, r in enumerate(recs)] == \
        [off.train_labelers[i % 30].demonstrate(r) for i, r in enumerate(recs)]


def test_habits_change_only_the_habit_traits_and_vary_by_demonstrator(world: World):
    pool = _habit_world(0.3, 0.2).labeler_pool()
    plain = world.labeler_pool()
    for a, b in zip(pool.labelers, plain.labelers):
        assert (a.traits.noise, a.traits.length_bias, a.traits.sloppiness, a.traits.slip_rate) \
            == (b.traits.noise, b.traits.length_bias, b.traits.sloppiness, b.traits.slip_rate)
    chatty = [lab.traits.chatty for lab in pool.labelers]
    assert 0.2 < sum(chatty) / len(chatty) < 0.4 and min(chatty) < 0.1 and max(chatty) > 0.45


def test_habits_appear_at_their_rates_and_the_gold_judge_prefers_plain_answers():
    from rlhf.world.writer import CHATTY_CLOSERS, CHATTY_OPENERS
    w = _habit_world(0.3, 0.2)
    pool, plain_pool = w.labeler_pool(), World(0, **SIZES).labeler_pool()
    n = chatty = asides = 0
    worse = []
    for i, rec in enumerate(w.prompts("sft")):
        if rec["category"] == "harmful":
            continue
        lab, plain_lab = pool.train_labelers[i % 30], plain_pool.train_labelers[i % 30]
        demo, plain = lab.demonstrate(rec), plain_lab.demonstrate(rec)
        n += 1
        has_chat = any(p in demo for p in CHATTY_OPENERS + CHATTY_CLOSERS)
        has_aside = "By the way, " in demo
        chatty += has_chat
        asides += has_aside
        if has_chat or has_aside:
            assert demo != plain
            worse.append(w.judge(rec, plain).score - w.judge(rec, demo).score)
        else:
            assert demo == plain
    assert 0.2 < chatty / n < 0.4 and 0.1 < asides / n < 0.3
    # rankers consistently prefer the plain answer: a clear margin, on average and mostly
    assert sum(worse) / len(worse) > 0.2
    assert sum(d > 0 for d in worse) / len(worse) > 0.9

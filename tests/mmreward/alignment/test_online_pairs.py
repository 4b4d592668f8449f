"""One online round's training data (`mmreward.alignment.online_pairs.round_training_set`): Flow-RWR weights grow
with the reward, Flow-DPO pairs the best sample of a prompt with its worst, failed samples never enter."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmreward.alignment.online_pairs import round_prompts, round_training_set
from mmreward.flow.rollout import seeded
from mmreward.rewards.base import RewardOutput


def scored(values: list[float], failed: list[bool] | None = None) -> RewardOutput:
    failed = failed or [False] * len(values)
    scores = torch.tensor([math.nan if f else v for v, f in zip(values, failed, strict=True)])
    return RewardOutput(
        scores=scores,
        dims={"d": scores * 2},
        failed=torch.tensor(failed),
        errors=["bad" if f else None for f in failed],
    )


def latents(count: int) -> torch.Tensor:
    return torch.arange(count, dtype=torch.float32).view(count, 1, 1, 1)  # row i holds the value i


def test_rwr_weights_are_the_normalised_exponential_of_the_reward():
    out = scored([0.0, 1.0, 2.0, 5.0], failed=[False, False, False, True])
    data, stats = round_training_set(["p", "q"], latents(4), out, group=2, loss_type="rwr", rwr_temperature=0.5)
    assert data.prompts == ["p", "p", "q"] and data.chosen.flatten().tolist() == [0.0, 1.0, 2.0]
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0]) / 0.5, 0) * 3
    torch.testing.assert_close(data.weights, expected)
    assert stats["round/reward_mean"] == pytest.approx(1.0) and stats["round/failed_samples"] == 1.0
    assert stats["round/reward_d"] == pytest.approx(2.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-30, 30), min_size=2, max_size=12, unique=True))
def test_rwr_weights_rank_like_the_rewards(tenths):
    rewards = [t / 10 for t in tenths]
    data, _ = round_training_set(["p"], latents(len(rewards)), scored(rewards), len(rewards), "rwr", 1.0)
    order = sorted(range(len(rewards)), key=rewards.__getitem__)
    weights = data.weights.tolist()
    assert all(weights[a] < weights[b] for a, b in itertools.pairwise(order))  # a higher reward, a larger weight
    assert sum(weights) == pytest.approx(len(rewards), rel=1e-5)


def test_dpo_pairs_best_with_worst_per_prompt_and_skips_unusable_prompts():
    # prompt a: rewards 1, 4, 2 -> best row 1, worst row 0; prompt b: equal -> unusable;
    # prompt c: one scored sample -> unusable; prompt d: best row 9 (failed row 11 ignored), worst row 10.
    out = scored(
        [1, 4, 2, 4, 4, 4, 7, 0, 0, 9, -2, 50],
        failed=[False] * 6 + [False, True, True] + [False, False, True],
    )
    data, stats = round_training_set(["a", "b", "c", "d"], latents(12), out, 3, "sigmoid", 1.0)
    assert data.prompts == ["a", "d"]
    assert data.chosen.flatten().tolist() == [1.0, 9.0] and data.rejected.flatten().tolist() == [0.0, 10.0]
    assert stats["round/unusable_prompts"] == 2.0
    assert stats["round/best_minus_worst"] == pytest.approx(((4 - 1) + (9 + 2)) / 2)


def test_a_round_with_no_usable_prompt_is_empty():
    data, stats = round_training_set(["a"], latents(2), scored([1.0, 1.0]), 2, "sigmoid", 1.0)
    assert len(data) == 0 and data.chosen.shape == (0, 1, 1, 1) and data.rejected.shape == (0, 1, 1, 1)
    assert "round/best_minus_worst" not in stats


def test_a_round_where_every_sample_failed_reports_nan_rewards():
    out = scored([1.0, 2.0], failed=[True, True])
    data, stats = round_training_set(["a"], latents(2), out, 2, "rwr", 1.0)
    assert len(data) == 0 and math.isnan(stats["round/reward_mean"]) and math.isnan(stats["round/reward_d"])
    assert stats["round/failed_samples"] == 2.0


@settings(max_examples=30, deadline=None)
@given(
    count=st.integers(1, 9),
    per_process=st.integers(1, 4),
    world=st.integers(1, 3),
    rounds=st.integers(1, 5),
    seed=st.integers(0, 5),
)
def test_round_prompts_walk_through_seeded_permutations_without_overlap(count, per_process, world, rounds, seed):
    """Concatenated over rounds and then ranks, the prompts drawn are consecutive slices of one stream: each block of
    ``count`` positions is a permutation of the prompt list (every prompt once per epoch), the same for a seed."""
    prompts = [f"p{i}" for i in range(count)]
    stream = [
        p
        for r in range(rounds)
        for rank in range(world)
        for p in round_prompts(prompts, r, per_process, rank, world, seed)
    ]
    assert len(stream) == rounds * world * per_process
    for start in range(0, len(stream) - count + 1, count):
        assert sorted(stream[start : start + count]) == prompts
    assert round_prompts(prompts, rounds, per_process, 0, world, seed) == round_prompts(
        prompts, rounds, per_process, 0, world, seed
    )
    order = torch.randperm(count, generator=seeded(seed, "prompts", 0))
    assert stream[: min(count, len(stream))] == [prompts[int(i)] for i in order][: min(count, len(stream))]

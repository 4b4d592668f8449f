"""Advantages of several rewards: Pref-GRPO's per-reward group normalization, then weighting, then GDPO's batch
standardization (its rewards dispatcher's compute_weighted_advantages), against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmreward.alignment.advantages import (
    AdvantageConfig,
    group_advantages,
    step_advantages,
    weighted_group_advantages,
)
from mmreward.errors import ConfigError

GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])
# Two rewards on very different scales: a win rate in [0, 1] and a CLIP cosine near 0.3.
WIN = torch.tensor([1.0, 0.5, 0.0, 0.0, 0.5, 1.0])
CLIP = torch.tensor([0.30, 0.32, 0.34, 0.31, 0.31, 0.31])


def _group_z(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))  # torch.std: ddof 1
    return [0.0 if v == mean else (v - mean) / (std + 1e-8) for v in values]


def test_each_reward_is_normalized_in_its_group_then_weighted():
    out = weighted_group_advantages(
        {"win_rate": WIN, "clip": CLIP}, {"win_rate": 0.4, "clip": 0.6}, GROUPS, std="group", ddof=1, eps=1e-8, clip=5
    )
    win = _group_z([1.0, 0.5, 0.0]) + _group_z([0.0, 0.5, 1.0])  # [1, 0, -1, -1, 0, 1]
    clip = _group_z([0.30, 0.32, 0.34]) + [0.0, 0.0, 0.0]  # [-1, 0, 1]; group 1's CLIP is constant
    expected = torch.tensor([0.4 * w + 0.6 * c for w, c in zip(win, clip, strict=True)])
    torch.testing.assert_close(out.values, expected, rtol=1e-5, atol=1e-6)
    assert out.keep.all()
    # Normalizing the weighted sum instead (Flow-GRPO's mix) lets the win rate's scale drown CLIP's ordering.
    summed = step_advantages(0.4 * WIN + 0.6 * CLIP, {}, {}, GROUPS, AdvantageConfig(std="group", ddof=1, eps=1e-8))
    assert not torch.allclose(summed.values, expected, atol=1e-2)


def test_gdpo_standardizes_the_weighted_advantages_over_the_step():
    dims, weights = {"win_rate": WIN, "clip": CLIP}, {"win_rate": 0.4, "clip": 0.6}
    plain = weighted_group_advantages(dims, weights, GROUPS, clip=0)
    out = weighted_group_advantages(dims, weights, GROUPS, clip=0, batch_normalize=True)
    a = plain.values
    torch.testing.assert_close(out.values, (a - a.mean()) / (a.std() + 1e-8), rtol=1e-5, atol=1e-6)
    assert out.values.std().item() == pytest.approx(1.0, abs=1e-5)
    clipped = weighted_group_advantages(dims, weights, GROUPS, clip=1.0, batch_normalize=True)
    torch.testing.assert_close(clipped.values, out.values.clamp(-1, 1))


def test_config_selects_the_per_reward_path():
    config = AdvantageConfig(std="group", ddof=1, eps=1e-8, per_reward=True, batch_normalize=True)
    out = step_advantages(
        0.4 * WIN + 0.6 * CLIP, {"win_rate": WIN, "clip": CLIP}, {"win_rate": 0.4, "clip": 0.6}, GROUPS, config
    )
    direct = weighted_group_advantages(
        {"win_rate": WIN, "clip": CLIP}, {"win_rate": 0.4, "clip": 0.6}, GROUPS, batch_normalize=True
    )
    torch.testing.assert_close(out.values, direct.values)


def test_failed_samples_and_constant_groups_are_not_trained():
    win = torch.tensor([1.0, math.nan, 0.0, 0.5, 0.5, 0.5])
    clip = torch.tensor([0.3, 0.3, 0.2, 0.3, 0.3, 0.3])
    out = weighted_group_advantages({"win_rate": win, "clip": clip}, {"win_rate": 0.5, "clip": 0.5}, GROUPS)
    assert out.keep.tolist() == [True, False, True, False, False, False]
    assert out.values[1] == 0 and bool((out.values[3:] == 0).all())
    assert out.values[0] > 0 > out.values[2]
    with pytest.raises(ConfigError, match=r"no per-sample values for \['hpsv2'\]"):
        weighted_group_advantages({"clip": clip}, {"hpsv2": 1.0}, GROUPS)


# ------------------------------------------------------------------------------------ group_advantages (one reward)


def test_group_advantages_defaults_are_flow_grpo():
    """Defaults: global std with ddof 0, eps 1e-4, clip 5. Group 0 = [0, 0, 0, 1], eleven constant groups of 0:
    48 rewards, one of them 1, so the global std is sqrt(1/48 * 47/48) = sqrt(47)/48 = 0.142825; the 1 sits 0.75
    above its group mean, 0.75 / (0.142825 + 1e-4) = 5.2475 > 5: clipped to 5; the zeros get -0.25 / 0.142925."""
    rewards = torch.zeros(48)
    rewards[3] = 1.0
    out = group_advantages(rewards, torch.arange(12).repeat_interleave(4))
    s = math.sqrt(47) / 48 + 1e-4
    assert 0.75 / s == pytest.approx(5.2475, abs=1e-4)
    expected = torch.zeros(48)
    expected[:3] = -0.25 / s
    expected[3] = 5.0
    torch.testing.assert_close(out.values, expected)
    assert out.keep.tolist() == [True] * 4 + [False] * 44
    assert out.stats == pytest.approx(
        {
            "reward/group_spread": 1 / 12,  # 1 in group 0, 0 in the eleven others
            "adv/mean_abs": (3 * 0.25 / s + 5) / 4,
            "adv/max_abs": 5.0,
            "adv/clipped_frac": 0.25,
            "groups/dropped": 11.0,  # the constant groups, counted one by one
            "groups/with_failures": 0.0,
            "samples/trained": 4.0,
            "reward/std_used": math.sqrt(47) / 48,
        }
    )


def test_group_advantages_rejects_an_unknown_std():
    with pytest.raises(ConfigError) as error:
        group_advantages(torch.ones(2), torch.zeros(2), std="batch")  # type: ignore[arg-type]
    assert str(error.value) == "advantage std must be 'global' or 'group', got 'batch'"


def test_all_failed_rewards_give_empty_statistics():
    """No valid reward: the global std is 0 (nothing to measure, not NaN), no group has a spread (NaN), nothing
    is trained, and every group counts as dropped and as having failures."""
    out = group_advantages(torch.full((4,), math.nan), torch.tensor([0, 0, 1, 1]), ddof=1)
    assert out.values.tolist() == [0.0] * 4 and not out.keep.any()
    stats = dict(out.stats)
    assert math.isnan(stats.pop("reward/group_spread"))
    assert stats == {
        "adv/mean_abs": 0.0,
        "adv/max_abs": 0.0,
        "adv/clipped_frac": 0.0,
        "groups/dropped": 2.0,
        "groups/with_failures": 2.0,
        "samples/trained": 0.0,
        "reward/std_used": 0.0,
    }
    assert "reward/std_used" not in group_advantages(torch.ones(2), torch.zeros(2), std="group").stats


def test_group_std_ddof_0_and_groups_of_two():
    """Group std, ddof 0: group [1, 3] has mean 2, std 1, advantages -1/(1+0.5), +1/(1+0.5); group [2, 6]: std 2,
    -2/2.5, 2/2.5; group [4, NaN] has one valid reward (dropped, with a failure); [7, 7] is constant (dropped). The
    spread averages the groups with >= 2 valid rewards: (2 + 4 + 0) / 3."""
    rewards = torch.tensor([1.0, 3, 2, 6, 4, math.nan, 7, 7])
    out = group_advantages(rewards, torch.arange(4).repeat_interleave(2), std="group", ddof=0, eps=0.5, clip=0)
    expected = [-1 / 1.5, 1 / 1.5, -0.8, 0.8, 0, 0, 0, 0]
    torch.testing.assert_close(out.values, torch.tensor(expected))
    assert out.keep.tolist() == [True] * 4 + [False] * 4
    assert out.stats == pytest.approx(
        {
            "reward/group_spread": 2.0,
            "adv/mean_abs": (2 / 1.5 + 1.6) / 4,
            "adv/max_abs": 0.8,
            "adv/clipped_frac": 0.0,  # clip 0: no clipping, nothing counted as clipped
            "groups/dropped": 2.0,
            "groups/with_failures": 1.0,
            "samples/trained": 4.0,
        }
    )


def test_ddof_as_large_as_the_group_uses_no_std():
    """ddof 2 on a group of 2 (or on 2 valid rewards overall): the std is undefined, so the scale is 0 and the
    advantages are the centered rewards over eps: [1, 2] -> -0.5 / 1, +0.5 / 1."""
    rewards, groups = torch.tensor([1.0, 2.0]), torch.zeros(2, dtype=torch.long)
    for std in ("group", "global"):
        out = group_advantages(rewards, groups, std=std, ddof=2, eps=1.0, clip=0)
        assert out.values.tolist() == [-0.5, 0.5]
    assert group_advantages(rewards, groups, ddof=2, eps=1.0).stats["reward/std_used"] == 0.0


def test_clipped_fraction_counts_values_at_the_clip():
    """clip 1 with group std ddof 1, eps 0: [0, 0, 0, 4] -> centered [-1, -1, -1, 3], std sqrt(12/3) = 2, so
    [-0.5, -0.5, -0.5, 1.5] -> 1.5 clipped to 1: one of four at the clip."""
    out = group_advantages(torch.tensor([0.0, 0, 0, 4]), torch.zeros(4), std="group", ddof=1, eps=0.0, clip=1.0)
    assert out.values.tolist() == [-0.5, -0.5, -0.5, 1.0]
    assert out.stats["adv/clipped_frac"] == 0.25 and out.stats["adv/max_abs"] == 1.0


# Hundredths in [-100, 100]: float32 represents their differences well (subnormal gaps such as 1e-45 would not
# survive the mean subtraction, which says nothing about the code).
rewards_lists = st.lists(st.integers(-10_000, 10_000).map(lambda v: v / 100), min_size=2, max_size=8)


@settings(max_examples=40, deadline=None)
@given(rewards_lists, rewards_lists, st.floats(0.1, 50), st.randoms(use_true_random=False))
def test_group_advantage_invariants(first, second, scale, rng):
    """Unclipped group advantages sum to 0 in each group; scaling the rewards by c > 0 leaves them unchanged (eps
    0); permuting a group's rewards permutes its advantages."""
    rewards = torch.tensor(first + second, dtype=torch.float64).float()
    groups = torch.tensor([0] * len(first) + [1] * len(second))
    kwargs = {"std": "group", "ddof": 1, "eps": 0.0, "clip": 0.0, "drop_zero_groups": False}
    out = group_advantages(rewards, groups, **kwargs)
    for g in (0, 1):
        assert float(out.values[groups == g].sum()) == pytest.approx(0.0, abs=1e-3)
    scaled = group_advantages(rewards * scale, groups, **kwargs)
    torch.testing.assert_close(scaled.values, out.values, rtol=1e-3, atol=1e-3)
    order = list(range(len(first)))
    rng.shuffle(order)
    permutation = torch.tensor(order + list(range(len(first), len(rewards))))
    permuted = group_advantages(rewards[permutation], groups, **kwargs)
    torch.testing.assert_close(permuted.values, out.values[permutation])


# ---------------------------------------------------------------------------- weighted_group_advantages (several)


def test_weighted_defaults_clip_at_5_after_the_unclipped_per_reward_values():
    """One outlier 1 among 36 rewards of a group: centered 35/36, ddof-1 std sqrt((35/36) / 35) = 1/6, so its
    z-score is 35/6 = 5.833 and the others' -1/6. Weighted 0.5 without clipping: 35/12 (the per-reward values are
    not clipped before weighting); with the default clip 5: min(35/6, 5) = 5."""
    win = torch.zeros(36)
    win[0] = 1.0
    groups = torch.zeros(36, dtype=torch.long)
    half = weighted_group_advantages({"win": win}, {"win": 0.5}, groups, clip=0)
    assert half.values[0].item() == pytest.approx(35 / 12, rel=1e-5)
    assert half.values[1].item() == pytest.approx(-1 / 12, rel=1e-5)
    full = weighted_group_advantages({"win": win}, {"win": 1.0}, groups)
    assert full.values[0].item() == 5.0 and full.values[1].item() == pytest.approx(-1 / 6, rel=1e-5)
    assert full.stats == pytest.approx(
        {
            "adv/mean_abs": (5 + 35 / 6) / 36,
            "adv/max_abs": 5.0,
            "adv/clipped_frac": 1 / 36,
            "groups/dropped": 0.0,
            "samples/trained": 36.0,
        }
    )


def test_weighted_rejects_missing_weights_and_rewards_with_exact_messages():
    with pytest.raises(ConfigError) as error:
        weighted_group_advantages({"clip": torch.ones(2)}, {}, torch.zeros(2))
    assert str(error.value) == (
        "per-reward advantages need the weight of each reward (an empty weight mapping was given)"
    )
    with pytest.raises(ConfigError) as error:
        weighted_group_advantages({"clip": torch.ones(2)}, {"hpsv2": 1.0, "clip": 1.0}, torch.zeros(2))
    assert str(error.value) == "per-reward advantages: no per-sample values for ['hpsv2']; the reward returns ['clip']"


def test_weighted_drops_every_zero_group_and_only_those():
    """Four groups of two: [3, 3] and [4, 4] are constant (weighted advantages all 0: dropped), [0, 2] and [1, 5]
    give -+1/sqrt(2) with ddof 1 (centered -+d/2 over std d/sqrt(2)), eps 0."""
    r = torch.tensor([3.0, 3, 4, 4, 0, 2, 1, 5])
    groups = torch.arange(4).repeat_interleave(2)
    out = weighted_group_advantages({"r": r}, {"r": 1.0}, groups, eps=0.0)
    h = 1 / math.sqrt(2)
    torch.testing.assert_close(out.values, torch.tensor([0, 0, 0, 0, -h, h, -h, h]))
    assert out.keep.tolist() == [False] * 4 + [True] * 4
    assert out.stats == pytest.approx(
        {"adv/mean_abs": h, "adv/max_abs": h, "adv/clipped_frac": 0.0, "groups/dropped": 2.0, "samples/trained": 4.0}
    )
    kept = weighted_group_advantages({"r": r}, {"r": 1.0}, groups, eps=0.0, drop_zero_groups=False)
    assert kept.keep.all() and kept.stats["groups/dropped"] == 0.0
    # GDPO over the 8 kept samples: mean 0, ddof-1 std sqrt(4 * 0.5 / 7), so +-h -> +-sqrt(7)/2 and zeros stay 0.
    gdpo = weighted_group_advantages(
        {"r": r}, {"r": 1.0}, groups, eps=0.0, drop_zero_groups=False, batch_normalize=True
    )
    s7 = math.sqrt(7) / 2
    torch.testing.assert_close(gdpo.values, torch.tensor([0, 0, 0, 0, -s7, s7, -s7, s7]))


def test_gdpo_uses_ddof_and_adds_eps():
    """Groups [0, 2] and [1, 5], group std ddof 0: -+1 each with eps 0; with eps 1, -+1/(1+1) and -+2/(2+1). GDPO
    with ddof 0 over those four: mean 0, std sqrt((2 * 1/4 + 2 * 4/9) / 4) = 0.6009, plus eps 1 (ddof 1 would give
    a larger std, subtracting eps a negative scale)."""
    r = torch.tensor([0.0, 2, 1, 5])
    groups = torch.tensor([0, 0, 1, 1])
    plain = weighted_group_advantages({"r": r}, {"r": 1.0}, groups, ddof=0, eps=0.0)
    assert plain.values.tolist() == [-1.0, 1.0, -1.0, 1.0]
    out = weighted_group_advantages({"r": r}, {"r": 1.0}, groups, ddof=0, eps=1.0, batch_normalize=True)
    s = math.sqrt((2 / 4 + 8 / 9) / 4) + 1.0
    torch.testing.assert_close(out.values, torch.tensor([-0.5 / s, 0.5 / s, -2 / 3 / s, 2 / 3 / s]))


def test_gdpo_is_skipped_when_the_batch_std_is_undefined():
    """ddof 2 and only 2 trained samples: no std to standardize by, the weighted advantages are used as they are
    ([1, 2] with no group std either: -+0.5 / eps 1)."""
    out = weighted_group_advantages(
        {"r": torch.tensor([1.0, 2.0])}, {"r": 1.0}, torch.zeros(2), ddof=2, eps=1.0, batch_normalize=True
    )
    assert out.values.tolist() == [-0.5, 0.5]


def test_weighted_statistics_when_nothing_is_trained():
    """Every sample failed in some reward, and clip 0: all statistics are 0, both groups dropped."""
    out = weighted_group_advantages(
        {"a": torch.tensor([math.nan, 1, 2, 3]), "b": torch.tensor([1.0, math.nan, math.nan, math.nan])},
        {"a": 1.0, "b": 1.0},
        torch.tensor([0, 0, 1, 1]),
        clip=0,
    )
    assert out.values.tolist() == [0.0] * 4 and not out.keep.any()
    assert out.stats == {
        "adv/mean_abs": 0.0,
        "adv/max_abs": 0.0,
        "adv/clipped_frac": 0.0,
        "groups/dropped": 2.0,
        "samples/trained": 0.0,
    }
    unclipped = weighted_group_advantages({"r": torch.tensor([0.0, 2])}, {"r": 1.0}, torch.zeros(2), clip=0)
    assert unclipped.stats["adv/clipped_frac"] == 0.0  # clip 0 clips nothing (|A| >= 0 is not "clipped")


# ------------------------------------------------------------------------------------------ step_advantages


REWARDS = torch.tensor([1.0, 2, 3, 10, 5, 5, 5, 5, 0, 1, 2, 9])
STEP_GROUPS = torch.arange(3).repeat_interleave(4)


def test_step_advantages_passes_every_setting_to_group_advantages():
    """Every setting differs from group_advantages' defaults, and each changes the result on these rewards."""
    config = AdvantageConfig(std="group", ddof=1, eps=0.5, clip=1.0, drop_zero_groups=False)
    out = step_advantages(REWARDS, {}, {}, STEP_GROUPS, config)
    direct = group_advantages(REWARDS, STEP_GROUPS, std="group", ddof=1, eps=0.5, clip=1.0, drop_zero_groups=False)
    torch.testing.assert_close(out.values, direct.values)
    assert out.keep.all() and out.stats == direct.stats
    default = step_advantages(REWARDS, {}, {}, STEP_GROUPS, AdvantageConfig())
    assert default.keep.tolist() == [True] * 4 + [False] * 4 + [True] * 4  # the constant group is dropped


def test_step_advantages_passes_every_setting_to_the_per_reward_path():
    config = AdvantageConfig(std="global", ddof=0, eps=0.5, clip=1.0, drop_zero_groups=False, per_reward=True)
    dims, weights = {"a": REWARDS, "b": REWARDS.flip(0)}, {"a": 1.0, "b": 0.3}
    out = step_advantages(torch.zeros(12), dims, weights, STEP_GROUPS, config)
    direct = weighted_group_advantages(
        dims, weights, STEP_GROUPS, std="global", ddof=0, eps=0.5, clip=1.0, drop_zero_groups=False
    )
    torch.testing.assert_close(out.values, direct.values)
    assert out.keep.all() and out.stats == direct.stats
    # a (and b, its reverse) has mean 4 and ddof-0 std sqrt(108 / 12) = 3; group 0 of a is [1, 2, 3, 10] - 4, of b
    # [9, 2, 1, 0] - 3. The last sample of groups 0 and 2: (6 - 0.3 * 3) / (3 + 0.5) = 1.457 > 1: 2 of 12 clipped.
    assert out.stats["adv/max_abs"] == 1.0 and out.stats["adv/clipped_frac"] == pytest.approx(2 / 12)
    # per_reward alone (no GDPO), default config (global std, ddof 0, eps 1e-4): the scores are not used. a = [1, 1,
    # 0, 2] has std sqrt(1/2), b = [5, 5, 3, 1] std sqrt(11/4); group 0 is constant in both (dropped), group 1 gives
    # a -+1 / (sqrt(1/2) + eps) and b +-1 / (sqrt(11/4) + eps), weighted 1 and 0.5.
    one = {"a": torch.tensor([1.0, 1, 0, 2]), "b": torch.tensor([5.0, 5, 3, 1])}
    out = step_advantages(
        torch.zeros(4), one, {"a": 1.0, "b": 0.5}, torch.tensor([0, 0, 1, 1]), AdvantageConfig(per_reward=True)
    )
    x = 1 / (math.sqrt(0.5) + 1e-4) - 0.5 / (math.sqrt(11 / 4) + 1e-4)
    assert out.keep.tolist() == [False, False, True, True]
    torch.testing.assert_close(out.values, torch.tensor([0.0, 0.0, -x, x]))


def test_batch_normalize_alone_standardizes_the_weighted_score():
    """GDPO without per_reward: the weighted score is one reward of weight 1. Groups [0, 2] and [1, 5], group std
    ddof 0, eps 1: -+1/2 and -+2/3; over the step: mean 0, std sqrt((2 * 0.25 + 2 * 4/9) / 4) = 0.6009, so
    -+0.5 / 1.6009 and -+(2/3) / 1.6009 (a weight of 2 would double the values before the eps)."""
    config = AdvantageConfig(std="group", ddof=0, eps=1.0, batch_normalize=True)
    out = step_advantages(
        torch.tensor([0.0, 2, 1, 5]), {"other": torch.zeros(4)}, {"other": 1.0}, torch.tensor([0, 0, 1, 1]), config
    )
    s = math.sqrt((2 * 0.25 + 2 * 4 / 9) / 4) + 1.0
    torch.testing.assert_close(out.values, torch.tensor([-0.5 / s, 0.5 / s, -2 / 3 / s, 2 / 3 / s]))


def test_group_advantages_keep_the_digits_of_closely_spaced_rewards():
    """Rewards 1e-3 apart around 0.5 (float32 inputs): the statistics run in float64 as Flow-GRPO's numpy ones, so
    the advantages are the float64 values rounded once to float32 (in float32, r - mean keeps ~3 digits)."""
    rewards = torch.tensor([0.5003, 0.5011, 0.4987, 0.5002, 0.4996, 0.5019, 0.4991, 0.5008])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    r = rewards.double()
    means = torch.stack([r[:4].mean(), r[4:].mean()]).repeat_interleave(4)
    expected = ((r - means) / (r.std(correction=0) + 1e-4)).float()
    out = group_advantages(rewards, groups)
    assert out.values.dtype == torch.float32
    torch.testing.assert_close(out.values, expected, rtol=1e-7, atol=0)

"""Advantages of several rewards: Pref-GRPO's per-reward group normalization, then weighting, then GDPO's batch
standardization (its rewards dispatcher's compute_weighted_advantages), against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mmreward.alignment.advantages import AdvantageConfig, step_advantages, weighted_group_advantages
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

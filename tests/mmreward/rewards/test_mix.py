"""The weighted reward mix used by alignment configs (rewards: {name: weight})."""

from __future__ import annotations

import math

import pytest
import torch

from mmreward.errors import ConfigError
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.mix import RewardMix, parse_reward_spec


def test_weighted_total_and_failed_items(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    mix = RewardMix({"mmreward.rewards.brightness:BrightnessReward": 2.0, "jpeg-compressibility": 0.5})
    images = [torch.full((3, 16, 16), 0.25), torch.full((3, 16, 16), 0.75), bad]
    out = mix.score(["a", "b", "c"], images)
    assert isinstance(out, RewardOutput)  # the reward contract
    brightness = out.dims["mmreward.rewards.brightness:BrightnessReward"]
    jpeg = out.dims["jpeg-compressibility"]
    torch.testing.assert_close(brightness[:2], torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(out.scores[:2], 2.0 * brightness[:2] + 0.5 * jpeg[:2])
    assert out.failed.tolist() == [False, False, True] and math.isnan(out.scores[2])
    assert "broken.png" in out.errors[2] and out.errors[2].startswith("mmreward.rewards.brightness:BrightnessReward: ")


def test_empty_mix_is_refused():
    with pytest.raises(ConfigError, match="reward mix is empty"):
        RewardMix({})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("pickscore", ("pickscore", 1.0)),
        ("hpsv2.1=0.5", ("hpsv2.1", 0.5)),
        ("mmreward.rewards.brightness:BrightnessReward=-2", ("mmreward.rewards.brightness:BrightnessReward", -2.0)),
        ("runs/a=b", ("runs/a=b", 1.0)),  # a path with '=' and no trailing number: all name
        ("runs/a=b=3", ("runs/a=b", 3.0)),
    ],
)
def test_reward_specs_take_only_a_trailing_number_as_weight(spec, expected):
    assert parse_reward_spec(spec) == expected


def test_options_reach_their_reward_only_and_must_name_one_of_the_mix():
    mix = RewardMix(
        {"jpeg-compressibility": 1.0, "jpeg-incompressibility": 1.0},
        {"jpeg-compressibility": {"batch_size": 3}},
        dtype="float32",
    )
    assert mix.models["jpeg-compressibility"].batch_size == 3
    assert mix.models["jpeg-incompressibility"].batch_size == 16  # the preset's own value
    with pytest.raises(ConfigError, match=r"reward options for \['pickscore'\], which the mix does not hold"):
        RewardMix({"jpeg-compressibility": 1.0}, {"pickscore": {"batch_size": 3}})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['thresold'\]"):
        RewardMix({"jpeg-compressibility": 1.0}, {"jpeg-compressibility": {"thresold": 0.3}})

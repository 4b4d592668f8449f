"""Rewards that see the source image of an edit: ``score(prompts, media, sources=)`` on rewards with
``uses_source``; a mix hands sources to those rewards only."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from mmreward.errors import ConfigError
from mmreward.rewards.brightness import BrightnessDeltaReward, BrightnessReward
from mmreward.rewards.mix import RewardMix

DELTA = "mmreward.rewards.brightness:BrightnessDeltaReward"
BRIGHTNESS = "mmreward.rewards.brightness:BrightnessReward"


def _image(value: float, height: int = 4, width: int = 4) -> torch.Tensor:
    return torch.full((3, height, width), value)


def test_brightness_delta_is_edited_minus_source_mean():
    edited = [_image(0.75), torch.cat([_image(0.2)[:2], _image(0.8)[:1]])]  # second: channel means 0.2 0.2 0.8
    sources = [_image(0.25), _image(0.5, 8, 2)]  # sources may have their own sizes
    out = BrightnessDeltaReward().score(["make it brighter", "darker"], edited, sources=sources)
    torch.testing.assert_close(out.scores, torch.tensor([0.5, 0.4 - 0.5]))
    assert not out.failed.any() and BrightnessDeltaReward.raw_range == (-1.0, 1.0)


def test_a_source_reward_needs_sources_and_an_unreadable_source_fails_its_item_alone(tmp_path):
    reward = BrightnessDeltaReward()
    with pytest.raises(ConfigError, match="pass score\\(prompts, media, sources=...\\)"):
        reward.score(["a"], [_image(0.5)])
    with pytest.raises(ValueError, match="got 2 sources for 1 media items"):
        reward.score(["a"], [_image(0.5)], sources=[_image(0.1), _image(0.2)])
    Image.new("RGB", (4, 4), (51, 51, 51)).save(tmp_path / "gray.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = reward.score(
        ["a", "b"], [_image(0.6), _image(0.6)], sources=[str(tmp_path / "gray.png"), str(tmp_path / "broken.png")]
    )
    assert out.scores[0].item() == pytest.approx(0.4) and math.isnan(out.scores[1].item())
    assert out.failed.tolist() == [False, True] and out.errors[1].startswith("source: ")


def test_a_media_only_reward_refuses_sources():
    with pytest.raises(ConfigError, match="takes no sources"):
        BrightnessReward().score(["a"], [_image(0.5)], sources=[_image(0.1)])


def test_a_mix_hands_sources_only_to_the_rewards_that_use_them():
    mix = RewardMix({DELTA: 2.0, BRIGHTNESS: 1.0})
    assert mix.uses_source and not RewardMix({BRIGHTNESS: 1.0}).uses_source
    out = mix.score(["a", "b"], [_image(0.75), _image(0.5)], sources=[_image(0.25), _image(0.5)])
    torch.testing.assert_close(out.dims[DELTA], torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(out.dims[BRIGHTNESS], torch.tensor([0.75, 0.5]))
    torch.testing.assert_close(out.scores, torch.tensor([2 * 0.5 + 0.75, 0.5]))
    with pytest.raises(ConfigError, match="sources="):
        mix.score(["a"], [_image(0.5)])

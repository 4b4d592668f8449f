"""Group rewards: a judge's win rate weighted and combined with pointwise rewards (Pref-GRPO's FLUX recipe,
0.4 x UnifiedReward-Think + 0.6 x CLIP), with each component kept for per-reward advantages."""

from __future__ import annotations

import torch

from mmreward.alignment.group_rewards import WinRateGroupReward
from mmreward.rewards.brightness import BrighterImageJudge
from mmreward.rewards.mix import RewardMix

BRIGHTNESS = "mmreward.rewards.brightness:BrightnessReward"


def _media(levels: list[int]) -> torch.Tensor:
    return torch.stack([torch.full((3, 16, 16), level, dtype=torch.uint8) for level in levels])  # (n, 3, 16, 16)


def test_win_rate_plus_pointwise_mix():
    media, groups = _media([40, 120, 200, 60, 60, 180]), torch.tensor([0, 0, 0, 1, 1, 1])
    prompts = ["a"] * 6
    judge = BrighterImageJudge(sharpness=1000.0)
    alone = WinRateGroupReward(judge).score(prompts, media, groups=groups)
    combined = WinRateGroupReward(judge, weight=0.4, mix=RewardMix({BRIGHTNESS: 0.6}))
    out = combined.score(prompts, media, groups=groups)
    brightness = torch.tensor([40, 120, 200, 60, 60, 180]) / 255
    # A decisive judge: the darkest of a group wins no comparison, the brightest all; equal images tie at 0.5.
    torch.testing.assert_close(alone.scores, torch.tensor([0.0, 0.5, 1.0, 0.25, 0.25, 1.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.scores, 0.4 * alone.scores + 0.6 * brightness, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.dims["win_rate"], alone.scores)
    torch.testing.assert_close(out.dims[BRIGHTNESS], brightness, atol=1e-5, rtol=1e-5)
    assert combined.weights == {"win_rate": 0.4, BRIGHTNESS: 0.6} and combined.dims == ("win_rate", BRIGHTNESS)
    assert not out.failed.any()

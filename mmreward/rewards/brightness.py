"""Brightness rewards: transparent, weight-free targets for CPU demos, the tiny configs and learning tests.

"Brighter is better" is decidable from the pixels, so a loop that optimizes these must visibly brighten its
samples; the pairwise judge adds the judge contract (both presentation orders, position bias) on top.
"""

from __future__ import annotations

from typing import Any

import torch

from mmreward.rewards.base import RewardModel
from mmreward.rewards.framewise import DifferentiableImageReward
from mmreward.rewards.vlm.judging import Judgment, PairwiseJudgeBase


class BrightnessReward(RewardModel):
    """Mean pixel value of an image or video, in [0, 1]: a transparent reward for learning tests and CPU demos
    ("brighter is better"). Load it like any reward:
    ``load_reward("mmreward.rewards.brightness:BrightnessReward")``."""

    raw_range = (0.0, 1.0)

    def score_prepared(self, prompts: list[str], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return torch.stack([x.float().mean() for x in inputs]).cpu(), {}


class DifferentiableBrightnessReward(DifferentiableImageReward):
    """:class:`BrightnessReward` with ``score_pixels``: the mean pixel value as a torch expression, so gradients
    reach the pixels (a transparent target for gradient-guidance tests and demos; videos: mean over frames)."""

    raw_range = (0.0, 1.0)
    uses_prompt = False

    def preprocess_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def forward_pixels(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().mean(dim=(1, 2, 3))


class BrighterImageJudge(PairwiseJudgeBase):
    """A rule-based pairwise judge that prefers the brighter image or video, for learning tests and CPU demos.

    It is a real pairwise judge (:class:`~mmreward.rewards.vlm.judging.PairwiseJudgeBase`): ``compare``,
    ``judge_pairs``, win rates through ``score(groups=...)`` / :func:`mmreward.win_rate`, both presentation orders,
    per-item failures for unreadable media. Only the VLM is replaced by a rule: shown ``first`` then ``second``,
    it answers ``P(first better) = sigmoid(sharpness * (brightness_first - brightness_second) + position_bias)``
    (brightness = mean pixel value in [0, 1]), like a logit read-out. ``position_bias > 0`` favours whatever is
    shown first, as real judges do; judging both orders cancels it. Load it like any reward:
    ``load_reward("mmreward.rewards.brightness:BrighterImageJudge", sharpness=50.0)``.
    """

    raw_range = (0.0, 1.0)

    def __init__(self, *, sharpness: float = 50.0, position_bias: float = 0.0, **kwargs: Any) -> None:
        kwargs.setdefault("max_pixels", None)
        super().__init__(**kwargs)
        # The template is what a VLM would be shown; the rule does not read it, but the judge contract has one.
        self._setup_judge("unifiedreward-pairwise", None, "repeat", None, images_per_prompt=2)
        self.sharpness = sharpness
        self.position_bias = position_bias

    @property
    def has_tie(self) -> bool:
        return False

    def prepare_candidate(self, kind: str, frames: torch.Tensor) -> float:
        return float(frames.float().mean())

    def run_judgments(self, prompts, candidates, requests) -> list[Judgment]:
        judgments = []
        for request in requests:
            gap = candidates[request.first].data - candidates[request.second].data
            p_first = float(torch.sigmoid(torch.tensor(self.sharpness * gap + self.position_bias)))
            judgments.append(Judgment(probs=(p_first, 1.0 - p_first, 0.0)))
        return judgments

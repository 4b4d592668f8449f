"""Brightness rewards: transparent, weight-free targets for CPU demos, the tiny configs and learning tests.

"Brighter is better" is decidable from the pixels, so a loop that optimizes these must visibly brighten its
samples; the pairwise judge adds the judge contract (both presentation orders, position bias) on top.
"""

from __future__ import annotations

from typing import Any

import torch

from mmreward.rewards.base import RewardModel
from mmreward.rewards.framewise import DifferentiableImageReward
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.pairwise import PairwiseJudge


class BrightnessReward(RewardModel):
    """Mean pixel value of an image or video, in [0, 1]: a transparent reward for learning tests and CPU demos
    ("brighter is better"). Load it like any reward:
    ``load_reward("mmreward.rewards.brightness:BrightnessReward")``."""

    raw_range = (0.0, 1.0)

    def score_prepared(self, prompts: list[str], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return torch.stack([x.float().mean() for x in inputs]).cpu(), {}


class BrightnessDeltaReward(RewardModel):
    """An editing reward: mean pixel value of the edited image (or video) minus that of its source image, in
    [-1, 1], a transparent target for editing learning tests and demos ("make it brighter"). It needs the source:
    ``score(prompts, media, sources=...)``; load it with
    ``load_reward("mmreward.rewards.brightness:BrightnessDeltaReward")``."""

    raw_range = (-1.0, 1.0)
    uses_prompt = False
    uses_source = True

    def score_prepared(self, prompts: list[str], inputs: list[tuple[torch.Tensor, torch.Tensor]]):
        return torch.stack([edited.float().mean() - source.float().mean() for edited, source in inputs]).cpu(), {}


class DifferentiableBrightnessReward(DifferentiableImageReward):
    """:class:`BrightnessReward` with ``score_pixels``: the mean pixel value as a torch expression, so gradients
    reach the pixels (a transparent target for gradient-guidance tests and demos; videos: mean over frames)."""

    raw_range = (0.0, 1.0)
    uses_prompt = False

    def preprocess_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def forward_pixels(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().mean(dim=(1, 2, 3))


class BrightnessRule(JudgeBackend):
    """A rule in place of a VLM, the backend of :class:`BrighterImageJudge`: shown ``first`` then ``second``, it
    answers ``P(first better) = sigmoid(sharpness * (brightness_first - brightness_second) + position_bias)``
    (brightness = mean pixel value in [0, 1]), like a logit read-out."""

    reads_logits = True
    weights_id = "brightness rule"

    def __init__(self, sharpness: float, position_bias: float) -> None:
        self.sharpness = sharpness
        self.position_bias = position_bias

    def prepare(self, frames: torch.Tensor) -> float:
        return float(frames.float().mean())

    def check_verdicts(self, phrases) -> None:
        """Any verdict sentences do: the rule answers in probabilities, not words."""

    def read_verdicts(self, candidates, prompts, phrases, *, batch_size: int) -> list[tuple[float, float, float]]:
        verdicts = []
        for prompt in prompts:
            gap = candidates[prompt.media["media_a"]] - candidates[prompt.media["media_b"]]
            p_first = float(torch.sigmoid(torch.tensor(self.sharpness * gap + self.position_bias)))
            verdicts.append((p_first, 1.0 - p_first, 0.0))
        return verdicts

    def generate(self, candidates, prompts, *, max_new_tokens: int, temperature: float, batch_size: int):
        # Written verdicts: the more likely sentence of the pairwise template.
        verdicts = self.read_verdicts(candidates, prompts, [], batch_size=batch_size)
        return [Completion(f"Image {1 if p[0] >= p[1] else 2} is better") for p in verdicts]


class BrighterImageJudge(PairwiseJudge):
    """A rule-based pairwise judge that prefers the brighter image or video, for learning tests and CPU demos.

    It is a real pairwise judge (:class:`~mmreward.rewards.vlm.pairwise.PairwiseJudge`): ``compare``,
    ``judge_pairs``, win rates through ``score(groups=...)`` / :func:`mmreward.win_rate`, both presentation orders,
    per-item failures for unreadable media. Only the VLM is replaced by a rule (:class:`BrightnessRule`).
    ``position_bias > 0`` favours whatever is shown first, as real judges do; judging both orders cancels it.
    Load it like any reward: ``load_reward("mmreward.rewards.brightness:BrighterImageJudge", sharpness=50.0)``.
    """

    raw_range = (0.0, 1.0)

    def __init__(self, *, sharpness: float = 50.0, position_bias: float = 0.0, **kwargs: Any) -> None:
        kwargs.setdefault("max_pixels", None)
        # The template is what a VLM would be shown; the rule does not read it, but the judge contract has one.
        super().__init__(
            BrightnessRule(sharpness, position_bias),
            template="unifiedreward-pairwise",
            mode="logits",
            if_short="repeat",
            **kwargs,
        )

    @property
    def has_tie(self) -> bool:
        return False

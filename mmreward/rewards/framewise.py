"""Image rewards, and how they score videos: frame by frame, then a declared aggregation.

:class:`FramewiseReward` is the base of every reward defined on single images. A video item is sampled to at
most ``video_num_frames`` frames (uniformly; or by ``video_fps``), every frame is scored as an image with the
item's prompt, and the frame scores are combined by ``video_aggregation`` (``mean`` by default, as CLIP-score
style video metrics do).

:class:`DifferentiableImageReward` adds :meth:`~DifferentiableImageReward.score_pixels`: preprocessing
(resize, crop, normalize) done in torch so gradients reach the pixels, for inference-time guidance and
reward-gradient fine-tuning.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch

from mmreward import media as media_io
from mmreward.errors import ConfigError
from mmreward.rewards.base import RewardModel

Aggregation = Literal["mean", "min", "max", "median"]
_AGGREGATIONS = ("mean", "min", "max", "median")


def aggregate_frames(frame_scores: torch.Tensor, owners: torch.Tensor, size: int, how: Aggregation) -> torch.Tensor:
    """Combine per-frame scores ``(N,)`` into per-item scores ``(size,)``; ``owners[n]`` is frame n's item."""
    if how == "mean":
        total = torch.zeros(size, dtype=frame_scores.dtype, device=frame_scores.device)
        count = torch.zeros(size, dtype=frame_scores.dtype, device=frame_scores.device)
        total = total.index_add(0, owners, frame_scores)
        count = count.index_add(0, owners, torch.ones_like(frame_scores))
        return total / count
    # min / max / median: items have few frames, so a loop over items is clear and cheap.
    reduce = {"min": torch.min, "max": torch.max, "median": torch.median}[how]
    return torch.stack([reduce(frame_scores[owners == i]) for i in range(size)])


class FramewiseReward(RewardModel):
    """A reward defined on images; videos are scored frame by frame and aggregated.

    Subclasses implement :meth:`prepare_images` (``(N, 3, H, W)`` canonical frames -> ``(N, ...)`` model inputs)
    and :meth:`score_images` (prompts and a list of prepared frames -> ``(N,)`` scores).
    """

    media_kinds = frozenset({"image", "video"})
    # A prepared image has this many dims (e.g. (3, S, S)); a prepared video one more (its frames).
    prepared_image_ndim = 3

    def __init__(self, *, video_aggregation: Aggregation = "mean", **kwargs) -> None:
        super().__init__(**kwargs)
        if video_aggregation not in _AGGREGATIONS:
            raise ConfigError(f"video_aggregation must be one of {_AGGREGATIONS}, got {video_aggregation!r}")
        self.video_aggregation = video_aggregation

    @abstractmethod
    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Canonical frames ``(N, 3, H, W)`` -> prepared frames ``(N, ...)`` (CPU, no model)."""

    @abstractmethod
    def score_images(self, prompts: list[str], frames: list[torch.Tensor]) -> torch.Tensor:
        """Scores ``(N,)`` for prepared frames, one prompt per frame."""

    def prepare(self, media: torch.Tensor) -> torch.Tensor:
        if media.ndim == 4:  # video (T, 3, H, W): the sampled frames, each prepared as an image
            if self.video_num_frames is not None:
                media = media_io.select_frames(media, self.video_num_frames)
            return self.prepare_images(media)
        return self.prepare_images(media.unsqueeze(0))[0]

    def score_prepared(self, prompts: list[str], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        frames: list[torch.Tensor] = []
        owners: list[int] = []
        for i, item in enumerate(inputs):
            if item.ndim == self.prepared_image_ndim:
                frames.append(item)
                owners.append(i)
            else:
                frames.extend(item.unbind(0))
                owners.extend([i] * item.shape[0])
        frame_prompts = [prompts[i] for i in owners]
        frame_scores = torch.cat(
            [
                self.score_images(frame_prompts[s : s + self.batch_size], frames[s : s + self.batch_size]).float()
                for s in range(0, len(frames), self.batch_size)
            ]
        )
        owner_index = torch.tensor(owners, device=frame_scores.device)
        return aggregate_frames(frame_scores, owner_index, len(inputs), self.video_aggregation).cpu(), {}


class DifferentiableImageReward(FramewiseReward):
    """An image reward whose preprocessing runs in torch, so ``score_pixels`` is differentiable."""

    differentiable = True

    @abstractmethod
    def preprocess_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Differentiable preprocessing: ``(N, 3, H, W)`` in [0, 1] -> model input ``(N, 3, S, S)``."""

    @abstractmethod
    def forward_pixels(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` for preprocessed inputs ``(N, 3, S, S)`` on the model's device, with autograd."""

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.preprocess_pixels(images)

    def score_images(self, prompts: list[str], frames: list[torch.Tensor]) -> torch.Tensor:
        inputs = torch.stack(frames).to(self.device, self.dtype, non_blocking=True)
        return self.forward_pixels(prompts, inputs)

    def score_pixels(self, prompts: Sequence[str], pixels: torch.Tensor) -> torch.Tensor:
        """Differentiable scores ``(B,)`` for pixels ``(B, 3, H, W)`` or videos ``(B, T, 3, H, W)`` in [0, 1].

        Gradients flow back to ``pixels`` (resize, crop and normalization are torch ops). Video frames are
        all scored and aggregated with ``video_aggregation``.
        """
        if not isinstance(pixels, torch.Tensor) or pixels.ndim not in (4, 5) or pixels.shape[-3] != 3:
            shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise ValueError(f"score_pixels takes a float tensor (B, 3, H, W) or (B, T, 3, H, W); got {shape}")
        prompts = list(prompts)
        if len(prompts) != pixels.shape[0]:
            raise ValueError(f"got {len(prompts)} prompts for a batch of {pixels.shape[0]}")
        size = pixels.shape[0]
        if pixels.ndim == 5:
            frames_per_item = pixels.shape[1]
            pixels = pixels.flatten(0, 1)  # (B, T, 3, H, W) -> (B*T, 3, H, W)
            prompts = [p for p in prompts for _ in range(frames_per_item)]
            owners = torch.arange(size, device=self.device).repeat_interleave(frames_per_item)
        else:
            owners = torch.arange(size, device=self.device)
        inputs = self.preprocess_pixels(pixels.to(self.device, torch.float32)).to(self.dtype)
        scores = self.forward_pixels(prompts, inputs).float()
        return aggregate_frames(scores, owners, size, self.video_aggregation)

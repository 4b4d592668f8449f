"""Within-prompt diversity: the mean pairwise feature distance between the samples a generator draws for one prompt.

Alignment that over-optimises a reward collapses the samples of a prompt onto one image (mode collapse); the
figure falls towards 0 as it happens, and it is 0 exactly when a prompt's samples are identical. For a prompt with
samples ``x_1 .. x_n`` (n >= 2) and a feature map ``f``::

    diversity(prompt) = mean over pairs i < j of || f(x_i) - f(x_j) ||_2        (n (n - 1) / 2 pairs)

and a run's figure is the mean over its prompts. Two feature maps:

- :func:`pixel_features` (the default of ``eval/gen_bench.py`` and of the GRPO loop's evaluation): 32 x 32
  thumbnails (antialiased; videos: 4 frames spread over the clip) scaled so that the distance is the RMS pixel
  difference, in [0, 1] (black vs white = 1). No weights, identical on every machine and in every run, and
  independent of which rewards a run loads, so base and aligned runs are always comparable. It sees layout and
  colour, which is what collapsed samples lose first; it is blind to semantics.
- :class:`ImageEmbeddingFeatures`: unit-norm image embeddings of a CLIP-family reward (open_clip ``clip-score``,
  ``hpsv2``; transformers ``pickscore``), for semantic diversity; distances between unit vectors are
  ``sqrt(2 (1 - cos))``, in [0, 2]. Needs that reward's weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mmreward.errors import ConfigError

Features = Callable[[torch.Tensor], torch.Tensor]


def _as_float(media: torch.Tensor) -> torch.Tensor:
    return media.float() / 255 if media.dtype == torch.uint8 else media.float()


def pixel_features(media: torch.Tensor, size: int = 32, frames: int = 4) -> torch.Tensor:
    """``(n, D)`` features whose Euclidean distance is the RMS difference of ``size x size`` thumbnails.

    ``media``: images ``(n, 3, H, W)`` or videos ``(n, T, 3, H, W)``, float in [0, 1] or uint8; videos use ``frames``
    frames spread evenly over the clip.
    """
    x = _as_float(media)
    if x.ndim == 5:  # (n, T, 3, H, W): a few frames spread over the clip
        pick = torch.linspace(0, x.shape[1] - 1, min(frames, x.shape[1])).round().long()
        x = x[:, pick.to(x.device)].flatten(0, 1)  # (n * f, 3, H, W)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"pixel_features takes (n, 3, H, W) images or (n, T, 3, H, W) videos, got {tuple(x.shape)}")
    thumbs = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    flat = thumbs.reshape(media.shape[0], -1)  # (n, f * 3 * size * size)
    return flat / math.sqrt(flat.shape[1])


class ImageEmbeddingFeatures:
    """``(n, D)`` unit-norm image embeddings of a CLIP-family reward; videos average their frames' embeddings.

    Works with rewards that preprocess pixels in torch (``preprocess_pixels``) and expose an image encoder: open_clip
    (``model.encode_image``) or transformers CLIP (``model.get_image_features``).
    """

    def __init__(self, reward: Any) -> None:
        model = getattr(reward, "model", None)
        if not hasattr(reward, "preprocess_pixels") or not (
            hasattr(model, "encode_image") or hasattr(model, "get_image_features")
        ):
            raise ConfigError(
                f"{type(reward).__name__} has no CLIP image encoder to take diversity features from; use 'pixels' or "
                "a CLIP-family reward (clip-score, hpsv2, hpsv2.1, pickscore)"
            )
        self.reward = reward

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        model = self.reward.model
        if hasattr(model, "encode_image"):
            return model.encode_image(pixels)
        out = model.get_image_features(pixel_values=pixels)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def __call__(self, media: torch.Tensor) -> torch.Tensor:
        x = _as_float(media)
        frames = x.shape[1] if x.ndim == 5 else 1
        images = x.flatten(0, 1) if x.ndim == 5 else x  # (n * T, 3, H, W)
        reward = self.reward
        embeds = []
        for start in range(0, images.shape[0], reward.batch_size):
            chunk = images[start : start + reward.batch_size].to(reward.device, torch.float32)
            pixels = reward.preprocess_pixels(chunk).to(reward.dtype)
            embeds.append(F.normalize(self._encode(pixels).float(), dim=-1).cpu())
        per_frame = torch.cat(embeds).view(media.shape[0], frames, -1)  # (n, T, D)
        return F.normalize(per_frame.mean(dim=1), dim=-1)


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean Euclidean distance over the ``n (n - 1) / 2`` pairs of rows of ``features (n, D)``; NaN for n < 2."""
    if features.ndim != 2:
        raise ValueError(f"features must be (n, D), got {tuple(features.shape)}")
    if features.shape[0] < 2:
        return math.nan
    return float(torch.pdist(features.double()).mean())


def per_group_diversity(features: torch.Tensor, groups: Sequence[Hashable] | torch.Tensor) -> dict[Hashable, float]:
    """Group label -> mean pairwise distance between the group's rows (NaN for a group of one)."""
    labels = groups.tolist() if isinstance(groups, torch.Tensor) else list(groups)
    if len(labels) != features.shape[0]:
        raise ValueError(f"got {len(labels)} group labels for {features.shape[0]} feature rows")
    rows: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        rows.setdefault(label, []).append(i)
    return {label: mean_pairwise_distance(features[index]) for label, index in rows.items()}


def within_group_diversity(features: torch.Tensor, groups: Sequence[Hashable] | torch.Tensor) -> float:
    """Mean over groups (prompts) with at least two samples of their mean pairwise distance; NaN if there are none."""
    values = [v for v in per_group_diversity(features, groups).values() if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan

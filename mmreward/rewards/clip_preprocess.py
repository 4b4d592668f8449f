"""CLIP image preprocessing in torch: differentiable, and the same numbers on the CPU and the GPU.

The released CLIP-family scorers preprocess with PIL/torchvision: bicubic resize (shortest side to S, then a
centre crop; or, for HPSv2, longest side to S, then zero padding to a square), then per-channel normalization.
These functions do the same on float tensors. Sizes follow torchvision's rules (shortest side: the long side
is ``int(S * long / short)``; centre crop offset ``int(round((H - S) / 2))``) so that crops line up with the
reference pipelines; bicubic uses antialiasing like PIL and the result is clamped to [0, 1] as PIL's 8-bit
output is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

ResizeMode = Literal["shortest", "longest"]

# OpenAI CLIP statistics, used by every checkpoint mmreward ships presets for.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if images.shape[-2:] == (height, width):
        return images
    resized = F.interpolate(images, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return resized.clamp(0.0, 1.0)


def resize_shortest_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, 3, size, size)``: shortest side to ``size``, then a centre crop."""
    height, width = images.shape[-2:]
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    images = _resize(images, new_h, new_w)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def resize_longest_pad(images: torch.Tensor, size: int, fill: float = 0.0) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, 3, size, size)``: longest side to ``size``, then centred padding with ``fill``.

    Matches open_clip's ``ResizeMaxSize`` (used by HPSv2): padding is added before normalization, so padded
    pixels are black (``fill=0``) in pixel space.
    """
    height, width = images.shape[-2:]
    scale = size / max(height, width)
    new_h, new_w = round(height * scale), round(width * scale)
    images = _resize(images, new_h, new_w)
    pad_h, pad_w = size - new_h, size - new_w
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - mean_t) / std_t


def clip_preprocess(
    images: torch.Tensor,
    *,
    size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    resize_mode: ResizeMode = "shortest",
) -> torch.Tensor:
    """Full CLIP preprocessing of ``(N, 3, H, W)`` float pixels in [0, 1] -> normalized ``(N, 3, size, size)``."""
    if resize_mode == "shortest":
        images = resize_shortest_center_crop(images, size)
    elif resize_mode == "longest":
        images = resize_longest_pad(images, size)
    else:
        raise ValueError(f"resize_mode must be 'shortest' or 'longest', got {resize_mode!r}")
    return normalize(images, mean, std)

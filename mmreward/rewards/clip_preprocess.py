"""CLIP image preprocessing, in two interchangeable ways: differentiable torch, or 8-bit PIL as the authors do.

The released CLIP-family scorers preprocess with PIL/torchvision: bicubic resize (shortest side to S, then a
centre crop; or, for HPSv2, longest side to S, then zero padding to a square), then per-channel normalization.
Every CLIP reward here (``clip-score``, ``clip-h14``, ``pickscore``, ``hpsv2``/``hpsv2.1``, ``laion-aesthetic``)
takes ``resize: pil | torch`` to choose how :meth:`~mmreward.rewards.base.RewardModel.score` resizes:

- ``pil`` (:func:`clip_preprocess_pil`) reproduces the reference pipelines exactly: the image is rounded to 8 bits
  (``round(255 * x)``, which gives back a decoded PNG/JPEG's own bytes), resized with PIL's bicubic filter, cropped
  or padded, then turned into floats (``/ 255``) and normalized. Not differentiable.
- ``torch`` (:func:`clip_preprocess`) does the same on float tensors, so gradients reach the pixels: bicubic with
  antialiasing like PIL, clamped to [0, 1] as PIL's 8-bit output is. It stays within PIL's 8-bit rounding of the
  reference (up to a few /255 per pixel, which moves tiny random models' cosines by up to 5e-4 on full photos).
  :meth:`~mmreward.rewards.framewise.DifferentiableImageReward.score_pixels` always takes this path, whatever
  ``resize`` says.

Sizes follow torchvision's rules in both (shortest side: the long side is ``int(S * long / short)``), so crops line
up with the reference pipelines. The centre-crop offset differs between the references: torchvision's
``CenterCrop`` uses ``int(round((H - S) / 2))`` (``crop_rounding="round"``; OpenAI CLIP, open_clip), transformers'
``CLIPImageProcessor`` ``(H - S) // 2`` (``"floor"``; PickScore, the LAION aesthetic predictor as DDPO runs it).
They differ by one pixel when ``H - S`` is 3 mod 4.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mmreward.errors import ConfigError
from mmreward.media import to_uint8_array
from mmreward.rewards.framewise import DifferentiableImageReward

ResizeMode = Literal["shortest", "longest"]
ResizeBackend = Literal["pil", "torch"]
CropRounding = Literal["round", "floor"]
RESIZE_BACKENDS = ("pil", "torch")

# OpenAI CLIP statistics, used by every checkpoint mmreward ships presets for.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if images.shape[-2:] == (height, width):
        return images
    resized = F.interpolate(images, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return resized.clamp(0.0, 1.0)


def check_resize(resize: str) -> str:
    """``resize`` if it names a backend, else a :class:`ConfigError` naming the choices."""
    if resize not in RESIZE_BACKENDS:
        raise ConfigError(
            f"resize must be 'pil' (the reference's 8-bit PIL resize, as the authors score) or 'torch' "
            f"(differentiable float resize), got {resize!r}"
        )
    return resize


def _shortest_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)``: the shortest side becomes ``size``, the other ``int(size * long / short)``."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def _longest_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """open_clip's ``ResizeMaxSize``: the longest side becomes ``size``, the other rounded."""
    scale = size / max(height, width)
    return round(height * scale), round(width * scale)


def _crop_offset(excess: int, rounding: CropRounding) -> int:
    if rounding == "round":
        return int(round(excess / 2.0))
    if rounding == "floor":
        return excess // 2
    raise ValueError(f"crop_rounding must be 'round' (torchvision) or 'floor' (transformers), got {rounding!r}")


def resize_shortest_center_crop(
    images: torch.Tensor, size: int, crop_rounding: CropRounding = "round"
) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, 3, size, size)``: shortest side to ``size``, then a centre crop."""
    new_h, new_w = _shortest_side_size(*images.shape[-2:], size)
    images = _resize(images, new_h, new_w)
    top, left = _crop_offset(new_h - size, crop_rounding), _crop_offset(new_w - size, crop_rounding)
    return images[..., top : top + size, left : left + size]


def resize_longest_pad(images: torch.Tensor, size: int, fill: float = 0.0) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, 3, size, size)``: longest side to ``size``, then centred padding with ``fill``.

    Matches open_clip's ``ResizeMaxSize`` (used by HPSv2): padding is added before normalization, so padded
    pixels are black (``fill=0``) in pixel space.
    """
    new_h, new_w = _longest_side_size(*images.shape[-2:], size)
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
    crop_rounding: CropRounding = "round",
) -> torch.Tensor:
    """Differentiable CLIP preprocessing of ``(N, 3, H, W)`` float pixels in [0, 1] -> normalized
    ``(N, 3, size, size)``."""
    if resize_mode == "shortest":
        images = resize_shortest_center_crop(images, size, crop_rounding)
    elif resize_mode == "longest":
        images = resize_longest_pad(images, size)
    else:
        raise ValueError(f"resize_mode must be 'shortest' or 'longest', got {resize_mode!r}")
    return normalize(images, mean, std)


def clip_preprocess_pil(
    images: torch.Tensor,
    *,
    size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    resize_mode: ResizeMode = "shortest",
    crop_rounding: CropRounding = "round",
) -> torch.Tensor:
    """The references' preprocessing of ``(N, 3, H, W)`` float pixels in [0, 1] -> normalized ``(N, 3, size, size)``.

    Each image is rounded to 8 bits and resized with PIL's bicubic filter (what torchvision's ``Resize`` and
    transformers' ``CLIPImageProcessor`` do to a PIL image), centre-cropped or zero-padded, then scaled by 1/255
    (``ToTensor``) and normalized. Runs on the CPU; not differentiable.
    """
    from PIL import Image

    if resize_mode not in ("shortest", "longest"):
        raise ValueError(f"resize_mode must be 'shortest' or 'longest', got {resize_mode!r}")
    height, width = images.shape[-2:]
    if resize_mode == "shortest":
        new_h, new_w = _shortest_side_size(height, width, size)
    else:
        new_h, new_w = _longest_side_size(height, width, size)
    out = np.zeros((images.shape[0], size, size, 3), dtype=np.uint8)  # padding stays black
    for i, pixels in enumerate(to_uint8_array(images)):  # (H, W, 3) uint8 each
        resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.Resampling.BICUBIC))
        if resize_mode == "shortest":
            top, left = _crop_offset(new_h - size, crop_rounding), _crop_offset(new_w - size, crop_rounding)
            out[i] = resized[top : top + size, left : left + size]
        else:
            top, left = (size - new_h) // 2, (size - new_w) // 2
            out[i, top : top + new_h, left : left + new_w] = resized
    pixels = torch.from_numpy(out).permute(0, 3, 1, 2).float().div(255)  # (N, S, S, 3) -> (N, 3, S, S)
    return normalize(pixels.to(images.device), mean, std)


class ClipImageReward(DifferentiableImageReward):
    """A CLIP-family image reward: ``score()`` resizes as ``resize`` says, ``score_pixels`` always in torch.

    Subclasses set ``image_size``, ``mean`` and ``std`` (from the checkpoint's preprocessing config) and, where their
    reference differs from the defaults, ``resize_mode`` and ``crop_rounding``.
    """

    resize_mode: ResizeMode = "shortest"
    crop_rounding: CropRounding = "round"

    def __init__(self, *, resize: ResizeBackend, **kwargs) -> None:
        self.resize = check_resize(resize)
        super().__init__(**kwargs)

    def preprocess_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return clip_preprocess(
            pixels,
            size=self.image_size,
            mean=self.mean,
            std=self.std,
            resize_mode=self.resize_mode,
            crop_rounding=self.crop_rounding,
        )

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        if self.resize == "torch":
            return self.preprocess_pixels(images)
        return clip_preprocess_pil(
            images,
            size=self.image_size,
            mean=self.mean,
            std=self.std,
            resize_mode=self.resize_mode,
            crop_rounding=self.crop_rounding,
        )

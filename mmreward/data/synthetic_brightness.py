"""Synthetic preference data where the brighter item wins: random smooth textures for smoke tests, CPU demos and
learning tests of the training programs (Flow-DPO's ``data.source: synthetic``, the latent reward's).

Textures are uniform noise on a coarse grid, upsampled bilinearly to the media size, so they look like smooth
colour fields; only brightness separates the two sides of a pair, so brightness is the only thing a preference
between them teaches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Prompts of synthetic items, used in turn (item i gets PROMPTS[i % len(PROMPTS)]).
PROMPTS = ["a cat", "a red car", "a mountain lake", "a city street at night", "a bowl of fruit", "a forest"]


def smooth_texture(noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Coarse noise ``(T, 3, h, w)`` upsampled bilinearly to ``(T, 3, height, width)``."""
    return F.interpolate(noise, size=(height, width), mode="bilinear")


def bright_and_dark(coarse: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same smooth texture of ``coarse`` noise ``(T, 3, h, w)`` twice: brighter (``0.45 + 0.5 t``, mean ~0.7)
    and darker (``0.05 + 0.5 t``, mean ~0.3), each ``(T, 3, height, width)``."""
    texture = smooth_texture(coarse, height, width)
    return 0.45 + 0.5 * texture, 0.05 + 0.5 * texture


def graded_texture(generator: torch.Generator, frames: int, height: int, width: int, brighter: bool) -> torch.Tensor:
    """One side of a pair drawn from ``generator`` (seed it per pair, so both sides share the draws): a texture of
    coarse and fine detail with a random contrast, at a random brightness ``low`` or ``low + gap`` (the brighter
    side; the gap is at least 0.1). Returns ``(frames, 3, height, width)`` in [0, 1]."""
    coarse = smooth_texture(torch.rand(frames, 3, 4, 4, generator=generator), height, width)  # (T, 3, H, W)
    fine = smooth_texture(torch.rand(frames, 3, 16, 16, generator=generator), height, width)
    contrast = 0.2 + 0.4 * torch.rand(1, generator=generator)
    low = 0.15 + 0.45 * float(torch.rand(1, generator=generator))
    gap = 0.1 + 0.2 * float(torch.rand(1, generator=generator))
    level = low + gap if brighter else low
    return (level + contrast * (0.7 * coarse + 0.3 * fine - 0.5)).clamp(0, 1)

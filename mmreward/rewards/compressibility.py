"""JPEG (in)compressibility rewards from DDPO (Black et al. 2023, "Training Diffusion Models with Reinforcement
Learning", arXiv 2305.13301, section 6.1).

Each image is encoded as a JPEG at quality 95 and its size in kilobytes (1 kB = 1000 bytes) is the signal:
``jpeg-compressibility`` is ``-size_kB`` (smaller files score higher), ``jpeg-incompressibility`` is
``+size_kB``. Sizes grow with resolution, so compare images of one size (DDPO used 512 x 512, where sizes are
roughly 10-200 kB). No weights, no prompt; not differentiable.
"""

from __future__ import annotations

import io

import torch
from PIL import Image

from mmreward.media import to_uint8_array
from mmreward.rewards.framewise import FramewiseReward

JPEG_QUALITY = 95


def jpeg_size_kb(image: torch.Tensor, quality: int = JPEG_QUALITY) -> float:
    """Size in kB of a ``(3, H, W)`` image (float in [0, 1] or uint8) encoded as JPEG at ``quality``."""
    array = image.movedim(0, -1).numpy() if image.dtype == torch.uint8 else to_uint8_array(image)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.tell() / 1000.0


class JpegCompressibility(FramewiseReward):
    """``-size_kB`` of the JPEG encoding at quality 95: compressible (simple, smooth) images score higher."""

    raw_range = (-200.0, 0.0)
    uses_prompt = False
    # A 1 kB size gap gives P(A > B) = sigmoid(0.1), about 0.52: sizes are not calibrated preferences.
    pairwise_scale = 0.1
    sign = -1.0

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        # (N, 3, H, W) float -> (N, 3, H, W) uint8: the encoder works on 8-bit pixels, and uint8 is 4x cheaper to
        # pass from loader workers.
        return images.clamp(0, 1).mul(255).round().to(torch.uint8)

    def score_images(self, prompts: list[str], frames: list[torch.Tensor]) -> torch.Tensor:
        return torch.tensor([self.sign * jpeg_size_kb(frame) for frame in frames])


class JpegIncompressibility(JpegCompressibility):
    """``+size_kB`` of the JPEG encoding at quality 95: detailed, high-entropy images score higher."""

    raw_range = (0.0, 200.0)
    sign = 1.0

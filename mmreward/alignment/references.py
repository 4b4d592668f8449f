"""Reference images of Adv-GRPO (arXiv 2511.20256): found in a folder or manifest, loaded once at the generator's
size (so samples and references then go through exactly the same preprocessing), drawn per discriminator step,
and a weight-free measure of how close samples come to their look."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mmreward import media as media_io
from mmreward.errors import ConfigError, MediaError
from mmreward.rewards.clip_preprocess import resize_shortest_center_crop


def find_reference_files(path: str | Path) -> list[Path]:
    """The image files of a reference folder (recursively, sorted), or of a text manifest (one path per line,
    relative to the manifest). Raises :class:`ConfigError` when there are none."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in media_io.IMAGE_EXTENSIONS)
        where = f"folder {str(path)!r}"
    elif path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        files = [(path.parent / line) for line in lines if line and not line.startswith("#")]
        where = f"manifest {str(path)!r}"
    else:
        raise ConfigError(f"references.path {str(path)!r} does not exist; give a folder of images or a manifest")
    if not files:
        extensions = ", ".join(sorted(media_io.IMAGE_EXTENSIONS))
        raise ConfigError(f"the reference {where} holds no images ({extensions}); Adv-GRPO needs reference images")
    return files


def load_references(files: Sequence[Path], height: int, width: int, max_failed: float = 0.0) -> torch.Tensor:
    """``(R, 3, height, width)`` uint8 reference images: each file read with :func:`mmreward.media.load_image`,
    resized (shortest side) and centre-cropped to the generator's size.

    Unreadable files are skipped and named in the error when more than ``max_failed`` of them (a fraction) fail
    or none is left."""
    images, errors = [], []
    for file in files:
        try:
            image = media_io.load_image(file)
        except MediaError as err:
            errors.append(str(err))
            continue
        side = max(height, width)
        square = resize_shortest_center_crop(image[None], side)  # (1, 3, side, side)
        resized = F.interpolate(square, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        images.append((resized[0].clamp(0, 1) * 255).round().to(torch.uint8))
    if not images or len(errors) > max_failed * len(files):
        shown = "; ".join(errors[:3]) + (f"; ... ({len(errors)} in all)" if len(errors) > 3 else "")
        raise ConfigError(f"{len(errors)} of {len(files)} reference images could not be read: {shown}")
    return torch.stack(images)


def draw(count: int, total: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` indices into ``total`` items: a random permutation, repeated when ``count > total``."""
    rounds = math.ceil(count / total)
    return torch.cat([torch.randperm(total, generator=generator) for _ in range(rounds)])[:count]


def mean_color_distance(media: torch.Tensor, references: torch.Tensor) -> float:
    """RMS distance (in [0, 1] pixel units) between each sample's mean RGB colour and the mean RGB colour of the
    reference set, averaged over samples: a weight-free check that samples move towards the references' look."""
    sample_colors = media.float().mean(dim=(-2, -1)) / 255  # (n, 3)
    reference_color = references.float().mean(dim=(0, 2, 3)) / 255  # (3,)
    return float((sample_colors - reference_color).pow(2).mean(dim=-1).sqrt().mean())

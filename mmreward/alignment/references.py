"""Reference images of Adv-GRPO (arXiv 2511.20256): found in a folder or manifest, or keyed by prompt as the
reference code keys them, loaded once at the generator's size (so samples and references then go through exactly
the same preprocessing), drawn per discriminator step, and a weight-free measure of how close samples come to their
look."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
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
        # utf-8-sig: editors on Windows save UTF-8 with a byte-order mark, which is no part of the first path.
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
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
    images, _ = _load_readable(files, height, width, max_failed)
    return images


def _load_readable(
    files: Sequence[Path], height: int, width: int, max_failed: float
) -> tuple[torch.Tensor, list[int]]:
    """The readable files' images ``(R, 3, height, width)`` uint8 and their positions in ``files``."""
    images, kept, errors = [], [], []
    for position, file in enumerate(files):
        try:
            image = media_io.load_image(file)
        except MediaError as err:
            errors.append(str(err))
            continue
        side = max(height, width)
        square = resize_shortest_center_crop(image[None], side)  # (1, 3, side, side)
        resized = F.interpolate(square, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        images.append((resized[0].clamp(0, 1) * 255).round().to(torch.uint8))
        kept.append(position)
    if not images or len(errors) > max_failed * len(files):
        shown = "; ".join(errors[:3]) + (f"; ... ({len(errors)} in all)" if len(errors) > 3 else "")
        raise ConfigError(f"{len(errors)} of {len(files)} reference images could not be read: {shown}")
    return torch.stack(images), kept


def read_prompt_references(path: str | Path, root: str | Path | None = None) -> dict[str, list[Path]]:
    """The reference files of each prompt from a JSON object ``{prompt: [file, ...]}`` (a single file name may
    stand for a list): the layout of Adv-GRPO's ``json_path`` (``prompt2img_*.json``), whose file names are
    relative to ``root`` (its ``reference_image_path``; here the JSON's folder by default)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"references.path {str(path)!r} does not exist; give a JSON file {{prompt: [image, ...]}}")
    try:
        table = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"references.path {str(path)!r} is not UTF-8 JSON ({err})") from None
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"references.path {str(path)!r} must hold a non-empty JSON object {{prompt: [image, ...]}}")
    base = Path(root).expanduser() if root else path.parent
    references: dict[str, list[Path]] = {}
    for prompt, names in table.items():
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(
                f"references.path {str(path)!r}: the entry of prompt {prompt!r} must be a file name or a non-empty "
                f"list of file names, not {names!r}"
            )
        references[prompt] = [base / name for name in names]
    return references


@dataclass(frozen=True)
class ReferenceSet:
    """The reference images ``(R, 3, H, W)`` uint8 and, when they are keyed by prompt, each prompt's image
    indices: a step then draws the references of its own prompts, as Adv-GRPO's code draws a prompt's references
    for the samples of that prompt."""

    images: torch.Tensor
    by_prompt: dict[str, list[int]] | None = None

    @classmethod
    def from_path(
        cls, path: str | Path, height: int, width: int, *, root: str | Path | None = None, max_failed: float = 0.0
    ) -> ReferenceSet:
        """A folder or a manifest of paths (unkeyed), or a ``.json`` file ``{prompt: [image, ...]}`` (keyed)."""
        if Path(path).suffix.lower() != ".json":
            return cls(load_references(find_reference_files(path), height, width, max_failed))
        table = read_prompt_references(path, root)
        files = [file for names in table.values() for file in names]
        owners = [prompt for prompt, names in table.items() for _ in names]
        images, kept = _load_readable(files, height, width, max_failed)
        by_prompt: dict[str, list[int]] = {}
        for index, position in enumerate(kept):
            by_prompt.setdefault(owners[position], []).append(index)
        lost = [prompt for prompt in table if prompt not in by_prompt]
        if lost:
            raise ConfigError(f"every reference image of {len(lost)} prompt(s) is unreadable (first: {lost[0]!r})")
        return cls(images, by_prompt)

    def check_prompts(self, prompts: Sequence[str], source: str) -> None:
        """Keyed references must cover every training prompt (Adv-GRPO's code stops at the first one missing)."""
        if self.by_prompt is None:
            return
        missing = [prompt for prompt in dict.fromkeys(prompts) if prompt not in self.by_prompt]
        if missing:
            raise ConfigError(
                f"{len(missing)} of the prompts in {source} have no reference images (first: {missing[0]!r}); add "
                "them to the references JSON or drop those prompts"
            )

    def draw(self, count: int, prompts: Sequence[str], generator: torch.Generator) -> torch.Tensor:
        """References for one scoring or training step of samples with ``prompts`` (sample order).

        Unkeyed: ``count`` random images. Keyed: ``max(count, len(prompts))`` images, image ``j`` one of the
        references of ``prompts[j % len(prompts)]`` (uniformly), so reference ``j`` and sample ``j`` share a
        prompt wherever the discriminators pair them (:func:`~mmreward.alignment.adversarial.score_rollout`, the
        PickScore loss)."""
        if self.by_prompt is None:
            return self.images[draw(count, len(self.images), generator)]
        slots = max(count, len(prompts))
        picks = []
        for j in range(slots):
            own = self.by_prompt[prompts[j % len(prompts)]]
            picks.append(own[int(torch.randint(len(own), (1,), generator=generator))])
        return self.images[torch.tensor(picks)]


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

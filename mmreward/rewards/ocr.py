"""OCR reward for text rendering, as Flow-GRPO defines it (Liu et al. 2025, "Flow-GRPO", arXiv 2505.05470;
yifan123/flow_grpo, ``flow_grpo/ocr.py``, ``OcrScorer``).

The target is the prompt's text between its first two double quotes (``prompt.split('"')[1]``). An OCR model reads
the image; both strings lose their spaces (``' '`` only) and are lower-cased. Then

    d = 0                                   if the target occurs in the read text
    d = min(Levenshtein(read, target), n)   otherwise, n = len(target)
    reward = 1 - d / n                      in [0, 1]

so reading extra text around the target costs nothing, and any reading at least ``n`` edits away scores 0. The
Levenshtein distance has unit costs for insertion, deletion and substitution (python-Levenshtein's ``distance``).

Flow-GRPO reads with PaddleOCR (a text detector, then a recognizer per detected line; lines are concatenated, those
of confidence 0 dropped). :class:`OcrReward` reads with an OCR model that transformers runs from a hub id, by default
TrOCR (Li et al. 2021, arXiv 2109.10282; ``microsoft/trocr-base-printed``), an image-to-text transformer trained on
printed text lines: it reads the whole image as one line, with no detector, so its rewards differ from Flow-GRPO's
numbers (the string part, :func:`ocr_text_reward`, is the reference's exactly).
"""

from __future__ import annotations

import torch

from mmreward.errors import ConfigError
from mmreward.hub import resolve_dir
from mmreward.media import to_uint8_array
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.framewise import FramewiseReward


def quoted_text(prompt: str) -> str:
    """The text after the prompt's first double quote, up to the next one (``prompt.split('"')[1]``).

    Raises:
        ValueError: the prompt has no double quote.
    """
    parts = prompt.split('"')
    if len(parts) < 2:
        raise ValueError(f'prompt {prompt!r} has no text in double quotes ("...") for the OCR reward to look for')
    return parts[1]


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit costs (insert, delete, substitute), by the two-row dynamic programme."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))  # distances from a[:0] to every prefix of b
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def ocr_text_reward(target: str, recognized: str) -> float:
    """Flow-GRPO's OCR reward of the ``recognized`` text for the quoted ``target`` (see the module docstring).

    Raises:
        ValueError: the target is empty once its spaces are removed (the reference divides by its length).
    """
    target = target.replace(" ", "").lower()
    recognized = recognized.replace(" ", "").lower()
    if not target:
        raise ValueError("the quoted text is empty once spaces are removed; the OCR reward needs text to look for")
    distance = 0 if target in recognized else min(levenshtein(recognized, target), len(target))
    return 1.0 - distance / len(target)


class OcrReward(FramewiseReward):
    """1 - normalized edit distance between the prompt's quoted text and what an OCR model reads in the image.

    Prompts without a quoted text (or with only spaces between the quotes) fail individually (NaN and a reason).

    Args:
        weights: hub id or local directory of a transformers ``VisionEncoderDecoderModel`` OCR checkpoint with its
            processor (``microsoft/trocr-base-printed``; ``microsoft/trocr-large-printed`` reads better, slower).
        max_new_tokens: the longest reading generated per image.
    """

    raw_range = (0.0, 1.0)

    def __init__(self, weights: str = "microsoft/trocr-base-printed", max_new_tokens: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        from transformers import AutoProcessor, VisionEncoderDecoderModel

        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        hint = "load_reward('ocr', weights='/path/to/trocr-base-printed')"
        directory = resolve_dir(weights, what="OCR model", hint=hint)
        self.processor = AutoProcessor.from_pretrained(directory)
        self.model = VisionEncoderDecoderModel.from_pretrained(directory)
        self.model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.max_new_tokens = max_new_tokens
        self.weights_id = weights

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        # The processor's own PIL path on the 8-bit image, as the model was trained.
        arrays = list(to_uint8_array(images))  # (N, H, W, 3) uint8
        return self.processor(images=arrays, return_tensors="pt").pixel_values  # (N, 3, S, S)

    def read(self, frames: list[torch.Tensor]) -> list[str]:
        """The text the OCR model reads in each prepared frame (greedy decoding)."""
        pixels = torch.stack(frames).to(self.device, self.dtype)
        ids = self.model.generate(
            pixel_values=pixels, max_new_tokens=self.max_new_tokens, num_beams=1, do_sample=False
        )
        return self.processor.batch_decode(ids, skip_special_tokens=True)

    def score_images(self, prompts: list[str], frames: list[torch.Tensor]) -> torch.Tensor:
        readings = self.read(frames)
        return torch.tensor([ocr_text_reward(quoted_text(p), r) for p, r in zip(prompts, readings, strict=True)])

    def score_prepared_batch(self, prompts: list[str], prepared: list, errors: list[str | None]) -> RewardOutput:
        errors = list(errors)
        for i, prompt in enumerate(prompts):
            if errors[i] is None:
                errors[i] = _target_error(prompt)
        return super().score_prepared_batch(prompts, prepared, errors)


def _target_error(prompt: str) -> str | None:
    try:
        ocr_text_reward(quoted_text(prompt), "")
    except ValueError as err:
        return str(err)
    return None

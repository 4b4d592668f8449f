"""The reward contract: ``RewardModel.score`` -> ``RewardOutput``, ``compare`` -> ``PairwiseOutput``.

Every reward in mmreward, local or remote, pointwise or pairwise, is used through these two calls
(ARCHITECTURE.md, "The reward contract"). Media in any accepted form are converted once, by
:mod:`mmreward.media`; items that cannot be read are recorded as failed with their reason and the rest of the
batch is still scored. A failed item's score is NaN, never a silent 0.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from mmreward import media as media_io
from mmreward.devices import resolve_dtype
from mmreward.errors import ConfigError, MediaError

Orders = Literal["both", "ab", "random"]


@dataclass
class RewardOutput:
    """Scores for a batch of ``B`` items.

    Attributes:
        scores: ``(B,)`` float32, NaN where the item failed.
        dims: per-dimension ``(B,)`` scores, e.g. ``{"VQ": ..., "MQ": ..., "TA": ...}``; ``{}`` for single-score
            models.
        failed: ``(B,)`` bool; True for unreadable media or an unparseable judge answer.
        errors: the reason for each failed item, None for the others.
        rationales: the judge's text for generative and chain-of-thought judges, else None.
    """

    scores: torch.Tensor
    dims: dict[str, torch.Tensor] = field(default_factory=dict)
    failed: torch.Tensor | None = None
    errors: list[str | None] | None = None
    rationales: list[str | None] | None = None

    def __post_init__(self) -> None:
        size = self.scores.shape[0]
        if self.failed is None:
            self.failed = torch.isnan(self.scores)
        if self.errors is None:
            self.errors = [None] * size

    def __len__(self) -> int:
        return self.scores.shape[0]


@dataclass
class PairwiseOutput:
    """Verdicts for ``B`` pairs (A, B).

    Attributes:
        prob_a: ``(B,)`` P(A better than B), averaged over presentation orders; NaN where failed.
        tie: ``(B,)`` P(tie) where the judge can say tie, else zeros.
        consistent: ``(B,)`` bool, the presentation orders agree (always True for pointwise models).
        failed: ``(B,)`` bool.
        errors: the reason for each failed pair, None for the others.
        rationales: the judge's text per pair where it writes one, else None.
        dims: per-dimension ``(B,)`` preferences where the judge scores dimensions (chain-of-thought judges): 1 if
            A scored higher on that dimension, 0 if lower, 0.5 if equal, averaged over presentation orders; NaN
            where the dimension was not scored.
    """

    prob_a: torch.Tensor
    tie: torch.Tensor
    consistent: torch.Tensor
    failed: torch.Tensor
    errors: list[str | None]
    rationales: list[str | None] | None = None
    dims: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.prob_a.shape[0]


def check_batch(prompts: Sequence[str] | str, media: Any) -> tuple[list[str], list[Any]]:
    """Split ``media`` into items and check there is exactly one prompt per item."""
    items = media_io.as_items(media)
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if len(prompt_list) != len(items):
        raise ValueError(
            f"got {len(prompt_list)} prompts for {len(items)} media items; pass one prompt per item "
            "(repeat the prompt for a group of samples of the same prompt)"
        )
    for i, prompt in enumerate(prompt_list):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {i} is a {type(prompt).__name__}, not a str")
    return prompt_list, items


class RewardModel(ABC):
    """Base class of pointwise rewards: ``score`` is implemented here on top of two per-model steps.

    Subclasses implement :meth:`prepare` (one canonical media tensor -> model input, on the CPU; this runs in
    data-loader workers, so it must not touch the model) and :meth:`score_prepared` (a list of prepared inputs
    -> scores). ``score`` chains media conversion, ``prepare`` and ``score_prepared`` in batches, and records
    per-item failures. Pointwise models get :meth:`compare` from their score gaps.

    Class attributes declare what the model is (``mmreward list`` prints them):
        kind: ``"pointwise"`` or ``"pairwise"``.
        dims: names of per-dimension scores, ``()`` for single-score models.
        raw_range: documented typical range of raw scores, for humans (not enforced).
        differentiable: ``score_pixels`` gives gradients with respect to the pixels.
        media_kinds: the media the model accepts natively.
        uses_prompt: the score depends on the prompt (False for prompt-free aesthetic or compression scores).
        uses_source: the score compares each item with a source image (editing rewards): ``score`` then needs
            ``sources=``, one source per item, and :meth:`score_prepared` receives ``(item, source)`` pairs, both
            prepared by :meth:`prepare`. Rewards without it judge the media alone and are never given sources.
        pairwise_scale: ``s`` in the Bradley-Terry link ``P(A > B) = sigmoid(s * (score_A - score_B))`` used by
            :meth:`compare`: the logit scale the scores were trained with.
    """

    kind: ClassVar[Literal["pointwise", "pairwise"]] = "pointwise"
    dims: tuple[str, ...] = ()
    raw_range: ClassVar[tuple[float, float] | None] = None
    differentiable: ClassVar[bool] = False
    media_kinds: ClassVar[frozenset[str]] = frozenset({"image", "video"})
    uses_prompt: ClassVar[bool] = True
    uses_source: ClassVar[bool] = False
    pairwise_scale: float = 1.0

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        batch_size: int = 16,
        video_fps: float | None = None,
        video_num_frames: int | None = 8,
        max_pixels: int | None = media_io.DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if video_fps is not None and video_num_frames is not None:
            raise ConfigError(
                f"give video_fps ({video_fps}) or video_num_frames ({video_num_frames}), not both; set the other "
                "to None"
            )
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.batch_size = batch_size
        self.video_fps = video_fps
        self.video_num_frames = video_num_frames
        self.max_pixels = max_pixels
        self.name = type(self).__name__
        self.weights_id: str | None = None
        # Reference mean/std per score ("score" or a dim name) where the checkpoint publishes them.
        self.reference_stats: dict[str, tuple[float, float]] = {}

    # -- the two per-model steps --------------------------------------------------------------------------------

    def load_media(self, item: Any) -> torch.Tensor:
        """One media item in any accepted form -> canonical tensor, sampled the way this model wants videos."""
        return media_io.to_tensor(
            item, fps=self.video_fps, num_frames=self.video_num_frames, if_short="all", max_pixels=self.max_pixels
        )

    def prepare(self, media: torch.Tensor) -> Any:
        """Canonical ``(3, H, W)`` / ``(T, 3, H, W)`` tensor -> this model's input for one item (CPU, no model)."""
        return media

    def prepare_items(self, items: Sequence[Any]) -> tuple[list[Any], list[str | None]]:
        """:meth:`load_media` then :meth:`prepare` for each item -> ``(prepared, errors)``, one entry per item: an
        item that cannot be read is None in ``prepared`` and has the reason in ``errors`` (the others, None)."""
        prepared: list[Any] = [None] * len(items)
        errors: list[str | None] = [None] * len(items)
        for i, item in enumerate(items):
            try:
                prepared[i] = self.prepare(self.load_media(item))
            except MediaError as err:
                errors[i] = str(err)
        return prepared, errors

    @abstractmethod
    def score_prepared(self, prompts: list[str], inputs: list[Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Score prepared inputs. Returns ``(scores (B,), dims {name: (B,)})``, float32, on the CPU."""

    # -- the contract -------------------------------------------------------------------------------------------

    def score(self, prompts: Sequence[str] | str, media: Any, *, sources: Any = None) -> RewardOutput:
        """Score ``media`` (one item per prompt) -> :class:`RewardOutput`.

        ``media`` is a list of items in any form :mod:`mmreward.media` accepts, or a batched tensor. Items that
        cannot be read fail individually (``failed``, ``errors``); the others are scored. ``sources``: for rewards
        with ``uses_source``, the source image of each item (edited from it), in the same forms as ``media``; an
        item fails when its source cannot be read.
        """
        prompt_list, items = check_batch(prompts, media)
        if not self.uses_source:
            if sources is not None:
                raise ConfigError(f"{self.name} judges media alone and takes no sources; call score(prompts, media)")
            prepared, errors = self.prepare_items(items)
            return self.score_prepared_batch(prompt_list, prepared, errors)
        if sources is None:
            raise ConfigError(
                f"{self.name} compares each item with its source image: pass score(prompts, media, sources=...)"
            )
        source_items = media_io.as_items(sources)
        if len(source_items) != len(items):
            raise ValueError(
                f"got {len(source_items)} sources for {len(items)} media items; pass the source image of each item"
            )
        prepared, errors = self.prepare_items(items)
        prepared_sources, source_errors = self.prepare_items(source_items)
        pairs = [
            None if e or f else (p, s)
            for p, s, e, f in zip(prepared, prepared_sources, errors, source_errors, strict=True)
        ]
        errors = [e or (f and f"source: {f}") for e, f in zip(errors, source_errors, strict=True)]
        return self.score_prepared_batch(prompt_list, pairs, errors)

    def score_prepared_batch(self, prompts: list[str], prepared: list[Any], errors: list[str | None]) -> RewardOutput:
        """Score already prepared items in chunks of ``batch_size``; items with an error are left out (NaN)."""
        size = len(prepared)
        scores = torch.full((size,), math.nan)
        dims = {name: torch.full((size,), math.nan) for name in self.dims}
        errors = list(errors)
        valid = [i for i in range(size) if errors[i] is None]
        with torch.inference_mode():
            for start in range(0, len(valid), self.batch_size):
                chunk = valid[start : start + self.batch_size]
                chunk_scores, chunk_dims = self.score_prepared(
                    [prompts[i] for i in chunk], [prepared[i] for i in chunk]
                )
                index = torch.tensor(chunk)
                scores[index] = chunk_scores.float().cpu()
                for name, values in chunk_dims.items():
                    dims[name][index] = values.float().cpu()
        failed = torch.tensor([e is not None for e in errors], dtype=torch.bool)
        return RewardOutput(scores=scores, dims=dims, failed=failed, errors=errors)

    def compare(
        self, prompts: Sequence[str] | str, media_a: Any, media_b: Any, orders: Orders = "both"
    ) -> PairwiseOutput:
        """P(A better than B) from the score gap: ``sigmoid(pairwise_scale * (score_A - score_B))``.

        Scores do not depend on presentation order, so ``orders`` has no effect here and ``consistent`` is
        always True. Dimensions are not compared; use ``score`` for per-dimension gaps.
        """
        prompt_list, items_a = check_batch(prompts, media_a)
        _, items_b = check_batch(prompt_list, media_b)
        both = self.score(prompt_list + prompt_list, items_a + items_b)
        size = len(items_a)
        score_a, score_b = both.scores[:size], both.scores[size:]
        prob_a = torch.sigmoid(self.pairwise_scale * (score_a - score_b))
        failed = both.failed[:size] | both.failed[size:]
        errors = [_join_errors(ea, eb) for ea, eb in zip(both.errors[:size], both.errors[size:], strict=True)]
        return PairwiseOutput(
            prob_a=prob_a,
            tie=torch.zeros(size),
            consistent=torch.ones(size, dtype=torch.bool),
            failed=failed,
            errors=errors,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, weights={self.weights_id!r}, device={self.device})"


def _join_errors(error_a: str | None, error_b: str | None) -> str | None:
    parts = [f"A: {error_a}" if error_a else None, f"B: {error_b}" if error_b else None]
    joined = "; ".join(p for p in parts if p)
    return joined or None

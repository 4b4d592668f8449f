"""The per-item results of a generative judge's ``score_prepared_batch``, filled chunk by chunk.

Critique judges (RationalRewards), UnifiedReward-Edit's pointwise forms and VideoScore2 all read a batch the same
way: items that already failed (unreadable media) keep their reason and are not asked; the others are asked in
chunks of the judge's batch size, and each gets a score, dimension scores, the judge's text, or a reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from mmreward.rewards.base import RewardOutput


@dataclass
class ScoreSheet:
    """``scores`` ``(B,)`` and each of ``dims`` ``(B,)`` start as NaN; ``errors`` and ``rationales`` per item."""

    scores: torch.Tensor
    dims: dict[str, torch.Tensor]
    errors: list[str | None]
    rationales: list[str | None]

    @classmethod
    def blank(cls, errors: list[str | None], dims: Iterable[str]) -> ScoreSheet:
        """A sheet for ``len(errors)`` items, those with an error already failed."""
        size = len(errors)
        return cls(
            scores=torch.full((size,), math.nan),
            dims={name: torch.full((size,), math.nan) for name in dims},
            errors=list(errors),
            rationales=[None] * size,
        )

    def chunks(self, batch_size: int) -> Iterator[list[int]]:
        """Indices of the items not failed before the first chunk, ``batch_size`` at a time."""
        valid = [i for i, error in enumerate(self.errors) if error is None]
        for start in range(0, len(valid), batch_size):
            yield valid[start : start + batch_size]

    def output(self) -> RewardOutput:
        """The sheet as the reward contract's output (``rationales`` None when the judge wrote nothing)."""
        failed = torch.tensor([e is not None for e in self.errors], dtype=torch.bool)
        written = any(r is not None for r in self.rationales)
        return RewardOutput(
            scores=self.scores,
            dims=self.dims,
            failed=failed,
            errors=self.errors,
            rationales=self.rationales if written else None,
        )

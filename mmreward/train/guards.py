"""Non-finite loss handling: skip the step, count it, stop the run past a threshold."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mmreward.errors import MMRewardError


class NonFiniteLossError(MMRewardError, RuntimeError):
    """Too many steps had NaN or infinite losses; the run stops instead of training on garbage."""


class NonFiniteGuard:
    """``guard.ok(loss)`` is False (and counts a skip) when ``loss`` is NaN or infinite.

    After ``max_skips`` skipped steps in a row it raises :class:`NonFiniteLossError`; a finite step resets the
    streak (isolated bad batches are tolerated, a diverged model is not).
    """

    def __init__(self, max_skips: int = 10) -> None:
        self.max_skips = max_skips
        self.skipped = 0
        self.streak = 0

    def ok(self, loss: torch.Tensor | float) -> bool:
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if math.isfinite(value):
            self.streak = 0
            return True
        self.skipped += 1
        self.streak += 1
        if self.streak > self.max_skips:
            raise NonFiniteLossError(
                f"{self.streak} steps in a row had a non-finite loss (last: {value}); lower the learning rate, "
                "use float32 or bf16 instead of fp16, or raise max_skips"
            )
        return False


def finite_everywhere(loss: torch.Tensor, reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> bool:
    """True when ``loss`` is finite on every process, so that all processes skip (or take) the same backward.

    ``reduce`` is ``accelerator.reduce``, which knows only ``sum``, ``mean`` and ``max`` (any other name, such as
    ``"min"``, silently sums), so the non-finite losses are counted with ``sum``.
    """
    bad = reduce((~torch.isfinite(loss.detach())).float().reshape(1), "sum")
    return float(bad.item()) == 0

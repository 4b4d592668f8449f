"""MMRB2's accuracy (Hu et al. 2025, Multimodal RewardBench 2, arXiv 2512.16899) as its own scoring script counts it.

The reference is ``evaluate/compute_scores/compute_accuracy.py`` of facebookresearch/MMRB2 (commit
7ff0552cf298441af5ebbabea634b682ef04afee). Every pair is judged twice: *forward* (response A shown first) and
*reverse* (B shown first). A verdict names the response shown first (``"A"``) or second (``"B"``); the reverse
verdict is mapped back to the published order before it is compared. Each of the two verdicts is one trial:

- a verdict equal to the human choice is correct; any other non-empty verdict (a tie, an answer the judge's parser
  could not read into A or B) is a counted, wrong trial;
- an empty or absent verdict (a failed call) is not counted;
- a pair with no prediction at all is *missing* and leaves the denominator;
- a task's accuracy is correct trials / counted trials (0 when none were counted); the overall accuracy pools the
  trials of all tasks (micro), so it is not the mean of the four task accuracies when their counts differ.

A position-consistent judge therefore scores 1 or 0 per pair; one that flips with the order scores exactly 1/2.
A pointwise reward gives the same verdict in both orders: ``"A"`` / ``"B"`` by the sign of its score gap and a
(wrong) tie when the scores are equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mmreward.evaluation.metrics import DEFAULT_BOOTSTRAP, Estimate, bootstrap_interval

TIE = "tie"
CHOICES = ("A", "B")


@dataclass(frozen=True)
class TaskAccuracy:
    """One task's counts and accuracy, the fields of the reference's ``TaskResult``."""

    task: str
    total_pairs: int
    evaluated_pairs: int
    missing_pairs: int
    total_correct: int
    total_evaluated: int
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict_from_margin(margin: float | None) -> str | None:
    """The verdict of one presentation from a margin in presentation order (first minus second: a score gap, or
    ``P(first better) - 1/2`` for a judge): ``"A"`` (first), ``"B"`` (second), ``"tie"`` at 0; None = failed."""
    if margin is None:
        return None
    margin = float(margin)
    if not np.isfinite(margin):
        raise ValueError(f"margin must be finite or None (a failed verdict), got {margin}")
    return "A" if margin > 0 else "B" if margin < 0 else TIE


def flip(verdict: str | None) -> str | None:
    """A reverse-order verdict in the published order: A and B swap, anything else is kept."""
    return {"A": "B", "B": "A"}.get(verdict, verdict) if verdict is not None else None


def pair_trials(chosen: str, forward: str | None, reverse: str | None) -> tuple[int, int]:
    """``(correct, counted)`` trials of one pair; ``reverse`` is the raw verdict of the swapped presentation."""
    if chosen not in CHOICES:
        raise ValueError(f"chosen must be 'A' or 'B', got {chosen!r}")
    correct = counted = 0
    for verdict in (forward, flip(reverse)):
        if verdict:  # None or "" is a failed call: the reference skips it
            counted += 1
            correct += int(verdict == chosen)
    return correct, counted


def task_accuracy(
    task: str,
    pairs: Sequence[tuple[str, str]],
    predictions: Mapping[str, tuple[str | None, str | None]],
) -> TaskAccuracy:
    """Accuracy of one task.

    Args:
        task: the task's name, for the result.
        pairs: ``(pair id, chosen)`` of every pair of the task's benchmark file, ``chosen`` ``"A"`` or ``"B"``.
        predictions: pair id -> ``(forward verdict, reverse verdict)``; ids not among ``pairs`` are ignored, as
            the reference ignores them.
    """
    correct = counted = evaluated = missing = 0
    for pair_id, chosen in pairs:
        if pair_id not in predictions:
            missing += 1
            continue
        evaluated += 1
        c, n = pair_trials(chosen, *predictions[pair_id])
        correct += c
        counted += n
    return TaskAccuracy(
        task=task,
        total_pairs=len(pairs),
        evaluated_pairs=evaluated,
        missing_pairs=missing,
        total_correct=correct,
        total_evaluated=counted,
        accuracy=correct / counted if counted else 0.0,
    )


def overall_accuracy(results: Iterable[TaskAccuracy]) -> float:
    """All tasks' trials pooled: sum of correct / sum of counted (0 when none were counted)."""
    results = list(results)
    counted = sum(r.total_evaluated for r in results)
    return sum(r.total_correct for r in results) / counted if counted else 0.0


def accuracy_ci(
    correct: Sequence[int], counted: Sequence[int], *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> Estimate | None:
    """The pooled accuracy of pairs with ``correct`` of ``counted`` trials each, with a bootstrap over pairs (a
    replicate's accuracy is ``sum w c / sum w n``, the ratio the reference computes, reweighted); None when no
    trial was counted."""
    c, n = np.asarray(correct, dtype=np.float64), np.asarray(counted, dtype=np.float64)
    if c.shape != n.shape or c.ndim != 1:
        raise ValueError(f"correct {c.shape} and counted {n.shape} must be 1-D of the same length")
    if n.sum() == 0:
        return None

    def ratio(w: np.ndarray) -> np.ndarray:  # w: (b, pairs) draw counts
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ c) / (w @ n)

    low, high = bootstrap_interval(ratio, c.size, n_boot=n_boot, seed=seed)
    return Estimate(float(c.sum() / n.sum()), low, high, int(c.size))

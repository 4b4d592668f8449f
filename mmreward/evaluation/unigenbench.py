"""UniGenBench scores from per-test-point verdicts, as the benchmark defines them.

UniGenBench (Wang et al. 2025, arXiv 2508.20751; ``CodeGoat24/UniGenBench``) generates 4 images per prompt and has
a judge decide, for each image, whether each test point of the prompt is satisfied (1) or not (0). Test points are
named ``"<Primary> - <Sub>"`` (``"Attribute - Color"``) or by a primary dimension alone (``"Style"``). Scores, as
the benchmark's ``calculate_scores`` computes them:

- the score of a sub-dimension (or primary dimension) is ``satisfied / total`` over every test point of that
  (sub-)dimension of every image, pooled (not averaged per prompt or per image);
- a test point without a sub-dimension counts as its own sub-dimension (``"Style"`` is primary and sub);
- ``Overall`` is the mean of the primary-dimension scores (the paper's headline; the script prints only the
  per-dimension values). With a ``--limit`` run, dimensions that have no test point are left out of the mean and
  the count of dimensions used is reported.

An image whose judge answer failed (unparseable, unreadable) contributes no test point: it is counted as failed and
excluded, never scored 0 or 1 (the official script asks the judge again until it parses; a deterministic judge
would answer the same). Confidence intervals resample prompts (with their images) in a percentile bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmreward.evaluation import metrics

# The ten primary dimensions, in the benchmark's order.
PRIMARY_DIMENSIONS = (
    "Style",
    "World Knowledge",
    "Attribute",
    "Action",
    "Relationship",
    "Compound",
    "Grammar",
    "Entity Layout",
    "Logical Reasoning",
    "Text Generation",
)


def primary_of(point: str) -> str:
    """``"Attribute - Color"`` -> ``"Attribute"``; ``"Style"`` -> ``"Style"`` (split at the first ``-``)."""
    return point.split("-", 1)[0].strip()


def sub_of(point: str) -> str:
    """The sub-dimension a test point counts for: its full name, spaces normalised around the first ``-``."""
    if "-" not in point:
        return point.strip()
    primary, sub = point.split("-", 1)
    return f"{primary.strip()} - {sub.strip()}"


@dataclass(frozen=True)
class ImageVerdicts:
    """The judge's verdicts on one image: its prompt, the prompt's test-point names, and pass/fail per point
    (``passed`` is None when the judge's answer failed)."""

    prompt_id: str
    points: tuple[str, ...]
    passed: tuple[bool, ...] | None

    def __post_init__(self) -> None:
        if self.passed is not None and len(self.passed) != len(self.points):
            raise ValueError(
                f"prompt {self.prompt_id}: {len(self.passed)} verdicts for {len(self.points)} test points"
            )


def _columns(images: Sequence[ImageVerdicts]) -> tuple[list[str], list[str], list[str]]:
    """``(prompts, primaries, subs)`` of the images with verdicts (primaries in the benchmark's order)."""
    prompts = list(dict.fromkeys(image.prompt_id for image in images))
    subs = sorted({sub_of(p) for image in images if image.passed is not None for p in image.points})
    present = {primary_of(s) for s in subs}
    primaries = [d for d in PRIMARY_DIMENSIONS if d in present] + sorted(present - set(PRIMARY_DIMENSIONS))
    return prompts, primaries, subs


def _counts(
    images: Sequence[ImageVerdicts], prompts: list[str], primaries: list[str], subs: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt counts ``(passed, total)``, each ``(P, len(primaries) + len(subs))``: the primary columns first,
    then the sub-dimension columns. Every test point counts once for its primary and once for its sub-dimension
    (a primary-only point such as ``"Style"`` is both)."""
    primary_col = {name: k for k, name in enumerate(primaries)}
    sub_col = {name: len(primaries) + k for k, name in enumerate(subs)}
    row = {p: k for k, p in enumerate(prompts)}
    passed = np.zeros((len(prompts), len(primaries) + len(subs)))
    total = np.zeros_like(passed)
    for image in images:
        if image.passed is None:
            continue
        r = row[image.prompt_id]
        for point, ok in zip(image.points, image.passed, strict=True):
            for c in (primary_col[primary_of(point)], sub_col[sub_of(point)]):
                total[r, c] += 1
                passed[r, c] += bool(ok)
    return passed, total


def _overall(passed: np.ndarray, total: np.ndarray, primaries: int) -> np.ndarray:
    """Overall for weighted count rows: ``passed``/``total`` ``(b, D)`` -> ``(b,)`` mean of the primary accuracies
    over the primaries that have test points in the row (NaN when none has)."""
    passed, total = passed[:, :primaries], total[:, :primaries]
    present = total > 0
    accuracy = np.divide(passed, total, out=np.zeros_like(passed), where=present)
    count = present.sum(axis=1)
    return np.divide(accuracy.sum(axis=1), count, out=np.full(count.shape, np.nan), where=count > 0)


def unigenbench_scores(
    images: Iterable[ImageVerdicts], *, n_boot: int = metrics.DEFAULT_BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """Per-dimension and Overall scores (fractions in [0, 1]) with prompt-bootstrap intervals for Overall.

    Returns ``{"overall": {value, low, high, n, dimensions}, "primary": {dim: {passed, total, accuracy}},
    "sub": {...}, "images": {total, failed}, "testpoints": {scored, excluded}}``.
    """
    images = list(images)
    prompts, primaries, subs = _columns(images)
    passed, total = _counts(images, prompts, primaries, subs)

    def table(names: list[str], offset: int) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "passed": int(passed[:, offset + k].sum()),
                "total": int(total[:, offset + k].sum()),
                "accuracy": float(passed[:, offset + k].sum() / total[:, offset + k].sum()),
            }
            for k, name in enumerate(names)
        }

    overall = float(_overall(passed.sum(0, keepdims=True), total.sum(0, keepdims=True), len(primaries))[0])
    low, high = (
        metrics.bootstrap_interval(
            lambda w: _overall(w @ passed, w @ total, len(primaries)), len(prompts), n_boot=n_boot, seed=seed
        )
        if prompts
        else (math.nan, math.nan)
    )
    failed = [image for image in images if image.passed is None]
    return {
        "overall": {"value": overall, "low": low, "high": high, "n": len(prompts), "dimensions": len(primaries)},
        "primary": table(primaries, 0),
        "sub": table(subs, len(primaries)),
        "images": {"total": len(images), "failed": len(failed)},
        "testpoints": {
            "scored": int(sum(len(i.points) for i in images if i.passed is not None)),
            "excluded": int(sum(len(i.points) for i in failed)),
        },
    }


def paired_overall_difference(
    base: Iterable[ImageVerdicts],
    other: Iterable[ImageVerdicts],
    *,
    n_boot: int = metrics.DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """``Overall(other) - Overall(base)`` on the prompts both runs have, with a paired prompt bootstrap (the same
    prompts are drawn for both runs in each replicate, so prompt difficulty cancels)."""
    base, other = list(base), list(other)
    common = set(i.prompt_id for i in base) & set(i.prompt_id for i in other)
    base = [i for i in base if i.prompt_id in common]
    other = [i for i in other if i.prompt_id in common]
    if not common:
        return {"value": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    # Count both runs over the same columns and prompt rows, so that weights apply to both alike.
    prompts, primaries, subs = _columns(base + other)
    pb, tb = _counts(base, prompts, primaries, subs)
    po, to = _counts(other, prompts, primaries, subs)
    k = len(primaries)

    def difference(w: np.ndarray) -> np.ndarray:
        return _overall(w @ po, w @ to, k) - _overall(w @ pb, w @ tb, k)

    value = float(difference(np.ones((1, len(prompts))))[0])
    low, high = metrics.bootstrap_interval(difference, len(prompts), n_boot=n_boot, seed=seed)
    return {"value": value, "low": low, "high": high, "n": len(prompts)}

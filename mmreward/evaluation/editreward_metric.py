"""EditReward-Bench's metrics (Wu et al. 2025, EditReward, arXiv 2509.26346) as its authors' script computes them.

The reference is ``evaluate_edit_reward_bench`` of ``EditReward/evaluate/eval_bench.py`` in TIGER-AI-Lab/EditReward
(commit edb027edde6080b8a9521ef8e87049b3797f8374), the evaluation of reward models (one score per edited image)
on TIGER-Lab's EditReward-Bench. The benchmark has three subsets of groups: K = 2, 3 or 4 edits of one source image
under one instruction, with a human ranking (K = 2 groups may be ties, "A=B"; K = 3, 4 groups are strict orders).
Every candidate is scored once; then, per subset:

- *pairs*: every pair (i, j), i < j, of a group gives a human label (+1 i ranked above j, -1 below, 0 tie) and
  the model margin ``s_i - s_j``. From the tallies of Deutsch et al. 2023 (arXiv 2305.14324) at a tie threshold
  eps (C concordant, D discordant, Th human tie only, Tm model tie only, Thm both):
  - K = 2: *pairwise accuracy with ties*, ``max (C + Thm) / (C + D + Th + Tm + Thm)`` over eps in
    ``{0} + {|margin|}`` (the first maximum in increasing eps wins; a model tie is ``|margin| <= eps``);
  - K = 3, 4: *pairwise accuracy without ties*, ``C / (C + D + Tm)`` at eps = -1, i.e. ``C / (C + D)``: human
    ties leave the denominator and no margin counts as a model tie.
- *strict ranking accuracy* (the README's "EditReward-Bench (K=...)" columns): a group is correct when the model
  ranks its K candidates exactly as the humans did, the order being ``argsort(scores)`` descending as numpy gives
  it (equal scores: the later candidate first); a K = 2 tie is correct when ``|s_A - s_B| <= eps*``, the eps the
  K = 2 pairwise accuracy chose (0 for the other subsets); a group whose human ranking cannot be read is wrong.
- *overall*: the pairs of all subsets pooled, accuracy with ties and its own eps; the strict accuracy pooled over all
  groups (correct groups / groups: not the mean of the three subsets). The pooled strict accuracy is the README's
  "EditReward-Bench (Overall)" column.

Where the reference divides by zero (a K = 3, 4 subset with no decided pair) the accuracy here is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np

from mmreward.evaluation.metrics import DEFAULT_BOOTSTRAP, Estimate, bootstrap_interval

TIE = "tie"
# A human ranking: candidate indices best first, TIE (a two-candidate tie), or None (unreadable: never correct).
Ranking = tuple[int, ...] | Literal["tie"] | None


@dataclass(frozen=True)
class ScoredGroup:
    """One benchmark group with its model scores.

    Attributes:
        subset: K of the subset the group belongs to (2, 3 or 4); metrics are per subset.
        ranking: the human ranking (:data:`Ranking`).
        pair_labels: human label of each pair ``(i, j)`` of ``combinations(range(len(scores)), 2)``, in that order.
        scores: the model's score of each candidate, in candidate order (A, B, ...).
    """

    subset: int
    ranking: Ranking
    pair_labels: tuple[int, ...]
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        k = len(self.scores)
        if k < 2:
            raise ValueError(f"a group needs at least 2 scored candidates, got {k}")
        if len(self.pair_labels) != k * (k - 1) // 2:
            raise ValueError(f"{k} candidates have {k * (k - 1) // 2} pairs, got {len(self.pair_labels)} labels")
        if any(label not in (-1, 0, 1) for label in self.pair_labels):
            raise ValueError(f"pair labels must be -1, 0 or 1, got {self.pair_labels}")
        if not all(np.isfinite(self.scores)):
            raise ValueError(f"scores must be finite (leave failed groups out), got {self.scores}")

    def margins(self) -> list[float]:
        """``s_i - s_j`` of each pair, in ``pair_labels`` order."""
        return [self.scores[i] - self.scores[j] for i, j in combinations(range(len(self.scores)), 2)]


@dataclass(frozen=True)
class SubsetResult:
    """The numbers the reference reports for one subset (or ``overall``).

    ``pairwise_ties``: whether ``pairwise_accuracy`` is the accuracy with ties (K = 2, overall) or without.
    ``epsilon``: the tie threshold the accuracy with ties chose (None for the accuracy without ties).
    """

    pairwise_accuracy: float | None
    pairwise_ties: bool
    epsilon: float | None
    strict_ranking_accuracy: float
    strict_correct_count: int
    strict_total_samples: int
    pair_count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_tallies(human: Sequence[int], margins: Sequence[float], epsilon: float) -> tuple[int, int, int, int, int]:
    """``(C, D, Th, Tm, Thm)`` at tie threshold ``epsilon`` (a model tie is ``|margin| <= epsilon``)."""
    c = d = th = tm = thm = 0
    for h, m in zip(human, margins, strict=True):
        model_tie = abs(m) <= epsilon
        if h == 0:
            if model_tie:
                thm += 1
            else:
                th += 1
        elif model_tie:
            tm += 1
        elif h * m > 0:
            c += 1
        else:
            d += 1
    return c, d, th, tm, thm


def accuracy_with_ties(human: Sequence[int], margins: Sequence[float]) -> tuple[float, float]:
    """``(accuracy, eps)``: the best ``(C + Thm) / all`` over eps in ``{0} + {|margin|}``, the smallest eps that
    reaches it; ``(0.0, 0.0)`` without pairs, as the reference returns."""
    if len(human) == 0:
        return 0.0, 0.0
    best, best_eps = -1.0, -1.0
    for eps in [0.0, *sorted({abs(m) for m in margins})]:
        c, d, th, tm, thm = pair_tallies(human, margins, eps)
        accuracy = (c + thm) / (c + d + th + tm + thm)
        if accuracy > best:  # strictly greater: the first (smallest) eps of a tied maximum is kept
            best, best_eps = accuracy, eps
    return best, best_eps


def accuracy_without_ties(human: Sequence[int], margins: Sequence[float]) -> float | None:
    """``C / (C + D + Tm)`` at eps = -1 (no margin is a model tie, human ties excluded); None without a decided
    pair (the reference raises ZeroDivisionError there)."""
    c, d, _, tm, _ = pair_tallies(human, margins, -1.0)
    return c / (c + d + tm) if c + d + tm else None


def model_order(scores: Sequence[float]) -> tuple[int, ...]:
    """Candidate indices by descending score, as ``tuple(np.argsort(scores)[::-1])``: equal scores keep numpy's
    stable ascending order, reversed, so the later candidate comes first."""
    return tuple(int(i) for i in np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")[::-1])


def strict_correct(ranking: Ranking, scores: Sequence[float], epsilon: float) -> bool:
    """Whether the scores reproduce the human ranking: the same order, or ``|s_0 - s_1| <= epsilon`` for a tie."""
    if ranking == TIE:
        return abs(scores[0] - scores[1]) <= epsilon
    if ranking is None:
        return False
    return model_order(scores) == tuple(ranking)


def _subset_result(groups: Sequence[ScoredGroup], *, ties: bool) -> tuple[SubsetResult, list[bool]]:
    human = [h for g in groups for h in g.pair_labels]
    margins = [m for g in groups for m in g.margins()]
    if ties:
        accuracy, epsilon = accuracy_with_ties(human, margins)
    else:
        accuracy, epsilon = accuracy_without_ties(human, margins), None
    correct = [strict_correct(g.ranking, g.scores, epsilon if ties else 0.0) for g in groups]
    result = SubsetResult(
        pairwise_accuracy=accuracy,
        pairwise_ties=ties,
        epsilon=epsilon,
        strict_ranking_accuracy=sum(correct) / len(correct) if correct else 0.0,
        strict_correct_count=sum(correct),
        strict_total_samples=len(correct),
        pair_count=len(human),
    )
    return result, correct


def evaluate(groups: Sequence[ScoredGroup]) -> tuple[dict[str, SubsetResult], list[bool]]:
    """The reference's results per subset (``"K=2"``, ``"K=3"``, ``"K=4"``, those present, in that order) and
    ``"overall"``, and each group's strict correctness in the order of ``groups``. The K = 2 subset's pairwise
    accuracy is with ties and its eps judges K = 2 human ties in the strict accuracy; larger subsets use the accuracy
    without ties and eps = 0."""
    results: dict[str, SubsetResult] = {}
    flags: dict[int, bool] = {}
    for k in sorted({g.subset for g in groups}):
        members = [i for i, g in enumerate(groups) if g.subset == k]
        result, correct = _subset_result([groups[i] for i in members], ties=k == 2)
        results[f"K={k}"] = result
        flags.update(zip(members, correct, strict=True))
    human = [h for g in groups for h in g.pair_labels]
    margins = [m for g in groups for m in g.margins()]
    accuracy, epsilon = accuracy_with_ties(human, margins)
    correct = [flags[i] for i in range(len(groups))]
    results["overall"] = SubsetResult(
        pairwise_accuracy=accuracy,
        pairwise_ties=True,
        epsilon=epsilon,
        strict_ranking_accuracy=sum(correct) / len(correct) if correct else 0.0,
        strict_correct_count=sum(correct),
        strict_total_samples=len(correct),
        pair_count=len(human),
    )
    return results, correct


def strict_accuracy_ci(correct: Sequence[bool], *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Estimate | None:
    """The pooled strict ranking accuracy with a bootstrap interval over groups; the K = 2 tie threshold stays the
    one fitted on all the data (not refitted per replicate). None without groups."""
    values = np.asarray(correct, dtype=np.float64)
    if values.size == 0:
        return None
    low, high = bootstrap_interval(lambda w: (w @ values) / w.sum(axis=1), values.size, n_boot=n_boot, seed=seed)
    return Estimate(float(values.mean()), low, high, int(values.size))

"""Reward-model benchmark metrics, computed the way the papers that publish the numbers compute them.

Notation (shared by every function here): a pair is (A, B); the human label is ``h`` in {+1 (A better), 0 (tie),
-1 (B better)}; the model margin is ``m = s(A) - s(B)`` for pointwise rewards, or ``m = 2 * P(A better) - 1`` for
pairwise judges. Inputs may be lists, numpy arrays or torch tensors; margins must be finite (drop failed items
first, and report how many were dropped).

Metrics (IDs as in the project's research notes, ``eval.md`` section 1):

- M1 :func:`accuracy_without_ties` -- human ties dropped; correct iff ``h * m > 0``, so an exact model tie (m = 0)
  is wrong (VideoAlign ``calc_accuracy_without_ties``; "diff" in the UnifiedReward tables).
- M2 :func:`accuracy_with_ties` -- tie calibration (Deutsch, Foster & Freitag 2023, "Ties Matter", arXiv
  2305.14324, Alg. 1): the model predicts a tie iff ``|m| <= eps``; three-class accuracy is maximised over eps and
  reported with the eps found ("tau" in the UnifiedReward tables).
- M3 :func:`pickscore_tie_accuracy` -- Pick-a-Pic's accuracy (Kirstain et al. 2023, PickScore repository
  ``trainer/scripts/eval_preference_predictor.py``): half credit when exactly one of label and prediction is a
  tie; the probability-gap threshold is chosen on a validation split.
- M4 :func:`ranking_pair_accuracy` -- ImageReward test (Xu et al. 2023, ``test.py::acc``): every within-prompt
  pair with untied human ranks, model ties wrong; micro-averaged (ImageReward) and macro-averaged (HPSv2's copy).
- M5 :func:`inversion_accuracy` -- HPDv2 test (Wu et al. 2023, HPSv2 ``inversion_score``): per prompt
  ``1 - discordant / (K (K-1) / 2)``, averaged over prompts.
- M6 :func:`tie_credit_accuracy` -- MJ-Bench-Video's tie-aware accuracy: decisive pairs, a model tie earns 0.5.
- :func:`spearman`, :func:`kendall`, :func:`rank_correlations` -- scipy's rank correlations.
- :func:`order_consistency`, :func:`parse_failure_rate` -- diagnostics for pairwise judges.

Confidence intervals (the ``*_ci`` functions) are percentile bootstraps over the benchmark's units (pairs, or
prompts for ranking benchmarks), seeded so that reports are reproducible. Tie calibration is refitted inside every
bootstrap replicate, because the fitted threshold is part of the metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Thresholds on |P(A) - P(B)| that PickScore's evaluation script sweeps on validation_unique.
PICKSCORE_THRESHOLDS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

DEFAULT_BOOTSTRAP = 1000
# Bootstrap replicates drawn at once: (chunk, n) count matrices stay a few tens of MB for n in the tens of
# thousands (VideoGen-RewardBench has 26.5k pairs).
_BOOTSTRAP_CHUNK = 100


@dataclass(frozen=True)
class Estimate:
    """A metric value with its bootstrap interval.

    Attributes:
        value: the metric on the whole benchmark.
        low, high: the bootstrap percentile interval (``confidence`` of the mass; 95% by default).
        n: the number of units the metric is computed over (pairs, or prompts for ranking metrics).
        threshold: the tie threshold, for metrics that fit or select one, else None.
    """

    value: float
    low: float
    high: float
    n: int
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ input handling


def _to_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, (str, bytes, dict)):
        raise TypeError(f"{name} must be a sequence of numbers (list, numpy array or torch tensor), got {values!r}")
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch tensor, without importing torch here
        values = values.detach().cpu().float().numpy() if values.is_floating_point() else values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
    return array


def as_human_labels(human: Any, name: str = "human") -> np.ndarray:
    """Human labels as an int8 array with values in {+1, 0, -1}; anything else is an error naming the values."""
    array = _to_numpy(human, name).astype(float)
    bad = ~np.isin(array, (-1.0, 0.0, 1.0))
    if bad.any():
        shown = sorted(set(array[bad].tolist()))[:5]
        raise ValueError(
            f"{name} labels must be +1 (A better), 0 (tie) or -1 (B better); found {shown} at "
            f"{int(bad.sum())} position(s), first at index {int(np.argmax(bad))}"
        )
    return array.astype(np.int8)


def as_margins(margin: Any, name: str = "margin") -> np.ndarray:
    """Margins as a float64 array; NaN or infinite values are an error (drop failed items before the metric)."""
    array = _to_numpy(margin, name).astype(np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s), first at index {int(np.argmax(bad))}; drop pairs "
            "whose scores failed before computing metrics (and report how many were dropped)"
        )
    return array


def _pair_inputs(human: Any, margin: Any) -> tuple[np.ndarray, np.ndarray]:
    h = as_human_labels(human)
    m = as_margins(margin)
    if h.shape != m.shape:
        raise ValueError(f"human ({h.shape[0]} labels) and margin ({m.shape[0]} values) must have the same length")
    if h.size == 0:
        raise ValueError("no pairs: the metric needs at least one labelled pair")
    return h, m


# --------------------------------------------------------------------------------------- bootstrap machinery


def _bootstrap_weights(n: int, n_boot: int, seed: int):
    """Yield ``(b, n)`` integer matrices: how often each unit is drawn in each bootstrap replicate."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, n_boot - start)
        # Draw n units with replacement per replicate and count them; offsetting replicate r's indices by r * n
        # lets one bincount do all rows (several times faster than rng.multinomial over n categories).
        draws = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
        yield np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)


def bootstrap_interval(
    weighted_statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic over ``n`` exchangeable units.

    Args:
        weighted_statistic: maps a ``(b, n)`` matrix of unit weights (draw counts) to the ``(b,)`` statistic values
            of the ``b`` replicates. Writing statistics on weights keeps resampling vectorised.
        n: number of units.
        n_boot: number of replicates (0 gives the point value's degenerate interval: NaN, NaN).
        seed: seed of the resampling generator.
        confidence: mass of the interval, e.g. 0.95.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if n_boot == 0:
        return float("nan"), float("nan")
    values = np.concatenate([weighted_statistic(w) for w in _bootstrap_weights(n, n_boot, seed)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _unit_mean_estimate(
    values: np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float | None = None,
) -> Estimate:
    """The mean of per-unit ``values`` (N,) with its bootstrap interval: a replicate drawing unit ``i`` ``w_i``
    times has the mean ``sum_i w_i v_i / sum_i w_i``, so a ``(b, N)`` weight matrix gives ``b`` means at once."""
    low, high = bootstrap_interval(
        lambda w: (w @ values) / w.sum(axis=1), values.size, n_boot=n_boot, seed=seed, confidence=confidence
    )
    return Estimate(float(values.mean()), low, high, int(values.size), threshold=threshold)


# ---------------------------------------------------------------------------------------- M1: without ties


def _without_ties_correct(h: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Correctness of the pairs with a human preference: ``h * m > 0`` (model ties are wrong)."""
    decided = h != 0
    if not decided.any():
        raise ValueError("accuracy without ties needs at least one pair with a human preference (all are ties)")
    return (h[decided] * m[decided] > 0).astype(np.float64)


def accuracy_without_ties(human: Any, margin: Any) -> float:
    """M1: pairwise accuracy over pairs with a human preference; exact model ties count as wrong.

    ``C / (C + D + T_m)`` in Deutsch et al.'s notation: human ties are dropped, a pair is correct iff
    ``h * m > 0``. Example: h = [1, -1, 1, 0], m = [0.5, 0.2, 0.0, 3.0] -> the tie is dropped, pair 0 is right,
    pair 1 wrong (sign disagrees), pair 2 wrong (model tie): 1/3.
    """
    h, m = _pair_inputs(human, margin)
    return float(_without_ties_correct(h, m).mean())


def accuracy_without_ties_ci(
    human: Any, margin: Any, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """M1 with a bootstrap interval over the pairs with a human preference."""
    h, m = _pair_inputs(human, margin)
    correct = _without_ties_correct(h, m)
    return _unit_mean_estimate(correct, n_boot=n_boot, seed=seed, confidence=confidence)


# ---------------------------------------------------------------------------------- M2: tie calibration


@dataclass(frozen=True)
class _TieSweep:
    """Pairs sorted by |m| and the per-pair outcomes the sweep accumulates."""

    thresholds: np.ndarray  # (T,) candidate eps, ascending: 0 and every distinct |m|
    counts: np.ndarray  # (T,) number of pairs with |m| <= eps (predicted ties) for each candidate
    order: np.ndarray  # (N,) argsort of |m|
    tie_ok: np.ndarray  # (N,) in sorted order: human tie (right when predicted tie)
    decided_ok: np.ndarray  # (N,) in sorted order: human preference with the margin's sign (right when decided)


def _tie_sweep(h: np.ndarray, m: np.ndarray) -> _TieSweep:
    magnitude = np.abs(m)
    order = np.argsort(magnitude, kind="stable")
    sorted_magnitude = magnitude[order]
    # Accuracy only changes where eps crosses a |m| value, so the candidates are the boundaries between groups of
    # equal |m| (np.unique), plus eps = 0 ("no new ties", only exact model ties are ties), which is a candidate
    # even when no margin is exactly 0 (mt-metrics-eval's tau_optimization starts there too).
    thresholds = np.unique(sorted_magnitude)
    if thresholds[0] > 0.0:
        thresholds = np.concatenate([[0.0], thresholds])
    counts = np.searchsorted(sorted_magnitude, thresholds, side="right")
    hs, ms = h[order], m[order]
    return _TieSweep(
        thresholds=thresholds,
        counts=counts,
        order=order,
        tie_ok=(hs == 0).astype(np.float64),
        decided_ok=((hs != 0) & (hs * ms > 0)).astype(np.float64),
    )


def _sweep_accuracies(sweep: _TieSweep, weights: np.ndarray) -> np.ndarray:
    """Three-class accuracy at every candidate threshold; ``weights`` is ``(b, N)`` in sorted order -> ``(b, T)``.

    With the first ``c`` sorted pairs predicted as ties, the right answers are the human ties among them plus the
    pairs after them whose margin sign matches the human label: ``cum_tie[c] + (total_dec - cum_dec[c])``.
    """
    zeros = np.zeros((weights.shape[0], 1))
    cum_tie = np.concatenate([zeros, np.cumsum(weights * sweep.tie_ok, axis=1)], axis=1)
    cum_dec = np.concatenate([zeros, np.cumsum(weights * sweep.decided_ok, axis=1)], axis=1)
    right = cum_tie[:, sweep.counts] + cum_dec[:, -1:] - cum_dec[:, sweep.counts]
    return right / weights.sum(axis=1, keepdims=True)


def tie_calibration_curve(human: Any, margin: Any) -> tuple[np.ndarray, np.ndarray]:
    """Three-class accuracy against the tie threshold: ``(thresholds, accuracies)``, both ``(T,)``.

    ``thresholds`` are 0 and every distinct ``|m|`` in ascending order; ``accuracies[t]`` is the accuracy when
    the model predicts a tie iff ``|m| <= thresholds[t]``. Between two consecutive candidates the accuracy is
    constant, so the curve is exact as a step function.
    """
    h, m = _pair_inputs(human, margin)
    sweep = _tie_sweep(h, m)
    return sweep.thresholds.copy(), _sweep_accuracies(sweep, np.ones((1, h.size)))[0]


def accuracy_with_ties(human: Any, margin: Any) -> tuple[float, float]:
    """M2: tie-calibrated pairwise accuracy (Deutsch et al. 2023, Alg. 1) -> ``(accuracy, threshold)``.

    The model predicts a tie iff ``|m| <= eps``, else ``sign(m)``; accuracy counts a pair right when the
    prediction equals the human label (ties included): ``(C + T_hm) / N``. eps is swept over 0 and the boundaries
    between distinct ``|m|`` values (all pairs with the same ``|m|`` switch together), and the maximum is
    reported with the smallest eps that reaches it.

    Differences from VideoAlign's ``calc_accuracy_with_ties`` (the code behind VideoGen-RewardBench's numbers): it
    updates pair by pair, so within a group of equal ``|m|`` it also scores thresholds that tie only part of the
    group (no real eps does that), and it never scores eps below the smallest ``|m|``. With continuous scores
    neither case arises except when predicting no tie at all is optimal.

    Example: h = [1, 0, -1], m = [2.0, 0.1, -0.5]: eps = 0 -> pair 1 predicted A (wrong), 2/3; eps = 0.1 -> pair 1
    predicted tie (right), 3/3; eps = 0.5 -> pair 2 becomes a tie (wrong), 2/3. Result (1.0, 0.1).
    """
    h, m = _pair_inputs(human, margin)
    sweep = _tie_sweep(h, m)
    accuracies = _sweep_accuracies(sweep, np.ones((1, h.size)))[0]
    best = int(np.argmax(accuracies))  # first maximum = smallest threshold
    return float(accuracies[best]), float(sweep.thresholds[best])


def accuracy_with_ties_ci(
    human: Any, margin: Any, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """M2 with a bootstrap interval; the threshold is refitted in every replicate (it is fitted on the test set).

    A replicate's weights only rescale the pairs, so its best threshold is still one of the full data's
    candidates (candidates of pairs drawn zero times repeat the previous accuracy) and one pass over them gives
    the replicate's maximum.
    """
    h, m = _pair_inputs(human, margin)
    sweep = _tie_sweep(h, m)
    accuracies = _sweep_accuracies(sweep, np.ones((1, h.size)))[0]
    best = int(np.argmax(accuracies))
    low, high = bootstrap_interval(
        lambda w: _sweep_accuracies(sweep, w[:, sweep.order]).max(axis=1),
        h.size,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
    )
    return Estimate(float(accuracies[best]), low, high, int(h.size), threshold=float(sweep.thresholds[best]))


# -------------------------------------------------------------------------------- M3: PickScore tie-aware


def _pickscore_credit(h: np.ndarray, prob_margin: np.ndarray, threshold: float) -> np.ndarray:
    """Per-pair credit: 1 if prediction == label, 0.5 if exactly one of them is a tie, else 0."""
    predicted = np.where(np.abs(prob_margin) <= threshold, 0, np.sign(prob_margin)).astype(np.int8)
    one_tie = (predicted == 0) != (h == 0)
    return np.where(predicted == h, 1.0, np.where(one_tie, 0.5, 0.0))


def _prob_margin_inputs(human: Any, prob_margin: Any) -> tuple[np.ndarray, np.ndarray]:
    h, pm = _pair_inputs(human, prob_margin)
    if np.any(np.abs(pm) > 1.0 + 1e-6):
        raise ValueError(
            "PickScore's accuracy takes probability margins P(A) - P(B) in [-1, 1]; convert score gaps with "
            "2 * sigmoid(scale * gap) - 1 (softmax over the two scores, as PickScore's script does)"
        )
    return h, pm


def pickscore_accuracy(human: Any, prob_margin: Any, threshold: float) -> float:
    """M3 at a fixed threshold: a tie is predicted iff ``|P(A) - P(B)| <= threshold``.

    Credit per pair: 1 when prediction and label agree, 0.5 when exactly one of them is a tie, 0 otherwise.
    Example: h = [1, 0, -1], pm = [0.3, 0.6, 0.05], threshold 0.1 -> predictions A, A, tie -> 1 + 0.5 + 0.5 = 2/3.
    """
    h, pm = _prob_margin_inputs(human, prob_margin)
    return float(_pickscore_credit(h, pm, threshold).mean())


def pickscore_tie_accuracy(
    val_human: Any,
    val_prob_margin: Any,
    test_human: Any,
    test_prob_margin: Any,
    thresholds: Sequence[float] = PICKSCORE_THRESHOLDS,
) -> tuple[float, float]:
    """M3: choose the threshold with the best validation accuracy (first maximum), report test accuracy with it.

    Returns ``(test accuracy, threshold)``. PickScore's protocol: validation = ``validation_unique``, test =
    ``test_unique`` of Pick-a-Pic, thresholds 0, 0.1, ..., 1.
    """
    threshold = select_pickscore_threshold(val_human, val_prob_margin, thresholds)
    return pickscore_accuracy(test_human, test_prob_margin, threshold), threshold


def select_pickscore_threshold(
    val_human: Any, val_prob_margin: Any, thresholds: Sequence[float] = PICKSCORE_THRESHOLDS
) -> float:
    """The threshold in ``thresholds`` with the best validation accuracy (the first one on equal accuracy)."""
    if len(thresholds) == 0:
        raise ValueError("thresholds must not be empty")
    h, pm = _prob_margin_inputs(val_human, val_prob_margin)
    accuracies = [float(_pickscore_credit(h, pm, t).mean()) for t in thresholds]
    return float(thresholds[int(np.argmax(accuracies))])


def pickscore_tie_accuracy_ci(
    val_human: Any,
    val_prob_margin: Any,
    test_human: Any,
    test_prob_margin: Any,
    thresholds: Sequence[float] = PICKSCORE_THRESHOLDS,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """M3 with a bootstrap interval over test pairs (the threshold, fixed on validation, is not refitted)."""
    threshold = select_pickscore_threshold(val_human, val_prob_margin, thresholds)
    h, pm = _prob_margin_inputs(test_human, test_prob_margin)
    credit = _pickscore_credit(h, pm, threshold)
    return _unit_mean_estimate(credit, n_boot=n_boot, seed=seed, confidence=confidence, threshold=threshold)


# ------------------------------------------------------------------------------- M6: tie credit (MJ-Video)


def _tie_credit(h: np.ndarray, m: np.ndarray) -> np.ndarray:
    decided = h != 0
    if not decided.any():
        raise ValueError("tie-aware accuracy needs at least one pair with a human preference (all are ties)")
    product = h[decided] * m[decided]
    return np.where(product > 0, 1.0, np.where(product == 0, 0.5, 0.0))


def tie_credit_accuracy(human: Any, margin: Any) -> float:
    """M6: MJ-Bench-Video's tie-aware accuracy over decisive pairs: right 1, model tie (m = 0) 0.5, wrong 0.

    Example: h = [1, -1, 1, 0], m = [0.5, 0.2, 0.0, 3.0] -> (1 + 0 + 0.5) / 3 = 0.5.
    """
    h, m = _pair_inputs(human, margin)
    return float(_tie_credit(h, m).mean())


def tie_credit_accuracy_ci(
    human: Any, margin: Any, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """M6 with a bootstrap interval over decisive pairs."""
    h, m = _pair_inputs(human, margin)
    credit = _tie_credit(h, m)
    return _unit_mean_estimate(credit, n_boot=n_boot, seed=seed, confidence=confidence)


# ---------------------------------------------------------------------------------- K-way human rankings


@dataclass(frozen=True)
class _PromptPairs:
    """Per-prompt pair counts of a ranking benchmark (arrays over prompts)."""

    decided: np.ndarray  # pairs with untied human ranks
    correct: np.ndarray  # ... of which the model orders the same way (model ties are wrong)
    all_pairs: np.ndarray  # K (K - 1) / 2


def _ranking_inputs(ranks: Sequence[Any], scores: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(ranks) != len(scores):
        raise ValueError(f"got rankings for {len(ranks)} prompts but scores for {len(scores)}")
    if len(ranks) == 0:
        raise ValueError("no prompts: ranking metrics need at least one ranked prompt")
    groups = []
    for i, (rank, score) in enumerate(zip(ranks, scores, strict=True)):
        r = _to_numpy(rank, f"ranks[{i}]").astype(np.float64)
        s = as_margins(score, f"scores[{i}]")
        if r.shape != s.shape:
            raise ValueError(f"prompt {i}: {r.size} human ranks but {s.size} model scores")
        if r.size < 2:
            raise ValueError(f"prompt {i} has {r.size} ranked item(s); a ranking needs at least 2")
        if not np.all(np.isfinite(r)):
            raise ValueError(f"prompt {i}: human ranks must be finite numbers, got {r.tolist()}")
        groups.append((r, s))
    return groups


def _prompt_pairs(groups: list[tuple[np.ndarray, np.ndarray]]) -> _PromptPairs:
    decided, correct, all_pairs = [], [], []
    for rank, score in groups:
        i, j = np.triu_indices(rank.size, k=1)
        human = np.sign(rank[j] - rank[i])  # +1: item i ranked better (lower rank number) than item j
        model = np.sign(score[i] - score[j])  # +1: item i scored higher
        decided.append(int(np.count_nonzero(human)))
        correct.append(int(np.count_nonzero((human != 0) & (model == human))))
        all_pairs.append(i.size)
    return _PromptPairs(np.array(decided, float), np.array(correct, float), np.array(all_pairs, float))


def ranking_pair_accuracy(ranks: Sequence[Any], scores: Sequence[Any]) -> dict[str, float]:
    """M4: accuracy over within-prompt pairs with untied human ranks -> ``{"micro": ..., "macro": ...}``.

    ``ranks[p]`` are prompt p's human ranks (lower = better, ties allowed), ``scores[p]`` the model's scores of the
    same items (higher = better). A pair counts when its human ranks differ; it is right when the model orders it
    the same way, and a model tie is wrong (ImageReward ``test.py::acc``). micro = right / counted over all
    prompts (ImageReward's number); macro = the mean of per-prompt accuracies (HPSv2's ``calc_ImageReward``),
    over prompts with at least one counted pair.

    Example: ranks [[1, 2, 2]], scores [[0.9, 0.1, 0.5]] -> counted pairs (0,1), (0,2), both right -> 1.0.
    """
    counts = _prompt_pairs(_ranking_inputs(ranks, scores))
    if counts.decided.sum() == 0:
        raise ValueError("ranking accuracy needs at least one pair with different human ranks (all are tied)")
    has_pairs = counts.decided > 0
    return {
        "micro": float(counts.correct.sum() / counts.decided.sum()),
        "macro": float(np.mean(counts.correct[has_pairs] / counts.decided[has_pairs])),
    }


def ranking_pair_accuracy_ci(
    ranks: Sequence[Any],
    scores: Sequence[Any],
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Estimate]:
    """M4 micro and macro with bootstrap intervals over prompts (pairs of one prompt are not independent)."""
    counts = _prompt_pairs(_ranking_inputs(ranks, scores))
    point = ranking_pair_accuracy(ranks, scores)
    has_pairs = counts.decided > 0
    per_prompt = np.where(has_pairs, counts.correct / np.maximum(counts.decided, 1), 0.0)
    n = counts.decided.size

    def micro(w: np.ndarray) -> np.ndarray:
        return (w @ counts.correct) / (w @ counts.decided)

    def macro(w: np.ndarray) -> np.ndarray:
        return (w @ per_prompt) / (w @ has_pairs.astype(float))

    with np.errstate(invalid="ignore", divide="ignore"):
        micro_ci = bootstrap_interval(micro, n, n_boot=n_boot, seed=seed, confidence=confidence)
        macro_ci = bootstrap_interval(macro, n, n_boot=n_boot, seed=seed, confidence=confidence)
    return {
        "micro": Estimate(point["micro"], *micro_ci, n=int(counts.decided.sum())),
        "macro": Estimate(point["macro"], *macro_ci, n=int(has_pairs.sum())),
    }


def _inversion_per_prompt(counts: _PromptPairs) -> np.ndarray:
    # discordant = counted pairs the model gets wrong (reversed, or a model tie); human-tied pairs stay in the
    # denominator, as in HPSv2's inversion_score.
    return 1.0 - (counts.decided - counts.correct) / counts.all_pairs


def inversion_accuracy(ranks: Sequence[Any], scores: Sequence[Any]) -> float:
    """M5: HPDv2's ranking accuracy: per prompt ``1 - discordant / (K (K-1) / 2)``, averaged over prompts.

    A pair is discordant when the human ranks differ and the model orders it the other way. HPSv2 ranks images by
    ``argsort`` of the scores, which breaks exact score ties by position; here an exact model tie on a pair with
    different human ranks counts as discordant (the deterministic, pessimistic reading; it never happens with
    continuous scores). Human-tied pairs are never discordant but stay in the denominator.

    Example: ranks [[1, 2, 3]], scores [[0.1, 0.5, 0.0]] -> pairs (0,1) reversed, (0,2) right, (1,2) right ->
    1 - 1/3 = 2/3.
    """
    counts = _prompt_pairs(_ranking_inputs(ranks, scores))
    return float(_inversion_per_prompt(counts).mean())


def inversion_accuracy_ci(
    ranks: Sequence[Any],
    scores: Sequence[Any],
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """M5 with a bootstrap interval over prompts."""
    per_prompt = _inversion_per_prompt(_prompt_pairs(_ranking_inputs(ranks, scores)))
    return _unit_mean_estimate(per_prompt, n_boot=n_boot, seed=seed, confidence=confidence)


# ------------------------------------------------------------------------------------------- correlations


def spearman(x: Any, y: Any) -> float:
    """Spearman's rho (scipy.stats.spearmanr); NaN when either input is constant."""
    from scipy import stats

    a, b = as_margins(x, "x"), as_margins(y, "y")
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"spearman needs two sequences of equal length >= 2, got {a.size} and {b.size}")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def kendall(x: Any, y: Any) -> float:
    """Kendall's tau-b (scipy.stats.kendalltau); NaN when either input is constant."""
    from scipy import stats

    a, b = as_margins(x, "x"), as_margins(y, "y")
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"kendall needs two sequences of equal length >= 2, got {a.size} and {b.size}")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.kendalltau(a, b).statistic)


def rank_correlations(ranks: Sequence[Any], scores: Sequence[Any]) -> dict[str, float]:
    """Mean per-prompt Spearman and Kendall tau-b between model scores and human preference (negated ranks).

    Prompts whose human ranks or model scores are all equal have no correlation and are left out of the mean;
    ``"prompts"`` says how many were used.
    """
    groups = _ranking_inputs(ranks, scores)
    rho = np.array([spearman(-r, s) for r, s in groups])
    tau = np.array([kendall(-r, s) for r, s in groups])
    used = np.isfinite(rho)
    return {
        "spearman": float(rho[used].mean()) if used.any() else float("nan"),
        "kendall": float(tau[used].mean()) if used.any() else float("nan"),
        "prompts": int(used.sum()),
    }


# ------------------------------------------------------------------------------------- pairwise judges


def parse_failure_rate(failed: Any) -> float:
    """Fraction of judge verdicts that failed (unparseable answer, unreadable media)."""
    array = _to_numpy(failed, "failed").astype(bool)
    if array.size == 0:
        raise ValueError("parse_failure_rate needs at least one verdict")
    return float(array.mean())


def order_consistency(consistent: Any, failed: Any | None = None) -> float:
    """Fraction of pairs on which a judge's verdicts in both presentation orders agree (failed pairs left out).

    NaN when every pair failed (there is nothing to measure).
    """
    agree = _to_numpy(consistent, "consistent").astype(bool)
    if agree.size == 0:
        raise ValueError("order_consistency needs at least one pair")
    if failed is not None:
        skip = _to_numpy(failed, "failed").astype(bool)
        if skip.shape != agree.shape:
            raise ValueError(f"consistent ({agree.size}) and failed ({skip.size}) must have the same length")
        agree = agree[~skip]
    return float(agree.mean()) if agree.size else float("nan")

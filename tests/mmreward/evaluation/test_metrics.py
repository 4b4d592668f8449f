"""Benchmark metrics against values worked out by hand (derivations next to each case) and brute force."""

import math

import numpy as np
import pytest
import torch

from mmreward.evaluation import metrics
from mmreward.evaluation.metrics import (
    accuracy_with_ties,
    accuracy_with_ties_ci,
    accuracy_without_ties,
    accuracy_without_ties_ci,
    inversion_accuracy,
    inversion_accuracy_ci,
    kendall,
    order_consistency,
    parse_failure_rate,
    pickscore_accuracy,
    pickscore_tie_accuracy,
    pickscore_tie_accuracy_ci,
    rank_correlations,
    ranking_pair_accuracy,
    ranking_pair_accuracy_ci,
    spearman,
    tie_calibration_curve,
    tie_credit_accuracy,
)

# ------------------------------------------------------------------------------------------------ M1


def test_accuracy_without_ties_by_hand():
    # h = [1, -1, 1, 0, -1], m = [0.5, 0.2, 0.0, 3.0, -1e-9]: the human tie (index 3) is dropped; index 0 right,
    # 1 wrong (sign), 2 wrong (exact model tie), 4 right (tiny but negative) -> 2 / 4.
    assert accuracy_without_ties([1, -1, 1, 0, -1], [0.5, 0.2, 0.0, 3.0, -1e-9]) == 0.5


@pytest.mark.parametrize("convert", [list, np.array, torch.tensor])
def test_accuracy_without_ties_accepts_lists_arrays_tensors(convert):
    human, margin = convert([1, -1, -1]), convert([0.25, -2.0, 0.5])
    assert accuracy_without_ties(human, margin) == pytest.approx(2 / 3)
    assert accuracy_with_ties(human, margin) == (pytest.approx(2 / 3), 0.0)


def test_accuracy_without_ties_edge_cases():
    assert accuracy_without_ties([1], [0.1]) == 1.0
    assert accuracy_without_ties([-1], [0.0]) == 0.0  # a single model tie is wrong
    with pytest.raises(ValueError, match="all are ties"):
        accuracy_without_ties([0, 0], [0.3, -0.1])
    with pytest.raises(ValueError, match="at least one labelled pair"):
        accuracy_without_ties([], [])


# ------------------------------------------------------------------------------------------------ M2


def test_accuracy_with_ties_docstring_example():
    # eps = 0 -> predictions A, A, B: 2/3; eps = 0.1 -> the human tie is predicted tie: 3/3; eps = 0.5 -> pair 2
    # becomes a tie (wrong): 2/3; eps = 2 -> all ties: 1/3.
    assert accuracy_with_ties([1, 0, -1], [2.0, 0.1, -0.5]) == (1.0, 0.1)


def test_accuracy_with_ties_switches_equal_margins_together():
    # Both pairs have |m| = 0.3, so no threshold ties one without the other: eps = 0 -> A, A: 1/2 (the human tie is
    # wrong); eps = 0.3 -> tie, tie: 1/2. Best 1/2 at the smallest threshold 0. A pair-by-pair sweep (VideoAlign's
    # calc_accuracy_with_ties) would also score "only the first pair tied" and report 1.0.
    assert accuracy_with_ties([0, 1], [0.3, 0.3]) == (0.5, 0.0)
    # Same with opposite signs: |m| groups are by magnitude.
    assert accuracy_with_ties([0, 0, 1], [0.3, -0.3, 0.3]) == (pytest.approx(2 / 3), 0.3)


def test_accuracy_with_ties_group_boundaries_by_hand():
    # h = [0, 1, 0, -1, 1], m = [0.2, 0.2, -0.2, 0.5, 1.0]
    # eps 0   : A A B A A -> right: idx 1, 4                      -> 2/5
    # eps 0.2 : T T T A A -> right: idx 0, 2, 4                   -> 3/5
    # eps 0.5 : T T T T A -> right: idx 0, 2, 4                   -> 3/5 (equal; the smaller eps is reported)
    # eps 1.0 : all ties  -> right: idx 0, 2                      -> 2/5
    human, margin = [0, 1, 0, -1, 1], [0.2, 0.2, -0.2, 0.5, 1.0]
    assert accuracy_with_ties(human, margin) == (pytest.approx(3 / 5), 0.2)
    thresholds, accuracies = tie_calibration_curve(human, margin)
    np.testing.assert_allclose(thresholds, [0.0, 0.2, 0.5, 1.0])
    np.testing.assert_allclose(accuracies, [2 / 5, 3 / 5, 3 / 5, 2 / 5])


def test_accuracy_with_ties_model_ties_and_no_tie_candidate():
    # Exact model ties are ties at eps = 0: h = [0, 1, -1], m = [0, 0, -0.4] -> eps 0: right, wrong, right = 2/3;
    # eps 0.4: right, wrong, wrong = 1/3.
    assert accuracy_with_ties([0, 1, -1], [0.0, 0.0, -0.4]) == (pytest.approx(2 / 3), 0.0)
    # Predicting no tie at all is a candidate even without zero margins: eps 0 -> 2/2; eps 0.1 -> 1/2.
    assert accuracy_with_ties([1, -1], [0.1, -0.2]) == (1.0, 0.0)


def test_accuracy_with_ties_all_tie_and_single_pair():
    # All human ties: tying every pair (eps = max |m| = 0.3) is right on all of them.
    assert accuracy_with_ties([0, 0, 0], [0.1, -0.3, 0.2]) == (1.0, 0.3)
    assert accuracy_with_ties([1], [0.7]) == (1.0, 0.0)
    assert accuracy_with_ties([0], [0.7]) == (1.0, 0.7)
    assert accuracy_with_ties([-1], [0.7]) == (0.0, 0.0)


def _brute_force_accuracy(h: np.ndarray, m: np.ndarray, eps: float) -> float:
    predicted = np.where(np.abs(m) <= eps, 0, np.sign(m))
    return float(np.mean(predicted == h))


@pytest.mark.parametrize("seed", range(150))
def test_accuracy_with_ties_matches_brute_force_sweep(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    h = rng.choice([-1, 0, 1], size=n, p=rng.dirichlet([1, 1, 1]))
    if seed % 2:  # few distinct magnitudes, both signs, exact zeros: many equal-|m| groups
        m = rng.choice([-0.5, -0.25, 0.0, 0.25, 0.5, 1.0], size=n)
    else:
        m = np.round(rng.normal(size=n) + 0.5 * h, 2)
    candidates = np.unique(np.concatenate([[0.0], np.abs(m)]))
    # Every real threshold: the candidates, points between them, and beyond the largest |m|.
    probes = np.concatenate([candidates, (candidates[1:] + candidates[:-1]) / 2, [candidates[-1] + 1.0]])
    best = max(_brute_force_accuracy(h, m, eps) for eps in probes)
    accuracy, threshold = accuracy_with_ties(h, m)
    assert accuracy == pytest.approx(best, abs=1e-12)
    assert _brute_force_accuracy(h, m, threshold) == pytest.approx(accuracy, abs=1e-12)
    smallest = min(eps for eps in candidates if _brute_force_accuracy(h, m, eps) == pytest.approx(best, abs=1e-12))
    assert threshold == smallest
    thresholds, accuracies = tie_calibration_curve(h, m)
    np.testing.assert_allclose(thresholds, candidates)
    np.testing.assert_allclose(accuracies, [_brute_force_accuracy(h, m, eps) for eps in candidates])


@pytest.mark.parametrize("seed", range(20))
def test_weighted_sweep_equals_sweep_of_resampled_pairs(seed):
    # The bootstrap scores a replicate through draw counts; that must equal tie calibration of the pairs repeated.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    h = rng.choice([-1, 0, 1], size=n).astype(np.int8)
    m = rng.choice([-0.5, 0.0, 0.25, 0.5, 0.75], size=n)
    weights = rng.integers(0, 4, size=(3, n))
    weights[:, 0] += 1  # at least one pair drawn
    sweep = metrics._tie_sweep(h, m)
    best = metrics._sweep_accuracies(sweep, weights[:, sweep.order]).max(axis=1)
    for row, value in zip(weights, best, strict=True):
        assert value == pytest.approx(accuracy_with_ties(np.repeat(h, row), np.repeat(m, row))[0], abs=1e-12)


def test_confidence_intervals_bracket_and_reproduce():
    rng = np.random.default_rng(1)
    h = rng.choice([-1, 0, 1], size=400)
    m = rng.normal(size=400) + h
    with_ties = accuracy_with_ties_ci(h, m, n_boot=300, seed=3)
    assert (with_ties.value, with_ties.threshold) == accuracy_with_ties(h, m)
    assert with_ties.low < with_ties.value < with_ties.high
    assert with_ties == accuracy_with_ties_ci(h, m, n_boot=300, seed=3)  # seeded
    without = accuracy_without_ties_ci(h, m, n_boot=300, seed=3)
    assert without.value == accuracy_without_ties(h, m)
    assert without.n == int(np.count_nonzero(h))
    assert without.low < without.value < without.high
    # A binomial proportion over ~270 pairs: the 95% interval is about +-2 standard errors.
    stderr = math.sqrt(without.value * (1 - without.value) / without.n)
    assert without.high - without.low == pytest.approx(4 * stderr, rel=0.3)
    # All right -> the interval collapses on 1.
    perfect = accuracy_without_ties_ci([1, -1, 1], [1.0, -1.0, 2.0], n_boot=50)
    assert (perfect.low, perfect.high) == (1.0, 1.0)


# ------------------------------------------------------------------------------------------------ M3


def test_pickscore_accuracy_by_hand():
    # t = 0.1: predictions A (0.3), A (0.6), tie (0.05); labels A, tie, B -> 1 + 0.5 + 0.5 = 2/3.
    assert pickscore_accuracy([1, 0, -1], [0.3, 0.6, 0.05], 0.1) == pytest.approx(2 / 3)


def test_pickscore_threshold_is_chosen_on_validation():
    # validation h = [1, 0, 0], pm = [0.5, 0.05, 0.15]:
    #   t 0   -> A A A   : 1 + .5 + .5 = 2/3      t 0.1 -> A T A : 1 + 1 + .5 = 5/6
    #   t 0.2 -> A T T   : 1 + 1 + 1 = 1 (best)   t 0.5 -> T T T : .5 + 1 + 1 = 5/6
    # test h = [1, -1], pm = [0.1, -0.3] at t = 0.2 -> tie (0.5 credit), B (1) -> 0.75.
    accuracy, threshold = pickscore_tie_accuracy([1, 0, 0], [0.5, 0.05, 0.15], [1, -1], [0.1, -0.3])
    assert (accuracy, threshold) == (0.75, 0.2)
    estimate = pickscore_tie_accuracy_ci([1, 0, 0], [0.5, 0.05, 0.15], [1, -1], [0.1, -0.3], n_boot=20)
    assert (estimate.value, estimate.threshold, estimate.n) == (0.75, 0.2, 2)


def test_pickscore_rejects_score_gaps():
    with pytest.raises(ValueError, match="probability margins"):
        pickscore_accuracy([1], [3.5], 0.1)


# ------------------------------------------------------------------------------------------------ M6


def test_tie_credit_accuracy_by_hand():
    # decisive pairs 0, 1, 2: right (1), wrong (0), model tie (0.5) -> 1.5 / 3.
    assert tie_credit_accuracy([1, -1, 1, 0], [0.5, 0.2, 0.0, 3.0]) == 0.5


# ------------------------------------------------------------------------------------------- rankings

# prompt 1: ranks [1, 2, 3, 3], scores [0.9, 0.5, 0.5, 0.1]
#   (0,1) human 0 better, model 0 higher: right   (0,2) right   (0,3) right
#   (1,2) human 1 better, model tie: wrong        (1,3) right   (2,3) human tie: not counted
#   -> 5 counted, 4 right; 6 pairs in all, 1 discordant
# prompt 2: ranks [2, 1], scores [0.3, 0.2] -> item 1 better, model prefers item 0: 1 counted, 0 right, 1 discordant
RANKS = [[1, 2, 3, 3], [2, 1]]
SCORES = [[0.9, 0.5, 0.5, 0.1], [0.3, 0.2]]


def test_ranking_pair_accuracy_by_hand():
    result = ranking_pair_accuracy(RANKS, SCORES)
    assert result["micro"] == pytest.approx(4 / 6)  # ImageReward: pooled over prompts
    assert result["macro"] == pytest.approx((4 / 5 + 0 / 1) / 2)  # HPSv2's calc_ImageReward: per-prompt mean
    estimates = ranking_pair_accuracy_ci(RANKS, SCORES, n_boot=50)
    assert estimates["micro"].value == result["micro"] and estimates["micro"].n == 6
    assert estimates["macro"].n == 2
    assert ranking_pair_accuracy([np.array([1, 2, 2])], [torch.tensor([0.9, 0.1, 0.5])]) == {
        "micro": 1.0,
        "macro": 1.0,
    }


def test_inversion_accuracy_by_hand():
    # prompt 1: 1 - 1/6; prompt 2: 1 - 1/1 -> mean 5/12.
    assert inversion_accuracy(RANKS, SCORES) == pytest.approx(5 / 12)
    assert inversion_accuracy([[1, 2, 3]], [[0.1, 0.5, 0.0]]) == pytest.approx(2 / 3)
    estimate = inversion_accuracy_ci(RANKS, SCORES, n_boot=50)
    assert estimate.value == pytest.approx(5 / 12) and estimate.n == 2


def test_ranking_inputs_are_validated():
    with pytest.raises(ValueError, match="at least 2"):
        inversion_accuracy([[1]], [[0.5]])
    with pytest.raises(ValueError, match="3 human ranks but 2 model scores"):
        ranking_pair_accuracy([[1, 2, 3]], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="all are tied"):
        ranking_pair_accuracy([[1, 1]], [[0.1, 0.2]])


# ------------------------------------------------------------------------------- correlations and judges


def test_rank_correlations():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # One swap among 3: Spearman 1 - 6 * 2 / (3 * 8) = 0.5; Kendall (2 - 1) / 3 = 1/3.
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert kendall([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # Rank 1 is best, so scores falling with the rank correlate positively; the constant prompt is left out.
    result = rank_correlations([[1, 2, 3], [1, 1]], [[3.0, 2.0, 1.0], [0.2, 0.1]])
    assert result == {"spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0), "prompts": 1}


def test_judge_diagnostics():
    assert order_consistency([True, False, True, True], failed=[False, False, True, False]) == pytest.approx(2 / 3)
    assert math.isnan(order_consistency([True], failed=[True]))
    assert parse_failure_rate(torch.tensor([True, False, False, False])) == 0.25


# ----------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"\+1 \(A better\).*\[2\.0\]"):
        accuracy_without_ties([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="non-finite.*index 1"):
        accuracy_with_ties([1, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="same length"):
        accuracy_with_ties([1, 1], [0.1])
    with pytest.raises(ValueError, match="one-dimensional"):
        accuracy_without_ties([[1]], [[0.1]])
    with pytest.raises(TypeError, match="sequence of numbers"):
        accuracy_without_ties("A", [0.1])

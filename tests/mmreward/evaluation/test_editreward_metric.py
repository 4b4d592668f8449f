"""EditReward-Bench's metric functions on hand-computed cases (the authors' own: tests/golden/editreward_bench)."""

import math

import pytest

from mmreward.evaluation import editreward_metric as em


def test_tallies_and_accuracies_by_hand():
    human, margins = [1, -1, 0, 1, 0], [0.5, 0.25, 0.1, 0.0, 0.4]
    # eps = -1: no model tie; a zero margin on a decided pair is discordant.
    assert em.pair_tallies(human, margins, -1.0) == (1, 2, 2, 0, 0)
    assert em.accuracy_without_ties(human, margins) == pytest.approx(1 / 3)
    # (C + Thm) / 5 at eps 0: 1/5; 0.1: 2/5 (the human tie closes); 0.25: 2/5; 0.4: 3/5; 0.5: 2/5.
    assert em.accuracy_with_ties(human, margins) == (pytest.approx(3 / 5), 0.4)
    assert em.accuracy_with_ties([], []) == (0.0, 0.0)
    assert em.accuracy_without_ties([0, 0], [0.3, -0.2]) is None  # the reference divides by zero here


def test_strict_verdicts_follow_numpys_order_of_equal_scores():
    assert em.model_order([0.5, 0.5, 0.1]) == (1, 0, 2)
    assert em.strict_correct((1, 0, 2), [0.5, 0.5, 0.1], 0.0) and not em.strict_correct(
        (0, 1, 2), [0.5, 0.5, 0.1], 0.0
    )
    assert em.strict_correct(em.TIE, [0.3, 0.35], 0.05) and not em.strict_correct(em.TIE, [0.3, 0.36], 0.05)
    assert not em.strict_correct(None, [0.9, 0.1], 1.0)


def test_groups_are_validated_and_the_interval_is_over_groups():
    with pytest.raises(ValueError, match="3 candidates have 3 pairs, got 1"):
        em.ScoredGroup(3, (0, 1, 2), (1,), (0.3, 0.2, 0.1))
    with pytest.raises(ValueError, match="finite"):
        em.ScoredGroup(2, (0, 1), (1,), (math.nan, 0.1))
    estimate = em.strict_accuracy_ci([True, False, True, True], n_boot=200, seed=0)
    assert (estimate.value, estimate.n) == (0.75, 4) and 0.0 <= estimate.low <= 0.75 <= estimate.high <= 1.0
    assert em.strict_accuracy_ci([]) is None


def test_the_first_threshold_tried_is_zero():
    # Every pair decided and ordered rightly: eps 0 already gives 1.0, and a larger first eps would tie them all.
    assert em.accuracy_with_ties([1, -1], [0.5, -0.5]) == (1.0, 0.0)


def test_bad_groups_are_named():
    with pytest.raises(ValueError, match="a group needs at least 2 scored candidates, got 1"):
        em.ScoredGroup(2, (0,), (), (0.3,))
    with pytest.raises(ValueError, match=r"pair labels must be -1, 0 or 1, got \(2,\)"):
        em.ScoredGroup(2, (0, 1), (2,), (0.3, 0.1))


def test_results_say_which_accuracy_and_threshold_each_subset_uses():
    groups = [
        em.ScoredGroup(2, em.TIE, (0,), (0.5, 0.4)),
        em.ScoredGroup(2, (0, 1), (1,), (0.9, 0.1)),
        em.ScoredGroup(3, (0, 1, 2), (1, 1, 1), (0.9, 0.5, 0.1)),
    ]
    results, correct = em.evaluate(groups)
    k2, k3, overall = results["K=2"], results["K=3"], results["overall"]
    # K = 2: with ties, eps 0.1 (the tie's own margin) makes both groups right
    assert (k2.pairwise_ties, k2.pairwise_accuracy, k2.strict_ranking_accuracy) == (True, 1.0, 1.0)
    assert k2.epsilon == pytest.approx(0.1) and overall.epsilon == pytest.approx(0.1)
    assert (k3.pairwise_ties, k3.epsilon, k3.pairwise_accuracy) == (False, None, 1.0)
    assert (overall.pairwise_ties, overall.pair_count, correct) == (True, 5, [True] * 3)
    empty, flags = em.evaluate([])
    assert (empty["overall"].strict_ranking_accuracy, empty["overall"].strict_total_samples, flags) == (0.0, 0, [])


def test_the_interval_is_reproducible_and_its_replicates_are_honoured():
    correct = [True, False, True, True, False, True]
    first = em.strict_accuracy_ci(correct, n_boot=300, seed=3)
    assert em.strict_accuracy_ci(correct, n_boot=300, seed=3) == first
    assert em.strict_accuracy_ci(correct, n_boot=50, seed=3) != first
    # the seed reaches the resampling, and the default is seed 0 (the other benchmarks' default)
    many = [i % 3 != 0 for i in range(40)]
    seeded = em.strict_accuracy_ci(many, n_boot=50, seed=3)
    assert seeded != em.strict_accuracy_ci(many, n_boot=50, seed=0) == em.strict_accuracy_ci(many, n_boot=50)
    assert em.strict_accuracy_ci(many, n_boot=50) != em.strict_accuracy_ci(many, n_boot=50, seed=1)

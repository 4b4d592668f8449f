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

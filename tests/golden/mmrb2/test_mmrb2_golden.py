"""MMRB2 accuracy computed by mmreward exactly as MMRB2's scoring script computes it.

golden.json holds what ``evaluate_all_tasks`` of MMRB2's ``evaluate/compute_scores/compute_accuracy.py`` made of the
canned benchmark and judgement files of cases.py (make_golden.py): per task the pair counts, correct and counted
trials and the accuracy, and the overall percentage it prints. mmreward's metric must give the same numbers.
"""

import json
from pathlib import Path

import pytest

from mmreward.evaluation import mmrb2_metric
from tests.golden.mmrb2.cases import BENCHMARK, PREDICTIONS, TASKS

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())


def as_verdicts(prediction: dict) -> tuple:
    """A reference judgement record -> (forward, reverse) verdicts; an absent order or empty list is None."""
    return tuple(
        prediction[order][0].get("judgement") if prediction.get(order) else None for order in ("forward", "reverse")
    )


def ours() -> list[mmrb2_metric.TaskAccuracy]:
    return [
        mmrb2_metric.task_accuracy(
            task,
            [(p["id"], p["chosen"]) for p in BENCHMARK[task]],
            {pair_id: as_verdicts(pred) for pair_id, pred in PREDICTIONS[task].items()},
        )
        for task in TASKS
    ]


def test_task_results_match_the_reference_exactly():
    assert [r.to_dict() for r in ours()] == GOLDEN["tasks"]
    # The canned cases exercise missing pairs and uncounted (failed) verdicts in at least one task.
    assert any(t["missing_pairs"] for t in GOLDEN["tasks"])
    assert any(t["total_evaluated"] < 2 * t["evaluated_pairs"] for t in GOLDEN["tasks"])


def test_overall_pools_trials_as_the_reference_prints_it():
    results = ours()
    overall = mmrb2_metric.overall_accuracy(results)
    assert f"{overall * 100:.2f}" == GOLDEN["overall_printed_percent"]
    # Pooled, not the mean of the task accuracies (they differ on these cases).
    mean = sum(r.accuracy for r in results) / len(results)
    assert f"{mean * 100:.2f}" != GOLDEN["overall_printed_percent"]


def test_bootstrap_estimate_is_the_pooled_ratio():
    results = ours()
    per_pair = [
        mmrb2_metric.pair_trials(p["chosen"], *as_verdicts(PREDICTIONS[task][p["id"]]))
        for task in TASKS
        for p in BENCHMARK[task]
        if p["id"] in PREDICTIONS[task]
    ]
    estimate = mmrb2_metric.accuracy_ci([c for c, _ in per_pair], [n for _, n in per_pair], n_boot=200, seed=0)
    assert estimate.value == pytest.approx(mmrb2_metric.overall_accuracy(results), abs=1e-15)
    assert estimate.low <= estimate.value <= estimate.high and estimate.n == len(per_pair)


@pytest.mark.parametrize(("margin", "verdict"), [(0.3, "A"), (-1e-9, "B"), (0.0, "tie"), (None, None)])
def test_verdicts_from_margins(margin, verdict):
    assert mmrb2_metric.verdict_from_margin(margin) == verdict


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="chosen must be 'A' or 'B'"):
        mmrb2_metric.pair_trials("C", "A", "B")
    with pytest.raises(ValueError, match="finite"):
        mmrb2_metric.verdict_from_margin(float("nan"))

"""EditReward-Bench metrics computed by mmreward exactly as the authors' evaluation function computes them.

golden.json holds what ``evaluate_edit_reward_bench`` (TIGER-AI-Lab/EditReward ``EditReward/evaluate/eval_bench.py``)
made of the canned groups and scores of cases.py (make_golden.py): per subset and overall the pairwise accuracy,
strict ranking accuracy and counts, and each group's strict verdict. Here the same groups go through mmreward's
path for the Hub layout (one row per pair, ``comparison_type`` and a pair verdict, rebuilt into groups by
:mod:`mmreward.evaluation.benchmarks.editreward_bench`) and :mod:`mmreward.evaluation.editreward_metric`.
"""

import json
from itertools import combinations
from pathlib import Path

import pytest

from mmreward.evaluation import editreward_metric
from mmreward.evaluation.benchmarks.editreward_bench import PairRow, build_groups, parse_verdict
from tests.golden.editreward_bench.cases import GROUPS, LETTERS, SCORES, candidate_path

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())
NAMES = {2: "2-Pair", 3: "3-Pair", 4: "4-Pair"}


def hub_rows(k: int, name: str, ranking: str) -> list[PairRow]:
    """The Hub rows of one authors' record: one per pair, its verdict read off the ranking (K=2 ties as "A=B")."""
    rows = []
    for n, (i, j) in enumerate(combinations(range(k), 2)):
        x, y = LETTERS[i], LETTERS[j]
        if k == 2:
            verdict = "A=B" if "=" in ranking else ranking
        else:
            verdict = f"{x}>{y}" if ranking.index(x) < ranking.index(y) else f"{y}>{x}"
        rows.append(
            PairRow(
                id=name if k == 2 else f"{name}_{n}",  # a K=2 row is its group; larger groups share a prefix
                instruction=f"edit {name}",
                first=x,
                second=y,
                label=parse_verdict(verdict, x, y),
                source=Path(f"{k}pair/{name}/source.png"),
                images=(Path(candidate_path(k, name, i)), Path(candidate_path(k, name, j))),
                models=(None, None),
                human_scores=(None, None),
            )
        )
    return rows


def scored_groups() -> list[editreward_metric.ScoredGroup]:
    scored = []
    for k, cases in GROUPS.items():
        rows = [row for name, ranking, _ in cases for row in hub_rows(k, name, ranking)]
        groups, bad = build_groups(rows, k)
        assert bad == [] and [g.id for g in groups] == [name for name, _, _ in cases]
        scored += [
            editreward_metric.ScoredGroup(k, g.ranking, g.pair_labels, tuple(SCORES[str(p)] for p in g.candidates))
            for g in groups
        ]
    return scored


def test_subset_and_overall_results_match_the_reference():
    results, correct = editreward_metric.evaluate(scored_groups())
    assert list(results) == ["K=2", "K=3", "K=4", "overall"]
    for k, name in NAMES.items():
        ours, theirs = results[f"K={k}"].to_dict(), GOLDEN["results"][name]
        assert ours["pairwise_accuracy"] == pytest.approx(theirs["pairwise_accuracy"], abs=1e-12)
        for key in ("strict_ranking_accuracy", "strict_correct_count", "strict_total_samples", "pair_count"):
            assert ours[key] == theirs[key], (name, key)
    overall, theirs = results["overall"], GOLDEN["results"]["overall"]
    assert overall.pairwise_accuracy == pytest.approx(theirs["pairwise_accuracy"], abs=1e-12)
    assert overall.pairwise_accuracy == pytest.approx(GOLDEN["returned"], abs=1e-12)
    assert (overall.strict_ranking_accuracy, overall.strict_correct_count, overall.strict_total_samples) == (
        theirs["strict_ranking_accuracy"],
        theirs["strict_correct_count"],
        theirs["strict_total_samples"],
    )
    assert overall.pair_count == theirs["total_pair_count"]
    expected = [GOLDEN["strict_correct"][f"{NAMES[k]}/{i}"] for k in GROUPS for i in range(len(GROUPS[k]))]
    assert correct == expected


def test_the_cases_exercise_the_reference_quirks():
    results, correct = editreward_metric.evaluate(scored_groups())
    # The K=2 grid picks eps = 1/16 (a strictly better accuracy than at 0): the two ties that close are correct.
    assert results["K=2"].epsilon == 0.0625 and correct[3] and correct[8] and not correct[4]
    # Equal scores: numpy's order puts the later candidate first, so g6 (A>B, 0.5 vs 0.5) is wrong and h3 right.
    assert not correct[5] and correct[11]
    # Pooled strict accuracy is not the mean of the subsets'.
    mean = sum(results[f"K={k}"].strict_ranking_accuracy for k in GROUPS) / 3
    assert results["overall"].strict_ranking_accuracy != pytest.approx(mean)

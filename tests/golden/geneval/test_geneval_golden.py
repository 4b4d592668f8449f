"""GenEval's rules after the detector, exactly as the authors' code decides them.

golden.json holds what GenEval's official ``evaluate_image`` (``correct``) and Flow-GRPO's ``compute_geneval``
(``score``, ``strict_rewards``, ``rewards``) gave for the canned detections and colours of cases.py, with GenEval's
thresholds and ``max_overlap`` 1.0 and 0.5; make_golden.py regenerates it. Here the same boxes go through
:func:`select_objects` and :func:`judge`, with each box's colour the argmax of its canned scores.
"""

import json
from pathlib import Path

import pytest

from mmreward.rewards.geneval import COLORS, Thresholds, judge, select_objects, tag_threshold
from tests.golden.geneval.cases import CASES, colour_logits
from tests.golden.geneval.cases import COLORS as CASE_COLORS

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())


def verdicts(max_overlap: float):
    settings = Thresholds(max_overlap=max_overlap)
    out = []
    for metadata, candidates, colours in CASES:
        boxes = {name: [tuple(float(v) for v in box) for box in found] for name, found in candidates.items()}
        detected = select_objects(boxes, tag_threshold(metadata, settings), settings)

        def colour_of(name, count, detected=detected, boxes=boxes, colours=colours):
            scores = [colour_logits(colours[name][boxes[name].index(box)]) for box in detected[name][:count]]
            return [COLORS[max(range(len(s)), key=s.__getitem__)] for s in scores]

        out.append(judge(detected, metadata, colour_of, settings))
    return out


def test_colour_list_is_the_references():
    assert COLORS == CASE_COLORS


@pytest.mark.parametrize("run", GOLDEN["runs"], ids=lambda r: f"max_overlap={r['max_overlap']}")
def test_every_case_matches_geneval_and_flow_grpo_exactly(run):
    ours = verdicts(run["max_overlap"])
    assert len(ours) == len(CASES) == len(run["score"])
    assert [v.correct for v in ours] == run["correct"]
    assert [float(v.strict_correct) for v in ours] == run["strict_rewards"]
    assert [v.score for v in ours] == run["score"]
    # GenEval's correct is reported as Flow-GRPO's non-strict reward too.
    assert [float(v.correct) for v in ours] == run["rewards"]


def test_the_cases_exercise_the_rules():
    runs = {r["max_overlap"]: r for r in GOLDEN["runs"]}
    assert len(set(runs[1.0]["score"])) >= 7  # partial credit, negative counts, the position quirk's 3/4
    assert runs[1.0]["correct"] != [bool(s) for s in runs[1.0]["strict_rewards"]]  # the two rules disagree
    assert runs[1.0]["score"] != runs[0.5]["score"]  # suppression changes a count

"""UniGenBench checklist answers read by mmreward as UniGenBench's evaluation code reads them.

golden.json holds what ``parse_evaluation_response`` of UniGenBench's ``eval/src/eval_common.py`` (with its
``score == 1`` count) made of canned answers (cases.py; make_golden.py): a pass/fail list per answer, or None where
it fails the item. mmreward's reader (``parse_checklist``, the checklist judge's generate mode) must agree wherever
the case says so and differ on the others, the deliberate differences listed in cases.py.
"""

import json
from pathlib import Path

from mmreward.rewards.vlm.parsing import AnswerParseError, parse_checklist
from tests.golden.unigenbench.cases import CASES

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())


def read(text, count):
    try:
        return parse_checklist(text, count)
    except AnswerParseError:
        return None


def test_golden_covers_every_case():
    assert [row["text"] for row in GOLDEN["cases"]] == [text for text, _, _ in CASES]
    passed = [row["passed"] for row in GOLDEN["cases"]]
    assert None in passed and any(p and all(p) for p in passed) and any(p and not any(p) for p in passed)


def test_checklist_reading_agrees_where_the_cases_say():
    for (text, count, agrees), row in zip(CASES, GOLDEN["cases"], strict=True):
        assert (read(text, count) == row["passed"]) == agrees, (text, read(text, count), row["passed"])

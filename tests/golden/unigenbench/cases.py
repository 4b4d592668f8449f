"""Canned checklist answers (our own wording) for UniGenBench's answer reader, shared by make_golden.py and the test.

Each case is ``(text, number of test points, agrees)``; ``agrees`` says whether mmreward's reading
(:func:`mmreward.rewards.vlm.parsing.parse_checklist`) gives the reference's pass/fail list. Where it does not, the
difference is deliberate: mmreward reads the last ``<score>`` block and does not need the ``<analysis>`` block, takes
quoted "1" / "0", and fails an answer whose list is not in brackets or holds anything other than 0 or 1 instead of
reading it as Python or counting the other values as misses.
"""

from __future__ import annotations

_ANALYSIS = "<analysis>['the cat is there', 'the colour is wrong', 'two cups are shown']</analysis>\n"

CASES: tuple[tuple[str, int, bool], ...] = (
    (_ANALYSIS + "<score>[1, 0, 1]</score>", 3, True),
    (_ANALYSIS + "<score>[0, 0, 0]</score>", 3, True),
    (_ANALYSIS + "<score>\n  [1,1,1]\n</score>", 3, True),
    ("<analysis>['ok']</analysis><score>[1]</score>", 1, True),
    (_ANALYSIS + "<score>[1, 0]</score>", 3, True),  # too short: both fail the item
    (_ANALYSIS + "<score>[1, 0, 1, 1]</score>", 3, True),  # too long: analysis length differs too; both fail
    (_ANALYSIS + "<score>1, 0, 1</score>", 3, False),  # no brackets: a tuple to the reference; mmreward fails
    (_ANALYSIS + "<score>[1, 0, 1]", 3, True),  # unclosed: both fail
    ("", 3, True),
    ("<score>[1, 0, 1]</score>", 3, False),  # no analysis block: the reference fails the item
    (_ANALYSIS + "<score>['1', '0', '1']</score>", 3, False),  # quoted: the reference counts '1' != 1 as a miss
    (_ANALYSIS + "<score>[1, 2, 1]</score>", 3, False),  # a 2: the reference counts a miss, mmreward fails
    (_ANALYSIS + "<score>[0, 0, 0]</score>\n<score>[1, 1, 1]</score>", 3, False),  # the first block counts there
)

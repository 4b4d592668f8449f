"""Canned MMRB2 benchmark files and judgement files (our own ids and verdicts), shared by make_golden.py and the test.

``BENCHMARK[task]`` is the ``pairs`` list of the task's benchmark file (only the fields the scoring reads: ``id`` and
``chosen``); ``PREDICTIONS[task]`` is a judgement file in the reference's format: pair id -> ``{"forward":
[{"judgement": ...}], "reverse": [...]}``. The cases cover consistent right and wrong judges, order flips, ties,
unreadable answers, failed calls (empty, None, an empty list, an absent order), pairs without a prediction and
predictions of pairs the benchmark does not hold.
"""

from __future__ import annotations

TASKS = ("t2i", "edit", "interleaved", "reasoning")


def _judged(forward, reverse):
    out = {}
    for name, verdict in (("forward", forward), ("reverse", reverse)):
        if verdict == "absent":
            continue
        out[name] = [] if verdict == "empty-list" else [{"judgement": verdict, "evaluator": "canned", "metadata": {}}]
    return out


# (pair id, chosen, forward verdict, reverse verdict); "missing" = no prediction for the pair.
_ROWS = {
    "t2i": [
        ("t2i-0", "A", "A", "B"),  # consistent, right: 2 of 2
        ("t2i-1", "B", "B", "A"),
        ("t2i-2", "A", "B", "A"),  # consistent, wrong
        ("t2i-3", "B", "A", "A"),  # flips with the order: 1 of 2
        ("t2i-4", "A", "tie", "B"),  # a tie counts as a wrong trial
        ("t2i-5", "B", "missing", "missing"),
        ("t2i-6", "A", "", "B"),  # failed forward call: 1 of 1
    ],
    "edit": [
        ("edit-0", "A", "A", "A"),
        ("edit-1", "A", "A", "B"),
        ("edit-2", "B", None, None),  # both calls failed: evaluated pair, no trial
        ("edit-3", "B", "absent", "A"),
        ("edit-4", "A", "empty-list", "B"),
        ("edit-5", "B", "unparsable", "B"),
    ],
    "interleaved": [
        ("inter-0", "B", "B", "B"),
        ("inter-1", "B", "a", "b"),  # lower case is not A/B to the reference: two wrong trials
        ("inter-2", "A", "A", "B"),
        ("inter-3", "A", "missing", "missing"),
        ("inter-4", "B", "tie", "tie"),
    ],
    "reasoning": [
        ("reas-0", "A", "A", "B"),
        ("reas-1", "B", "A", "B"),
        ("reas-2", "B", "B", "A"),
        ("reas-3", "A", "B", "B"),
        ("reas-4", "B", "A", "B"),
        ("reas-5", "A", "A", "B"),
        ("reas-6", "A", "missing", "missing"),
    ],
}

BENCHMARK = {task: [{"id": i, "chosen": c} for i, c, _, _ in rows] for task, rows in _ROWS.items()}
PREDICTIONS = {task: {i: _judged(f, r) for i, _, f, r in rows if f != "missing"} for task, rows in _ROWS.items()}
# A prediction for a pair no benchmark file holds: ignored by the reference.
PREDICTIONS["t2i"]["not-in-benchmark"] = _judged("A", "B")

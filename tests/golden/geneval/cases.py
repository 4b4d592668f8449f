"""Canned detections and colours of our own for the GenEval rules (no detector, no CLIP).

Each case is ``(metadata, candidates, colours)``: ``metadata`` in GenEval's layout; ``candidates`` per class, the
detector's boxes ``[x1, y1, x2, y2, confidence]`` in any order (coordinates and confidences exact in float32, away
from the rules' boundaries, so float32 and float64 arithmetic decide alike); ``colours`` per class, the colour CLIP
would give each box, by its position in the class's list. The colour scores are :func:`colour_logits`.
"""

from __future__ import annotations

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
CLASSES = ("person", "dog", "cat", "car", "apple", "clock", "bench", "teddy bear", "wine glass", "bird")


def colour_logits(colour: str) -> list[float]:
    """Ten colour scores whose argmax is ``colour`` (the others increase slowly, so no ties)."""
    return [5.0 if c == colour else 0.125 * i for i, c in enumerate(COLORS)]


def _one(name: str, **extra) -> dict:
    return {"class": name, "count": 1, **extra}


BIRDS = [[8.0 * i, 4.0, 8.0 * i + 6.0, 10.0, 0.5 + i / 64] for i in range(18)]

CASES = [
    # single object: present, present three times, below the threshold, too many boxes (max_objects)
    ({"tag": "single_object", "include": [_one("dog")]}, {"dog": [[10.0, 10.0, 50.0, 60.0, 0.875]]}, {}),
    (
        {"tag": "single_object", "include": [_one("dog")]},
        {"dog": [[10, 10, 50, 60, 0.5], [100, 10, 150, 60, 0.875], [200, 10, 250, 60, 0.625]]},
        {},
    ),
    ({"tag": "single_object", "include": [_one("dog")]}, {"dog": [[10, 10, 50, 60, 0.25]], "cat": []}, {}),
    ({"tag": "single_object", "include": [_one("bird")]}, {"bird": BIRDS}, {}),
    # two objects: both, one missing, one found twice (another class's boxes do not count)
    (
        {"tag": "two_object", "include": [_one("cat"), _one("car")]},
        {"cat": [[0, 0, 9, 9, 0.75]], "car": [[20, 20, 40, 40, 0.5]]},
        {},
    ),
    (
        {"tag": "two_object", "include": [_one("cat"), _one("car")]},
        {"cat": [[0, 0, 9, 9, 0.75]], "dog": [[20, 20, 40, 40, 0.5]]},
        {},
    ),
    (
        {"tag": "two_object", "include": [_one("cat"), _one("car")]},
        {"cat": [[0, 0, 9, 9, 0.75], [30, 0, 39, 9, 0.375]], "car": [[20, 20, 40, 40, 0.5]]},
        {},
    ),
    # counting (threshold 0.9): exactly two, two of three above the threshold, three (the exclude clause), one
    (
        {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]},
        {"clock": [[0, 0, 20, 20, 0.9375], [40, 0, 60, 20, 0.96875]]},
        {},
    ),
    (
        {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]},
        {"clock": [[0, 0, 20, 20, 0.9375], [40, 0, 60, 20, 0.96875], [80, 0, 99, 20, 0.875]]},
        {},
    ),
    (
        {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]},
        {"clock": [[0, 0, 20, 20, 0.9375], [40, 0, 60, 20, 0.96875], [80, 0, 99, 20, 0.921875]]},
        {},
    ),
    (
        {"tag": "counting", "include": [{"class": "apple", "count": 4}], "exclude": [{"class": "apple", "count": 5}]},
        {"apple": [[0, 0, 20, 20, 0.9375]]},
        {},
    ),
    # colours: right, wrong, right colour on the best of two boxes (GenEval passes, the exact count fails)
    ({"tag": "colors", "include": [_one("car", color="red")]}, {"car": [[5, 5, 70, 40, 0.75]]}, {"car": ["red"]}),
    ({"tag": "colors", "include": [_one("car", color="red")]}, {"car": [[5, 5, 70, 40, 0.75]]}, {"car": ["blue"]}),
    (
        {"tag": "colors", "include": [_one("car", color="red")]},
        {"car": [[5, 5, 70, 40, 0.5], [80, 5, 120, 40, 0.75]]},
        {"car": ["green", "red"]},
    ),
    # position: satisfied, the wrong side, no target found, overlapping boxes (no relation), above and below
    (
        {"tag": "position", "include": [_one("teddy bear"), _one("dog", position=["right of", 0])]},
        {"teddy bear": [[0, 20, 40, 60, 0.625]], "dog": [[100, 25, 140, 60, 0.75]]},
        {},
    ),
    (
        {"tag": "position", "include": [_one("teddy bear"), _one("dog", position=["left of", 0])]},
        {"teddy bear": [[0, 20, 40, 60, 0.625]], "dog": [[100, 25, 140, 60, 0.75]]},
        {},
    ),
    (
        {"tag": "position", "include": [_one("teddy bear"), _one("dog", position=["right of", 0])]},
        {"teddy bear": [[0, 20, 40, 60, 0.125]], "dog": [[100, 25, 140, 60, 0.75]]},
        {},
    ),
    (
        {"tag": "position", "include": [_one("bench"), _one("cat", position=["right of", 0])]},
        {"bench": [[10, 10, 60, 60, 0.625]], "cat": [[14, 12, 64, 62, 0.75]]},
        {},
    ),
    (
        {"tag": "position", "include": [_one("bench"), _one("bird", position=["above", 0])]},
        {"bench": [[10, 80, 60, 120, 0.625]], "bird": [[20, 0, 40, 20, 0.75]]},
        {},
    ),
    (
        {"tag": "position", "include": [_one("bench"), _one("bird", position=["below", 0])]},
        {"bench": [[10, 80, 60, 120, 0.625]], "bird": [[20, 0, 40, 20, 0.75]]},
        {},
    ),
    (
        {"tag": "position", "include": [_one("person"), _one("dog", position=["right of", 0])]},
        {"person": [[0, 0, 30, 90, 0.625]], "dog": [[60, 5, 90, 35, 0.75], [100, 60, 140, 90, 0.5]]},
        {},
    ),
    # colour attribution: both right, one wrong, one object missing
    (
        {"tag": "color_attr", "include": [_one("wine glass", color="purple"), _one("apple", color="black")]},
        {"wine glass": [[0, 0, 30, 60, 0.75]], "apple": [[50, 30, 80, 60, 0.625]]},
        {"wine glass": ["purple"], "apple": ["black"]},
    ),
    (
        {"tag": "color_attr", "include": [_one("wine glass", color="purple"), _one("apple", color="black")]},
        {"wine glass": [[0, 0, 30, 60, 0.75]], "apple": [[50, 30, 80, 60, 0.625]]},
        {"wine glass": ["purple"], "apple": ["red"]},
    ),
    (
        {"tag": "color_attr", "include": [_one("wine glass", color="purple"), _one("apple", color="black")]},
        {"wine glass": [[0, 0, 30, 60, 0.75]]},
        {"wine glass": ["pink"]},
    ),
    # overlapping boxes of one object: two dogs without suppression, one with max_overlap 0.5
    (
        {"tag": "single_object", "include": [_one("dog")]},
        {"dog": [[10, 10, 50, 60, 0.875], [12, 11, 52, 62, 0.75], [100, 10, 110, 20, 0.1875]]},
        {},
    ),
    (
        {"tag": "colors", "include": [_one("dog", color="white")]},
        {"dog": [[10, 10, 50, 60, 0.875], [12, 11, 52, 62, 0.75]]},
        {"dog": ["white", "black"]},
    ),
]
# GenEval's max_overlap option: 1.0 (its default: no suppression) and 0.5.
MAX_OVERLAPS = (1.0, 0.5)

"""Canned UnifiedReward-Flex answers (our own wording), weight settings and groups, shared by make_golden.py and the
test.

The answers exercise what decides a preference in Pref-GRPO's Flex reader: where the JSON is (bare, fenced, with
text around it, two objects, none, malformed), how winner fields are spelt (case, spacing, the other medium's noun,
both or neither candidate, ``Image 1/2``, not a string), which categories count (a fourth, a repeated or empty name,
none, a missing ``cat_winner``) and what happens without an overall winner.
"""

from __future__ import annotations

import itertools
import json


def verdict(winner, *cats, extra: dict | None = None) -> str:
    """A JSON answer with ``cats`` as ``(name, cat_winner)`` (``cat_winner`` None: the key is left out)."""
    categories = []
    for name, cat_winner in cats:
        category = {"name": name, "dims": [{"name": "detail", "score_1": 6, "score_2": 4}], "cat_reason": "see dims"}
        if cat_winner is not None:
            category["cat_winner"] = cat_winner
        categories.append(category)
    body = {"prompt": "a canned caption", "categories": categories, "reason": "weighed it all", "winner": winner}
    return json.dumps({**body, **(extra or {})}, indent=1)


STANDARD = ("Caption fidelity", "Rendering quality", "Visual appeal")


def standard(winner, w1, w2, w3) -> str:
    return verdict(winner, *zip(STANDARD, (w1, w2, w3), strict=True))


ANSWERS: tuple[str, ...] = (
    # 0-3: the plain forms with the three usual categories.
    standard("Image 1", "Image 1", "Image 1", "Image 1"),
    standard("Image 2", "Image 1", "Image 2", "Image 1"),
    standard("Image 1", "Image 2", "Image 2", "Image 2"),
    standard("Image 2", "Image 2", "Image 1", "Image 2"),
    # 4-6: where the JSON sits.
    "Here is my verdict:\n```json\n" + standard("Image 1", "Image 2", "Image 1", "Image 1") + "\n```\nDone.",
    "```json\n" + standard("Image 2", "Image 1", "Image 1", "Image 2") + "\n```",
    standard("Image 1", "Image 1", "Image 1", "Image 2") + "\nAnd a note {not json}",
    # 7-12: spellings of the winner fields.
    standard("image2", "IMAGE 1", "image  2", "Image 1"),
    standard("Video 1", "video 2", "Video1", "Video 2"),
    standard("Image 1/2", "Image 1/2", "Image 2/1", "Image 1"),
    standard("Image 1 and Image 2 are close; Image 2 wins", "tie", "both", "Image 12"),
    standard("The second image", "Image 1 is better", "Image 2", "neither"),
    standard(2, 1, "Image 2", None),
    # 13-17: which categories count.
    verdict(
        "Image 2",
        ("Caption fidelity", "Image 1"),
        ("Rendering quality", "Image 1"),
        ("Visual appeal", "Image 2"),
        ("Prompt-specific charm", "Image 1"),
    ),
    verdict("Image 1", ("Caption fidelity", "Image 2"), ("Caption fidelity", "Image 1"), ("Visual appeal", "Image 2")),
    verdict("Image 2", ("", "Image 1"), ("  ", "Image 2"), ("Visual appeal", "Image 1")),
    verdict("Image 1"),
    verdict("Image 2", ("Caption fidelity", "Image 1")),
    # 18-24: no overall winner, or no readable JSON.
    verdict(None, *zip(STANDARD, ("Image 1", "Image 1", "Image 2"), strict=True)),
    json.dumps({"categories": [{"name": "Caption fidelity", "cat_winner": "Image 2"}]}),
    standard("Image 1", "Image 1", "Image 1", "Image 1").rstrip("}") + ",}",
    "Image 1 is better in every respect.",
    "",
    '{"winner": "Image 1"} and then {"winner": "Image 2"}',
    "{}",
)

# Answers Pref-GRPO's code cannot read at all: it raises (mmreward fails the pair in both parsing styles).
RAISING: tuple[str, ...] = (
    '["Image 1", "Image 2"]',
    '{"winner": "Image 1", "categories": "all of them"}',
    '{"winner": "Image 1", "categories": ["Caption fidelity"]}',
)

# Weight settings: (overall_weight, dim_weight, category_weights).
WEIGHTS: tuple[tuple[float, float, list[float] | None], ...] = (
    (1.0, 1.0, None),
    (2.0, 1.0, [3.0, 1.0, 0.5]),
    (1.0, 0.0, None),
    (0.0, 1.0, [0.0, 0.0, 0.0]),
    (1.0, 3.0, [2.0]),
)

# Groups of images: each pair (i, j), i < j, is answered by ANSWERS[answers[k]] for the k-th pair in
# itertools.combinations order. They mix categories named differently, answers without categories and ties.
GROUPS: tuple[dict, ...] = (
    {"size": 3, "answers": [0, 1, 2]},
    {"size": 4, "answers": [3, 13, 14, 4, 18, 7]},
    {"size": 4, "answers": [15, 16, 21, 1, 9, 17]},
    {"size": 5, "answers": [0, 5, 22, 10, 11, 24, 8, 6, 2, 19]},
)


def group_outputs(group: dict) -> dict[tuple[int, int], str]:
    pairs = itertools.combinations(range(group["size"]), 2)
    return {pair: ANSWERS[k] for pair, k in zip(pairs, group["answers"], strict=True)}

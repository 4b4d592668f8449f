"""Canned GenEval 2-style items of our own wording: per prompt its (question, answer) atoms, and for every atom the
next-token logits a VQA model would give, by a fixed formula over the tiny tokenizer's vocabulary (so the generator
and the test build the same numbers without storing them)."""

from __future__ import annotations

import math

ITEMS = [
    (
        "two green kites above a lighthouse",
        [
            ("How many kites are in the image?", "two"),
            ("Are the kites green?", "Yes"),
            ("Are there any kites in the image?", "Yes"),
            ("Are the kites above the lighthouse?", "Yes"),
            ("Is there a lighthouse in the image?", "Yes"),
        ],
    ),
    (
        "seven wooden spoons beside a blue bowl",
        [
            ("How many spoons are in the image?", "seven"),
            ("Are the spoons wooden?", "Yes"),
            ("Is the bowl blue?", "Yes"),
        ],
    ),
    (
        "a fox jumping over twelve logs",
        [
            ("Is there a fox in the image?", "Yes"),
            ("Is the fox jumping over the logs?", "Yes"),
            ("How many logs are in the image?", "twelve"),
        ],
    ),
]
# Words whose first tokens the formula lifts, so that answer probabilities are far from uniform.
LIFTED = ("Yes", " yes", "two", " Two", "7", "No")
# Text the tiny tokenizer is trained on: the questions, the answer words and a little more.
CORPUS = [
    *(q + " Answer in one word." for _, atoms in ITEMS for q, _ in atoms),
    *(p for p, _ in ITEMS),
    "Yes yes No no one two three four five six seven eight nine ten other 1 2 3 4 5 6 7 8 9 10",
    "One Two Three Four Five Six Seven Eight Nine Ten Twelve twelve",
]


def logits(case: int, atom: int, vocab_size: int, lifted_ids: list[int]) -> list[float]:
    """Deterministic logits for atom ``atom`` of item ``case``: a ripple over the vocabulary plus lifts."""
    values = [3.0 * math.sin(0.37 * (i + 1) * (case + 2) + atom) for i in range(vocab_size)]
    for k, token in enumerate(lifted_ids):
        values[token] += 2.0 + ((case + atom + k) % 4)
    if case == 2 and atom == 2:  # an atom the model rules out: its probability underflows to 0 in float32
        values = [v if i == 0 else -1e4 for i, v in enumerate(values)]
    return values

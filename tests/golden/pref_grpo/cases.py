"""Canned judge outputs (our own wording) and the groups they answer, shared by make_golden.py and the test.

The outputs exercise what decides a verdict in Pref-GRPO's reader: where the ``<answer>`` block is (first of two,
missing, unclosed, empty, upper-case tags), the sentence's exact spelling (case, spacing, digits glued to the noun,
punctuation and Markdown around it), several sentences in one answer, and tie or no-verdict phrasings.
"""

from __future__ import annotations

import itertools

THINK = (
    "<think>\n1. Caption fidelity: Image 1 (8/10) - shows the cat; Image 2 (6/10) - the cat is cropped.\n"
    "2. Visual quality: Image 1 (7/10) - slight blur; Image 2 (9/10) - crisp.\n"
    "Total: Image 1 15, Image 2 15\n</think>\n"
)

ANSWERS: tuple[str, ...] = (
    # 0-2: the plain forms.
    THINK + "<answer>Image 1 is better</answer>",
    THINK + "<answer>Image 2 is better</answer>",
    "<answer>Image 1 is better</answer>",
    # 3-5: two answer blocks; the first one decides.
    THINK + "<answer>Image 2 is better</answer>\n<answer>Image 1 is better</answer>",
    "<answer>Image 1 is better</answer> on reflection <answer>Image 2 is better</answer>",
    "<Answer>Image 2 is better</Answer> then <answer>Image 1 is better</answer>",
    # 6-10: letter case of the sentence and of the tags.
    THINK + "<answer>image 1 is better</answer>",
    "<answer>IMAGE 2 IS BETTER</answer>",
    "<answer>Image 1 Is Better</answer>",
    "<ANSWER>Image 2 is better</ANSWER>",
    "<answer>image 2 is Better.</answer>",
    # 11-17: whitespace, punctuation and emphasis around or inside the sentence.
    "<answer>\n   Image 2 is better   \n</answer>",
    "<answer>\tImage 1 is better\t</answer>",
    "<answer>Image  1 is better</answer>",
    "<answer>Image1 is better</answer>",
    "<answer>Image 2\nis better</answer>",
    "<answer>**Image 2 is better**</answer>",
    "<answer>Image 1 is better.</answer>",
    # 18-21: both sentences, or a negated one, in one answer; Image 1's sentence is looked for first.
    "<answer>Image 2 is better than I expected, but Image 1 is better</answer>",
    "<answer>Image 1 is not better; Image 2 is better</answer>",
    "<answer>I would say Image 2 is better overall</answer>",
    "<answer>Image 12 is better</answer>",
    # 22-26: ties and no verdict.
    "<answer>Both images are equally good</answer>",
    "<answer>They are tied.</answer>",
    THINK + "The images are hard to separate.",
    "Image 1 is better",
    "",
    # 27-31: broken blocks.
    "<answer>Image 1 is better",
    "<answer></answer>",
    "<answer>   </answer>",
    "</answer>Image 2 is better<answer>",
    "<answer ><answer>Image 2 is better</answer></answer>",
    # 32-34: the think block alone carries a verdict, or the answer names the wrong medium.
    "<think>Image 2 is better here.</think><answer>Image 1 is better</answer>",
    "<think>Image 1 is better here.</think>",
    "<answer>Video 1 is better</answer>",
    # 35-37: video sentences (the video groups), with their own edge cases.
    "<answer>Video 2 is better</answer>",
    "<answer>video 1 is better</answer>",
    "<answer>Both videos are equally good</answer>",
)

# Each group's pairs, in itertools.combinations order, are answered by ANSWERS[answers[k]].
GROUPS: tuple[dict, ...] = (
    # Five images: four judgments each, so every win rate is a multiple of 1/8 and needs no rounding.
    {"kind": "image", "size": 5, "answers": [0, 1, 3, 6, 11, 14, 18, 22, 27, 31]},
    # Four images: three judgments each; thirds show Pref-GRPO's rounding to 3 decimals.
    {"kind": "image", "size": 4, "answers": [2, 7, 4, 19, 26, 16]},
    {"kind": "image", "size": 3, "answers": [34, 20, 5]},
    {"kind": "video", "size": 3, "answers": [34, 35, 36]},
    {"kind": "video", "size": 4, "answers": [35, 37, 34, 0, 36, 35]},
)


def group_outputs(group: dict) -> dict[tuple[int, int], str]:
    """``{(first, second): canned output}`` for every pair of the group, first < second."""
    pairs = list(itertools.combinations(range(group["size"]), 2))
    if len(pairs) != len(group["answers"]):
        raise ValueError(f"a group of {group['size']} has {len(pairs)} pairs, got {len(group['answers'])} answers")
    return {pair: ANSWERS[k] for pair, k in zip(pairs, group["answers"], strict=True)}

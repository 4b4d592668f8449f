"""Canned judge outputs (our own wording) for the UnifiedReward answer readers, shared by make_golden.py and the test.

Each case is ``(text, agrees)``: ``agrees`` says whether mmreward's default (robust) reading gives the reference's
result. Where it does not, the difference is deliberate (module docstring of mmreward.rewards.vlm.parsing): case,
spacing and Markdown are tolerated, the last verdict sentence counts, and an answer without what the template asked
for fails instead of becoming a tie or a batch mean.
"""

from __future__ import annotations

# Pair ranking answers of the UnifiedReward 2.0 video judge, read by its GenAI-Bench-Video evaluation script.
PAIRWISE: tuple[tuple[str, bool], ...] = (
    ("Video 1 is better.", True),
    ("Video 2 is better.", True),
    ("Both videos are equally good.", True),
    ("Video 2 is better\n", True),
    ("**Video 1 is better**", True),
    ("Video 2 is better than Video 1 in every respect.", True),
    ("Overall, Video 2 is better; Video 1 is better only in colour.", True),
    ("Video 1 is better, although Video 2 is better lit.", False),  # robust: the last sentence
    ("video 2 is better", False),  # robust: case is ignored
    ("Video  2 is better", False),  # robust: runs of spaces
    ("Video1 is better", False),  # robust: a digit glued to its noun
    ("I cannot tell them apart.", False),  # robust: no verdict fails
    ("Video 12 is better", False),  # robust: no verdict fails
    ("", False),  # robust: an empty answer fails
)

_THINK = (
    "<think>\n1. Semantic consistency: Video 1 (8/10) - follows the caption; Video 2 (6/10) - misses the dog.\n"
    "2. Temporal coherence: Video 1 (7/10) - a small jump; Video 2 (9/10) - smooth.\nTotal score:\n"
    "Video 1: 8+7=15\nVideo 2: 6+9=15\n</think>\n"
)

# UnifiedReward-Think answers, read by its GenAI-Bench-Video evaluation script (the whole text, not the answer block).
THINK: tuple[tuple[str, bool], ...] = (
    (_THINK + "<answer>Video 1 is better</answer>", True),
    (_THINK + "<answer>Video 2 is better</answer>", True),
    ("<answer>Video 2 is better</answer>\n<answer>Video 1 is better</answer>", True),
    ("<think>At first sight Video 1 is better.</think><answer>Video 2 is better</answer>", False),  # answer decides
    (_THINK + "<answer>video 1 is better</answer>", False),  # robust: case is ignored
    (_THINK, False),  # robust: no answer block fails
    ("<answer>Both videos are equally good</answer>", False),  # the Think template has no tie: fails
)

# UnifiedReward 2.0 image scores, read by Pref-GRPO's reward code (``extract_normalized_rewards``), one batch.
POINTWISE: tuple[tuple[str, bool], ...] = (
    ("Alignment Score (1-5): 3.2145\nCoherence Score (1-5): 4.0012\nStyle Score (1-5): 2.5000", True),
    ("Alignment Score (1-5): 4\nCoherence Score (1-5): 5\nStyle Score (1-5): 1", True),
    (
        "Here is my evaluation.\nAlignment Score (1-5): 2.6947\nCoherence Score (1-5): 2.3715\n"
        "Style Score (1-5): 2.8025",
        True,
    ),
    ("Alignment Score (1-5): 2\nCoherence Score (1-5): 3\nStyle Score (1-5): 4\nAlignment Score (1-5): 4.5", True),
    ("Alignment Score (1-5):   1.75\nCoherence Score (1-5):3\nStyle Score (1-5): 4.5.", True),
    ("**Alignment Score (1-5):** 3.5\nCoherence Score (1-5): 3\nStyle Score (1-5): 3", False),  # Markdown
    ("alignment score (1-5): 2\nCoherence Score (1-5): 3\nStyle Score (1-5): 3", False),  # case
    ("Alignment Score: 3\nCoherence Score: 2\nStyle Score: 4", False),  # no range: not read by the reference
    ("Alignment Score (1-5): 3\nCoherence Score (1-5): 4", False),  # missing Style: reference fills the mean
    ("Alignment Score (1-5): 10\nCoherence Score (1-5): 4\nStyle Score (1-5): 4", False),  # 10 read as 1
    ("Alignment Score (1-5): -2\nCoherence Score (1-5): 4\nStyle Score (1-5): 4", False),  # out of range
)

"""Canned UnifiedReward-Edit answers (our own wording) and the weight settings the golden is made under.

The answers cover what a judge may write: a clean JSON object, one inside prose or a code fence, the output format
of the published prompt copied with its trailing comma (not JSON), numbers written as strings, booleans, lists too
short or too long, scores out of 0-25, non-finite values, a JSON-encoded string, two objects, and no JSON at all.
"""

ANSWERS = {
    "clean": '{"reasoning": "The sky is green and nothing else changed.", "score": [23, 21]}',
    "decimals": '{"reasoning": "Mostly done.", "score": [17.5, 12.25]}',
    "in prose": 'My evaluation:\n{\n"reasoning": "The hat is added, the face changed.",\n"score": [15, 6]\n}\nDone.',
    "code fence": '```json\n{"reasoning": "Natural light, clean edges.", "score": [24, 22]}\n```',
    "trailing comma": '{\n\n"reasoning" : "The dog is now a cat.",\n"score" : [20, 18],\n}',
    "strings": '{"reasoning": "ok", "score": ["19", "7.5"]}',
    "booleans": '{"reasoning": "odd", "score": [true, false]}',
    "three scores": '{"reasoning": "extra", "score": [10, 11, 12]}',
    "one score": '{"reasoning": "short", "score": [14]}',
    "no score": '{"reasoning": "I cannot judge this."}',
    "score not a list": '{"reasoning": "x", "score": 12}',
    "words": '{"reasoning": "x", "score": ["high", "low"]}',
    "out of range": '{"reasoning": "generous", "score": [30, -3]}',
    "infinite": '{"reasoning": "x", "score": [Infinity, 4]}',
    "json string": '"{\\"reasoning\\": \\"nested\\", \\"score\\": [9, 8]}"',
    "two objects": '{"reasoning": "first try", "score": [5, 5]} and then {"reasoning": "second", "score": [7, 7]}',
    "nested object": '{"reasoning": {"note": "inner braces"}, "score": [13, 2]}',
    "plain text": "The edit follows the instruction well. Editing success 22, over-editing 20.",
    "empty": "",
}

# (Pref-GRPO's first weight, second weight) per question, set through its environment variables; None: unset (1.0).
WEIGHTS = [
    (None, None),
    (0.6, 0.4),
    (1.0, 0.0),
    (0.25, 2.0),
]

INSTRUCTION = "replace the red car with a blue bicycle"

# Pairwise answers (our own wording): what a judge may write when asked which of two edits is better; Pref-GRPO
# reads them case-insensitively, the <answer> block first, and counts no verdict as half a win each.
PAIR_ANSWERS = {
    "first": "Edited image 1 is better",
    "second": "Edited image 2 is better.",
    "capitalized": "Edited Image 2 Is Better",
    "markdown": "**Edited image 1 is better**",
    "reasoning then verdict": "Edit 2 kept the background; edit 1 changed the sky too.\nEdited image 2 is better",
    "answer block": "<think>both fine</think><ANSWER> Edited image 1 is better </ANSWER>",
    "answer block without verdict": "<answer>neither</answer> Edited image 2 is better",
    "empty answer block": "<answer> </answer> Edited image 2 is better",
    "both named": "Edited image 2 is better than I expected, but Edited image 1 is better overall",
    "no verdict": "Both edits are equally good.",
    "image 1 only": "Image 1 is better",
    "empty": "",
}

# Groups of edits of one source (all pairs (i, j), i < j, judged once in that order), each pair answered by the
# named answer; several groups go into one call, as a training step's groups do.
PAIR_GROUPS = [
    {"size": 3, "answers": {(0, 1): "first", (0, 2): "second", (1, 2): "no verdict"}},
    {
        "size": 4,
        "answers": {
            (0, 1): "second",
            (0, 2): "capitalized",
            (0, 3): "answer block",
            (1, 2): "both named",
            (1, 3): "empty",
            (2, 3): "reasoning then verdict",
        },
    },
    {"size": 1, "answers": {}},
]

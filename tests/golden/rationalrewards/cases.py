"""Canned RationalRewards T2I answers (our own wording) in the layout its checkpoint writes, with the edges of the
authors' reader: N/A, text after the number, bold numbers, a lower-case "score:" inside a justification, scores out
of 1-4, a repeated section, N/A before more lines of its section, scores after the summary, and answers with no score
at all."""

BODY = "# User Request Analysis\nThe request asks for a red fox in snow.\n# Detailed Judgement\n"

ANSWERS: dict[str, str] = {
    "all three": BODY + "1. Text Faithfulness:\n## Justification: The fox is there.\n## Score: 3.5\n"
    "2. Physical and Visual Quality:\n## Justification: Fur is clean.\n## Score: 3.25\n"
    "3. Text Rendering:\n## Justification: A sign reads FOX.\n## Score: 4.0\n# Summary: Good.\n",
    "text rendering not applicable": BODY + "1. Text Faithfulness:\n## Justification: Close.\n## Score: 3.0\n"
    "2. Physical and Visual Quality:\n## Justification: Some blur.\n## Score: 2.6\n"
    "3. Text Rendering:\n## Justification: No text asked.\n## Score: N/A\n# Summary: Fine.\n",
    "number followed by words": BODY + "1. Text Faithfulness:\n## Justification: ok\n## Score: 2.5 (some mismatch)\n"
    "2. Physical and Visual Quality:\n## Justification: ok\n## Score: 3 / 4\n3. Text Rendering:\n## Score: n/a\n",
    "bold score then a plain one": BODY + "1. Text Faithfulness:\n## Justification: ok\n## Score: **3.5**\n"
    "Score: 2.0\n2. Physical and Visual Quality:\n## Score: 4\n",
    "score word inside the justification": BODY + "1. Text Faithfulness:\n"
    "## Justification: I anchor at a score: 2 and then adjust upwards.\n## Score: 3.75\n"
    "2. Physical and Visual Quality:\n## Justification: fine\n## Score: 3.0\n",
    "out of range": BODY + "1. Text Faithfulness:\n## Score: 5.5\n2. Physical and Visual Quality:\n## Score: 0.5\n"
    "3. Text Rendering:\n## Score: 4.5\n",
    "section repeated": BODY + "1. Text Faithfulness:\n## Score: 1.5\n1. Text Faithfulness (revised):\n## Score: 3.5\n"
    "2. Physical and Visual Quality:\n## Score: 2.0\n",
    "scores after the summary": BODY + "1. Text Faithfulness:\n## Justification: unsure\n# Summary: pending\n"
    "2. Physical and Visual Quality:\n## Score: 4.0\n",
    "headers without numbers": "Text Faithfulness:\n## Score: 3.0\nPhysical and Visual Quality:\n## Score: 2.0\n",
    "not applicable before more lines": BODY + "1. Text Faithfulness:\n## Score: N/A\n## Note: nothing to compare.\n"
    "2. Physical and Visual Quality:\n## Score: 3.0\n",
    "no score": BODY + "1. Text Faithfulness:\n## Justification: The image is empty.\n# Summary: nothing.\n",
    "empty": "",
}

EDIT_BODY = "# User Request Analysis\nThe instruction asks to turn the car red.\n# Detailed Judgement\n"

# Canned RationalRewards Edit answers (our own wording) with the edges of the authors' I2I reader: N/A, bold
# numbers, a missing header (the later aspects read nothing), the first header restated in a later block (the reader
# splits at its first occurrence), two score markers on one line (the last one counts), no headers at all (numbered
# pieces), a score line without "##", scores out of 1-4 (not clamped by the reader), scores after the summary, and no
# score.
EDIT_ANSWERS: dict[str, str] = {
    "all four": EDIT_BODY + "1. Text Faithfulness:\n## Justification: The car is red.\n## Score: 3.5\n"
    "2. Image Faithfulness:\n## Justification: Background kept.\n## Score: 4\n"
    "3. Physical and Visual Quality:\n## Justification: Clean.\n## Score: 3.25\n"
    "4. Text Rendering:\n## Justification: The plate reads ABC.\n## Score: 2.0\n# Summary: Good.\n",
    "text rendering not applicable": EDIT_BODY + "1. Text Faithfulness:\n## Score: 2.5 (partly)\n"
    "2. Image Faithfulness:\n## Score: **3.0**\n3. Physical and Visual Quality:\n## Score: 3\n"
    "4. Text Rendering:\n## Score: N/A\n# Summary: Fine.\n",
    "image faithfulness header missing": EDIT_BODY + "1. Text Faithfulness:\n## Score: 4.0\n"
    "2. Keeping the rest:\n## Score: 1.0\n3. Physical and Visual Quality:\n## Score: 2.0\n",
    "no headers": "Verdict\n1. Follows the instruction\n## Score: 3.0\n2. Keeps the source\n## Score: 2.0\n"
    "3. Looks real\n## Score: 4.0\n",
    "score without hashes": EDIT_BODY + "1. Text Faithfulness:\nScore: 3.0\n## Score: 2.0\n"
    "2. Image Faithfulness:\n## Justification: fine\n## Score: unsure\n## Score: 3.5\n",
    "first header restated later": EDIT_BODY + "1. Text Faithfulness:\n## Score: 3.0\n2. Image Faithfulness:\n"
    "## Justification: unlike Text Faithfulness: the background is kept.\n## Score: 2.0\n"
    "3. Physical and Visual Quality:\n## Score: 4.0\n",
    "two score markers on one line": EDIT_BODY + "1. Text Faithfulness:\n## Score: 2 ## Score: 3\n"
    "2. Image Faithfulness:\n## Score: 4\n",
    "out of range": EDIT_BODY + "1. Text Faithfulness:\n## Score: 5.5\n2. Image Faithfulness:\n## Score: 4.5\n"
    "3. Physical and Visual Quality:\n## Score: 0.5\n4. Text Rendering:\n## Score: 4\n",
    "scores after the summary": EDIT_BODY + "1. Text Faithfulness:\n## Justification: unsure\n# Summary: pending\n"
    "2. Image Faithfulness:\n## Score: 4.0\n",
    "no score": EDIT_BODY + "1. Text Faithfulness:\n## Justification: nothing changed.\n# Summary: nothing.\n",
    "empty": "",
}

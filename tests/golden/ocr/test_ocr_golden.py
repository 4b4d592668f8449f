"""Flow-GRPO's OCR reward from the read text, exactly as its ``OcrScorer`` computes it.

golden.json holds what the pinned ``flow_grpo/ocr.py`` gave for the canned PaddleOCR lines of cases.py (quoted-text
extraction, space removal, lower-casing, the substring rule, python-Levenshtein, the clamp at the target's length);
make_golden.py regenerates it. Flow-GRPO's reading of PaddleOCR's lines (concatenated, lines of confidence 0 dropped)
is spelled out here, since mmreward's OCR model returns one reading.
"""

import json
from pathlib import Path

from mmreward.rewards.ocr import ocr_text_reward, quoted_text
from tests.golden.ocr.cases import CASES

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())


def reading(lines) -> str:
    return "".join(text if confidence > 0 else "" for text, confidence in lines or [])


def test_every_case_matches_flow_grpo_exactly():
    assert len(GOLDEN["rewards"]) == len(CASES)
    ours = [ocr_text_reward(quoted_text(prompt), reading(lines)) for prompt, lines in CASES]
    assert ours == GOLDEN["rewards"]
    assert len(set(ours)) >= 6  # the cases exercise many different distances

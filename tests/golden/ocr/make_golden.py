"""Regenerate the OCR reward golden data with Flow-GRPO's own scorer (yifan123/flow_grpo; see ../README.md).

``flow_grpo/ocr.py``'s ``OcrScorer.__call__`` takes the prompt's quoted text, reads the image with PaddleOCR and
turns the two strings into the reward. This script runs that file (hash checked) with PaddleOCR replaced by a
stand-in that returns the canned lines of cases.py in PaddleOCR's result layout, so everything after the OCR call
is the reference's own code, python-Levenshtein included. Run with a virtualenv holding ``Levenshtein`` (numpy,
torch and Pillow from the system)::

    FLOW_GRPO_DIR=/path/to/flow_grpo /path/to/ocr-venv/bin/python tests/golden/ocr/make_golden.py
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "ac4c86e8cae021841f1fde853d340e0db67690dd"
PATH = "flow_grpo/ocr.py"
SHA256 = "55cbd817394394a3baa501899f3af429622a6addec0e45353d5bfb1b937a27f1"
sys.path.insert(0, str(HERE))

from cases import CASES  # noqa: E402


class CannedPaddleOCR:
    """PaddleOCR's ``ocr(img, cls=False)`` result for the next canned case: ``[[[box, (text, conf)], ...]]``."""

    def __init__(self, **kwargs) -> None:
        self.lines = []

    def ocr(self, img, cls=False):
        if self.lines is None:
            return [None]
        box = [[0, 0], [1, 0], [1, 1], [0, 1]]
        return [[[box, (text, confidence)] for text, confidence in self.lines]]


def load_scorer_module():
    source = Path(os.environ.get("FLOW_GRPO_DIR", "")).expanduser() / PATH
    if not source.is_file():
        sys.exit(f"set FLOW_GRPO_DIR to a checkout of https://github.com/yifan123/flow_grpo at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    sys.modules["paddleocr"] = types.SimpleNamespace(PaddleOCR=CannedPaddleOCR)
    spec = importlib.util.spec_from_file_location("flow_grpo_ocr", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    import Levenshtein
    from PIL import Image

    scorer = load_scorer_module().OcrScorer(use_gpu=False)
    image = Image.new("RGB", (8, 8))
    rewards = []
    for prompt, lines in CASES:
        scorer.ocr.lines = lines
        rewards.append(scorer([image], [prompt])[0])
    golden = {
        "reference": f"yifan123/flow_grpo@{COMMIT}:{PATH} OcrScorer.__call__ on canned PaddleOCR lines (cases.py)",
        "versions": {"Levenshtein": Levenshtein.__version__},
        "rewards": rewards,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

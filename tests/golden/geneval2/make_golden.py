"""Regenerate the Soft-TIFA golden data with GenEval 2's own evaluation code (facebookresearch/GenEval2; see
../README.md).

``evaluation.py`` loads Qwen3-VL-8B-Instruct at import, then ``soft_tifa(vqa_list, image)`` asks each question with
``send_message_with_image`` (one generated token, its scores softmaxed, the probabilities of the answer words'
first tokens summed) and averages; ``main`` takes the geometric mean with scipy's ``gmean`` for ``soft_tifa_gm``
and 100 x the mean over prompts. This script runs the pinned file (hash checked) with the model replaced by canned
next-token logits (cases.py) and the processor by one holding a tiny Qwen2-style tokenizer (tokenizer/, trained
here on cases.py's text), so everything from the logits on is the reference's own code. Run with a virtualenv of
the reference's pins (transformers 4.57.0, scipy)::

    GENEVAL2_DIR=/path/to/GenEval2 /path/to/geneval2-venv/bin/python tests/golden/geneval2/make_golden.py
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COMMIT = "a6e82d2289e8d418f27f0adee77908b07060eea3"
PATH = "evaluation.py"
SHA256 = "90791e35321a1a2bf65366517dd60f39037f90435490eb122c0027b52d42cda9"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from cases import CORPUS, ITEMS, LIFTED, logits  # noqa: E402


class Inputs(dict):
    def to(self, device):
        return self


class CannedProcessor:
    """The processor's two uses in evaluation.py: the chat template (here: which question is asked) and the
    tokenizer."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.asked: list[str] = []

    def apply_chat_template(self, messages, **kwargs):
        self.asked.append(messages[0]["content"][1]["text"])
        return Inputs()

    def batch_decode(self, ids):
        return self.tokenizer.batch_decode(ids)


class CannedModel:
    """``generate`` answers with the canned logits of the atom asked last."""

    device = "cpu"

    def __init__(self, processor: CannedProcessor, table: dict[str, list[float]]) -> None:
        self.processor, self.table = processor, table

    def generate(self, **kwargs):
        assert kwargs["max_new_tokens"] == 1 and kwargs["output_scores"] and not kwargs["do_sample"]
        scores = torch.tensor([self.table[self.processor.asked[-1]]])
        return type("Output", (), {"scores": (scores,)})


def main() -> None:
    import transformers
    from _tiny_qwen2vl import build_tokenizer
    from scipy.stats import gmean

    source = Path(os.environ.get("GENEVAL2_DIR", "")).expanduser() / PATH
    if not source.is_file():
        sys.exit(f"set GENEVAL2_DIR to a checkout of https://github.com/facebookresearch/GenEval2 at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")

    build_tokenizer(HERE / "tokenizer", CORPUS, vocab_size=300)
    tokenizer = transformers.AutoTokenizer.from_pretrained(HERE / "tokenizer")
    vocab_size = len(tokenizer)
    lifted = [tokenizer.encode(word)[0] for word in LIFTED]
    table = {
        question + " Answer in one word.": logits(case, atom, vocab_size, lifted)
        for case, (_, atoms) in enumerate(ITEMS)
        for atom, (question, _) in enumerate(atoms)
    }
    processor = CannedProcessor(tokenizer)
    model = CannedModel(processor, table)
    transformers.AutoProcessor = type("P", (), {"from_pretrained": staticmethod(lambda *a, **k: processor)})
    transformers.Qwen3VLForConditionalGeneration = type(
        "M", (), {"from_pretrained": staticmethod(lambda *a, **k: model)}
    )
    spec = importlib.util.spec_from_file_location("geneval2_evaluation", source)
    evaluation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluation)

    atoms, am, gm = [], [], []
    for _, vqa_list in ITEMS:
        score, score_list = evaluation.soft_tifa([list(pair) for pair in vqa_list], "unused.png")
        atoms.append(score_list)
        am.append(score)
        gm.append(float(gmean(score_list)))
    golden = {
        "reference": f"facebookresearch/GenEval2@{COMMIT}:{PATH} soft_tifa + gmean on canned logits (cases.py)",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "vocab_size": vocab_size,
        "atoms": atoms,
        "am": am,
        "gm": gm,
        "benchmark_am": 100 * sum(am) / len(am),
        "benchmark_gm": 100 * sum(gm) / len(gm),
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

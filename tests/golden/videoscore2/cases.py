"""Canned VideoScore2 answers (our own wording) and the processed next-token scores of every step that wrote them.

Each case is an answer text (tokenized with tokenizer/, a tiny Qwen2-style tokenizer that spells every digit as
one token) ending in the end-of-turn token, and ``(steps, vocab)`` scores drawn from a seeded generator: random
logits, the written token lifted so that it is the likeliest, the digits 1-5 lifted by ``digit_lift`` at every step,
and in ``filtered`` cases everything but the written token set to ``-inf`` (what a top-k of 1 in the checkpoint's
generation config leaves). The same tensors reach the reference's reader (make_golden.py) and mmreward's.
"""

from __future__ import annotations

from pathlib import Path

import torch

TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer"
END = "<|im_end|>"

CASES: dict[str, dict] = {
    "plain": {
        "text": "Motion is smooth and the fox is sharp.\nvisual quality: 4;\ntext-to-video alignment: 3,\n"
        "physical/common-sense consistency: 2",
    },
    "capitalised labels after numbering": {
        "text": "The clip is stable.\n(1) Visual Quality: 5;\n(2) Text-To-Video Alignment: 4,\n"
        "(3) Physical/Common-Sense Consistency: 3",
    },
    "label restated in the reasoning": {
        # The first "visual quality:" has no digit until the next label's: the reference reads that step.
        "text": "I check visual quality: blur, then text-to-video alignment: 2 matters.\nvisual quality: 1;\n"
        "text-to-video alignment: 2,\nphysical/common-sense consistency: 5",
    },
    "top-k of one": {
        "text": "Sharp frames.\nvisual quality: 3;\ntext-to-video alignment: 3,\nphysical/common-sense consistency: 4",
        "filtered": True,
    },
    "flat digits": {
        "text": "visual quality: 2; text-to-video alignment: 5, physical/common-sense consistency: 1",
        "digit_lift": 6.0,
    },
    "third score missing": {
        "text": "Nice.\nvisual quality: 4;\ntext-to-video alignment: 4,\nphysical/common-sense consistency: unclear",
    },
    "no format": {"text": "The video shows a fox running through snow."},
}


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def tokens(tok, name: str) -> list[int]:
    return tok.encode(CASES[name]["text"], add_special_tokens=False) + [tok.convert_tokens_to_ids(END)]


def step_scores(tok, name: str, seed: int) -> torch.Tensor:
    """``(steps, vocab)`` processed scores for case ``name``'s tokens."""
    case = CASES[name]
    ids = tokens(tok, name)
    generator = torch.Generator().manual_seed(seed)
    vocab = len(tok)
    scores = torch.randn(len(ids), vocab, generator=generator) * 2.0
    digits = [tok.encode(str(v), add_special_tokens=False)[0] for v in range(1, 6)]
    scores[:, digits] += case.get("digit_lift", 2.0)
    for step, token in enumerate(ids):
        scores[step, token] = scores[step].max() + 1.5
    if case.get("filtered"):
        keep = torch.full_like(scores, float("-inf"))
        keep[torch.arange(len(ids)), ids] = scores[torch.arange(len(ids)), ids]
        scores = keep
    return scores

"""Soft-TIFA from next-token logits, exactly as GenEval 2's ``evaluation.py`` computes it.

golden.json holds what the pinned ``soft_tifa`` (and scipy's ``gmean``, and ``main``'s 100 x mean over prompts)
gave for cases.py's atoms, with the VQA model's logits canned by cases.py's formula and a tiny Qwen2-style tokenizer
(tokenizer/); make_golden.py regenerates it. The answer lists, the first tokens taken with ``encode()[0]``, the
probabilities summed word by word (a shared first token counts once per word, so a score can exceed 1) and both
means are the reference's; the model's part (one forward, the last position's distribution) is tested end to end
in tests/mmreward/rewards/test_soft_tifa.py.
"""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from mmreward.rewards.soft_tifa import answer_token_ids, benchmark_score, combine, soft_score
from tests.golden.geneval2.cases import ITEMS, LIFTED, logits

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())


@pytest.fixture(scope="module")
def atoms():
    tokenizer = AutoTokenizer.from_pretrained(HERE / "tokenizer")
    assert len(tokenizer) == GOLDEN["vocab_size"]
    lifted = [tokenizer.encode(word)[0] for word in LIFTED]
    out = []
    for case, (_, vqa) in enumerate(ITEMS):
        row = []
        for atom, (question, answer) in enumerate(vqa):
            probs = torch.softmax(torch.tensor([logits(case, atom, len(tokenizer), lifted)]), dim=-1)[0]
            row.append(soft_score(probs, answer_token_ids(tokenizer, question, answer)))
        out.append(row)
    return out


def test_atom_scores_match_the_reference_exactly(atoms):
    assert atoms == GOLDEN["atoms"]
    assert any(s > 1 for row in atoms for s in row) and 0.0 in atoms[2]  # shared first tokens; a zero atom


def test_prompt_and_benchmark_scores_match_the_reference(atoms):
    for name in ("am", "gm"):
        assert [combine(row, name) for row in atoms] == pytest.approx(GOLDEN[name], rel=1e-12, abs=1e-15)
        assert benchmark_score(atoms, name) == pytest.approx(GOLDEN[f"benchmark_{name}"], rel=1e-12)

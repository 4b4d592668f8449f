"""UnifiedReward answers read by mmreward's judges as the authors' own code reads them.

golden.json holds what the authors' readers gave for canned answers (cases.py; make_golden.py): the verdict
statement of UnifiedReward's and UnifiedReward-Think's GenAI-Bench-Video evaluation scripts (A, B or same, on the
whole output) and Pref-GRPO's ``extract_normalized_rewards`` for UnifiedReward 2.0's score lines. Here the same
texts come from a canned backend behind mmreward's judges with the presets' shipped templates:

- ``parsing="reference-pref-grpo"`` on the pair-ranking judge reproduces the evaluation script's verdict on every
  case (first case-sensitive sentence, no verdict = a tie);
- the default robust reading agrees wherever the case says so, and differs (or fails the item) on the others, the
  deliberate differences listed in cases.py.
"""

import json
from pathlib import Path

import pytest
import torch

from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.pairwise import ChainOfThoughtJudge, PairwiseJudge
from mmreward.rewards.vlm.pointwise import PointwiseJudge
from tests.golden.unifiedreward.cases import PAIRWISE, POINTWISE, THINK

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
SHARE = {"A": 1.0, "B": 0.0, "same": 0.5}  # the first video's share of the win for each verdict
FRAMES = 2


class CannedAnswers(JudgeBackend):
    """Answers each prompt with ``texts[k]``, k the candidate in its first slot (its media are filled with k / 100)."""

    weights_id = "canned answers"

    def __init__(self, texts):
        self.texts = texts

    def prepare(self, frames):
        return round(float(frames.mean()) * 100)

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        first = [prompt.media.get("media_a", prompt.media.get("media")) for prompt in prompts]
        return [Completion(self.texts[candidates[slot]]) for slot in first]


def videos(count):
    return [torch.full((FRAMES, 3, 8, 8), k / 100) for k in range(count)]


def first_shares(judge_class, template, texts, **options):
    """Each text as the answer about (video k, a last video): the first video's share of the win, NaN if failed."""
    judge = judge_class(CannedAnswers(texts), template=template, video_num_frames=FRAMES, **options)
    count = len(texts)
    out = judge.compare(["a caption"] * count, videos(count), [videos(count + 1)[-1]] * count, orders="ab")
    shares = out.prob_a + 0.5 * out.tie
    return torch.where(out.failed, torch.nan, shares).tolist()


def test_golden_covers_every_case():
    for kind, cases in (("pairwise", PAIRWISE), ("think", THINK), ("pointwise", POINTWISE)):
        assert [row["text"] for row in GOLDEN[kind]] == [text for text, _ in cases], kind
    assert {row["pred"] for row in GOLDEN["pairwise"]} == {"A", "B", "same"}


def test_reference_pref_grpo_parsing_is_the_evaluation_scripts_verdict():
    texts = [text for text, _ in PAIRWISE]
    shares = first_shares(PairwiseJudge, "unifiedreward-pairwise", texts, parsing="reference-pref-grpo")
    assert shares == [SHARE[row["pred"]] for row in GOLDEN["pairwise"]]


@pytest.mark.parametrize(
    ("kind", "judge_class", "template"),
    [("pairwise", PairwiseJudge, "unifiedreward-pairwise"), ("think", ChainOfThoughtJudge, "unifiedreward-think")],
)
def test_robust_verdicts_agree_where_the_cases_say(kind, judge_class, template):
    cases = PAIRWISE if kind == "pairwise" else THINK
    shares = first_shares(judge_class, template, [text for text, _ in cases])
    for (text, agrees), share, row in zip(cases, shares, GOLDEN[kind], strict=True):
        expected = SHARE[row["pred"]]
        assert (share == expected) == agrees, (text, share, expected)


def test_pointwise_scores_agree_where_the_cases_say():
    texts = [text for text, _ in POINTWISE]
    judge = PointwiseJudge(CannedAnswers(texts), template="unifiedreward-pointwise", video_num_frames=FRAMES)
    images = [torch.full((3, 8, 8), k / 100) for k in range(len(texts))]
    out = judge.score(["a caption"] * len(texts), images)
    for k, ((text, agrees), row) in enumerate(zip(POINTWISE, GOLDEN["pointwise"], strict=True)):
        ours = {dim: out.dims[dim][k].item() for dim in row["scores"]} if not out.failed[k] else None
        # The reference's doubles as float32, mmreward's dtype; exact equality.
        expected = {dim: torch.tensor(value).item() for dim, value in row["scores"].items()}
        assert (ours == expected) == agrees, (text, ours, expected)
        if agrees:
            assert out.scores[k].item() == pytest.approx(sum(expected.values()) / 3, abs=1e-6)

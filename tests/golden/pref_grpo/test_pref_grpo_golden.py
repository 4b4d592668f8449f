"""Pref-GRPO's verdicts and win rates, reproduced by the chain-of-thought judge with ``parsing="reference-pref-grpo"``.

golden.json holds what Pref-GRPO's own reward code (``fastvideo/rewards/unifiedreward_think.py``; make_golden.py)
gave for canned judge outputs (cases.py): the first image's share of the win for each output alone, and the win
rates of small image and video groups whose pairs are answered by those outputs. Here the same outputs come from a
canned backend behind mmreward's judge (the UnifiedReward-Think template's verdict sentences), and
``mmreward.win_rate(..., orders="ab")`` judges each pair once in index order, as Pref-GRPO does.

Deliberate difference: Pref-GRPO rounds each win rate to 3 decimals; mmreward does not, so groups whose rates are
not multiples of 1/1000 agree after rounding (and to 5e-4 before).
"""

import json
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.pairwise import ChainOfThoughtJudge
from mmreward.rewards.vlm.parsing import VerdictPhrases, reference_verdict
from tests.golden.pref_grpo.cases import ANSWERS, GROUPS, group_outputs

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
FRAMES = 2  # frames per canned video


class CannedAnswers(JudgeBackend):
    """Answers each prompt with the canned output of its (first, second) candidates; candidates are media filled
    with their index / 100, so the index is read back from the pixels."""

    weights_id = "canned answers"

    def __init__(self, outputs: dict[tuple[int, int], str]):
        self.outputs = outputs
        self.asked: list[tuple[int, int]] = []

    def prepare(self, frames):
        return round(float(frames.mean()) * 100)

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        completions = []
        for prompt in prompts:
            pair = (candidates[prompt.media["media_a"]], candidates[prompt.media["media_b"]])
            self.asked.append(pair)
            completions.append(Completion(self.outputs[pair]))
        return completions


def judge(outputs):
    return ChainOfThoughtJudge(
        CannedAnswers(outputs), template="unifiedreward-think", parsing="reference-pref-grpo", video_num_frames=FRAMES
    )


def media(kind: str, size: int) -> list[torch.Tensor]:
    shape = (3, 8, 8) if kind == "image" else (FRAMES, 3, 8, 8)
    return [torch.full(shape, i / 100) for i in range(size)]


def test_golden_covers_every_canned_output_and_group():
    assert [a["text"] for a in GOLDEN["answers"]] == list(ANSWERS)
    assert [{k: g[k] for k in ("kind", "size", "answers")} for g in GOLDEN["groups"]] == list(GROUPS)
    # The cases decide both ways and both tie kinds (tie sentence, no verdict), so a reader that got any one
    # outcome wrong fails below.
    assert {a["first_share"] for a in GOLDEN["answers"]} == {0.0, 0.5, 1.0}


@pytest.mark.parametrize("case", range(len(ANSWERS)))
def test_each_output_gives_the_references_share_of_the_win(case):
    """One pair, one presentation order: the first image's expected win equals Pref-GRPO's (1, 0, or 1/2 for a tie
    or no verdict), never a failure."""
    text = ANSWERS[case]
    out = judge({(0, 1): text}).compare(["a caption"], media("image", 1), [media("image", 2)[1]], orders="ab")
    assert not out.failed.any(), out.errors
    share = float(out.prob_a[0] + 0.5 * out.tie[0])
    assert share == GOLDEN["answers"][case]["first_share"], text
    # The parser on its own gives the same outcome (None: no verdict, which the judge counts as a tie).
    verdict = reference_verdict(text, VerdictPhrases("Image 1 is better", "Image 2 is better"), answer_block=True)
    assert {"first": 1.0, "second": 0.0, None: 0.5}[verdict] == share


@pytest.mark.parametrize("index", range(len(GROUPS)))
def test_group_win_rates_match_the_reference(index):
    group, expected = GROUPS[index], GOLDEN["groups"][index]["win_rates"]
    outputs = group_outputs(group)
    the_judge = judge(outputs)
    result = mmreward.win_rate(the_judge, "a caption", media(group["kind"], group["size"]), orders="ab", details=True)
    # Every pair once, lower index first, as Pref-GRPO's itertools.combinations; nothing failed.
    assert sorted(the_judge.backend.asked) == sorted(outputs) and result.failed == 0
    rates = result.rates.tolist()
    assert [round(r, 3) for r in rates] == pytest.approx(expected, abs=1e-7)
    assert rates == pytest.approx(expected, abs=5e-4)


def test_rounding_is_the_only_difference():
    """Five images (four judgments each, rates in eighths) agree without rounding; in a group of four (three
    judgments each) item 0 has 2.5 / 3 = 0.8333... here and 0.833 in Pref-GRPO."""
    exact = mmreward.win_rate(judge(group_outputs(GROUPS[0])), "a caption", media("image", 5), orders="ab")
    assert exact.tolist() == GOLDEN["groups"][0]["win_rates"]
    thirds = mmreward.win_rate(judge(group_outputs(GROUPS[1])), "a caption", media("image", 4), orders="ab")
    assert thirds[0].item() == pytest.approx(2.5 / 3) and GOLDEN["groups"][1]["win_rates"][0] == pytest.approx(0.833)

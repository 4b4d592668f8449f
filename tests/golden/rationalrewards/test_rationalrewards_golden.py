"""RationalRewards' T2I reading, reproduced by mmreward on canned answers.

golden.json holds what ``parse_t2i_scores`` of the authors' README recipe (make_golden.py) gives for the answers of
cases.py. mmreward's reader gives the same scores and reward; the judge behind a canned backend gives that reward,
failing (parsing="robust") or scoring 0.0 (parsing="reference", the recipe's) the answers with no score.
"""

import json
import math
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.rewards.vlm.critique import RationalRewardsJudge, read_t2i_scores
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.templates import TextPart
from tests.golden.rationalrewards.cases import ANSWERS

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())
NAMES = list(ANSWERS)


@pytest.mark.parametrize("name", NAMES)
def test_reads_each_answer_as_the_reference(name):
    reward, written = read_t2i_scores(ANSWERS[name])
    assert written == GOLDEN[name]["scores"]
    assert (0.0 if reward is None else reward) == pytest.approx(GOLDEN[name]["reward"], abs=1e-12)
    assert reward is not None or all(v is None or v == "N/A" for v in written.values())


class CannedAnswers(JudgeBackend):
    """Answers the n-th image (pixels filled with n / 100) with the n-th canned answer."""

    weights_id = "canned answers"

    def prepare(self, frames):
        return round(float(frames.mean()) * 100)

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        return [Completion(ANSWERS[NAMES[candidates[p.media["media"]]]]) for p in prompts]


@pytest.mark.parametrize("parsing", ["robust", "reference"])
def test_judge_rewards_and_failures(parsing):
    judge = RationalRewardsJudge(CannedAnswers(), template="rationalrewards", parsing=parsing, batch_size=4)
    images = [torch.full((3, 8, 8), n / 100) for n in range(len(NAMES))]
    out = judge.score(["a red fox in snow"] * len(NAMES), images)
    for n, name in enumerate(NAMES):
        unreadable = read_t2i_scores(ANSWERS[name])[0] is None
        if unreadable and parsing == "robust":
            assert out.failed[n] and "no aspect score" in out.errors[n] and math.isnan(out.scores[n])
        else:
            assert not out.failed[n] and out.scores[n].item() == pytest.approx(GOLDEN[name]["reward"], abs=1e-6)
        for dim, value in GOLDEN[name]["scores"].items():
            expected = value if isinstance(value, float) else math.nan
            assert out.dims[dim][n].item() == pytest.approx(expected, nan_ok=True)
    assert out.rationales[0] == ANSWERS[NAMES[0]]


def test_settings_and_videos_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="parsing must be one of"):
        RationalRewardsJudge(CannedAnswers(), template="rationalrewards", parsing="lenient")
    with pytest.raises(
        ConfigError, match="^RationalRewards writes its critique before its scores; use mode='generate'"
    ):
        RationalRewardsJudge(CannedAnswers(), template="rationalrewards", mode="logits")
    # VideoScore2's template is a critique template too, but asks about a video.
    with pytest.raises(
        ConfigError, match="template 'videoscore2' has no image section; RationalRewards scores images"
    ):
        RationalRewardsJudge(CannedAnswers(), template="ours", template_name="videoscore2")
    judge = RationalRewardsJudge(CannedAnswers(), template="rationalrewards")
    out = judge.score(["a fox"], [torch.rand(4, 3, 8, 8)])
    assert out.failed.all() and "scores images; got a video of 4 frames" in out.errors[0]


class AskedAnswers(CannedAnswers):
    """CannedAnswers that records the text of each question."""

    def __init__(self):
        self.asked = []

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        self.asked += ["".join(part.text for part in p.parts if isinstance(part, TextPart)) for p in prompts]
        return super().generate(
            candidates, prompts, max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size
        )


def test_each_image_is_asked_about_its_own_prompt_and_score_prepared_agrees():
    backend = AskedAnswers()
    judge = RationalRewardsJudge(backend, template="rationalrewards", batch_size=2)
    prompts = ["a red fox in snow", "a blue car at night", "a green tree by a lake"]
    images = [torch.full((3, 8, 8), n / 100) for n in range(3)]
    out = judge.score(prompts, images)
    assert [[prompt in asked for prompt in prompts] for asked in backend.asked] == [
        [True, False, False],
        [False, True, False],
        [False, False, True],
    ]
    scores, dims = judge.score_prepared(prompts, [judge.prepare(image) for image in images])
    expected = [GOLDEN[name]["reward"] for name in NAMES[:3]]
    assert scores.tolist() == pytest.approx(expected) and torch.equal(scores, out.scores)
    assert set(dims) == set(out.dims) and all(torch.allclose(dims[d], out.dims[d], equal_nan=True) for d in dims)


def test_tiny_judge_writes_and_fails_unreadable_answers(tiny_root):
    judge = mmreward.load_reward(str(testing.tiny_vlm_preset("rationalrewards", tiny_root, backbone="qwen3_vl")))
    assert isinstance(judge, RationalRewardsJudge) and judge.template.describe() == "ours (rationalrewards)"
    section = judge.template.section("image")
    assert section.system and section.render("a red fox")[0].text.startswith("Request: a red fox")
    out = judge.score(["a red fox"], [torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))])
    assert out.failed.all() and "no aspect score" in out.errors[0] and "max_new_tokens=32" in out.errors[0]
    assert out.rationales[0] is not None


class FailingRequests(CannedAnswers):
    """Image 0 times out, image 1 fails without a reason, image 2 is answered with a long unreadable text; the others
    get their canned answer."""

    long_answer = "The image shows a fox. " * 15

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        canned = super().generate(
            candidates, prompts, max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size
        )
        special = {0: Completion(None, error="timed out"), 1: Completion(None), 2: Completion(self.long_answer)}
        return [special.get(candidates[p.media["media"]], c) for p, c in zip(prompts, canned, strict=True)]


def test_failed_requests_fail_alone_with_their_reason():
    judge = RationalRewardsJudge(FailingRequests(), template="rationalrewards", batch_size=8)
    images = [torch.full((3, 8, 8), n / 100) for n in range(4)]
    out = judge.score(["a red fox"] * 4, images)
    assert out.failed.tolist() == [True, True, True, False]
    assert out.errors[:2] == ["timed out", "request failed"]
    assert len(FailingRequests.long_answer) > 200
    assert out.errors[2] == f"{judge.no_score}: {FailingRequests.long_answer[:200]!r}"
    assert out.scores[3].item() == pytest.approx(GOLDEN[NAMES[3]]["reward"])
    assert out.rationales == [None, None, FailingRequests.long_answer, ANSWERS[NAMES[3]]]
    # No answer at all: no rationales.
    assert judge.score(["a red fox"] * 2, images[:2]).rationales is None


class TooFewAnswers(CannedAnswers):
    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        return super().generate(
            candidates, prompts[:-1], max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size
        )


def test_a_backend_that_drops_an_answer_is_an_error_not_an_unscored_item():
    judge = RationalRewardsJudge(TooFewAnswers(), template="rationalrewards")
    with pytest.raises(ValueError, match="zip"):
        judge.score(["a red fox"] * 2, [torch.full((3, 8, 8), n / 100) for n in range(2)])

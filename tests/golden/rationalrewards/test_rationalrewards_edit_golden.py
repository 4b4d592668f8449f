"""RationalRewards Edit reading, reproduced by mmreward on canned answers.

golden_edit.json holds what ``parse_i2i_scores`` of the authors' README recipe (make_golden.py) gives for the answers
of cases.EDIT_ANSWERS. mmreward's reader gives the same scores and (unclamped) reward; the judge behind a canned
backend is shown the source before the edit, and scores as the reference (parsing="reference") or with clamped
scores and failures for unreadable answers (parsing="robust").
"""

import json
import math
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.rewards.vlm.critique import RationalRewardsEditJudge, read_i2i_scores
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.templates import MediaPart, TextPart
from tests.golden.rationalrewards.cases import EDIT_ANSWERS

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden_edit.json").read_text())
NAMES = list(EDIT_ANSWERS)


@pytest.mark.parametrize("name", NAMES)
def test_reads_each_edit_answer_as_the_reference(name):
    reward, written = read_i2i_scores(EDIT_ANSWERS[name])
    assert written == GOLDEN[name]["scores"]
    assert (0.0 if reward is None else reward) == pytest.approx(GOLDEN[name]["reward"], abs=1e-12)


class CannedEditAnswers(JudgeBackend):
    """Answers with the canned answer numbered by the edited image (pixels n / 100); records what each prompt
    showed in which order (sources are filled with 0.9)."""

    weights_id = "canned answers"

    def __init__(self):
        self.shown = []
        self.asked = []

    def prepare(self, frames):
        return round(float(frames.mean()) * 100)

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        self.shown += [[candidates[p.media[x.slot]] for x in p.parts if isinstance(x, MediaPart)] for p in prompts]
        self.asked += ["".join(x.text for x in p.parts if isinstance(x, TextPart)) for p in prompts]
        return [Completion(EDIT_ANSWERS[NAMES[candidates[p.media["media"]]]]) for p in prompts]


@pytest.mark.parametrize("parsing", ["robust", "reference"])
def test_edit_judge_rewards_failures_and_image_order(parsing):
    backend = CannedEditAnswers()
    judge = RationalRewardsEditJudge(backend, template="rationalrewards-edit", parsing=parsing, batch_size=4)
    edited = [torch.full((3, 8, 8), n / 100) for n in range(len(NAMES))]
    sources = [torch.full((3, 8, 8), 0.9)] * len(NAMES)
    instructions = [f"turn car {n} red" for n in range(len(NAMES))]
    out = judge.score(instructions, edited, sources=sources)
    assert backend.shown == [[90, n] for n in range(len(NAMES))]  # source first, then the edit
    assert [[i in asked for i in instructions].index(True) for asked in backend.asked] == list(range(len(NAMES)))
    for n, name in enumerate(NAMES):
        unclamped, _ = read_i2i_scores(EDIT_ANSWERS[name])
        clamped, _ = read_i2i_scores(EDIT_ANSWERS[name], clamp=True)
        if parsing == "reference":
            assert not out.failed[n] and out.scores[n].item() == pytest.approx(GOLDEN[name]["reward"], abs=1e-6)
        elif unclamped is None:
            assert out.failed[n] and "no aspect score" in out.errors[n] and math.isnan(out.scores[n])
        else:
            assert not out.failed[n] and out.scores[n].item() == pytest.approx(clamped, abs=1e-6)
        for dim, value in GOLDEN[name]["scores"].items():
            expected = value if isinstance(value, float) else math.nan
            assert out.dims[dim][n].item() == pytest.approx(expected, nan_ok=True)
    # Clamping each score to [1, 4] is the robust reading's one difference: (4 + 4 + 1 + 4) / 4 -> 0.75, not 0.875.
    if parsing == "robust":
        assert out.scores[NAMES.index("out of range")].item() == pytest.approx(0.75)


def test_edit_judge_needs_sources_and_refuses_videos():
    judge = RationalRewardsEditJudge(CannedEditAnswers(), template="rationalrewards-edit")
    with pytest.raises(ConfigError, match="sources="):
        judge.score(["a"], [torch.rand(3, 8, 8)])
    out = judge.score(["a"], [torch.rand(4, 3, 8, 8)], sources=[torch.rand(3, 8, 8)])
    assert out.failed.all() and "scores images; got a video" in out.errors[0]
    with pytest.raises(ConfigError, match="'edit-critique' template"):
        RationalRewardsEditJudge(CannedEditAnswers(), template="rationalrewards")


def test_tiny_edit_judge_writes_and_fails_unreadable_answers(tiny_root):
    judge = mmreward.load_reward(str(testing.tiny_vlm_preset("rationalrewards-edit", tiny_root, backbone="qwen3_vl")))
    assert isinstance(judge, RationalRewardsEditJudge) and judge.uses_source
    image = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))
    out = judge.score(["make it red"], [image], sources=[image.flip(-1)])
    assert out.failed.all() and "no aspect score" in out.errors[0] and "max_new_tokens=32" in out.errors[0]
    assert out.rationales[0] is not None

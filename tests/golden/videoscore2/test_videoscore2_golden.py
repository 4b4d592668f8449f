"""VideoScore2's reading of an answer, reproduced by mmreward on canned answers and step scores.

golden.json holds what the authors' inference script (vs2_inference.py; make_golden.py) read from the canned answers
and per-step scores of cases.py: the three integers, the step that wrote each, and the soft scores. mmreward's
reader gets the same tokens and scores; the reward on a tiny random Qwen2.5-VL checks that the scores it reads are
the ones of the steps that wrote each token.
"""

import json
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward import testing
from mmreward.rewards.vlm.videoscore2 import (
    LABELS,
    VideoScore2Reward,
    digit_token_ids,
    hard_scores,
    read_answer,
    score_step,
)
from tests.golden.videoscore2.cases import CASES, step_scores, tokenizer, tokens

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.mark.parametrize("name", list(CASES))
def test_reads_each_answer_as_the_reference(tok, name):
    golden = GOLDEN[name]
    ids = tokens(tok, name)
    scores = step_scores(tok, name, golden["seed"])
    text = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert list(hard_scores(text) or (None, None, None)) == golden["hard"]

    def decode(chunk):
        return tok.decode(chunk, skip_special_tokens=False)

    assert [score_step(label, ids, decode) for _, label in LABELS] == golden["steps"]
    soft, answer, why = read_answer(ids, scores, tok, digit_token_ids(tok))
    assert answer == text
    if golden["soft"][0] is None:
        assert soft is None and why
    else:
        assert why is None
        assert [soft[name] for name, _ in LABELS] == pytest.approx(golden["soft"], abs=1e-4)


def test_cases_cover_the_quirks():
    # The restated label reads the next label's digit; a top-k of one leaves the written digits exact.
    assert (
        GOLDEN["label restated in the reasoning"]["steps"][0] == GOLDEN["label restated in the reasoning"]["steps"][1]
    )
    assert GOLDEN["top-k of one"]["soft"] == [3.0, 3.0, 4.0]
    assert GOLDEN["flat digits"]["soft"][2] < 1.0  # a 1 written with low confidence falls below the scale


def test_tiny_reward_reads_the_scores_of_the_steps_that_wrote_each_token(tiny_root, sample_videos):
    reward = mmreward.load_reward(
        str(testing.tiny_vlm_preset("videoscore2", tiny_root, backbone="qwen2_5_vl")), temperature=0
    )
    assert isinstance(reward, VideoScore2Reward) and reward.template.describe() == "ours (videoscore2)"
    videos = [torch.rand(6, 3, 40, 56, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    prepared = [reward.prepare(reward.load_media(v)) for v in videos]
    assert prepared[0].dtype == torch.uint8 and prepared[0].shape[-2:] == (
        56,
        84,
    )  # 40 x 56 scaled up to min pixels, sides multiples of 28
    batch = reward._encode(["a red fox", "a cat in the snow"], prepared)
    assert batch["video_grid_thw"][:, 0].tolist() == [3, 3]  # 6 frames, 2 per temporal patch: a video, not images
    assert batch["second_per_grid_ts"].tolist() == [1.0, 1.0]  # told 2 fps, as the script tells the processor
    tokens_, scores = reward._generate(batch)
    for ids, steps in zip(tokens_, scores, strict=True):
        assert steps.shape[0] == len(ids) and steps.argmax(-1).tolist() == ids  # greedy: each token its step's best
    out = reward.score(["a red fox", "a cat"], videos)
    assert out.failed.all() and torch.isnan(out.scores).all()
    assert all("visual quality: <score>" in e and "max_new_tokens" in e for e in out.errors)
    assert out.rationales is not None and all(r for r in out.rationales)
    # A 4.0 s clip at 29.97 fps: 2 fps gives 8 frames (qwen-vl-utils' rule), read from the file.
    assert reward.load_media(sample_videos["carphone_pristine"]).shape[0] == 8
    from_file = reward.score(["a phone call"], [sample_videos["carphone_pristine"]])
    assert from_file.failed.all() and "visual quality: <score>" in from_file.errors[0]
    image = reward.score(["a red fox"], [torch.rand(3, 32, 32)])
    assert image.failed.all() and "scores videos; got an image" in image.errors[0]

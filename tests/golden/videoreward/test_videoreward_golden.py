"""VideoReward scores exactly as VideoAlign's own inference code scores the same checkpoint.

golden.json holds what ``VideoVLMRewardInference.reward`` (VideoAlign, transformers 4.45) gave for a tiny random
checkpoint in the released layout (base/, reward/) on two real sample clips; make_golden.py regenerates it.
"""

import json
from pathlib import Path

import pytest

import mmreward
from mmreward import testing

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
TOLERANCE = 1e-4


def load(**overrides):
    kwargs = {
        "weights": str(HERE / "reward"),
        "base_model": str(HERE / "base"),
        "template": None,
        "template_file": str(HERE / "template.yaml"),
        "device": "cpu",
        "dtype": "float32",
        # The checkpoint's max_frame_pixels; both clips are larger, so frames are only ever scaled down.
        "frame_min_pixels": 56 * 56,
        "frame_max_pixels": 112 * 112,
        **overrides,
    }
    return mmreward.load_reward("videoreward", **kwargs)


@pytest.fixture(scope="module")
def reward():
    return load()


def videos():
    found = testing.sample_videos()
    return [str(found[name]) for name in GOLDEN["videos"]]


def test_scores_and_dimensions_match_videoalign(reward):
    out = reward.score(GOLDEN["prompts"], videos())
    assert not out.failed.any(), out.errors
    for i, expected in enumerate(GOLDEN["batched"]):
        assert out.scores[i].item() == pytest.approx(expected["Overall"], abs=TOLERANCE)
        for dim in ("VQ", "MQ", "TA"):
            assert out.dims[dim][i].item() == pytest.approx(expected[dim], abs=TOLERANCE), (i, dim)


def test_unnormalized_dimensions_match_videoalign():
    out = load(normalize=False).score(GOLDEN["prompts"], videos())
    for i, expected in enumerate(GOLDEN["batched_raw"]):
        for dim in ("VQ", "MQ", "TA"):
            assert out.dims[dim][i].item() == pytest.approx(expected[dim], abs=TOLERANCE), (i, dim)


def test_layout_defaults_are_the_references_and_the_alternatives_one_option_away(reward):
    """The VideoAlign layout loads with sequential positions and VideoAlign's frame resize; M-RoPE or the
    processor's resize are one option away and measurably move the scores (0.4 and 0.02 here)."""
    assert (reward.positions, reward.frame_resize) == ("sequential", "videoalign")
    expected = GOLDEN["batched_raw"][0]
    for option in ({"positions": "mrope"}, {"frame_resize": "processor"}):
        out = load(normalize=False, **option).score(GOLDEN["prompts"][:1], videos()[:1])
        gap = max(abs(out.dims[dim][0].item() - expected[dim]) for dim in ("VQ", "MQ", "TA"))
        assert gap > 1e-3, option


def test_full_model_layout_matches_videoalign():
    """VideoAlign's save_full_model layout (checkpoint-<step>/model.pth, peft-wrapped keys with the LoRA matrices
    beside their base weights) scores as VideoAlign scores it."""
    out = load(weights=str(HERE / "reward_full")).score(GOLDEN["prompts"], videos())
    for i, expected in enumerate(GOLDEN["full_model"]):
        assert out.scores[i].item() == pytest.approx(expected["Overall"], abs=TOLERANCE)
        for dim in ("VQ", "MQ", "TA"):
            assert out.dims[dim][i].item() == pytest.approx(expected[dim], abs=TOLERANCE), (i, dim)

"""HPSv2 scores exactly as the hpsv2 package's ``hpsv2.img_score.score`` computes them.

golden.json holds what hpsv2 1.2.0 gave for a tiny random open_clip model (ViT-tiny-hps.json) in the released
checkpoint layout (HPS_v2_compressed.pt: ``{"state_dict": ...}``, float16) on three sample photos, each with its
prompt and against every prompt; make_golden.py regenerates them. mmreward loads the same folder through the
``hpsv2`` preset. hpsv2 converts the image to a float tensor first and resizes that (longest side to 224, zero
padding), as the preset's default ``resize: torch`` does, so the full photos agree to 1e-4 (measured: 2e-5).
``resize: pil`` (8-bit PIL resize first, open_clip's usual order) is not the reference here: measured 6e-5.
"""

import json
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward import testing

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
TOLERANCE = 1e-4


def load(**overrides):
    return mmreward.load_reward(
        "hpsv2",
        weights=str(HERE),
        model=str(HERE / GOLDEN["architecture"]),
        device="cpu",
        dtype="float32",
        **overrides,
    )


@pytest.fixture(scope="module")
def reward():
    return load()


def photos():
    return [str(p) for p in testing.sample_images(tuple(GOLDEN["images"]))]


def test_scores_match_hpsv2(reward):
    assert reward.resize == "torch"  # the hpsv2 package resizes the float tensor
    out = reward.score(GOLDEN["prompts"], photos())
    assert not out.failed.any(), out.errors
    torch.testing.assert_close(out.scores, torch.tensor(GOLDEN["scores"]), rtol=0, atol=TOLERANCE)


def test_every_image_against_every_prompt(reward):
    expected = torch.tensor(GOLDEN["grid"])  # (prompts, images)
    got = torch.stack([reward.score([prompt] * 3, photos()).scores for prompt in GOLDEN["prompts"]])
    torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE)
    # Each image's score moves with the prompt by far more than the tolerance, so the text side is checked too.
    assert (expected.amax(0) - expected.amin(0)).min() > 100 * TOLERANCE


def test_the_pil_resize_is_another_preprocessing_within_the_8_bit_difference():
    pil = load(resize="pil").score(GOLDEN["prompts"], photos()).scores
    expected = torch.tensor(GOLDEN["scores"])
    assert (pil - expected).abs().max() > 1e-5  # a different resize, not the reference's
    torch.testing.assert_close(pil, expected, rtol=0, atol=1e-3)

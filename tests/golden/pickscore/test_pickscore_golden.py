"""PickScore exactly as its published inference code (the README's ``calc_probs``) computes it.

golden.json holds the scores that code feeds to its softmax (logit_scale.exp() * cos, prompts x images) and the
probabilities it returns, for a tiny random CLIPModel saved as PickScore_v1 is (clip/) with a processor directory
in the CLIP-ViT-H-14 processor's layout (processor/), on three sample photos and captions of our own; make_golden.py
regenerates them. mmreward loads the same directories through the ``pickscore`` preset.

The reference's processor resizes with PIL in 8 bits and crops at ``(H - S) // 2``, as the preset's default
``resize: pil`` does: the full photos agree to 1e-4 (measured: 6e-6). ``resize: torch`` (differentiable, what
``score_pixels`` uses) resizes in float: crops/ holds the processor's own 224 x 224 crops, on which both paths agree
to 1e-4; on the full photos the float resize moves this random model's scores by up to 0.022 (2.2e-4 in cosine, times
the logit scale of 100).
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
        "pickscore",
        weights=str(HERE / "clip"),
        processor=str(HERE / "processor"),
        device="cpu",
        dtype="float32",
        **overrides,
    )


@pytest.fixture(scope="module")
def reward():
    return load()


def grid(reward, images):
    """``(prompts, images)`` scores, every image against every prompt as ``calc_probs`` scores them."""
    return torch.stack([reward.score([prompt] * len(images), images).scores for prompt in GOLDEN["prompts"]])


def crops():
    return [str(HERE / "crops" / name) for name in GOLDEN["images"]]


def test_scores_and_probabilities_match_pickscore_on_the_processors_crops(reward):
    scores = grid(reward, crops())
    expected = torch.tensor(GOLDEN["scores"])
    assert (expected > 0).any() and (expected < 0).any()
    torch.testing.assert_close(scores, expected, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(scores.softmax(-1), torch.tensor(GOLDEN["probs"]), rtol=0, atol=TOLERANCE)


def photos():
    return [str(p) for p in testing.sample_images(tuple(GOLDEN["images"]))]


def test_full_photos_match_pickscore_with_the_pil_resize(reward):
    assert reward.resize == "pil"
    scores = grid(reward, photos())
    torch.testing.assert_close(scores, torch.tensor(GOLDEN["scores"]), rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(scores.softmax(-1), torch.tensor(GOLDEN["probs"]), rtol=0, atol=TOLERANCE)


def test_the_torch_resize_matches_on_the_crops_and_differs_only_by_the_resize_on_full_photos():
    differentiable = load(resize="torch")
    expected = torch.tensor(GOLDEN["scores"])
    torch.testing.assert_close(grid(differentiable, crops()), expected, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(grid(differentiable, photos()), expected, rtol=0, atol=0.05)

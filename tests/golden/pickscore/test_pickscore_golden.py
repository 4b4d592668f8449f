"""PickScore exactly as its published inference code (the README's ``calc_probs``) computes it.

golden.json holds the scores that code feeds to its softmax (logit_scale.exp() * cos, prompts x images) and the
probabilities it returns, for a tiny random CLIPModel saved as PickScore_v1 is (clip/) with a processor directory
in the CLIP-ViT-H-14 processor's layout (processor/), on three sample photos and captions of our own; make_golden.py
regenerates them. mmreward loads the same directories through the ``pickscore`` preset.

The reference's processor resizes with PIL in 8 bits, mmreward differentiably in float: crops/ holds the processor's
own 224 x 224 crops, on which the two agree to 1e-4; on the full photos this random model's scores move by up to
0.022 (2.2e-4 in cosine, times the logit scale of 100).
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


@pytest.fixture(scope="module")
def reward():
    return mmreward.load_reward(
        "pickscore", weights=str(HERE / "clip"), processor=str(HERE / "processor"), device="cpu", dtype="float32"
    )


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


def test_full_photos_differ_only_by_the_resize(reward):
    photos = [str(p) for p in testing.sample_images(tuple(GOLDEN["images"]))]
    torch.testing.assert_close(grid(reward, photos), torch.tensor(GOLDEN["scores"]), rtol=0, atol=0.05)

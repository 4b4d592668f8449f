"""LAION aesthetic scores exactly as DDPO's ``AestheticScorer`` (kvablack/ddpo-pytorch) computes them.

golden.json holds what the pinned ``ddpo_pytorch/aesthetic_scorer.py`` gave for a tiny random CLIPModel (clip/, in
openai/clip-vit-large-patch14's layout) and a random head in the released state-dict layout (aesthetic-model.pth)
on three sample photos; make_golden.py regenerates it. mmreward loads the same files through the
``laion-aesthetic`` preset. The reference's processor resizes with PIL in 8 bits, mmreward in float: on the
processor's own crops (crops/) the two agree to 1e-4; on the full photos this random model moves by up to 5e-4.
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
        "laion-aesthetic", weights=str(HERE), clip=str(HERE / "clip"), device="cpu", dtype="float32"
    )


def test_scores_match_ddpo_on_the_processors_crops(reward):
    crops = [str(HERE / "crops" / name) for name in GOLDEN["images"]]
    expected = torch.tensor(GOLDEN["scores"])
    assert expected.max() - expected.min() > 100 * TOLERANCE  # the photos are told apart
    out = reward.score([""] * len(crops), crops)
    assert not out.failed.any(), out.errors
    torch.testing.assert_close(out.scores, expected, rtol=0, atol=TOLERANCE)


def test_full_photos_differ_only_by_the_resize(reward):
    photos = [str(p) for p in testing.sample_images(tuple(GOLDEN["images"]))]
    scores = reward.score([""] * len(photos), photos).scores
    torch.testing.assert_close(scores, torch.tensor(GOLDEN["scores"]), rtol=0, atol=1e-3)

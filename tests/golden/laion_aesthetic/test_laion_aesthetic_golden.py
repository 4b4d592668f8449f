"""LAION aesthetic scores exactly as DDPO's ``AestheticScorer`` (kvablack/ddpo-pytorch) computes them.

golden.json holds what the pinned ``ddpo_pytorch/aesthetic_scorer.py`` gave for a tiny random CLIPModel (clip/, in
openai/clip-vit-large-patch14's layout) and a random head in the released state-dict layout (aesthetic-model.pth)
on three sample photos; make_golden.py regenerates it. mmreward loads the same files through the
``laion-aesthetic`` preset. The reference's processor resizes with PIL in 8 bits and crops at ``(H - S) // 2``, as
the preset's default ``resize: pil`` does: the full photos agree to 1e-4 (measured: exactly). ``resize: torch``
(differentiable, what ``score_pixels`` uses) resizes in float: on the processor's own crops (crops/) both paths agree
to 1e-4; on the full photos the float resize moves this random model by up to 5e-4.
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
        "laion-aesthetic", weights=str(HERE), clip=str(HERE / "clip"), device="cpu", dtype="float32", **overrides
    )


@pytest.fixture(scope="module")
def reward():
    return load()


def test_scores_match_ddpo_on_the_processors_crops(reward):
    crops = [str(HERE / "crops" / name) for name in GOLDEN["images"]]
    expected = torch.tensor(GOLDEN["scores"])
    assert expected.max() - expected.min() > 100 * TOLERANCE  # the photos are told apart
    out = reward.score([""] * len(crops), crops)
    assert not out.failed.any(), out.errors
    torch.testing.assert_close(out.scores, expected, rtol=0, atol=TOLERANCE)


def photos():
    return [str(p) for p in testing.sample_images(tuple(GOLDEN["images"]))]


def test_full_photos_match_ddpo_with_the_pil_resize(reward):
    assert reward.resize == "pil"
    out = reward.score([""] * 3, photos())
    assert not out.failed.any(), out.errors
    torch.testing.assert_close(out.scores, torch.tensor(GOLDEN["scores"]), rtol=0, atol=TOLERANCE)


def test_the_torch_resize_matches_on_the_crops_and_differs_only_by_the_resize_on_full_photos():
    differentiable = load(resize="torch")
    expected = torch.tensor(GOLDEN["scores"])
    crops = [str(HERE / "crops" / name) for name in GOLDEN["images"]]
    torch.testing.assert_close(differentiable.score([""] * 3, crops).scores, expected, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(differentiable.score([""] * 3, photos()).scores, expected, rtol=0, atol=1e-3)

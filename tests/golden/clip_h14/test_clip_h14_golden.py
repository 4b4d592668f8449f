"""clip-h14 as Pref-GRPO's CLIP reward (``fastvideo/rewards/clip_reward.py``) computes it.

golden.json holds ``compute_clip_score`` (the cosine of the raw prompt and the image under open_clip) for a tiny
random model in the file layout of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (open_clip_pytorch_model.bin, architecture
ViT-tiny-h14.json), every photo against every prompt; make_golden.py regenerates it. mmreward loads the same file
through the ``clip-h14`` preset.

Deliberate difference: the preset is a CLIPScore with w = 1, so a negative cosine counts as 0 (Pref-GRPO keeps it).
open_clip's transform resizes with PIL in 8 bits, as the preset's default ``resize: pil`` does: the full photos agree
to 1e-4 (measured: 2e-8). ``resize: torch`` (differentiable, what ``score_pixels`` uses) resizes in float: crops/
holds the transform's own crops, on which both paths agree to 1e-4; on the full photos the float resize moves this
random model's cosines by up to 1e-4.
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
        "clip-h14",
        model=str(HERE / GOLDEN["architecture"]),
        pretrained=str(HERE / "open_clip_pytorch_model.bin"),
        device="cpu",
        dtype="float32",
        **overrides,
    )


@pytest.fixture(scope="module")
def reward():
    return load()


def grid(reward, images):
    """``(prompts, images)``: every image against every prompt."""
    return torch.stack([reward.score([prompt] * len(images), images).scores for prompt in GOLDEN["prompts"]])


def test_scores_match_pref_grpo_where_the_cosine_is_positive(reward):
    expected = torch.tensor(GOLDEN["grid"])
    assert (expected < 0).any() and (expected > 0).any()
    got = grid(reward, [str(HERE / "crops" / name) for name in GOLDEN["images"]])
    # The raw prompt, no caption prefix: positive cosines agree, negative ones are clamped to 0.
    torch.testing.assert_close(got, expected.clamp(min=0), rtol=0, atol=TOLERANCE)


def photos():
    return [str(p) for p in testing.sample_images(tuple(GOLDEN["images"]))]


def test_full_photos_match_pref_grpo_with_the_pil_resize(reward):
    assert reward.resize == "pil"
    expected = torch.tensor(GOLDEN["grid"]).clamp(min=0)
    torch.testing.assert_close(grid(reward, photos()), expected, rtol=0, atol=TOLERANCE)


def test_the_torch_resize_matches_on_the_crops_and_differs_only_by_the_resize_on_full_photos():
    differentiable = load(resize="torch")
    expected = torch.tensor(GOLDEN["grid"]).clamp(min=0)
    crops = [str(HERE / "crops" / name) for name in GOLDEN["images"]]
    torch.testing.assert_close(grid(differentiable, crops), expected, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(grid(differentiable, photos()), expected, rtol=0, atol=1e-3)

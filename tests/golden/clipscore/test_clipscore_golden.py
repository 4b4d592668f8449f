"""CLIPScore exactly as jmhessel/clipscore's ``get_clip_score`` computes it with OpenAI's ``clip`` package.

golden.json holds what the reference gave for a tiny random CLIP in OpenAI's state-dict layout
(ViT-tiny-openai.pt, float16; make_golden.py) on three sample photos with captions of our own, each with its
default "A photo depicts " prefix, and for every image against every caption (negative cosines clamp to 0). mmreward
loads the same file through the ``clip-score`` preset (open_clip, architecture ViT-tiny-openai.json).

The reference resizes with PIL in 8 bits, and so does the preset's default ``resize: pil``: the full photos agree to
1e-4 (measured: 3e-7). ``resize: torch`` (differentiable, what ``score_pixels`` uses) resizes in float; crops/ holds
the reference's own 224 x 224 crops, on which both paths agree to 1e-4, while on the full photos the float resize
(up to 5/255 per pixel) moves this random model's scores by up to 5e-4.
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
    kwargs = {
        "model": str(HERE / "ViT-tiny-openai.json"),
        "pretrained": str(HERE / "ViT-tiny-openai.pt"),
        "device": "cpu",
        "dtype": "float32",
        **overrides,
    }
    return mmreward.load_reward("clip-score", **kwargs)


@pytest.fixture(scope="module")
def reward():
    return load()


def crops():
    return [str(HERE / "crops" / name) for name in GOLDEN["images"]]


def test_scores_match_clipscore_on_the_references_crops(reward):
    out = reward.score(GOLDEN["captions"], crops())
    assert not out.failed.any(), out.errors
    torch.testing.assert_close(out.scores, torch.tensor(GOLDEN["per"]), rtol=0, atol=TOLERANCE)


def test_every_image_against_every_caption_including_the_clamp(reward):
    expected = torch.tensor(GOLDEN["grid"])  # (captions, images)
    assert (expected == 0).any() and (expected > 0.5).any()  # both sides of the clamp are exercised
    got = torch.stack([reward.score([caption] * len(crops()), crops()).scores for caption in GOLDEN["captions"]])
    torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE)


def photos():
    return [str(p) for p in testing.sample_images(tuple(GOLDEN["images"]))]


def test_full_photos_match_clipscore_with_the_pil_resize(reward):
    assert reward.resize == "pil"
    out = reward.score(GOLDEN["captions"], photos())
    assert not out.failed.any(), out.errors
    torch.testing.assert_close(out.scores, torch.tensor(GOLDEN["per"]), rtol=0, atol=TOLERANCE)
    got = torch.stack([reward.score([caption] * 3, photos()).scores for caption in GOLDEN["captions"]])
    torch.testing.assert_close(got, torch.tensor(GOLDEN["grid"]), rtol=0, atol=TOLERANCE)


def test_the_torch_resize_matches_on_the_crops_and_differs_only_by_the_resize_on_full_photos():
    differentiable = load(resize="torch")
    torch.testing.assert_close(
        differentiable.score(GOLDEN["captions"], crops()).scores, torch.tensor(GOLDEN["per"]), rtol=0, atol=TOLERANCE
    )
    scores = differentiable.score(GOLDEN["captions"], photos()).scores
    torch.testing.assert_close(scores, torch.tensor(GOLDEN["per"]), rtol=0, atol=1e-3)


def test_the_caption_prefix_is_the_references_and_matters(reward):
    assert reward.caption_prefix == "A photo depicts " and reward.w == 2.5
    bare = load(caption_prefix="").score(GOLDEN["captions"], crops()).scores
    assert (bare - torch.tensor(GOLDEN["per"])).abs().max() > 10 * TOLERANCE


def test_openai_weights_need_quick_gelu(tmp_path):
    """OpenAI's CLIP uses QuickGELU; the same weights under open_clip's default GELU move the scores (by 3e-3 here).
    A local copy of OpenAI's ViT-B/32 therefore loads as model="ViT-B-32-quickgelu"."""
    config = json.loads((HERE / "ViT-tiny-openai.json").read_text())
    assert config.pop("quick_gelu") is True
    (tmp_path / "ViT-tiny-gelu.json").write_text(json.dumps(config))
    gelu = load(model=str(tmp_path / "ViT-tiny-gelu.json")).score(GOLDEN["captions"], crops()).scores
    assert (gelu - torch.tensor(GOLDEN["per"])).abs().max() > 10 * TOLERANCE

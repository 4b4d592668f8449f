"""ImageReward scores exactly as the authors' package (``image-reward==1.5``) computes them.

golden.json holds what the package's ``ImageReward.score`` gave for a tiny random checkpoint in the released layout
(ImageReward.pt: BLIP ViT/16 and cross-attention text encoder, MLP head; med_config.json; a word-piece tokenizer of
our own) on three sample photos and three prompts of our own wording, one longer than the 35 tokens kept;
make_golden.py regenerates it. mmreward loads the same files through the ``imagereward`` preset, onto transformers'
BLIP modules. The package resizes with PIL in 8 bits and crops with torchvision's offset, as the preset's default
``resize: pil`` does: the full photos agree to 1e-4 (measured: 1e-6). ``resize: torch`` resizes in float and
moves this random model by up to 1.3e-3 on the full photos.
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
        "imagereward", weights=str(HERE), tokenizer=str(HERE / "tokenizer"), device="cpu", dtype="float32", **overrides
    )


@pytest.fixture(scope="module")
def reward():
    return load()


def photos():
    return [str(p) for p in testing.sample_images(tuple(GOLDEN["images"]))]


def test_every_prompt_and_photo_matches_the_package(reward):
    expected = torch.tensor(GOLDEN["scores"])  # (prompts, images)
    assert (expected.max(1).values - expected.min(1).values).min() > 100 * TOLERANCE  # the photos are told apart
    prompts = [p for p in GOLDEN["prompts"] for _ in GOLDEN["images"]]
    out = reward.score(prompts, photos() * len(GOLDEN["prompts"]))
    assert not out.failed.any(), out.errors
    torch.testing.assert_close(out.scores.view_as(expected), expected, rtol=0, atol=TOLERANCE)


def test_the_prompt_is_truncated_to_the_packages_35_tokens(reward):
    long_prompt = GOLDEN["prompts"][-1]
    assert len(reward.tokenizer(long_prompt).input_ids) > 35
    longer = long_prompt + " and more words that the package never reads"
    out = reward.score([longer] * 3, photos())
    torch.testing.assert_close(out.scores, torch.tensor(GOLDEN["scores"][-1]), rtol=0, atol=TOLERANCE)


def test_compare_uses_the_released_std_as_the_bradley_terry_scale(reward):
    first, second = GOLDEN["scores"][0][0], GOLDEN["scores"][0][1]
    prompt = GOLDEN["prompts"][0]
    chelsea, coffee = photos()[:2]
    out = reward.compare([prompt], [chelsea], [coffee])
    expected = torch.sigmoid(torch.tensor(1.0333394966054072 * (first - second)))
    torch.testing.assert_close(out.prob_a, expected.view(1), rtol=0, atol=TOLERANCE)


def test_the_torch_resize_is_differentiable_and_close_to_the_package():
    differentiable = load(resize="torch")
    expected = torch.tensor(GOLDEN["scores"][0])
    out = differentiable.score([GOLDEN["prompts"][0]] * 3, photos())
    torch.testing.assert_close(out.scores, expected, rtol=0, atol=5e-3)
    pixels = torch.stack([mmreward.media.load_image(p) for p in photos()[:1]]).requires_grad_(True)
    differentiable.score_pixels(GOLDEN["prompts"][:1], pixels).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0

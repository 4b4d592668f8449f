"""CLIP preprocessing: the PIL path is the released scorers' pipelines exactly, the torch path matches them to 8-bit
rounding and stays differentiable, and the rewards' ``resize`` option picks between them for ``score()`` only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.media import load_image
from mmreward.rewards.clip_preprocess import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    clip_preprocess,
    clip_preprocess_pil,
    resize_longest_pad,
    resize_shortest_center_crop,
)


@pytest.mark.parametrize("mode", ["shortest", "longest"])
def test_matches_open_clip_transform_on_real_photos(mode, sample_images):
    import open_clip

    reference_transform = open_clip.image_transform(224, is_train=False, resize_mode=mode)
    for path in sample_images[:6]:
        reference = reference_transform(Image.open(path).convert("RGB"))
        ours = clip_preprocess(load_image(path)[None], size=224, resize_mode=mode)[0]
        diff = (reference - ours).abs()
        # PIL resizes in 8 bits; the residual is quantization (1/255 ~ 0.015 in normalized units).
        assert diff.mean() < 0.01 and diff.max() < 0.1, (path.name, diff.mean(), diff.max())


def test_sizes_follow_torchvision_rules():
    # 300 x 200 (H x W): shortest side 200 -> 224, long side int(224 * 300 / 200) = 336, crop offset 56.
    image = torch.arange(300, dtype=torch.float32).view(1, 1, 300, 1).expand(1, 3, 300, 200) / 300
    assert resize_shortest_center_crop(image, 224).shape == (1, 3, 224, 224)
    # Longest side: 300 -> 224, short side round(200 * 224 / 300) = 149, padded (75 = 37 + 38) with zeros.
    padded = resize_longest_pad(torch.ones(1, 3, 300, 200), 224)
    assert padded.shape == (1, 3, 224, 224)
    assert padded[..., :37].abs().sum() == 0 and padded[..., 37 + 149 :].abs().sum() == 0
    torch.testing.assert_close(padded[..., 37 : 37 + 149], torch.ones(1, 3, 224, 149))


@pytest.mark.parametrize("mode", ["shortest", "longest"])
def test_pil_path_is_open_clips_transform_exactly(mode, sample_images):
    import open_clip

    reference_transform = open_clip.image_transform(224, is_train=False, resize_mode=mode)
    for path in sample_images[:6]:
        reference = reference_transform(Image.open(path).convert("RGB"))
        ours = clip_preprocess_pil(load_image(path)[None], size=224, resize_mode=mode)[0]
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5, msg=path.name)


def test_pil_path_with_floor_crop_is_the_clip_image_processor_exactly(sample_images):
    """transformers' CLIPImageProcessor (PickScore, DDPO's aesthetic scorer; its PIL backend, which transformers 4.x
    used) crops at ``(H - S) // 2``: on a 224 x 227 image (3 columns to lose) that is column 1, where
    torchvision's rounding takes column 2."""
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    odd = torch.randint(0, 256, (224, 227, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images = [Image.fromarray(odd.numpy())] + [Image.open(p).convert("RGB") for p in sample_images[:4]]
    for image in images:
        reference = torch.from_numpy(processor(images=image, return_tensors="np")["pixel_values"][0])
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)[None]  # (1, 3, H, W)
        ours = clip_preprocess_pil(pixels, size=224, crop_rounding="floor")[0]
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    odd_pixels = odd.permute(2, 0, 1).float().div(255)[None]
    rounded = clip_preprocess_pil(odd_pixels, size=224, crop_rounding="round")[0]
    assert (rounded - clip_preprocess_pil(odd_pixels, size=224, crop_rounding="floor")[0]).abs().max() > 0.5


def test_torch_path_crops_with_the_same_offset_rules():
    # 224 x 227 needs no resize; 3 columns go: 1 on the left when flooring (transformers), 2 when rounding
    # (torchvision).
    image = torch.rand(1, 3, 224, 227, generator=torch.Generator().manual_seed(1))
    assert torch.equal(resize_shortest_center_crop(image, 224, "floor"), image[..., 1:225])
    assert torch.equal(resize_shortest_center_crop(image, 224, "round"), image[..., 2:226])


def test_pil_path_scores_8_bit_pixels_the_torch_path_does_not_round():
    """Both paths agree on an image already at 224 x 224 only up to the PIL path's 8-bit rounding."""
    pixels = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    quantized = pixels.mul(255).round().div(255)
    torch.testing.assert_close(clip_preprocess_pil(pixels, size=224), clip_preprocess(quantized, size=224))
    assert (clip_preprocess_pil(pixels, size=224) - clip_preprocess(pixels, size=224)).abs().max() > 1e-3


PRESET_RESIZE = {
    "clip-score": "pil",
    "clip-h14": "pil",
    "pickscore": "pil",
    "laion-aesthetic": "pil",
    "hpsv2": "torch",  # the hpsv2 package resizes the float tensor after ToTensor
    "hpsv2.1": "torch",
}


@pytest.mark.parametrize("name", sorted(PRESET_RESIZE))
def test_presets_score_as_their_reference_and_score_pixels_stays_differentiable(tmp_path, name):
    pixels = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(4))
    # Prompts whose cosines with these images are positive under the tiny models, so CLIPScore's clamp passes
    # gradients and the scores' change with the resize.
    prompts = ["an astronaut riding a horse", "two dogs in the snow"]
    reward = testing.tiny_clip_reward(name, root=tmp_path)
    assert reward.resize == PRESET_RESIZE[name]
    other = testing.tiny_clip_reward(name, root=tmp_path, resize="torch" if reward.resize == "pil" else "pil")
    by_resize = {reward.resize: reward, other.resize: other}
    size, mean, std = reward.image_size, reward.mean, reward.std
    mode, rounding = reward.resize_mode, reward.crop_rounding
    expected_inputs = {
        "pil": clip_preprocess_pil(pixels, size=size, mean=mean, std=std, resize_mode=mode, crop_rounding=rounding),
        "torch": clip_preprocess(pixels, size=size, mean=mean, std=std, resize_mode=mode, crop_rounding=rounding),
    }
    scores = {}
    for resize, model in by_resize.items():
        torch.testing.assert_close(model.prepare_images(pixels), expected_inputs[resize])
        with torch.no_grad():
            expected = model.forward_pixels(prompts, expected_inputs[resize])
        scores[resize] = model.score(prompts, list(pixels)).scores
        torch.testing.assert_close(scores[resize], expected, rtol=1e-5, atol=1e-6)
        # score_pixels resizes in torch whatever ``resize`` says, and gradients reach the pixels.
        leaf = pixels.clone().requires_grad_(True)
        differentiable = model.score_pixels(prompts, leaf)
        with torch.no_grad():
            torch_scores = model.forward_pixels(prompts, expected_inputs["torch"])
        torch.testing.assert_close(differentiable.detach(), torch_scores, rtol=1e-5, atol=1e-6)
        differentiable.sum().backward()
        assert (torch_scores != 0).all()
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    assert (scores["pil"] - scores["torch"]).abs().max() > 1e-6  # the option changes what score() computes


def test_an_unknown_resize_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"resize must be 'pil'.*'torch'.*got 'bilinear'"):
        testing.tiny_clip_reward("clip-score", root=tmp_path, resize="bilinear")

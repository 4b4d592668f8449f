"""Torch CLIP preprocessing matches the PIL/torchvision pipelines of the released scorers on real photos."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmreward.media import load_image
from mmreward.rewards.clip_preprocess import clip_preprocess, resize_longest_pad, resize_shortest_center_crop


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

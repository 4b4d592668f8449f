"""Fixtures the VLM judge tests share."""

import pytest
import torch.nn.functional as F

from mmreward import media, testing


@pytest.fixture(scope="module")
def photos():
    """Eight real photos at 56 x 56 (4 visual tokens each), float in [0, 1]."""
    out = []
    for path in testing.sample_images()[:8]:
        image = F.interpolate(media.load_image(path)[None], size=(56, 56), mode="bilinear", antialias=True)
        out.append(image[0].clamp(0, 1))
    return out

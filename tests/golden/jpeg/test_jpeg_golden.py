"""JPEG (in)compressibility exactly as DDPO's reward functions (``ddpo_pytorch/rewards.py``) compute them.

golden.json holds the kB sizes DDPO's ``jpeg_incompressibility`` and ``jpeg_compressibility`` gave for a float batch
(three photo crops and a pattern between 8-bit levels, built by make_golden.sample_images); the presets must give
the same sizes to the byte. The sizes come from the JPEG encoder Pillow bundles (version in golden.json).
"""

import json
from pathlib import Path

import pytest
import torch

import mmreward
from tests.golden.jpeg.make_golden import sample_images

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())


@pytest.mark.parametrize("name", ["jpeg-incompressibility", "jpeg-compressibility"])
def test_sizes_match_ddpo(name):
    images = sample_images()
    out = mmreward.load_reward(name).score([""] * len(images), images)
    assert not out.failed.any(), out.errors
    # 1e-4 kB is a tenth of a byte: the encodings have the same length.
    torch.testing.assert_close(out.scores, torch.tensor(GOLDEN[name]), rtol=0, atol=1e-4)

"""Regenerate the JPEG-size golden data with DDPO's reward functions (kvablack/ddpo-pytorch, ``rewards.py``).

Run with any python that has torch, numpy and Pillow, pointing at a checkout of ddpo-pytorch::

    DDPO_DIR=/path/to/ddpo-pytorch python tests/golden/jpeg/make_golden.py

It imports the pinned file (hash checked) and runs ``jpeg_incompressibility()`` and ``jpeg_compressibility()`` on a
batch of float images in [0, 1] as DDPO passes them (NCHW tensors): three sample photos and a synthetic pattern whose
values fall between 8-bit levels, so that the rounding to uint8 counts. The sizes depend on the JPEG encoder that
Pillow bundles; golden.json records the Pillow version.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
COMMIT = "1958463f020112c9a7bc85768d296daacc2e1b4b"
PATH = "ddpo_pytorch/rewards.py"
SHA256 = "4d9422b1fdef0c95951d4ce70f6cf0758f3caac304b78c964d221e18d760f2c4"
IMAGES = ("chelsea.png", "coffee.png", "astronaut.png")
SIZE = 256  # every image is centre-cropped to SIZE x SIZE so that they batch


def sample_images() -> torch.Tensor:
    """``(4, 3, SIZE, SIZE)`` float in [0, 1]: the photos' centre crops and a pattern between 8-bit levels.

    The test builds the same batch with this function (imported from this file), so nothing here may change.
    """
    import skimage
    from PIL import Image

    crops = []
    for name in IMAGES:
        array = np.asarray(Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB"))
        top, left = (array.shape[0] - SIZE) // 2, (array.shape[1] - SIZE) // 2
        crops.append(torch.from_numpy(array[top : top + SIZE, left : left + SIZE].copy()).permute(2, 0, 1) / 255)
    y, x = torch.meshgrid(torch.arange(SIZE) / SIZE, torch.arange(SIZE) / SIZE, indexing="ij")
    pattern = torch.stack([0.5 + 0.5 * torch.sin(9 * x + 4 * y), x * y, (0.5 + 0.4 * torch.cos(17 * x * y)) * 0.999])
    return torch.stack([*crops, pattern]).float()


def main() -> None:
    source = Path(os.environ.get("DDPO_DIR", "")).expanduser() / PATH
    if not source.is_file():
        sys.exit(f"set DDPO_DIR to a checkout of https://github.com/kvablack/ddpo-pytorch at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    spec = importlib.util.spec_from_file_location("ddpo_rewards", source)
    rewards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rewards)
    images = sample_images()
    incompressibility, _ = rewards.jpeg_incompressibility()(images, None, None)
    compressibility, _ = rewards.jpeg_compressibility()(images, None, None)
    golden = {
        "reference": f"kvablack/ddpo-pytorch@{COMMIT}:{PATH} jpeg_(in)compressibility",
        "versions": {"Pillow": __import__("PIL").__version__, "torch": torch.__version__},
        "images": [*IMAGES, "pattern"],
        "jpeg-incompressibility": incompressibility.tolist(),
        "jpeg-compressibility": compressibility.tolist(),
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

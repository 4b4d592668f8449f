"""Regenerate the LAION aesthetic golden data with DDPO's aesthetic scorer (kvablack/ddpo-pytorch; see ../README.md).

DDPO's ``ddpo_pytorch/aesthetic_scorer.py`` (the improved-aesthetic-predictor's inference, the scorer behind the
head that trl-lib/ddpo-aesthetic-predictor republishes) loads ``openai/clip-vit-large-patch14`` and its packaged
head file by fixed names. This script copies the pinned file (hash checked) into a scratch package whose assets hold
the tiny head written here, redirects the two CLIP names to the tiny directory here, and scores three sample
photos on the CPU in float32. Run with the reference virtualenv's python (transformers 4.45.2)::

    DDPO_DIR=/path/to/ddpo-pytorch /path/to/ref-venv/bin/python tests/golden/laion_aesthetic/make_golden.py

clip/ is a tiny random transformers CLIPModel (768-dimensional projection, as the head expects) with a processor in
openai/clip-vit-large-patch14's layout (character-level tokenizer of our own); aesthetic-model.pth the head's state
dict (float16, to halve the file), crops/ the processor's own 224 x 224 crops.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COMMIT = "1958463f020112c9a7bc85768d296daacc2e1b4b"
PATH = "ddpo_pytorch/aesthetic_scorer.py"
SHA256 = "2e3337838489229b8544a1ae2d1c760ab1a10dff36bcb278e0974fd12c7867fc"
HEAD_FILE = "aesthetic-model.pth"
IMAGES = ("chelsea.png", "coffee.png", "astronaut.png")
sys.path.insert(0, str(HERE.parents[2]))  # the repository, for mmreward.tiny_models' character set


def sample_image(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def build_clip() -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from mmreward.tiny_models import _TOKEN_CHARS

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _TOKEN_CHARS:
            vocab[char + suffix] = len(vocab)
    files = Path(tempfile.mkdtemp())
    (files / "vocab.json").write_text(json.dumps(vocab))
    (files / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(files / "vocab.json", files / "merges.txt", model_max_length=77)
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={
            **layers,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={**layers, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"},
        projection_dim=768,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(HERE / "clip")
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(HERE / "clip")


def load_scorer_module(head: dict):
    """The pinned aesthetic_scorer.py as ``ddpo_pytorch.aesthetic_scorer`` of a scratch package holding ``head``."""
    source = Path(os.environ.get("DDPO_DIR", "")).expanduser() / PATH
    if not source.is_file():
        sys.exit(f"set DDPO_DIR to a checkout of https://github.com/kvablack/ddpo-pytorch at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    root = Path(tempfile.mkdtemp())
    assets = root / "ddpo_pytorch" / "assets"
    assets.mkdir(parents=True)
    (root / "ddpo_pytorch" / "__init__.py").write_text("")
    (assets / "__init__.py").write_text("")
    shutil.copy(source, root / PATH)
    torch.save(head, assets / "sac+logos+ava1-l14-linearMSE.pth")
    sys.path.insert(0, str(root))
    return importlib.import_module("ddpo_pytorch.aesthetic_scorer")


class Redirect:
    """A transformers class whose ``from_pretrained`` loads the tiny directory, whatever name it is given."""

    def __init__(self, cls):
        self.cls = cls

    def from_pretrained(self, name, **kwargs):
        return self.cls.from_pretrained(HERE / "clip", **kwargs)


def main() -> None:
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    build_clip()
    torch.manual_seed(1)
    from torch import nn

    # The head's layers and their state-dict names, as in the released file (layers.0, .2, .4, .6, .7).
    head = nn.Sequential(
        nn.Linear(768, 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )
    # Weights 3x PyTorch's initialization, so that the scores spread between the photos (~0.5 apart, not ~1e-3).
    state = {f"layers.{k}": (v * 3).half() for k, v in head.state_dict().items()}
    torch.save(state, HERE / HEAD_FILE)
    scorer_module = load_scorer_module(state)
    scorer_module.CLIPModel = Redirect(CLIPModel)
    scorer_module.CLIPProcessor = Redirect(CLIPProcessor)
    scorer = scorer_module.AestheticScorer(torch.float32)

    images = [Image.open(sample_image(name)).convert("RGB") for name in IMAGES]
    scores = scorer(images).tolist()
    crops = scorer.processor.image_processor(images, do_rescale=False, do_normalize=False, return_tensors="np")
    (HERE / "crops").mkdir(exist_ok=True)
    for name, array in zip(IMAGES, crops["pixel_values"], strict=True):
        Image.fromarray(array.transpose(1, 2, 0).round().astype("uint8")).save(HERE / "crops" / name)
    assert scorer([Image.open(HERE / "crops" / name) for name in IMAGES]).tolist() == scores
    golden = {
        "reference": f"kvablack/ddpo-pytorch@{COMMIT}:{PATH} AestheticScorer (CPU, float32)",
        "versions": {"transformers": __import__("transformers").__version__, "torch": torch.__version__},
        "images": list(IMAGES),
        "scores": scores,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

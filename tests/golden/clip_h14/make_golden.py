"""Regenerate the clip-h14 golden data with Pref-GRPO's CLIP reward code (``fastvideo/rewards/clip_reward.py``).

Run with any python that has open_clip (this one's, or the reference virtualenv's), pointing at a Pref-GRPO checkout::

    PREF_GRPO_DIR=/path/to/Pref-GRPO python tests/golden/clip_h14/make_golden.py

It writes a tiny random open_clip model of ViT-H-14's kind (GELU, 224 pixels, patch 14; ViT-tiny-h14.json) as
open_clip_pytorch_model.bin, the file name of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (float16; token-embedding rows of
tokens our prompts do not use are zeroed, which keeps the file small in git and changes no score), loads it with
Pref-GRPO's ``init_clip_model`` and scores three sample photos with ``compute_clip_score``, each with its prompt and
against every prompt. It also saves the 224 x 224 crops open_clip's transform makes (PIL resize, 8 bits).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COMMIT = "3e787f6dd5a3051b40d61f07e9578468ac26130a"
PATH = "fastvideo/rewards/clip_reward.py"
SHA256 = "38059ae3c378184ab0bca904818c318fa7ef22b75a5d2e820a430a35fc2b17e3"
ARCHITECTURE = "ViT-tiny-h14"
FILENAME = "open_clip_pytorch_model.bin"
IMAGES = ("chelsea.png", "coffee.png", "astronaut.png")
PROMPTS = (
    "a tabby cat looking up",
    "a cup of coffee on a saucer, seen from above on a red table",
    "an astronaut in a white suit in front of a flag",
)


def sample_image(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def load_reference():
    source = Path(os.environ.get("PREF_GRPO_DIR", "")).expanduser() / PATH
    if not source.is_file():
        sys.exit(f"set PREF_GRPO_DIR to a checkout of https://github.com/CodeGoat24/Pref-GRPO at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    spec = importlib.util.spec_from_file_location("pref_grpo_clip_reward", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    import open_clip
    from PIL import Image

    reference = load_reference()
    open_clip.add_model_config(HERE / f"{ARCHITECTURE}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(ARCHITECTURE, pretrained=None)
    state = model.state_dict()
    with torch.no_grad():
        # Larger final-norm gains than the initialization, so that the cosines spread over both signs.
        for name in ("ln_final.weight", "visual.ln_post.weight"):
            state[name] = state[name] + torch.randn_like(state[name]) * 0.5
        keep = torch.zeros(state["token_embedding.weight"].shape[0], dtype=torch.bool)
        keep[torch.unique(open_clip.get_tokenizer(ARCHITECTURE)(list(PROMPTS)))] = True
        state["token_embedding.weight"][~keep] = 0.0
    torch.save({k: v.half() for k, v in state.items()}, HERE / FILENAME)

    clip_model, preprocess, tokenizer = reference.init_clip_model(
        "cpu", model_name=ARCHITECTURE, pretrained_path=str(HERE / FILENAME)
    )

    def score(image, prompt):
        return float(reference.compute_clip_score(clip_model, preprocess, tokenizer, image, prompt, "cpu")[0])

    images = [Image.open(sample_image(name)) for name in IMAGES]
    grid = [[score(image, prompt) for image in images] for prompt in PROMPTS]
    (HERE / "crops").mkdir(exist_ok=True)
    crop = preprocess.transforms[:2]  # Resize, CenterCrop
    for name, image in zip(IMAGES, images, strict=True):
        for step in crop:
            image = step(image)
        image.save(HERE / "crops" / name)
    crops = [Image.open(HERE / "crops" / name) for name in IMAGES]
    assert [[score(image, prompt) for image in crops] for prompt in PROMPTS] == grid
    golden = {
        "reference": f"CodeGoat24/Pref-GRPO@{COMMIT}:{PATH} compute_clip_score (CPU, float32)",
        "versions": {"open_clip": open_clip.__version__, "torch": torch.__version__},
        "architecture": f"{ARCHITECTURE}.json",
        "images": list(IMAGES),
        "prompts": list(PROMPTS),
        "grid": grid,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

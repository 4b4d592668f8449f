"""Regenerate the CLIPScore golden data with the reference implementation (jmhessel/clipscore; see ../README.md).

Run in a virtualenv with OpenAI's ``clip`` package and scikit-learn, pointing at a checkout of clipscore::

    CLIPSCORE_DIR=/path/to/clipscore /path/to/clip-venv/bin/python tests/golden/clipscore/make_golden.py

It (1) builds a tiny CLIP with OpenAI's own model class (``clip.model.CLIP``: the ViT-B/32 layout at 224 pixels,
QuickGELU, 64 channels, 2 layers per tower; the same shapes as ViT-tiny-openai.json), keeps the token-embedding
rows of the tokens our captions use and zeroes the others (they never enter a score; the zeros keep the file small
in git), and saves its state dict in float16 as OpenAI's released checkpoints hold it; (2) loads it back with
``clip.model.build_model`` (which rebuilds the model from the state dict's shapes, as ``clip.load`` does) and scores
three sample photos with clipscore.py's ``get_clip_score`` on the CPU in float32, with its default caption prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COMMIT = "1036465276513621f77f1c2208d742e4a430781f"
SHA256 = "203b63b680b6a5207ebc7b169a4cce164221a76e8d0adb78e8f6bd4220dfce72"  # clipscore.py at COMMIT
FILENAME = "ViT-tiny-openai.pt"
IMAGES = ("chelsea.png", "coffee.png", "astronaut.png")
CAPTIONS = (
    "a tabby cat looking up",
    "a cup of coffee on a saucer, seen from above on a red table",
    "an astronaut in a white suit in front of a flag",
)


def sample_image(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def load_clipscore():
    """clipscore.py from the checkout (hash checked); its reference-caption metrics module is not needed here."""
    source = Path(os.environ.get("CLIPSCORE_DIR", "")).expanduser() / "clipscore.py"
    if not source.is_file():
        sys.exit(f"set CLIPSCORE_DIR to a checkout of https://github.com/jmhessel/clipscore at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    sys.modules["generation_eval_utils"] = types.ModuleType("generation_eval_utils")  # BLEU/CIDEr helpers only
    sys.path.insert(0, str(source.parent))
    import clipscore

    return clipscore


def build_checkpoint(prefix: str) -> None:
    import clip
    from clip.model import CLIP

    config = json.loads((HERE / "ViT-tiny-openai.json").read_text())
    vision, text = config["vision_cfg"], config["text_cfg"]
    torch.manual_seed(0)
    model = CLIP(
        embed_dim=config["embed_dim"],
        image_resolution=vision["image_size"],
        vision_layers=vision["layers"],
        vision_width=vision["width"],
        vision_patch_size=vision["patch_size"],
        context_length=text["context_length"],
        vocab_size=text["vocab_size"],
        transformer_width=text["width"],
        transformer_heads=text["heads"],
        transformer_layers=text["layers"],
    )
    with torch.no_grad():
        # Larger LayerNorm gains and projections than CLIP's initialization, so that the tiny towers' cosines spread
        # over both signs and CLIPScore's clamp at zero is exercised as well as positive scores.
        for name, tensor in model.named_parameters():
            if name.endswith("ln_final.weight") or name.endswith("ln_post.weight"):
                tensor.add_(torch.randn_like(tensor) * 0.5)
        used = torch.unique(clip.tokenize([prefix + c for c in CAPTIONS], truncate=True))
        keep = torch.zeros(text["vocab_size"], dtype=torch.bool)
        keep[used.long()] = True
        model.token_embedding.weight[~keep] = 0.0
    # float16, as in OpenAI's released files.
    torch.save({name: tensor.half() for name, tensor in model.state_dict().items()}, HERE / FILENAME)


def main() -> None:
    clipscore = load_clipscore()
    import clip

    prefix = clipscore.CLIPCapDataset([]).prefix  # the default "A photo depicts " of get_clip_score's captions
    build_checkpoint(prefix)
    # clip.load(path, device="cpu", jit=False) does exactly this for a state-dict file, but with current torch its
    # fallback re-reads the file object its TorchScript attempt has consumed; so its two steps are run here.
    model = clip.model.build_model(torch.load(HERE / FILENAME, map_location="cpu")).float().eval()
    paths = [str(sample_image(name)) for name in IMAGES]
    mean, per, _ = clipscore.get_clip_score(model, paths, list(CAPTIONS), "cpu")
    # The 224 x 224 crops the reference's image transform feeds the model (its PIL bicubic resize and centre crop,
    # 8-bit), saved losslessly: scored again they give the same numbers, and they let the test check the model and
    # the formula apart from the resize.
    from PIL import Image

    crop = clipscore.Compose(clipscore.CLIPImageDataset([]).preprocess.transforms[:3])
    (HERE / "crops").mkdir(exist_ok=True)
    crops = [str(HERE / "crops" / name) for name in IMAGES]
    for path, target in zip(paths, crops, strict=True):
        crop(Image.open(path)).save(target)
    assert clipscore.get_clip_score(model, crops, list(CAPTIONS), "cpu")[1].tolist() == per.tolist()
    # Every image against every caption (3 x 3), to cover negative cosines (clamped to 0) as well.
    grid = [clipscore.get_clip_score(model, paths, [c] * len(paths), "cpu")[1].tolist() for c in CAPTIONS]
    golden = {
        "reference": f"jmhessel/clipscore@{COMMIT} get_clip_score (w=2.5, prefix {prefix!r}; CPU, float32)",
        "versions": {
            "torch": torch.__version__,
            "numpy": __import__("numpy").__version__,
            "clip": "openai/CLIP@d05afc436d78f1c48dc0dbf8e5980a9d471f35f6",
        },
        "images": list(IMAGES),
        "captions": list(CAPTIONS),
        "per": per.tolist(),
        "mean": float(mean),
        "grid": grid,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

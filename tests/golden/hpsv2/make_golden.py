"""Regenerate the HPSv2 golden data with the ``hpsv2`` package's own scoring (PyPI hpsv2==1.2.0; see ../README.md).

Run in a virtualenv with hpsv2 installed (it bundles its own copy of open_clip)::

    /path/to/hps-venv/bin/python tests/golden/hpsv2/make_golden.py

``hpsv2.img_score.score`` builds open_clip's ViT-H-14 and reads the tokenizer of that name. Here both names are
redirected to ViT-tiny-hps.json (a two-layer tower pair of the same kind: GELU, 224 pixels, patch 14), and the
pretrained tag to none: the model's weights come from the checkpoint it loads, which this script writes first in
the released layout (``torch.save({"state_dict": ...})``, float16 like HPS_v2_compressed.pt; token-embedding rows
of tokens our prompts do not use are zeroed, which keeps the file small in git and changes no score). It then
scores three sample photos, each with its prompt and against every prompt, on the CPU in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
VERSION = "1.2.0"
FILENAME = "HPS_v2_compressed.pt"
ARCHITECTURE = "ViT-tiny-hps"
IMAGES = ("chelsea.png", "coffee.png", "astronaut.png")
PROMPTS = (
    "a tabby cat looking up",
    "a cup of coffee on a saucer, seen from above on a red table",
    "an astronaut in a white suit in front of a flag",
)


def sample_image(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def main() -> None:
    from importlib.metadata import version

    import hpsv2.img_score as img_score
    from hpsv2.src.open_clip import add_model_config, create_model_and_transforms, get_tokenizer

    if version("hpsv2") != VERSION:
        raise SystemExit(f"hpsv2 {version('hpsv2')} is installed; install hpsv2=={VERSION}")
    add_model_config(HERE / f"{ARCHITECTURE}.json")
    # The package's fixed names, redirected to the tiny architecture; every other argument is the package's own.
    img_score.create_model_and_transforms = lambda name, pretrained, **kw: create_model_and_transforms(
        ARCHITECTURE, None, **kw
    )
    img_score.get_tokenizer = lambda name: get_tokenizer(ARCHITECTURE)
    img_score.device = "cpu"

    torch.manual_seed(0)
    model, _, _ = create_model_and_transforms(ARCHITECTURE, None, device="cpu", output_dict=True)
    tokenizer = get_tokenizer(ARCHITECTURE)
    state = model.state_dict()
    with torch.no_grad():
        # Larger final-norm gains than the initialization, so that the cosines differ clearly between pairs.
        for name in ("ln_final.weight", "visual.ln_post.weight"):
            state[name] = state[name] + torch.randn_like(state[name]) * 0.5
        keep = torch.zeros(state["token_embedding.weight"].shape[0], dtype=torch.bool)
        keep[torch.unique(tokenizer(list(PROMPTS)))] = True
        state["token_embedding.weight"][~keep] = 0.0
    torch.save({"state_dict": {k: v.half() for k, v in state.items()}}, HERE / FILENAME)

    paths = [str(sample_image(name)) for name in IMAGES]
    checkpoint = str(HERE / FILENAME)
    own = [float(img_score.score(path, prompt, cp=checkpoint)[0]) for path, prompt in zip(paths, PROMPTS, strict=True)]
    grid = [[float(s) for s in img_score.score(paths, prompt, cp=checkpoint)] for prompt in PROMPTS]
    golden = {
        "reference": f"hpsv2=={VERSION} hpsv2.img_score.score (CPU, float32)",
        "versions": {"hpsv2": VERSION, "torch": torch.__version__},
        "architecture": f"{ARCHITECTURE}.json",
        "images": list(IMAGES),
        "prompts": list(PROMPTS),
        "scores": own,
        "grid": grid,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

"""Regenerate the ImageReward golden data with the authors' package (``image-reward==1.5``; see ../README.md).

The package builds ``ImageReward(med_config)``: BLIP's ViT-L/16 image encoder (fixed in its code), a BERT text
encoder with cross-attention configured by ``med_config.json``, the ``bert-base-uncased`` tokenizer with BLIP's
``[DEC]``/``[ENC]`` tokens, and a 768-input MLP head; ``ImageReward.load`` then loads ``ImageReward.pt`` with
``load_state_dict(strict=False)``. This script keeps all of that and redirects three fixed names to tiny stand-ins
of the same kind: ``create_vit`` to a 2-block ViT/16 at 224 px of width 128 (BLIP's head width, 64), the tokenizer
to a word-piece vocabulary of our own (tokenizer/), and the head's input width to the tiny text encoder's 64.
The package's ``__init__`` imports OpenAI ``clip`` and diffusers for its other scorers; they are not needed, so the
two package modules are entered without running it, and ``load`` (three statements) is spelled out below. Run with
the side virtualenv's python (transformers 4.45.2, timm 0.6.13, fairscale 0.4.13, ``--no-deps image-reward==1.5``)::

    /path/to/imagereward-venv/bin/python tests/golden/imagereward/make_golden.py

Files written: ImageReward.pt (the state dict in the released key layout, float16 to halve it), med_config.json
(the released file's keys, tiny sizes), tokenizer/, golden.json.
"""

from __future__ import annotations

import importlib.util
import json
import string
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PACKAGE = "image-reward==1.5"
IMAGES = ("chelsea.png", "coffee.png", "astronaut.png")
# Our own wording. With the tiny character-level vocabulary the last prompt is longer than the 35 tokens the
# package keeps, so its truncation is exercised too.
PROMPTS = (
    "A cat, resting.",
    "a cup of coffee on a saucer",
    "An astronaut in a white suit stands before the flag!",
)
VISION = {"embed_dim": 128, "depth": 2, "num_heads": 2, "patch_size": 16}
MED_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 40,
    "model_type": "bert",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "add_type_embeddings": False,
    "vocab_size": None,  # filled in: the tiny vocabulary plus [DEC] and [ENC]
    "encoder_width": 128,
    "add_cross_attention": True,
}


def sample_image(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def write_tokenizer() -> int:
    """A word-piece vocabulary of BERT's special tokens, characters and continuation characters; its size."""
    chars = string.ascii_lowercase + string.digits + ".,!?'-"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    directory = HERE / "tokenizer"
    directory.mkdir(exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}, indent=2)
        + "\n"
    )
    return len(tokens)


def import_reference():
    """The package's ImageReward and BLIP modules, entered without its ``__init__`` (which needs clip, diffusers)."""
    spec = importlib.util.find_spec("ImageReward")
    if spec is None:
        sys.exit(f"install the reference first: pip install --no-deps {PACKAGE} (see ../README.md)")
    root = Path(spec.submodule_search_locations[0])
    for name, path in (("ImageReward", root), ("ImageReward.models", root / "models")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    image_reward = importlib.import_module("ImageReward.ImageReward")
    blip = importlib.import_module("ImageReward.models.BLIP.blip")
    blip_pretrain = importlib.import_module("ImageReward.models.BLIP.blip_pretrain")
    return image_reward, blip, blip_pretrain


def main() -> None:
    from importlib.metadata import version

    from PIL import Image
    from transformers import BertTokenizer

    image_reward, blip, blip_pretrain = import_reference()
    vocab_size = write_tokenizer()
    config = dict(MED_CONFIG, vocab_size=vocab_size + 2)
    (HERE / "med_config.json").write_text(json.dumps(config, indent=2) + "\n")

    def tiny_vit(vit, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        assert vit == "large" and image_size == 224  # what ImageReward asks for
        encoder = blip.VisionTransformer(img_size=image_size, drop_path_rate=0.1, **VISION)
        return encoder, VISION["embed_dim"]

    class TinyTokenizer:
        @staticmethod
        def from_pretrained(name, **kwargs):
            assert name == "bert-base-uncased"
            return BertTokenizer.from_pretrained(HERE / "tokenizer", **kwargs)

    blip_pretrain.create_vit = tiny_vit
    blip.BertTokenizer = TinyTokenizer
    released_mlp = image_reward.MLP
    image_reward.MLP = lambda input_size: released_mlp(MED_CONFIG["hidden_size"])

    torch.manual_seed(0)
    model = image_reward.ImageReward(med_config=str(HERE / "med_config.json"), device="cpu")
    state = model.state_dict()
    generator = torch.Generator().manual_seed(1)
    for key, value in state.items():
        # BLIP's initialization (std 0.02 in both encoders; the head's std 1/(d+1) and zero biases) leaves the
        # tiny model nearly blind to the image: every photo scores within ~1e-3. Unit-gain random matrices
        # (uniform, std 1/sqrt(fan_in)) and small random biases make the photos differ by far more than the
        # tolerance while keeping activations of order one. LayerNorm and embedding tables keep their values.
        if value.ndim == 2 and "embeddings" not in key:
            bound = 3**0.5 / value.shape[1] ** 0.5
            state[key] = (torch.rand(value.shape, generator=generator) * 2 - 1) * bound
        elif key.endswith(".bias") and "LayerNorm" not in key and "norm" not in key.rsplit(".", 2)[-2]:
            state[key] = (torch.rand(value.shape, generator=generator) * 2 - 1) * 0.1
    state = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
    torch.save(state, HERE / "ImageReward.pt")

    # ImageReward.load (utils.py), on the file just written.
    model = image_reward.ImageReward(device="cpu", med_config=str(HERE / "med_config.json")).to("cpu")
    model.load_state_dict(torch.load(HERE / "ImageReward.pt", map_location="cpu"), strict=False)
    model.eval()

    images = [Image.open(sample_image(name)) for name in IMAGES]
    with torch.no_grad():
        scores = [[model.score(prompt, image) for image in images] for prompt in PROMPTS]
        ranks, listed = model.inference_rank(PROMPTS[0], images)
    # The package's batched path (inference_rank) agrees with its one-image path to float32 noise.
    assert max(abs(a - b) for a, b in zip(listed, scores[0], strict=True)) < 1e-5
    golden = {
        "reference": f"{PACKAGE} ImageReward.score (CPU, float32), tiny stand-ins as make_golden.py says",
        "versions": {
            "image-reward": version("image-reward"),
            "transformers": version("transformers"),
            "timm": version("timm"),
            "torch": torch.__version__,
        },
        "images": list(IMAGES),
        "prompts": list(PROMPTS),
        "scores": scores,
        "ranks_first_prompt": ranks,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

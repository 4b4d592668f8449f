"""Regenerate the PickScore golden data with PickScore's published inference code (see ../README.md).

PickScore's inference is the ``calc_probs`` snippet of its README (yuvalkirstain/PickScore). This script reads that
code block from a checkout at the pinned commit (hash checked), points its two model names and its device at the
tiny files here (by rewriting those three assignments' values in the parsed code, nothing else), runs it, and
records the scores it feeds to its softmax as well as the probabilities it returns. Run with the reference
virtualenv's python (transformers 4.45.2)::

    PICKSCORE_DIR=/path/to/PickScore /path/to/ref-venv/bin/python tests/golden/pickscore/make_golden.py

The tiny model is a transformers ``CLIPModel`` saved as the released PickScore_v1 is (clip/), with a processor
directory in the layout of the CLIP-ViT-H-14 processor it names (processor/: 224-pixel CLIP image processor and a
character-level tokenizer of our own in place of the 49408-token BPE vocabulary).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository, for mmreward.tiny_models' tokenizer
COMMIT = "f79607ff68609c1e6dfa78cba38afeea4c248df1"
SHA256 = "d519113238e7c440ce623ef8732010ecc377e6e39ca7ee2cce519353d4a9effa"  # README.md at COMMIT
IMAGES = ("chelsea.png", "coffee.png", "astronaut.png")
PROMPTS = (
    "a tabby cat looking up",
    "a cup of coffee on a saucer, seen from above on a red table",
    "an astronaut in a white suit in front of a flag",
)


def sample_image(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def build_checkpoint() -> None:
    import tempfile

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from mmreward.tiny_models import _TOKEN_CHARS

    # mmreward.tiny_models' character-level vocabulary, written as files (transformers 4.45 reads them from disk).
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _TOKEN_CHARS:
            vocab[char + suffix] = len(vocab)
    files = Path(tempfile.mkdtemp())
    (files / "vocab.json").write_text(json.dumps(vocab))
    (files / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(files / "vocab.json", files / "merges.txt", model_max_length=77)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
            "hidden_act": "gelu",
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 224,
            "patch_size": 32,
            "hidden_act": "gelu",
        },
        projection_dim=16,
        logit_scale_init_value=4.6052,  # exp = 100, as trained CLIPs end up
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    with torch.no_grad():  # wider projections than the initialization, so cosines spread over both signs
        model.visual_projection.weight.mul_(8.0)
        model.text_projection.weight.mul_(8.0)
    model.save_pretrained(HERE / "clip")
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(HERE / "processor")


def load_snippet() -> ast.Module:
    """The README's Python block up to ``calc_probs`` (the example call at its end is left out)."""
    source = Path(os.environ.get("PICKSCORE_DIR", "")).expanduser() / "README.md"
    if not source.is_file():
        sys.exit(f"set PICKSCORE_DIR to a checkout of https://github.com/yuvalkirstain/PickScore at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    blocks = re.findall(r"```python\n(.*?)```", source.read_text(), re.DOTALL)
    tree = ast.parse(blocks[0])
    end = next(i for i, node in enumerate(tree.body) if isinstance(node, ast.FunctionDef))
    tree.body = tree.body[: end + 1]
    local = {
        "device": "cpu",
        "processor_name_or_path": str(HERE / "processor"),
        "model_pretrained_name_or_path": str(HERE / "clip"),
    }
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in local:
            node.value = ast.copy_location(ast.Constant(local.pop(node.targets[0].id)), node.value)
    assert not local, f"assignments not found in the snippet: {sorted(local)}"
    return tree


class SoftmaxRecorder:
    """``torch`` as the snippet sees it, recording what it passes to ``torch.softmax`` (the PickScore scores)."""

    def __init__(self):
        self.inputs: list[torch.Tensor] = []

    def __getattr__(self, name):
        return getattr(torch, name)

    def softmax(self, scores, dim):
        self.inputs.append(scores.detach().clone())
        return torch.softmax(scores, dim=dim)


def main() -> None:
    from PIL import Image

    build_checkpoint()
    scope: dict = {}
    exec(compile(load_snippet(), "PickScore README", "exec"), scope)  # noqa: S102 - the pinned README's code
    recorder = SoftmaxRecorder()
    scope["torch"] = recorder
    images = [Image.open(sample_image(name)) for name in IMAGES]
    probs = [scope["calc_probs"](prompt, images) for prompt in PROMPTS]
    scores = [s.tolist() for s in recorder.inputs]  # (prompts, images)
    # The 224 x 224 crops the processor feeds the model (its PIL resize and centre crop, 8 bits), saved losslessly.
    processor = scope["processor"]
    crops = processor.image_processor(images, do_rescale=False, do_normalize=False, return_tensors="np")
    (HERE / "crops").mkdir(exist_ok=True)
    for name, array in zip(IMAGES, crops["pixel_values"], strict=True):
        Image.fromarray(array.transpose(1, 2, 0).round().astype("uint8")).save(HERE / "crops" / name)
    again = [scope["calc_probs"](p, [Image.open(HERE / "crops" / n) for n in IMAGES]) for p in PROMPTS]
    assert [s.tolist() for s in recorder.inputs[len(PROMPTS) :]] == scores and again == probs
    golden = {
        "reference": f"yuvalkirstain/PickScore@{COMMIT} README calc_probs (CPU, float32)",
        "versions": {"transformers": __import__("transformers").__version__, "torch": torch.__version__},
        "images": list(IMAGES),
        "prompts": list(PROMPTS),
        "scores": scores,
        "probs": probs,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

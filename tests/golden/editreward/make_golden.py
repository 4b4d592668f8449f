"""Regenerate the EditReward golden data with EditReward's own model class and inferencer (TIGER-AI-Lab/EditReward).

Run with a python that has transformers 4.57.0 (EditReward's pin), torch, torchvision, Pillow, safetensors, PyYAML
and scikit-image, pointing at a clone of TIGER-AI-Lab/EditReward at the commit the preset pins::

    EDITREWARD_DIR=/path/to/EditReward python tests/golden/editreward/make_golden.py

It (1) builds a tiny Qwen2.5-VL base, (2) builds ``Qwen2_5_VLRewardModelBT_MultiHead`` as EditReward's
``create_model_and_processor`` does (``<|Reward|>`` added to the processor, ``ranknet_multi_head`` with two MLP
heads in float32, ``pooling_strategy: mean``, embeddings resized), gives every tensor random values and saves the
full state dict as model.safetensors (the layout ``EditRewardVLInferencer`` loads), then (3) scores source/edited
pairs of real sample photos with ``EditRewardVLInferencer.reward`` on the CPU in float32, with our prompt wording
(``editreward-heads.yaml``) in place of the authors' instructions, and writes golden.json.

The repository's modules import training-only packages (trl, peft, deepspeed, tensorboard), so only what inference
runs is taken from them, unchanged: the model class (ast-extracted from model/qwen2_5_vl_trainer.py), the image
helpers (dataset/utils.py) and the inferencer class (ast-extracted from inference_vl_edit.py; its __init__, which
parses the training configuration, is bypassed and its attributes set as __init__ sets them).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
_spec = importlib.util.spec_from_file_location("_tiny_qwen2vl", HERE.parent / "_tiny_qwen2vl.py")
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)

OURS = REPO / "configs" / "rewards" / "templates" / "editreward-heads.yaml"
# (source, edited): the same photo as its own edit, a different photo, and a photo upscaled from a small one.
PAIRS = (("chelsea.png", "chelsea.png"), ("coffee.png", "astronaut.png"), ("astronaut.png", "rocket.jpg"))
PROMPTS = ("make the cat look up", "replace the cup with an astronaut", "turn the astronaut into a rocket")
HEADS = ("instruction_following", "visual_quality")


def sample_image(name: str) -> str:
    import skimage

    return str(Path(skimage.__file__).parent / "data" / name)


def definitions(path: Path, names: set[str], namespace: dict) -> dict:
    """Execute the imports that resolve and the named top-level definitions of ``path`` into ``namespace``."""
    module = ast.parse(path.read_text(encoding="utf-8"))

    def defines(node: ast.stmt) -> set[str]:
        if isinstance(node, ast.Assign):
            return {t.id for t in node.targets if isinstance(t, ast.Name)}
        return {getattr(node, "name", None)}

    keep = [n for n in module.body if defines(n) & names]
    for node in module.body:
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.level == 0):
            try:
                exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
            except ImportError:
                continue  # training-only packages; nothing kept uses them
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace


def main() -> None:
    from safetensors.torch import save_file
    from transformers import AutoProcessor

    source = Path(os.environ["EDITREWARD_DIR"]) / "EditReward"
    ours = yaml.safe_load(OURS.read_text(encoding="utf-8"))
    base = HERE / "base"
    corpus = [ours[h].format(prompt=p) for h in HEADS for p in PROMPTS]
    _tiny.build_base(
        base, corpus, min_pixels=56 * 56, max_pixels=28 * 28 * 1280, tie_embeddings=False, family="qwen2_5_vl"
    )

    # (2) the reward model as create_model_and_processor builds it.
    model_ns = definitions(source / "model" / "qwen2_5_vl_trainer.py", {"Qwen2_5_VLRewardModelBT_MultiHead"}, {})
    processor = AutoProcessor.from_pretrained(base, padding_side="right")
    processor.tokenizer.add_special_tokens({"additional_special_tokens": ["<|Reward|>"]})
    token_ids = processor.tokenizer.convert_tokens_to_ids(["<|Reward|>"])
    model = model_ns["Qwen2_5_VLRewardModelBT_MultiHead"].from_pretrained(
        base,
        output_dim=2,
        reward_token="special",
        special_token_ids=token_ids,
        torch_dtype=torch.float32,
        attn_implementation="sdpa",
        rm_head_type="ranknet_multi_head",
        rm_head_kwargs=None,
        pooling_strategy="mean",
    )
    model.resize_token_embeddings(len(processor.tokenizer))
    generator = torch.Generator().manual_seed(7)
    state = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            # The heads get a larger spread so that mu differs clearly between pairs and between heads.
            scale = 0.3 if name.startswith("rm_heads") else 0.02
            noise = torch.randn(tensor.shape, generator=generator) * scale
            state[name] = (tensor + noise).contiguous() if tensor.is_floating_point() else tensor.clone()
    save_file(state, str(HERE / "model.safetensors"))
    model.load_state_dict(state, strict=True)
    model.eval()

    # (3) the inferencer, its texts replaced by our wording (the reward-token line is part of it).
    sys.path.insert(0, str(source.parent))
    utils = definitions(
        source / "dataset" / "utils.py",
        {
            "IMAGE_FACTOR",
            "MIN_PIXELS",
            "MAX_PIXELS",
            "MAX_RATIO",
            "round_by_factor",
            "ceil_by_factor",
            "floor_by_factor",
            "smart_resize",
            "fetch_image",
            "extract_vision_info",
            "process_vision_info",
        },
        {},
    )
    namespace = {
        "process_vision_info": utils["process_vision_info"],
        "INSTRUCTION_EDIT_FOLLOWING": ours["instruction_following"].replace("{prompt}", "{text_prompt}"),
        "INSTRUCTION_EDIT_QUALITY": ours["visual_quality"].replace("{prompt}", "{text_prompt}"),
        "INSTRUCTION_EDIT_OVERALL": "",
        "INSTRUCTION_EDIT_OVERALL_DETAILED": "",
        "prompt_with_special_token": "",
        "prompt_without_special_token": "",
    }
    definitions(source / "inference_vl_edit.py", {"EditRewardVLInferencer"}, namespace)
    inferencer = object.__new__(namespace["EditRewardVLInferencer"])
    inferencer.device = "cpu"
    inferencer.use_special_tokens = True
    inferencer.reward_dim = "overall_detail"
    inferencer.rm_head_type = "ranknet_multi_head"
    inferencer._is_qwen3 = False
    inferencer.model = model
    inferencer.processor = processor
    sources = [sample_image(s) for s, _ in PAIRS]
    edited = [sample_image(e) for _, e in PAIRS]
    with torch.no_grad():
        fused = inferencer.reward(prompts=list(PROMPTS), image_src=sources, image_paths=edited)
        # Each head's (mu, log sigma): the model's own per-head step on the inferencer's batches.
        batches = inferencer.prepare_batch(sources, edited, list(PROMPTS))
        per_head = [
            model._run_single_batch_through_model_and_head(batches[f"batch_dim{i + 1}"], model.rm_heads[f"head_{i}"])
            for i in range(len(HEADS))
        ]
        model.pooling_strategy = "min"
        fused_min = inferencer.reward(prompts=list(PROMPTS), image_src=sources, image_paths=edited)
    import transformers

    golden = {
        "reference": "EditReward Qwen2_5_VLRewardModelBT_MultiHead + EditRewardVLInferencer.reward (CPU, float32)",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "pairs": [list(p) for p in PAIRS],
        "prompts": list(PROMPTS),
        "fused_mean": fused.tolist(),
        "fused_min": fused_min.tolist(),
        "per_head": {h: per_head[i].tolist() for i, h in enumerate(HEADS)},
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

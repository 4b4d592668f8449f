"""Regenerate the HPSv3 golden data with HPSv3's own inference code (the PyPI wheel hpsv3==1.0.0; see README.md).

Run with the reference virtualenv's python (transformers 4.45.2, hpsv3 1.0.0 installed without dependencies)::

    /path/to/ref-venv/bin/python tests/golden/hpsv3/make_golden.py

It (1) builds a tiny Qwen2-VL base, (2) builds the reward model exactly as HPSv3's training does
(``create_model_and_processor``: ``<|Reward|>`` added, the ranknet MLP head in float32), gives every tensor
random values and saves the full state dict as one safetensors file (the released ``HPSv3.safetensors`` layout),
then (3) scores three real sample photos with ``HPSv3RewardInferencer.reward`` on the CPU in float32, with our own
prompt wording (template.yaml) in place of HPSv3's instruction, and writes golden.json.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
# Loaded by path: with tests/golden on sys.path, this folder would shadow the hpsv3 package.
_spec = importlib.util.spec_from_file_location("_tiny_qwen2vl", HERE.parent / "_tiny_qwen2vl.py")
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)
build_base = _tiny.build_base

IMAGES = ("chelsea.png", "coffee.png", "astronaut.png")  # 451 x 300 is upscaled, the others scaled down
PROMPTS = (
    "a tabby cat looking up",
    "a cup of coffee on a saucer, seen from above on a red table",
    "an astronaut in a white suit in front of a flag",
)
FILENAME = "HPSv3.safetensors"


def sample_image(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def instruction() -> str:
    """The text item after the image, as mmreward renders template.yaml, in HPSv3's ``{text_prompt}`` form."""
    user = yaml.safe_load((HERE / "template.yaml").read_text())["image"]["user"]
    head, tail = user.split("{media}")
    assert head == "" and "{" not in tail.replace("{prompt}", ""), "the template must start with the image"
    return tail.replace("{prompt}", "{text_prompt}")


def main() -> None:
    import hpsv3.inference as hps_inference
    from hpsv3.train import create_model_and_processor
    from hpsv3.utils.parser import DataConfig, ModelConfig, PEFTLoraConfig, TrainingConfig, parse_args_with_yaml

    base = HERE / "base"
    corpus = [instruction().format(text_prompt=p) for p in PROMPTS]
    build_base(base, corpus, min_pixels=56 * 56, max_pixels=28 * 28 * 1280, tie_embeddings=False)  # as 7B
    # HPSv3's released configuration (HPSv3_7B.yaml) with the tiny base, float32 and no flash-attention / deepspeed.
    config = {
        "rm_head_type": "ranknet",
        "lora_enable": False,
        "model_name_or_path": str(base),
        "use_special_tokens": True,
        "reward_token": "special",
        "output_dim": 2,
        "loss_type": "uncertainty",
        "max_pixels": 200704,
        "min_pixels": 200704,
        "with_instruction": True,
        "disable_flash_attn2": True,
        "bf16": False,
        "torch_dtype": "float32",
        "output_dir": tempfile.mkdtemp(),
        "report_to": "none",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(config, handle)
    config_path = handle.name
    (data_config, training_args, model_config, lora_config), _ = parse_args_with_yaml(
        (DataConfig, TrainingConfig, ModelConfig, PEFTLoraConfig), config_path, is_train=False
    )
    model, _, _ = create_model_and_processor(model_config, lora_config, training_args)
    generator = torch.Generator().manual_seed(5)
    state = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            # rm_head gets a larger spread so that mu and the second output differ clearly between images.
            scale = 0.3 if name.startswith("rm_head") else 0.02
            noise = torch.randn(tensor.shape, generator=generator) * scale
            state[name] = (tensor + noise).contiguous() if tensor.is_floating_point() else tensor.clone()
    from safetensors.torch import save_file

    save_file(state, str(HERE / FILENAME))

    # Score with HPSv3's inference class; its instruction text is replaced by our wording.
    hps_inference.INSTRUCTION = instruction()
    hps_inference.prompt_with_special_token = ""
    inferencer = hps_inference.HPSv3RewardInferencer(
        config_path=config_path, checkpoint_path=str(HERE / FILENAME), device="cpu"
    )
    paths = [str(sample_image(name)) for name in IMAGES]
    with torch.no_grad():
        batched = inferencer.reward(image_paths=paths, prompts=list(PROMPTS))
        singles = [inferencer.reward(image_paths=[p], prompts=[q])[0] for p, q in zip(paths, PROMPTS, strict=True)]
    golden = {
        "reference": "hpsv3==1.0.0 HPSv3RewardInferencer.reward (CPU, float32)",
        "versions": {
            "transformers": __import__("transformers").__version__,
            "hpsv3": "1.0.0",
            "torch": torch.__version__,
        },
        "images": list(IMAGES),
        "prompts": list(PROMPTS),
        "batched": batched.tolist(),
        "single": [row.tolist() for row in singles],
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2))
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

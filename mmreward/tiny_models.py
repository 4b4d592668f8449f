"""Tiny random models for CPU runs: what ``path="tiny"`` / ``--model tiny`` (generator pipelines),
``discriminator.backbone: tiny`` (DINOv2) and ``model.base: tiny`` (VLM reward backbones) build.

Each builder makes the *real* classes (diffusers pipelines, transformers models, tokenizers and processors) at a
tiny size with random weights and tokenizers built in memory, offline, in milliseconds; the ``*_dir`` builders
save them the way released checkpoints are laid out, so they load through the same code as hub ids. Test
fixtures built on top of these (tiny reward presets, judges, sample media) live in :mod:`mmreward.testing`.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from mmreward.errors import MMRewardError
from mmreward.family_names import FAMILIES

_SCRATCH: tempfile.TemporaryDirectory | None = None


def scratch_dir() -> Path:
    """A temporary directory (one per process, removed at exit) for tiny models built without a ``root``."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = tempfile.TemporaryDirectory(prefix="mmreward-tiny-")
    return Path(_SCRATCH.name)


# ------------------------------------------------------------------------------------------------- tokenizers

_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"


def tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over single characters, built in memory (lower-case letters, digits, punctuation)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _TOKEN_CHARS:
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


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
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen2's pre-tokenizer split: digits one by one, words with their leading space, newlines apart.
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
VLM_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


# Templates added after the tiny judges were fine-tuned in tests: their text would change the merges, and with them
# those judges' tokenization.
_NOT_IN_TOKENIZER_CORPUS = (
    "unifiedreward-flex",
    "rationalrewards",
    "rationalrewards-edit",
    "videoscore2",
    "editreward-heads",
    "unifiedreward-edit",
    "unifiedreward-edit-quality",
    "unifiedreward-edit-pairwise",
)


def _tiny_vlm_tokenizer():
    """A byte-level BPE tokenizer with Qwen's special tokens and pre-tokenizer, trained on the shipped templates
    (so template prompts stay short) plus verdicts, score lines and answer tags."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from mmreward.rewards.vlm.templates import TEMPLATE_DIR

    # Checklist and later templates are left out: the merges (and with them the fine-tuned tiny judges of other
    # tests) stay what they were before those judges existed; their prompts are just a few tokens longer.
    paths = [p for p in sorted(TEMPLATE_DIR.glob("*.yaml")) if p.stem not in _NOT_IN_TOKENIZER_CORPUS]
    texts = [p.read_text(encoding="utf-8") for p in paths]
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
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": section},
    }
    patch = 16 if family == "qwen3_vl" else 14
    if family == "qwen2_vl":
        vision = {
            "depth": vision_depth,
            "embed_dim": vision_width,
            "hidden_size": hidden_size,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": patch,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
    elif family == "qwen2_5_vl":
        vision = {
            "depth": vision_depth,
            "hidden_size": vision_width,
            "intermediate_size": 2 * vision_width,
            "num_heads": 4,
            "out_hidden_size": hidden_size,
            "window_size": 56,
            "fullatt_block_indexes": [vision_depth - 1],
            "tokens_per_second": 2,
            "patch_size": patch,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
    else:
        text["head_dim"] = head_dim
        text["rope_parameters"]["mrope_interleaved"] = True
        vision = {
            "depth": vision_depth,
            "hidden_size": vision_width,
            "intermediate_size": 2 * vision_width,
            "num_heads": 4,
            "out_hidden_size": hidden_size,
            "patch_size": patch,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [vision_depth - 1],
        }
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


# --------------------------------------------------------------------------------- tiny rectified-flow pipelines

_QWEN_TEXT_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# A Qwen chat format without a default system turn: what Qwen3's template renders for one user message with
# enable_thinking (the Z-Image pipeline's call).
_QWEN_TEXT_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_t5_tokenizer():
    """A unigram T5 tokenizer over single characters, built in memory."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [(c, -3.0) for c in _TOKEN_CHARS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def tiny_qwen_text_tokenizer(corpus: list[str], extra_special_tokens: tuple[str, ...] = ()):
    """A ``Qwen2Tokenizer`` (the class Qwen-Image and Z-Image load) with BPE merges trained on ``corpus``, built
    in memory. The class itself sets Qwen2's NFC normalizer and split-regex pre-tokenizer (transformers 5 rebuilds
    them from the class when loading, whatever a saved tokenizer.json says), so the saved tokenizer loads back
    tokenizing the same; the merges are trained under that same pre-tokenizer, so words of ``corpus`` become
    single tokens as in the released vocabulary. ``extra_special_tokens`` (e.g. Qwen2.5-VL's vision tokens) are
    added after training, so they leave the merges as they are."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    reference = Qwen2Tokenizer(vocab={"<|endoftext|>": 0}, merges=[])
    trainer_tokenizer = Tokenizer(models.BPE())
    trainer_tokenizer.normalizer = reference.backend_tokenizer.normalizer
    trainer_tokenizer.pre_tokenizer = reference.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        show_progress=False,
        special_tokens=list(_QWEN_TEXT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    trainer_tokenizer.train_from_iterator(corpus * 4, trainer)
    state = json.loads(trainer_tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"], merges=merges, chat_template=_QWEN_TEXT_CHAT_TEMPLATE, model_max_length=4096
    )
    specials = (*_QWEN_TEXT_SPECIAL_TOKENS, *extra_special_tokens)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer


_QWEN_PIPELINE_CORPUS = [
    "a photo of a cat, a red car, a dog running on the beach, an astronaut riding a horse",
    "a new prompt, another one, cached, not cached, bright, dark, blurry, bad quality",
]


def _tiny_qwen3_config(tokenizer: Any, layers: int) -> Any:
    """A 16-wide Qwen3 text encoder's config on ``tokenizer`` (Z-Image's and FLUX.2 klein's encoders differ only in
    how many layers the pipeline reads hidden states from)."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )


def _tiny_clip_text_encoder(tokenizer, *, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        vocab_size=len(tokenizer),
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        max_position_embeddings=77,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _tiny_image_vae():
    from diffusers import AutoencoderKL

    # Two blocks: 2x spatial compression, 4 latent channels; shift/scale as SD3's VAE config.
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def tiny_pipeline(family: str, *, seed: int = 0):
    """A tiny diffusers pipeline of ``family`` (``sd3``, ``flux``, ``wan``): the real pipeline, transformer, VAE,
    text encoder and scheduler classes with random weights and tokenizers built in memory; offline, CPU-fast.

    - ``sd3``: ``StableDiffusion3Pipeline``, 2 MM-DiT layers, two CLIP text encoders and a T5; 2x VAE, 4 latent
      channels, patch 2 (images: multiples of 4 pixels).
    - ``flux``: ``FluxPipeline``, guidance-distilled like FLUX.1-dev, dynamic shifting; packed 16 = 4 x 2 x 2
      channels (images: multiples of 4 pixels).
    - ``wan``: ``WanPipeline`` with ``AutoencoderKLWan`` (8x spatial, 4x temporal), UniPC flow scheduler as the
      released Wan 2.1 checkpoints ship (videos: multiples of 16 pixels, 4k + 1 frames).
    - ``qwenimage``: ``QwenImagePipeline``, 2 MM-DiT layers, a 2-layer Qwen2.5-VL text encoder with a
      :func:`tiny_qwen_text_tokenizer` whose merges make the pipeline's system prompt 34 tokens (the number the
      pipeline drops, as with the released tokenizer), ``AutoencoderKLQwenImage`` (4x spatial), dynamic shifting
      with Qwen-Image's shift settings (images: multiples of 8 pixels).
    - ``zimage``: ``ZImagePipeline``, 1 refiner + 2 main layers, a 2-layer Qwen3 text model, 2x ``AutoencoderKL``
      with 16 latent channels, fixed shift 3 as Z-Image-Turbo ships (images: multiples of 4 pixels).
    - ``flux2klein``: ``Flux2KleinPipeline`` (a base, non-distilled model: true CFG), 1 double + 1 single block, a
      28-layer width-16 Qwen3 causal LM (the pipeline reads layers 9, 18 and 27), 2x ``AutoencoderKLFlux2`` with 4
      latent channels and non-trivial batch-norm statistics, dynamic shifting (images: multiples of 4 pixels).
    - ``wan22``: ``WanPipeline`` laid out as Wan2.2 T2V-A14B: the ``wan`` components plus a second expert
      ``transformer_2`` with other random weights and ``boundary_ratio=0.875`` (its release value; with the tiny
      shift-3 schedule a 3-step run switches experts after the first step).
    - ``wan22ti2v``: ``WanPipeline`` laid out as Wan2.2 TI2V-5B: ``expand_timesteps`` and a Wan2.2-style VAE
      (residual blocks, 2x2 patchified input, 48 latent channels, 16x spatial; videos: multiples of 32 pixels).
    - ``wan-i2v``: ``WanImageToVideoPipeline`` laid out as Wan2.1 I2V-14B: the ``wan`` VAE, text encoder and
      scheduler, a 2-layer ``CLIPVisionModel`` (32 px, 8 px patches: 17 tokens of width 16) and a transformer with
      image cross-attention and 12 input channels (latents, first-frame mask, conditioning latents);
      :func:`tiny_wan22_i2v_pipeline` gives the Wan2.2 I2V-A14B layout (two experts, no image encoder).
    - ``flux2``: ``Flux2Pipeline`` (guidance-distilled like FLUX.2 [dev]: a guidance embedding), the klein
      transformer and VAE sizes, a ``Mistral3ForConditionalGeneration`` with a 30-layer width-16 Mistral (the
      pipeline reads layers 10, 20 and 30) and a 1-layer Pixtral vision tower, behind a ``PixtralProcessor``
      (images: multiples of 4 pixels).
    - ``hunyuanvideo15``: ``HunyuanVideo15Pipeline`` (text-to-video, CFG 6 in its guider, fixed shift 5), 1 double-
      stream block and 1 token-refiner layer, a 4-layer width-16 ``Qwen2_5_VLTextModel`` with a
      :func:`tiny_qwen_text_tokenizer` whose merges make the pipeline's chat prefix the 108 tokens it crops, a
      1-layer ByT5 (``T5EncoderModel``, the real byte-level ``ByT5Tokenizer``), ``AutoencoderKLHunyuanVideo15``
      with 4x spatial and 4x temporal compression and 4 latent channels (videos: multiples of 4 pixels, 4k + 1
      frames).
    """
    if family not in FAMILIES:
        raise MMRewardError(f"no tiny pipeline for family {family!r}; use one of {', '.join(FAMILIES)}")
    return _evaluated(_build_tiny_pipeline(family, seed))


def _evaluated(pipeline):
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # as from_pretrained leaves them: no dropout (T5 has 0.1 by default)
    return pipeline


def _build_tiny_pipeline(family: str, seed: int, *, two_experts: bool = False):
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
        UniPCMultistepScheduler,
        WanPipeline,
    )
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    clip_tokenizer, t5_tokenizer = tiny_clip_tokenizer(), _tiny_t5_tokenizer()
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
            sample_size=32,
            patch_size=2,
            in_channels=4,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=32,
            caption_projection_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
            pos_embed_max_size=32,
        )
        return StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=_tiny_image_vae(),
            text_encoder=_tiny_clip_text_encoder(clip_tokenizer, projection=True),
            tokenizer=clip_tokenizer,
            text_encoder_2=_tiny_clip_text_encoder(clip_tokenizer, projection=True),
            tokenizer_2=clip_tokenizer,
            text_encoder_3=T5EncoderModel(T5Config(**t5_kwargs)),
            tokenizer_3=t5_tokenizer,
        )
    if family in ("flux", "flux-kontext"):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 4, 8),
        )
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
        pipeline_class = FluxKontextPipeline if family == "flux-kontext" else FluxPipeline
        return pipeline_class(
            transformer=transformer,
            scheduler=scheduler,
            vae=_tiny_image_vae(),
            text_encoder=_tiny_clip_text_encoder(clip_tokenizer, projection=False),
            tokenizer=clip_tokenizer,
            text_encoder_2=T5EncoderModel(T5Config(**t5_kwargs)),
            tokenizer_2=t5_tokenizer,
        )
    if family == "qwenimage":
        return _tiny_qwenimage_pipeline()
    if family == "zimage":
        return _tiny_zimage_pipeline()
    if family == "flux2klein":
        return _tiny_flux2klein_pipeline()
    if family == "wan22ti2v":
        return _tiny_wan22ti2v_pipeline(t5_tokenizer, UMT5EncoderModel(UMT5Config(**t5_kwargs)))
    if family == "qwenimage-edit":
        return _tiny_qwenimage_edit_pipeline()
    if family == "qwenimage21":
        return _tiny_qwenimage21_pipeline()
    if family == "flux2":
        return _tiny_flux2_pipeline()
    if family == "hunyuanvideo15":
        return _tiny_hunyuanvideo15_pipeline()
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.0, 0.3],
        latents_std=[1.5, 0.8, 1.0, 1.2],
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    if family == "wan-i2v":
        text_encoder = UMT5EncoderModel(UMT5Config(**t5_kwargs))
        return _tiny_wan_i2v_pipeline(vae, scheduler, t5_tokenizer, text_encoder, two_experts=two_experts)
    transformer = _tiny_wan_transformer(channels=4)
    text_encoder = UMT5EncoderModel(UMT5Config(**t5_kwargs))
    if family == "wan22":  # drawn after the other components: the first expert is the wan pipeline's transformer
        experts = {"transformer_2": _tiny_wan_transformer(channels=4), "boundary_ratio": 0.875}
    else:
        experts = {}
    return WanPipeline(
        tokenizer=t5_tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        **experts,
    )


def _tiny_wan_transformer(channels: int, *, in_channels: int | None = None, image_dim: int | None = None):
    """``in_channels`` (default ``channels``): image-to-video transformers also take the conditioning channels;
    ``image_dim``: the width of CLIP image features (Wan2.1 I2V's image cross-attention, whose added key/value
    projections take the transformer's own width, as the released ``added_kv_proj_dim``)."""
    from diffusers import WanTransformer3DModel

    image = {} if image_dim is None else {"image_dim": image_dim, "added_kv_proj_dim": 2 * 12}
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=channels if in_channels is None else in_channels,
        out_channels=channels,
        **image,
        text_dim=32,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def _tiny_wan_i2v_pipeline(vae, scheduler, tokenizer, text_encoder, *, two_experts: bool = False):
    """``WanImageToVideoPipeline`` laid out as Wan2.1 I2V-14B (a CLIP vision encoder whose second-to-last hidden
    states the transformer cross-attends to) or, with ``two_experts``, as Wan2.2 I2V-A14B (no image encoder; a second
    expert and ``boundary_ratio`` 0.9, the release's). The transformer takes the noisy latents, the 4-channel first-
    frame mask (one channel per frame of the VAE's 4x temporal compression) and the conditioning latents:
    ``4 + 4 + 4`` channels."""
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    channels = vae.config.z_dim
    in_channels = 2 * channels + vae.config.scale_factor_temporal
    if two_experts:
        return WanImageToVideoPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            scheduler=scheduler,
            transformer=_tiny_wan_transformer(channels, in_channels=in_channels),
            transformer_2=_tiny_wan_transformer(channels, in_channels=in_channels),
            boundary_ratio=0.9,
        )
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        image_encoder=CLIPVisionModel(vision),
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        transformer=_tiny_wan_transformer(channels, in_channels=in_channels, image_dim=vision.hidden_size),
    )


def tiny_wan22_i2v_pipeline(*, seed: int = 0):
    """The tiny ``wan-i2v`` pipeline laid out as Wan2.2 I2V-A14B (two experts, no image encoder); ``wan-i2v``'s
    default tiny pipeline is the Wan2.1 I2V layout."""
    return _evaluated(_build_tiny_pipeline("wan-i2v", seed, two_experts=True))


def _tiny_wan22ti2v_pipeline(tokenizer, text_encoder):
    """Wan2.2 TI2V-5B's layout: its VAE patchifies 2x2 pixels (12 input channels) and has residual down/up blocks
    and 48 latent channels (the released config's z_dim, patch_size, is_residual, 16x/4x scale factors)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    rng = torch.Generator().manual_seed(48)
    vae = AutoencoderKLWan(
        base_dim=4,
        decoder_base_dim=6,
        z_dim=48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=(torch.randn(48, generator=rng) * 0.2).tolist(),
        latents_std=(1 + torch.rand(48, generator=rng)).tolist(),
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=_tiny_wan_transformer(channels=48),
        expand_timesteps=True,
    )


def _tiny_qwenimage_pipeline():
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.1, -0.2, 0.0, 0.3],
        latents_std=[1.5, 0.8, 1.0, 1.2],
    )
    # Qwen-Image's released scheduler: dynamic (exponential) shifting between 0.5 and 0.9, terminal sigma 0.02.
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    # The tokenizer is trained on the pipeline's own prompt template, which the pipeline sets in __init__.
    pipeline = QwenImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer
    )
    template = pipeline.prompt_template_encode
    tokenizer = tiny_qwen_text_tokenizer([template.format(text) for text in _QWEN_PIPELINE_CORPUS])
    prefix = len(tokenizer(template.split("{}")[0]).input_ids)
    if prefix != pipeline.prompt_template_encode_start_idx:
        raise MMRewardError(
            f"the tiny Qwen tokenizer makes the Qwen-Image system prompt {prefix} tokens, but the pipeline drops "
            f"{pipeline.prompt_template_encode_start_idx}: prompts would lose tokens or keep template ones"
        )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_TEXT_SPECIAL_TOKENS}
    config = AutoConfig.for_model(
        "qwen2_5_vl",
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        },
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 32},
        image_token_id=len(tokenizer) - 1,
        video_token_id=len(tokenizer) - 1,
        vision_start_token_id=len(tokenizer) - 1,
        vision_end_token_id=len(tokenizer) - 1,
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    pipeline.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)
    return pipeline


def _tiny_qwenimage_edit_pipeline():
    """Qwen-Image-Edit Plus on the tiny Qwen-Image transformer and VAE, with a Qwen2.5-VL that really encodes
    images: a 1-block vision tower (patch 14, 2x2 merge) and a ``Qwen2VLProcessor`` whose image processor makes
    any condition image 56 x 56 pixels (4 vision tokens); the tokenizer knows the vision tokens and makes the edit
    system prompt 64 tokens, the number the pipeline drops, as the released tokenizer does."""
    from diffusers import QwenImageEditPlusPipeline
    from transformers import (
        AutoConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    base = _tiny_qwenimage_pipeline()
    pipeline = QwenImageEditPlusPipeline(
        scheduler=base.scheduler, vae=base.vae, text_encoder=None, tokenizer=None, processor=None,
        transformer=base.transformer,
    )  # fmt: skip
    template = pipeline.prompt_template_encode
    vision_tokens = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    tokenizer = tiny_qwen_text_tokenizer([template.format(text) for text in _QWEN_PIPELINE_CORPUS], vision_tokens)
    prefix = len(tokenizer(template.split("{}")[0]).input_ids)
    if prefix != pipeline.prompt_template_encode_start_idx:
        raise MMRewardError(
            f"the tiny Qwen tokenizer makes the Qwen-Image-Edit system prompt {prefix} tokens, but the pipeline drops "
            f"{pipeline.prompt_template_encode_start_idx}: prompts would lose tokens or keep template ones"
        )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (*_QWEN_TEXT_SPECIAL_TOKENS, *vision_tokens)}
    text_config = base.text_encoder.config.text_config.to_dict()
    text_config["vocab_size"] = len(tokenizer)
    config = AutoConfig.for_model(
        "qwen2_5_vl",
        text_config=text_config,
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    size = {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=14),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=14),
        chat_template=_QWEN_TEXT_CHAT_TEMPLATE,
    )
    pipeline.register_modules(text_encoder=text_encoder, tokenizer=tokenizer, processor=processor)
    return pipeline


def _tiny_qwenimage21_pipeline():
    """Qwen-Image 2.1 (``QwenImage21Pipeline``): a 2-block single-stream ``QwenImage21Transformer2DModel`` (8 latent
    channels, unpatched), ``AutoencoderKLQwenImage21`` with its RGBA input and output and the pipeline's fixed 16x
    spatial compression (4 stages, width 4), a 2-layer width-32 ``Qwen3VLForConditionalGeneration`` behind a
    ``Qwen3VLProcessor`` whose tokenizer makes the system turn as many tokens as the template's own system part
    (the pipeline drops that count), dynamic shifting with the pipeline's ``calculate_shift`` defaults."""
    from diffusers import (
        AutoencoderKLQwenImage21,
        FlowMatchEulerDiscreteScheduler,
        QwenImage21Pipeline,
        QwenImage21Transformer2DModel,
    )
    from transformers import AutoConfig, Qwen3VLForConditionalGeneration

    channels = 8
    transformer = QwenImage21Transformer2DModel(
        in_channels=channels,
        out_channels=channels,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        context_in_dim=32,
        mlp_ratio=2,
        axes_dims_rope=(4, 6, 6),
    )
    generator = torch.Generator().manual_seed(1)
    vae = AutoencoderKLQwenImage21(
        base_dim=4,
        decoder_base_dim=4,
        z_dim=channels,
        dim_mult=[1, 1, 1, 1, 1],  # four downsampling stages: the 16x the pipeline assumes
        num_res_blocks=1,
        temperal_downsample=[False, False, False, False],
        latents_mean=(torch.randn(channels, generator=generator) * 0.3).tolist(),
        latents_std=(torch.rand(channels, generator=generator) + 0.6).tolist(),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
    )
    vision_tokens = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    template = (  # the pipeline's text-to-image template (it sets it in __init__, which needs the processor)
        "<|im_start|>system\nComprehend and analyze the provided prompt.<|im_end|>\n"
        "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    )
    tokenizer = tiny_qwen_text_tokenizer([template.format(text) for text in _QWEN_PIPELINE_CORPUS], vision_tokens)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (*_QWEN_TEXT_SPECIAL_TOKENS, *vision_tokens)}
    config = AutoConfig.for_model(
        "qwen3_vl",
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 1024,
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text_encoder = Qwen3VLForConditionalGeneration(config)
    processor = _tiny_vlm_processor("qwen3_vl", tokenizer, 64 * 64, 64 * 64, patch=16)
    pipeline = QwenImage21Pipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, processor=processor, transformer=transformer
    )
    system = len(tokenizer(template.split("<|im_start|>user")[0]).input_ids)
    if system != pipeline._drop_idx:
        raise MMRewardError(
            f"the tiny Qwen tokenizer makes the Qwen-Image 2.1 system turn {system} tokens in the prompt template but "
            f"{pipeline._drop_idx} in the processor's chat template: prompts would lose tokens or keep template ones"
        )
    return pipeline


def _tiny_zimage_pipeline():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=16,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # padding tokens are created with torch.empty: give them values
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )
    tokenizer = tiny_qwen_text_tokenizer(_QWEN_PIPELINE_CORPUS)
    text_encoder = Qwen3Model(_tiny_qwen3_config(tokenizer, layers=2))
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )


def _tiny_flux2_transformer_and_vae(*, guidance_embeds: bool):
    """The FLUX.2 transformer (1 double + 1 single block, text width 48 = 3 layers x 16) and 2x
    ``AutoencoderKLFlux2`` (4 latent channels) of the tiny klein and dev pipelines, built in this order."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=48,  # 3 text layers x width 16
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance_embeds,
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    with torch.no_grad():  # released statistics are far from (0, 1): make the normalization matter
        vae.bn.running_mean.copy_(torch.linspace(-0.5, 0.5, vae.bn.num_features))
        vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, vae.bn.num_features))
    return transformer, vae


def _tiny_flux2klein_pipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline
    from transformers import Qwen3ForCausalLM

    transformer, vae = _tiny_flux2_transformer_and_vae(guidance_embeds=False)
    tokenizer = tiny_qwen_text_tokenizer(_QWEN_PIPELINE_CORPUS)
    text_encoder = Qwen3ForCausalLM(_tiny_qwen3_config(tokenizer, layers=28))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    return Flux2KleinPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )


_MISTRAL_SPECIAL_TOKENS = (
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "[INST]",
    "[/INST]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[IMG]",
    "[IMG_BREAK]",
    "[IMG_END]",
)
# Mistral Small 3's chat format for text turns (content as a string or as a list of typed parts, as FLUX.2's
# format_input writes it): [SYSTEM_PROMPT]...[/SYSTEM_PROMPT] then [INST]...[/INST] per user turn.
_MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['content'] is string %}{% set text = m['content'] %}{% else %}"
    "{% set text = m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{% endif %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif m['role'] == 'user' %}[INST]{{ text }}[/INST]{% else %}{{ text }}{{ eos_token }}{% endif %}{% endfor %}"
)


def _tiny_mistral_processor(system_message: str):
    """A ``PixtralProcessor`` (the class FLUX.2 [dev] loads as its tokenizer) over a byte-level BPE tokenizer built
    in memory with Mistral's special tokens and chat format. The BPE has no word pre-tokenizer, so its merges make
    ``system_message`` (in the training corpus) a single token: prompts then fit the tests' 16-token budget, where
    the released tokenizer spends about 40 of its 512 tokens on it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PixtralImageProcessor, PixtralProcessor, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        show_progress=False,
        special_tokens=list(_MISTRAL_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([system_message, *_QWEN_PIPELINE_CORPUS] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=_MISTRAL_CHAT_TEMPLATE,
        model_max_length=4096,
    )
    return PixtralProcessor(
        image_processor=PixtralImageProcessor(patch_size=16),
        tokenizer=tokenizer,
        patch_size=16,
        spatial_merge_size=2,
        chat_template=_MISTRAL_CHAT_TEMPLATE,
    )


def _tiny_flux2_pipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    transformer, vae = _tiny_flux2_transformer_and_vae(guidance_embeds=True)
    processor = _tiny_mistral_processor(SYSTEM_MESSAGE)
    tokenizer = processor.tokenizer
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 30,  # the pipeline reads hidden states 10, 20 and 30
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "max_position_embeddings": 1024,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 8,
            "image_size": 64,
            "patch_size": 16,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
    )
    text_encoder = Mistral3ForConditionalGeneration(config)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    return Flux2Pipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=processor, transformer=transformer
    )


def _tiny_hunyuanvideo15_pipeline():
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9,  # noisy latents (4) + conditioning latents (4, zeros for text-to-video) + mask (1)
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        text_embed_dim=16,
        text_embed_2_dim=16,
        image_embed_dim=8,
        rope_axes_dim=(4, 6, 6),
        target_size=32,
        task_type="t2v",
    )
    vae = AutoencoderKLHunyuanVideo15(
        latent_channels=4,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        spatial_compression_ratio=4,
        temporal_compression_ratio=4,
    )
    # The tokenizer is trained on the pipeline's own system message (set in __init__) and chat roles, so that the
    # chat prefix is the number of tokens the pipeline crops, as with the released tokenizer.
    pipeline = HunyuanVideo15Pipeline(
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=None,
        tokenizer_2=None,
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )
    tokenizer = tiny_qwen_text_tokenizer(
        [f"system\n{pipeline.system_message}\nuser\nassistant\n", *_QWEN_PIPELINE_CORPUS]
    )
    messages = [{"role": "system", "content": pipeline.system_message}, {"role": "user", "content": "a cat"}]
    chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix = len(tokenizer(chat.split("a cat")[0]).input_ids)  # the tokens before the prompt
    if prefix != pipeline.prompt_template_encode_start_idx:
        raise MMRewardError(
            f"the tiny Qwen tokenizer makes the HunyuanVideo 1.5 chat prefix {prefix} tokens, but the pipeline crops "
            f"{pipeline.prompt_template_encode_start_idx}: prompts would lose tokens or keep template ones"
        )
    text_config = Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=4,  # the pipeline reads the hidden states 2 layers before the last
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,  # the pipeline pads prompts to 1000 tokens after a 108-token prefix
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]},
    )
    byt5_tokenizer = ByT5Tokenizer()
    byt5 = T5EncoderModel(
        T5Config(vocab_size=len(byt5_tokenizer), d_model=16, d_kv=8, d_ff=16, num_layers=1, num_heads=2)
    )
    pipeline.register_modules(
        text_encoder=Qwen2_5_VLTextModel(text_config),
        tokenizer=tokenizer,
        text_encoder_2=byt5,
        tokenizer_2=byt5_tokenizer,
    )
    return pipeline


def tiny_pipeline_dir(family: str, root: str | Path) -> Path:
    """Save :func:`tiny_pipeline` under ``root`` like a released checkpoint (``model_index.json`` and one folder
    per component) and return the directory, which loads with ``from_pretrained`` and as ``model.path``."""
    directory = Path(root) / f"tiny-{family}-pipeline"
    if not (directory / "model_index.json").is_file():
        tiny_pipeline(family).save_pretrained(directory)
    return directory


# ------------------------------------------------------------------------------------------------ tiny DINOv2


def tiny_dinov2_dir(root: str | Path | None = None) -> Path:
    """Save a tiny random transformers ``Dinov2Model`` (2 layers, width 32, 8 px patches, 32 px images: 16 patch
    tokens) with its image processor under ``root`` like a hub checkpoint, and return the directory; it loads with
    ``Dinov2Model.from_pretrained`` and as an Adv-GRPO ``discriminator.backbone`` (``"tiny"`` builds it too)."""
    from safetensors.torch import save_file
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    directory = Path(root or scratch_dir()) / "tiny-dinov2"
    if not (directory / "config.json").is_file():
        config = Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            patch_size=8,
            image_size=32,
        )
        torch.manual_seed(0)
        model = Dinov2Model(config)
        # The weights file is written directly: under torch.distributed, save_pretrained writes weights on rank 0
        # only, and every process builds its own tiny model in its own directory.
        directory.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(directory / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(directory)
        BitImageProcessor(
            size={"shortest_edge": 32},
            crop_size={"height": 32, "width": 32},
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        ).save_pretrained(directory)
    return directory


# ------------------------------------------------------------------------------------- tiny CLIP and OWLv2


def tiny_hf_clip(directory: Path) -> Path:
    """Save a tiny transformers CLIPModel with its tokenizer and image processor to ``directory``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def tiny_owlv2(directory: Path) -> Path:
    """Save a tiny random ``Owlv2ForObjectDetection`` (64-pixel input, 16-pixel patches: 16 boxes per image) with
    its processor. Its tokenizer puts ``!`` at id 0 as CLIP's vocabulary does: OWLv2 pads queries with id 0 and
    treats a query whose first token is 0 as padding, so the start token must not be 0."""
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    vocab = {"!": 0}
    for suffix in ("", "</w>"):
        for char in _TOKEN_CHARS:
            vocab.setdefault(char + suffix, len(vocab))
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16, pad_token="!")
    config = Owlv2Config(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "vocab_size": len(vocab),
            "max_position_embeddings": 16,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,  # the class head compares text embeddings in the text width
    )
    torch.manual_seed(0)
    Owlv2ForObjectDetection(config).save_pretrained(directory)
    image_processor = Owlv2ImageProcessor(size={"height": 64, "width": 64})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def tiny_geneval_models(root: Path) -> tuple[Path, Path]:
    """``(detector, clip)`` directories of a tiny random OWLv2 and CLIP for the ``geneval`` reward, under ``root``."""
    return tiny_owlv2(root / "owlv2"), tiny_hf_clip(root / "clip")

"""Tiny Qwen2-VL base checkpoints in the transformers 4.x layout the released reward models build on.

Run inside the reference virtualenv (transformers 4.45) by the golden generators; the offline tests load the
result with the current transformers. The tokenizer is a byte-level BPE with Qwen2's own normalizer (NFC) and
split-regex pre-tokenizer before the byte-level step: transformers 5 rebuilds Qwen2's pre-tokenizer from its
tokenizer class instead of reading tokenizer.json, so any other pre-tokenizer would tokenize differently under
the two versions and the golden scores would not be comparable.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen2's pre-tokenizer split (digits alone, words with their leading space, newlines apart).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# The Qwen2-VL chat format: a default system turn unless the conversation has one, one vision block per image
# or video item, then the text items, each turn closed by <|im_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(directory: Path, corpus: list[str], vocab_size: int = 400) -> dict[str, int]:
    """Train and save a Qwen2-style tokenizer (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus * 4, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer.model.save(str(directory), None)  # vocab.json and merges.txt for the slow tokenizer
    ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    added = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": [
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
        "model_max_length": 32768,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return ids


def build_base(
    directory: Path,
    corpus: list[str],
    *,
    min_pixels: int,
    max_pixels: int,
    tie_embeddings: bool = True,
    seed: int = 0,
    family: str = "qwen2_vl",
) -> Path:
    """Save a tiny random Qwen2-VL-Instruct-like checkpoint (hidden 64, 2 layers, vision depth 2) to ``directory``.

    ``tie_embeddings``: Qwen2-VL-2B ties the LM head to the token embeddings (VideoReward's base), 7B does not
    (HPSv3's base). ``family="qwen2_5_vl"``: a Qwen2.5-VL one instead (windowed vision attention, one full-attention
    block, gated vision MLP; EditReward's base)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = build_tokenizer(directory, corpus)
    vocab = max(ids.values()) + 1
    if family == "qwen2_5_vl":
        return _build_qwen2_5_vl(directory, ids, min_pixels, max_pixels, tie_embeddings, seed)
    config = Qwen2VLConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        # head_dim 16: M-RoPE splits its 8 frequencies over (time, height, width)
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 4,
            "mlp_ratio": 2,
            "in_chans": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie_embeddings,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(directory, safe_serialization=True)
    _write_processor_files(directory, "Qwen2VLProcessor", min_pixels, max_pixels)
    return directory


def _write_processor_files(directory: Path, processor_class: str, min_pixels: int, max_pixels: int) -> None:
    """The released checkpoints' ``preprocessor_config.json`` (Qwen2-VL's image processor, CLIP normalization, 14 px
    patches merged 2 x 2) and ``chat_template.json``."""
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": processor_class,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "rescale_factor": 0.00392156862745098,
        "resample": 3,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2))


def _build_qwen2_5_vl(
    directory: Path, ids: dict[str, int], min_pixels: int, max_pixels: int, tie_embeddings: bool, seed: int
) -> Path:
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        vocab_size=max(ids.values()) + 1,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 64,
            "window_size": 56,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie_embeddings,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(directory, safe_serialization=True)
    _write_processor_files(directory, "Qwen2_5_VLProcessor", min_pixels, max_pixels)
    return directory

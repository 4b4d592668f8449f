"""ImageReward's released state dict onto transformers' BLIP modules: every key kind, and refusals that name the
cause. Scores against the authors' package are in tests/golden/imagereward."""

import shutil
from pathlib import Path

import pytest
import torch

import mmreward
import mmreward.testing
from mmreward.errors import ConfigError
from mmreward.rewards.image_reward import split_state_dict

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "imagereward"


@pytest.mark.parametrize(
    ("released", "part", "ours"),
    [
        ("blip.visual_encoder.cls_token", "vision", "embeddings.class_embedding"),
        ("blip.visual_encoder.pos_embed", "vision", "embeddings.position_embedding"),
        ("blip.visual_encoder.patch_embed.proj.weight", "vision", "embeddings.patch_embedding.weight"),
        ("blip.visual_encoder.blocks.11.norm1.bias", "vision", "encoder.layers.11.layer_norm1.bias"),
        ("blip.visual_encoder.blocks.3.norm2.weight", "vision", "encoder.layers.3.layer_norm2.weight"),
        ("blip.visual_encoder.blocks.0.attn.qkv.weight", "vision", "encoder.layers.0.self_attn.qkv.weight"),
        ("blip.visual_encoder.blocks.23.attn.proj.bias", "vision", "encoder.layers.23.self_attn.projection.bias"),
        ("blip.visual_encoder.blocks.2.mlp.fc2.weight", "vision", "encoder.layers.2.mlp.fc2.weight"),
        ("blip.visual_encoder.norm.weight", "vision", "post_layernorm.weight"),
        (
            "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight",
            "text",
            "encoder.layer.1.crossattention.self.key.weight",
        ),
        ("blip.text_encoder.embeddings.word_embeddings.weight", "text", "embeddings.word_embeddings.weight"),
        ("mlp.layers.7.bias", "head", "layers.7.bias"),
    ],
)
def test_each_released_key_lands_on_its_transformers_name(released, part, ours):
    value = torch.randn(2)
    parts = split_state_dict({released: value})
    assert parts[part] == {ours: value}
    assert all(not other for name, other in parts.items() if name != part)


def test_keys_the_score_does_not_use_are_dropped_and_unknown_keys_refused():
    unused = ("blip.vision_proj.weight", "blip.text_proj.bias", "blip.text_encoder.embeddings.position_ids")
    assert split_state_dict(dict.fromkeys(unused, torch.zeros(1))) == {"vision": {}, "text": {}, "head": {}}
    with pytest.raises(ConfigError, match="'blip.itm_head.weight'"):
        split_state_dict({"blip.itm_head.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match="blip.visual_encoder.blocks.0.ls1.gamma"):
        split_state_dict({"blip.visual_encoder.blocks.0.ls1.gamma": torch.zeros(1)})


def load(directory: Path, **overrides):
    return mmreward.load_reward(
        "imagereward", weights=str(directory), tokenizer=str(directory / "tokenizer"), **overrides
    )


def test_a_checkpoint_missing_a_tensor_is_refused_with_its_name(tmp_path):
    shutil.copytree(GOLDEN, tmp_path / "ir", ignore=shutil.ignore_patterns("*.py", "*.json", "README.md"))
    shutil.copy(GOLDEN / "med_config.json", tmp_path / "ir")
    state = torch.load(GOLDEN / "ImageReward.pt", weights_only=True)
    del state["blip.text_encoder.encoder.layer.1.crossattention.self.value.weight"]
    torch.save(state, tmp_path / "ir" / "ImageReward.pt")
    with pytest.raises(
        ConfigError, match=r"text encoder: missing \['encoder.layer.1.crossattention.self.value.weight'"
    ):
        load(tmp_path / "ir")


def test_a_tokenizer_of_another_vocabulary_is_refused(tmp_path):
    shutil.copytree(GOLDEN / "tokenizer", tmp_path / "ir" / "tokenizer")
    for name in ("ImageReward.pt", "med_config.json"):
        shutil.copy(GOLDEN / name, tmp_path / "ir")
    vocab = tmp_path / "ir" / "tokenizer" / "vocab.txt"
    vocab.write_text(vocab.read_text() + "extra\n")
    with pytest.raises(ConfigError, match="has 92 tokens with \\[DEC\\] and \\[ENC\\].* 91 embeddings"):
        load(tmp_path / "ir")


def test_the_test_kits_tiny_imagereward_loads_in_the_released_layout(tiny_root, sample_images):
    reward = mmreward.testing.tiny_clip_reward("imagereward", tiny_root)
    photos = [str(p) for p in sample_images[:2]]
    out = reward.score(["a cat", "a red cup on a table"], photos)
    assert not out.failed.any() and torch.isfinite(out.scores).all()
    assert reward.vision.config.hidden_size == 64 and reward.text.config.encoder_hidden_size == 64

"""CLIPScore and HPSv2 on tiny random open_clip models: the scores against values computed here from the models'
own embeddings (cosine by ``F.cosine_similarity``, the read-outs written out), so a changed formula fails."""

import pytest
import torch
import torch.nn.functional as F

from mmreward import testing

PROMPTS = [
    "a red car on a beach",
    "an astronaut riding a horse",
    "a bowl of fruit",
    "two dogs in the snow",
    "a city at night",
    "a portrait of an old man",
    "a watercolor of a lighthouse",
    "a cat sleeping on a sofa",
]


@pytest.fixture(scope="module")
def pixels():
    return torch.rand(len(PROMPTS), 3, 40, 48, generator=torch.Generator().manual_seed(3))


def cosines(reward, captions: list[str], pixels: torch.Tensor) -> torch.Tensor:
    """``(N,)`` cosine of each image's and caption's embeddings, straight from the open_clip model."""
    with torch.no_grad():
        image = reward.model.encode_image(reward.prepare_images(pixels)).float()
        text = reward.model.encode_text(reward.tokenizer(captions)).float()
    return F.cosine_similarity(image, text, dim=-1)


def test_clip_score_is_w_times_clamped_cosine_of_the_prefixed_caption(tmp_path, pixels):
    """CLIPScore = 2.5 * max(cos, 0) with the caption read as "A photo depicts <caption>" (Hessel et al. 2021)."""
    reward = testing.tiny_clip_reward("clip-score", root=tmp_path)
    cos = cosines(reward, [f"A photo depicts {p}" for p in PROMPTS], pixels)
    # Both sides of the clamp occur, so dropping it (or the weight) changes some scores.
    assert bool((cos < -0.01).any()) and bool((cos > 0.01).any()), cos
    expected = torch.where(cos > 0, 2.5 * cos, torch.zeros_like(cos))
    torch.testing.assert_close(reward.score(PROMPTS, list(pixels)).scores, expected, rtol=1e-4, atol=1e-5)


def test_the_text_encoder_sees_the_caption_prefix(tmp_path, pixels):
    reward = testing.tiny_clip_reward("clip-score", root=tmp_path)
    seen: list[torch.Tensor] = []
    encode_text = reward.model.encode_text
    reward.model.encode_text = lambda tokens, **kw: seen.append(tokens) or encode_text(tokens, **kw)
    reward.score(["a red car"], [pixels[0]])
    assert torch.equal(seen[0], reward.tokenizer(["A photo depicts a red car"]))
    bare = testing.tiny_clip_reward("clip-score", root=tmp_path, caption_prefix="")
    cos = cosines(bare, PROMPTS, pixels)
    expected = torch.where(cos > 0, 2.5 * cos, torch.zeros_like(cos))
    torch.testing.assert_close(bare.score(PROMPTS, list(pixels)).scores, expected, rtol=1e-4, atol=1e-5)
    # A prefix without its trailing space gets one, as in the reference code.
    spaced = testing.tiny_clip_reward("clip-score", root=tmp_path, caption_prefix="An image of")
    assert spaced.caption_prefix == "An image of "


@pytest.mark.parametrize("name", ["hpsv2", "hpsv2.1"])
def test_hps_is_the_plain_cosine(tmp_path, pixels, name):
    """HPSv2 = cos(E_img, E_txt): no logit scale, no clamp, no caption prefix (Wu et al. 2023)."""
    reward = testing.tiny_clip_reward(name, root=tmp_path)
    cos = cosines(reward, PROMPTS, pixels)
    assert bool((cos < -0.01).any()) and bool((cos > 0.01).any()), cos
    torch.testing.assert_close(reward.score(PROMPTS, list(pixels)).scores, cos, rtol=1e-4, atol=1e-5)


def test_constructor_defaults_are_the_papers_and_the_model_is_frozen(tmp_path, pixels):
    """ClipScore built directly (Python API) with only the weights given uses w 2.5, the reference caption prefix
    and PIL resizing, and scores as the preset does; its weights never require gradients."""
    import yaml

    from mmreward.rewards.open_clip_rewards import ClipScore

    preset = yaml.safe_load(testing.tiny_reward_preset("clip-score", tmp_path).read_text())
    direct = ClipScore(model=preset["model"], pretrained=preset["pretrained"])
    assert (direct.w, direct.caption_prefix, direct.resize) == (2.5, "A photo depicts ", "pil")
    assert not any(p.requires_grad for p in direct.model.parameters())
    loaded = testing.tiny_clip_reward("clip-score", root=tmp_path)
    torch.testing.assert_close(direct.score(PROMPTS, list(pixels)).scores, loaded.score(PROMPTS, list(pixels)).scores)


def test_architecture_and_weights_errors_name_the_fix(tmp_path):
    from mmreward.errors import ConfigError, WeightsNotFoundError
    from mmreward.rewards.open_clip_rewards import ClipScore

    with pytest.raises(ConfigError) as unknown:
        ClipScore(model="ViT-Q-99")
    assert str(unknown.value) == (
        "unknown open_clip architecture 'ViT-Q-99'; use one of open_clip.list_models() (e.g. ViT-B-32, ViT-L-14, "
        "ViT-H-14) or a path to an architecture .json"
    )
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as no_json:
        ClipScore(model=missing)
    assert str(no_json.value) == f"open_clip architecture config {missing!r} does not exist"
    with pytest.raises(ConfigError) as prefix:
        ClipScore(caption_prefix=None)
    assert str(prefix.value) == "caption_prefix must be a string ('' for none), got None"
    with pytest.raises(WeightsNotFoundError) as offline:  # the suite runs with HF_HUB_OFFLINE=1
        ClipScore()
    message = str(offline.value)
    assert message.startswith("open_clip weights ViT-B-32/openai (from timm/vit_base_patch32_clip_224.openai/) are")
    assert "copy the Hugging Face cache (HF_HOME), or pass a local checkpoint: load_reward('clip-score', " in message

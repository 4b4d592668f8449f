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


# ------------------------------------------------------------------------- construction: tags, files, options


def _preset(name: str, root) -> dict:
    import yaml

    return yaml.safe_load(testing.tiny_reward_preset(name, root).read_text())


def _activations(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if "GELU" in type(m).__name__}


def test_an_open_clip_tag_is_downloaded_with_its_quick_gelu(tmp_path, monkeypatch):
    """A pretrained tag (``openai``) is fetched with open_clip's own downloader, and its config's quick_gelu (the
    OpenAI weights were trained with QuickGELU) reaches the model; a local file keeps the architecture's GELU."""
    import open_clip

    from mmreward.rewards.open_clip_rewards import ClipScore

    preset = _preset("clip-score", tmp_path)
    tag_cfg = {"hf_hub": "org/tiny-clip/", "quick_gelu": True}
    downloads = []
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, tag: tag_cfg if tag == "tiny-tag" else {})
    monkeypatch.setattr(open_clip, "download_pretrained", lambda cfg: downloads.append(cfg) or preset["pretrained"])
    tagged = ClipScore(model=preset["model"], pretrained="tiny-tag")
    assert downloads == [tag_cfg] and _activations(tagged.model) == {"QuickGELU"}
    assert tagged.weights_id == "tiny-clip/tiny-tag"
    assert _activations(ClipScore(model=preset["model"], pretrained=preset["pretrained"]).model) == {"GELU"}


def test_a_failed_tag_download_names_the_source_and_the_error(tmp_path, monkeypatch):
    import open_clip

    from mmreward.errors import WeightsNotFoundError
    from mmreward.rewards.open_clip_rewards import ClipScore

    model = _preset("clip-score", tmp_path)["model"]

    def offline(cfg):
        raise OSError("no network")

    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, tag: {"url": "https://example.org/tiny.pt"})
    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(WeightsNotFoundError) as raised:
        ClipScore(model=model, pretrained="tiny-tag")
    assert str(raised.value) == (
        "open_clip weights tiny-clip/tiny-tag (from https://example.org/tiny.pt) are not available: OSError: no "
        "network. Download them once where the hub is reachable and copy the Hugging Face cache (HF_HOME), or pass "
        f"a local checkpoint: load_reward('clip-score', model={model!r}, "
        "pretrained='/path/to/open_clip_model.safetensors')"
    )


def test_a_weights_folder_without_the_checkpoint_names_the_file_and_the_fix(tmp_path):
    from mmreward.errors import WeightsNotFoundError
    from mmreward.rewards.open_clip_rewards import ClipScore

    model = _preset("clip-score", tmp_path)["model"]
    (tmp_path / "weights").mkdir()
    with pytest.raises(WeightsNotFoundError) as raised:
        ClipScore(model=model, pretrained=str(tmp_path / "weights"))
    message = str(raised.value)
    assert message.startswith(
        f"open_clip tiny-clip weights {str(tmp_path / 'weights')!r} (file 'open_clip_model.safetensors') are not "
        f"available: directory {str(tmp_path / 'weights')!r} has no file 'open_clip_model.safetensors'."
    )
    assert message.endswith(
        "or point at local weights: pass pretrained= an open_clip tag from "
        "open_clip.list_pretrained_tags_by_model('tiny-clip') or a local checkpoint file"
    )


def test_clip_score_options_reach_the_reward(tmp_path):
    """w sets the Bradley-Terry scale (CLIP's 100 on the cosine is 100 / w on w * cos); a prefix that ends in a
    space or is empty is kept as given; device and dtype reach the model; weights_id names architecture/weights."""
    from mmreward.rewards.open_clip_rewards import ClipScore

    preset = _preset("clip-score", tmp_path)
    reward = ClipScore(
        model=preset["model"], pretrained=preset["pretrained"], w=2.0, caption_prefix="An image of ", dtype="bfloat16"
    )
    assert (reward.w, reward.pairwise_scale, reward.caption_prefix) == (2.0, 50.0, "An image of ")
    assert {p.dtype for p in reward.model.parameters()} == {torch.bfloat16}
    assert reward.weights_id == f"tiny-clip/{preset['pretrained']}"
    assert ClipScore(model=preset["model"], pretrained=preset["pretrained"], caption_prefix="").caption_prefix == ""


def test_a_resnet_clip_reads_its_integer_image_size(tmp_path):
    """open_clip's ModifiedResNet (RN50, ...) gives its image size as an int, ViTs as a (size, size) tuple."""
    import json

    import open_clip

    from mmreward.rewards.open_clip_rewards import ClipScore

    config = {**testing.TINY_OPEN_CLIP, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}}
    (tmp_path / "tiny-rn.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny-rn.json")
    torch.save(open_clip.create_model("tiny-rn").state_dict(), tmp_path / "tiny-rn.pt")
    reward = ClipScore(model=str(tmp_path / "tiny-rn.json"), pretrained=str(tmp_path / "tiny-rn.pt"))
    assert isinstance(reward.model.visual.image_size, int) and reward.image_size == 32


def test_hps_defaults_weights_id_and_errors(tmp_path):
    """HPSv2 built directly: v2.1 and the torch resize by default; weights_id names the file inside a folder, or
    the file given; a bad version and unavailable default weights name the fix."""
    from mmreward.errors import ConfigError, WeightsNotFoundError
    from mmreward.rewards.open_clip_rewards import HPSv2

    preset = _preset("hpsv2.1", tmp_path)
    direct = HPSv2(weights=preset["weights"], model=preset["model"], dtype="bfloat16")
    assert (direct.resize, direct.weights_id) == ("torch", f"{preset['weights']}:HPS_v2.1_compressed.pt")
    assert {p.dtype for p in direct.model.parameters()} == {torch.bfloat16}
    assert not any(m.__class__.__name__ == "QuickGELU" for m in direct.model.modules())
    file = f"{preset['weights']}/HPS_v2.1_compressed.pt"
    assert HPSv2(weights=file, model=preset["model"]).weights_id == file
    with pytest.raises(ConfigError) as version:
        HPSv2(version="v3")
    assert str(version.value) == "HPSv2 version must be one of ['v2.0', 'v2.1'], got 'v3'"
    with pytest.raises(WeightsNotFoundError) as offline:  # the suite runs with HF_HUB_OFFLINE=1
        HPSv2()
    message = str(offline.value)
    assert message.startswith("HPSv2.1 weights 'xswu/HPSv2' (file 'HPS_v2.1_compressed.pt') are not available")
    assert message.endswith(
        "or point at local weights: load_reward('hpsv2.1', weights='/path/to/HPS_v2.1_compressed.pt')"
    )

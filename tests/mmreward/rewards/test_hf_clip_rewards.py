"""PickScore and the LAION aesthetic predictor on tiny random transformers CLIP models: the scores against values
computed here from the models' own embeddings and weights, so a changed formula fails."""

import pytest
import torch
import torch.nn.functional as F

from mmreward import testing

PROMPTS = ["a red car on a beach", "an astronaut riding a horse", "a bowl of fruit", "two dogs in the snow"]


@pytest.fixture(scope="module")
def pixels():
    return torch.rand(len(PROMPTS), 3, 40, 48, generator=torch.Generator().manual_seed(5))


def projected(output) -> torch.Tensor:
    # transformers 5 returns a model output holding the projected embedding; 4.x the tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def test_pickscore_is_the_exponentiated_logit_scale_times_the_cosine(tmp_path, pixels):
    """PickScore = exp(logit_scale) * cos (Kirstain et al. 2023); the tiny model's logit_scale is log(1 / 0.07)."""
    reward = testing.tiny_clip_reward("pickscore", root=tmp_path)
    model = reward.model
    with torch.no_grad():
        tokens = reward.tokenizer(PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        text = projected(model.get_text_features(**tokens)).float()
        image = projected(model.get_image_features(pixel_values=reward.prepare_images(pixels))).float()
    scale = float(model.logit_scale)
    assert scale == pytest.approx(2.6592, abs=1e-4)  # exp(scale) = 14.29: without exp() the scores change
    expected = torch.exp(torch.tensor(scale)) * F.cosine_similarity(image, text, dim=-1)
    torch.testing.assert_close(reward.score(PROMPTS, list(pixels)).scores, expected, rtol=1e-4, atol=1e-5)


def test_laion_aesthetic_is_the_linear_head_on_the_normalized_image_embedding(tmp_path, pixels):
    """score = W5 (W4 (W3 (W2 (W1 e + b1) + b2) + b3) + b4) + b5 with e = E_img / |E_img| (the head has no
    nonlinearity; its dropouts are off at inference); the prompt is not used."""
    reward = testing.tiny_clip_reward("laion-aesthetic", root=tmp_path)
    with torch.no_grad():
        pooled = reward.vision(pixel_values=reward.prepare_images(pixels)).pooler_output
        embedding = pooled @ reward.projection.weight.T  # CLIP's visual projection has no bias
        assert not torch.allclose(embedding.norm(dim=-1), torch.ones(len(PROMPTS)), atol=0.05)
        x = embedding / embedding.norm(dim=-1, keepdim=True)
        state = reward.head.state_dict()
        for index in (0, 2, 4, 6, 7):  # the Linear layers of the released nn.Sequential
            x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    expected = x.squeeze(-1)
    scores = reward.score(["ignored"] * len(PROMPTS), list(pixels)).scores
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    assert float(expected.std()) > 1e-4  # the images score differently


def test_long_prompts_are_cut_at_77_tokens_and_the_weights_stay_frozen(tmp_path, pixels):
    """CLIP's text encoder has 77 positions: a prompt longer than that scores as its first 77 tokens."""
    reward = testing.tiny_clip_reward("pickscore", root=tmp_path)
    assert not any(p.requires_grad for p in reward.model.parameters())
    long = " ".join(["a very long prompt about a red car"] * 20)
    cut = reward.tokenizer.decode(reward.tokenizer(long, truncation=True, max_length=77)["input_ids"][1:-1])
    scores = reward.score([long, cut], [pixels[0], pixels[0]]).scores
    assert torch.isfinite(scores).all()
    assert len(reward.tokenizer(long)["input_ids"]) > 77 and scores[0] == pytest.approx(float(scores[1]), abs=1e-5)


def test_missing_weights_name_the_default_checkpoints_and_how_to_pass_local_ones():
    """The suite runs offline: the defaults name the released checkpoints and the local-path call."""
    from mmreward.errors import WeightsNotFoundError
    from mmreward.rewards.hf_clip_rewards import LaionAesthetic, PickScore

    with pytest.raises(WeightsNotFoundError) as pick:
        PickScore()
    assert "yuvalkirstain/PickScore_v1" in str(pick.value) and "PickScore" in str(pick.value)
    assert "load_reward('pickscore', weights='/path/to/PickScore_v1', processor='/path/to/CLIP-ViT-H-14')" in str(
        pick.value
    )
    with pytest.raises(WeightsNotFoundError) as aesthetic:
        LaionAesthetic()
    message = str(aesthetic.value)
    assert "openai/clip-vit-large-patch14" in message and "LAION aesthetic CLIP backbone" in message
    hint = (
        "load_reward('laion-aesthetic', weights='/path/to/aesthetic-model.pth', "
        "clip='/path/to/clip-vit-large-patch14')"
    )
    assert hint in message


def test_every_default_checkpoint_is_asked_for_by_name_with_its_hint(monkeypatch, tmp_path):
    """Past the first download: the processor (config files only) and the aesthetic head file, each by its released
    name, with the same hint. The hub look-ups are recorded; the CLIP model is a stand-in."""
    import mmreward.rewards.hf_clip_rewards as hf

    class Stop(Exception):
        pass

    asked = []

    def resolve_dir(name, *, what, hint, need_weights=True):
        asked.append((name, what, need_weights, hint))
        if len(asked) > 1:
            raise Stop
        return tmp_path

    def resolve_file(name, filename, *, what, hint):
        asked.append((name, filename, what, hint))
        raise Stop

    stand_in = torch.nn.Linear(2, 2)
    stand_in.vision_model, stand_in.visual_projection = torch.nn.Identity(), torch.nn.Linear(4, 3)
    monkeypatch.setattr(hf, "resolve_dir", resolve_dir)
    monkeypatch.setattr(hf, "resolve_file", resolve_file)
    monkeypatch.setattr(hf, "_load_clip", lambda directory: stand_in)
    pick_hint = "load_reward('pickscore', weights='/path/to/PickScore_v1', processor='/path/to/CLIP-ViT-H-14')"
    with pytest.raises(Stop):
        hf.PickScore()
    assert asked == [
        ("yuvalkirstain/PickScore_v1", "PickScore", True, pick_hint),
        ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "PickScore processor", False, pick_hint),
    ]
    asked.clear()
    aesthetic_hint = (
        "load_reward('laion-aesthetic', weights='/path/to/aesthetic-model.pth', "
        "clip='/path/to/clip-vit-large-patch14')"
    )
    with pytest.raises(Stop):
        hf.LaionAesthetic()
    assert asked == [
        ("openai/clip-vit-large-patch14", "LAION aesthetic CLIP backbone", True, aesthetic_hint),
        ("trl-lib/ddpo-aesthetic-predictor", "aesthetic-model.pth", "LAION aesthetic head", aesthetic_hint),
    ]


@pytest.mark.parametrize("name", ["pickscore", "laion-aesthetic"])
def test_loading_settings_reach_every_weight_and_name_the_checkpoint(tmp_path, monkeypatch, name):
    """``device``, ``dtype`` and ``batch_size`` reach the base class and every loaded module (the meta device stands
    in for an accelerator: a module left on the CPU shows), the weights stay frozen in eval mode, ``weights_id`` names
    the checkpoint (the score cache keys on it), and the aesthetic head file is read onto the CPU as tensors only."""
    loads = []
    real_load = torch.load

    def recording_load(file, **settings):
        loads.append(settings)
        return real_load(file, **settings)

    monkeypatch.setattr(torch, "load", recording_load)
    reward = testing.tiny_clip_reward(name, root=tmp_path, device="meta", dtype="bfloat16", batch_size=3)
    modules = [reward.model] if name == "pickscore" else [reward.vision, reward.projection, reward.head]
    weights = [p for m in modules for p in m.parameters()]
    assert weights and {(p.device.type, p.dtype, p.requires_grad) for p in weights} == {
        ("meta", torch.bfloat16, False)
    }
    assert not any(m.training for m in modules) and reward.batch_size == 3
    directory = testing.tiny_reward_preset(name, tmp_path).parent  # already written: returns its YAML
    if name == "pickscore":
        assert reward.weights_id == str(directory / "clip") and loads == []
    else:
        assert reward.weights_id == f"{directory}:aesthetic-model.pth"
        assert loads == [{"map_location": "cpu", "weights_only": True}]


def test_laion_aesthetic_scores_in_bfloat16_as_in_float32(tmp_path, pixels):
    """The normalized embedding is cast back to the head's dtype: a bfloat16 predictor scores (it would refuse a
    float32 input) and agrees with float32 to bfloat16 precision. The head's default width is ViT-L/14's 768."""
    from mmreward.rewards.hf_clip_rewards import AestheticHead

    full = testing.tiny_clip_reward("laion-aesthetic", root=tmp_path).score(["-"] * len(PROMPTS), list(pixels))
    half = testing.tiny_clip_reward("laion-aesthetic", root=tmp_path, dtype="bfloat16")
    scores = half.score(["-"] * len(PROMPTS), list(pixels)).scores
    torch.testing.assert_close(scores, full.scores, rtol=0.0, atol=1e-3)  # scores about -0.045, 3e-3 apart
    assert AestheticHead().layers[0].in_features == 768

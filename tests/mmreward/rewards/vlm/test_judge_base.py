"""A judge is a task holding a backend: how presets name and configure the backend, what a task asks it
(:class:`JudgePrompt`), and what each backend makes of that."""

import base64
import io

import pytest
import torch
from PIL import Image

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.rewards.vlm.chat_backend import ChatBackend
from mmreward.rewards.vlm.judge_base import JudgePrompt, build_backend
from mmreward.rewards.vlm.pairwise import PairwiseJudge
from mmreward.rewards.vlm.templates import MediaPart, TextPart


def test_prompt_lists_its_candidates_in_slot_order():
    prompt = JudgePrompt(
        parts=[MediaPart("media_b"), TextPart("versus"), MediaPart("media_a")],
        system=None,
        media={"media_a": 3, "media_b": 5},
    )
    assert prompt.candidates() == [5, 3]


def test_presets_name_the_backend_and_unknown_options_name_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown judge backend 'cloud'; use one of \['chat', 'local'\]"):
        build_backend("cloud", {}, device=torch.device("cpu"), dtype=torch.float32)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['weights'\] for the 'chat' judge backend"):
        build_backend("chat", {"model": "m", "weights": "w"}, device=torch.device("cpu"), dtype=torch.float32)
    # load_reward accepts the task's, the reward's and the named backend's options, and no others.
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['weights'\].*'endpoint'.*'video_num_frames'"):
        mmreward.load_reward("unifiedreward-pairwise-remote", template="ours", weights="/models/judge")
    judge = mmreward.load_reward(
        "unifiedreward-pairwise-remote", template="ours", endpoint="http://127.0.0.1:9/v1", batch_size=4
    )
    assert isinstance(judge.backend, ChatBackend) and judge.batch_size == 4
    assert judge.weights_id == "UnifiedReward @ http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match="cannot read answers from logits; use mode='generate'"):
        mmreward.load_reward("unifiedreward-pairwise-remote", template="ours", mode="logits")
    with pytest.raises(ConfigError, match="writes its reasoning"):
        mmreward.load_reward("unifiedreward-think-remote", template="ours", mode="logits")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['endpoint'\]; a backend object takes its options"):
        PairwiseJudge(ChatBackend(model="m"), template="unifiedreward-pairwise", endpoint="http://127.0.0.1:9/v1")


def test_chat_backend_sends_the_rendered_prompt_with_each_slot_as_jpeg_images():
    backend = ChatBackend(model="m", jpeg_quality=90)
    red, blue = torch.zeros(2, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    red[:, 0], blue[:, 2] = 1.0, 1.0
    candidates = [backend.prepare(red), backend.prepare(blue)]
    prompt = JudgePrompt(
        [MediaPart("media_a"), MediaPart("media_b"), TextPart("which?")], "be fair", {"media_a": 1, "media_b": 0}
    )
    request = backend.request(prompt, candidates, max_new_tokens=7, temperature=0.5)
    assert request["max_tokens"] == 7 and request["temperature"] == 0.5
    system, user = request["messages"]
    assert system == {"role": "system", "content": "be fair"}
    assert [c["type"] for c in user["content"]] == ["image_url"] * 3 + ["text"]
    assert user["content"][-1]["text"] == "which?"
    colours = []
    for item in user["content"][:3]:
        data = item["image_url"]["url"].removeprefix("data:image/jpeg;base64,")
        colours.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB").getpixel((4, 4)))
    # media_a is candidate 1 (one blue frame), media_b candidate 0 (two red frames).
    assert [max(range(3), key=lambda k: c[k]) for c in colours] == [2, 0, 0]


def test_local_backend_prepares_uint8_frames_and_takes_a_token_budget(tiny_root):
    judge = testing.tiny_judge("pairwise", root=tiny_root, max_batch_tokens=300)
    backend = judge.backend
    assert backend.backbone.max_batch_tokens == 300
    frames = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    expected = backend.backbone.process_images([(f * 255).round().to(torch.uint8) for f in frames])
    prepared = backend.prepare(frames)
    assert torch.equal(prepared.grid_thw, expected.grid_thw)
    torch.testing.assert_close(prepared.pixel_values, expected.pixel_values, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="max_batch_tokens must be >= 1"):
        testing.tiny_judge("pairwise", root=tiny_root, max_batch_tokens=0)


def test_judges_show_the_frames_their_checkpoint_was_shown(tiny_root):
    """Presets name the authors' frame rule: UnifiedReward-Think (and Pref-GRPO) floor np.linspace, UnifiedReward
    2.0's point- and pair-score scripts take the first frame of each segment, 16 of them for pointwise videos."""
    from mmreward.rewards.registry import find_preset

    rules = {name: find_preset(name).kwargs for name in ("unifiedreward-think", "unifiedreward-think-remote")}
    assert all(k["frame_rule"] == "floor" and k["video_num_frames"] == 8 for k in rules.values())
    for name in ("unifiedreward-pointwise", "unifiedreward-pointwise-remote"):
        assert find_preset(name).kwargs["frame_rule"] == "segment"
        assert find_preset(name).kwargs["video_num_frames"] == 16
    assert find_preset("unifiedreward-pairwise").kwargs["frame_rule"] == "segment"
    # Frame i of this in-memory video holds the value i; 11 frames shown as 4 (see test_media's hand values).
    video = torch.arange(11, dtype=torch.float32).view(11, 1, 1, 1).expand(11, 3, 56, 56)
    shown = {}
    for rule in ("round", "floor", "segment"):
        judge = testing.tiny_judge("pairwise", root=tiny_root, video_num_frames=4, frame_rule=rule)
        shown[rule] = judge.frames_of(video)[1][:, 0, 0, 0].tolist()
    assert shown == {"round": [0, 3, 7, 10], "floor": [0, 3, 6, 10], "segment": [0, 2, 5, 8]}
    with pytest.raises(ConfigError, match=r"frame_rule must be one of \['round', 'floor', 'segment'\], got 'ceil'"):
        testing.tiny_judge("pairwise", root=tiny_root, frame_rule="ceil")


def test_reference_pixel_bound_is_16384_visual_tokens(tiny_root):
    """image_max_pixels='reference': qwen-vl-utils' 16384 tokens of (patch x merge)^2 pixels each."""
    from mmreward.rewards.registry import find_preset

    assert find_preset("unifiedreward-pointwise").kwargs["image_max_pixels"] == "reference"
    judge = testing.tiny_judge("pairwise", root=tiny_root, image_max_pixels="reference")
    backbone = judge.backend.backbone
    side = backbone.model.config.vision_config.patch_size * backbone.merge
    assert backbone.image_size["longest_edge"] == 16384 * side * side
    with pytest.raises(ConfigError, match="image_max_pixels must be a number, 'reference' or None, got 'native'"):
        testing.tiny_judge("pairwise", root=tiny_root, image_max_pixels="native")

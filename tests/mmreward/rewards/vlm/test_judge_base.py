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

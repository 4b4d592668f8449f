"""Reward-head models: the released VideoAlign (LoRA) and HPSv3 (full file) layouts load exactly, dimensions are
normalized and summed, videos are sampled as VideoAlign does, and bad input fails per item."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError, WeightsNotFoundError
from mmreward.rewards.vlm.checkpoints import normalize_key, read_model_config
from mmreward.rewards.vlm.heads import videoalign_num_frames


@pytest.fixture(scope="module")
def head(tiny_root):
    return testing.tiny_reward_head(root=tiny_root)


@pytest.mark.parametrize(
    ("total", "fps", "expected"),
    [
        (150, 30.0, 10),  # 5 s at 2 fps
        (20, 10.0, 4),  # 2 s -> 4
        (9, 30.0, 4),  # 0.3 s -> 0.6, raised to the minimum of 4
        (3, 30.0, 2),  # the minimum is capped by the clip: floor2(3) = 2
        (33, 10.0, 6),  # 3.3 s -> 6.6 -> round2 -> 6
        (36, 10.0, 8),  # 3.6 s -> 7.2 -> round(3.6) * 2 = 8
        (20000, 10.0, 768),  # capped at 768 frames
    ],
)
def test_videoalign_frame_count(total, fps, expected):
    assert videoalign_num_frames(total, fps, 2.0) == expected


def test_key_naming_of_every_writer_maps_to_the_bare_model():
    assert (
        normalize_key("base_model.model.model.layers.0.mlp.up_proj.weight")
        == "language_model.layers.0.mlp.up_proj.weight"
    )
    assert normalize_key("base_model.model.visual.merger.mlp.0.weight") == "visual.merger.mlp.0.weight"
    assert normalize_key("model.language_model.norm.weight") == "language_model.norm.weight"
    assert normalize_key("model.visual.blocks.0.attn.qkv.weight") == "visual.blocks.0.attn.qkv.weight"
    assert normalize_key("base_model.model.rm_head.weight") == "rm_head.weight"
    assert normalize_key("lm_head.weight") is None
    # VideoAlign's full-model file: peft keeps the wrapped layer's own weight under base_layer.
    assert (
        normalize_key("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight")
        == "language_model.layers.0.self_attn.q_proj.weight"
    )


def test_position_mode_and_frame_resize_follow_the_writer(tmp_path):
    """VideoAlign's own files mean its sequential positions and frame resize; mmreward's files say what they were
    trained with (M-RoPE and the processor's resize when written before that was recorded)."""
    (tmp_path / "checkpoint-3").mkdir()
    config = {"data_config": {"eval_dim": ["VQ"]}, "model_config": {"reward_token": "special"}}
    recorded = {"positions": "sequential", "frame_resize": "videoalign", "image_resize": "pil"}
    layouts = [
        (config, ("sequential", "videoalign", "processor")),
        ({**config, "mmreward": {"head": "linear"}}, ("mrope", "processor", "processor")),
        ({**config, "mmreward": recorded}, ("sequential", "videoalign", "pil")),
    ]
    for raw, expected in layouts:
        (tmp_path / "model_config.json").write_text(json.dumps(raw))
        spec = read_model_config(tmp_path)
        assert (spec.positions, spec.frame_resize, spec.image_resize) == expected
    (tmp_path / "model_config.json").write_text(json.dumps({**config, "mmreward": {"positions": "1d"}}))
    with pytest.raises(ConfigError, match=r"positions='1d' is not one of \('sequential', 'mrope'\)"):
        read_model_config(tmp_path)


def test_videoalign_layout_loads_lora_merged_and_trained_tensors(head, tiny_root):
    """Every tensor equals base + (alpha / r) B A for adapted layers and the checkpoint's value for trained ones."""
    from transformers import AutoModel

    checkpoint = next(tiny_root.glob("videoreward-qwen2_vl-VQ-MQ-TA")) / "checkpoint-10"
    base = AutoModel.from_pretrained(tiny_root / "qwen2_vl-base")
    adapter = load_file(checkpoint / "adapter_model.safetensors")
    non_lora = torch.load(checkpoint / "non_lora_state_dict.pth", weights_only=True)
    scale = 8 / 4  # lora_alpha / r written by the builder
    name = "language_model.layers.1.self_attn.q_proj"
    a = adapter["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
    b = adapter["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
    expected = base.get_submodule(name).weight + scale * b @ a
    torch.testing.assert_close(head.model.get_submodule(name).weight, expected)
    merger = "visual.merger.mlp.0.weight"
    torch.testing.assert_close(head.model.state_dict()[merger], non_lora[f"base_model.model.{merger}"])
    embeddings = head.model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(head.tokenizer) == base.get_input_embeddings().weight.shape[0] + 3
    torch.testing.assert_close(embeddings, non_lora["base_model.model.model.embed_tokens.weight"])
    torch.testing.assert_close(head.head.weight, non_lora["base_model.model.rm_head.weight"])
    assert head.reference_stats == {"VQ": (0.1, 1.0), "MQ": (0.2, 1.5), "TA": pytest.approx((0.3, 2.0))}
    # Unrelated tensors keep the base values.
    torch.testing.assert_close(
        head.model.state_dict()["language_model.norm.weight"], base.state_dict()["language_model.norm.weight"]
    )


def test_overall_is_the_sum_of_normalized_dimensions(head, tiny_root, sample_images):
    prompts, images = ["a cat", "a red car", "coffee"], sample_images[:3]
    out = head.score(prompts, images)
    assert set(out.dims) == {"VQ", "MQ", "TA"} and not bool(out.failed.any())
    torch.testing.assert_close(out.scores, out.dims["VQ"] + out.dims["MQ"] + out.dims["TA"])
    raw = testing.tiny_reward_head(root=tiny_root, normalize=False).score(prompts, images)
    for dim, (mean, std) in head.reference_stats.items():
        torch.testing.assert_close(out.dims[dim], (raw.dims[dim] - mean) / std)
    # One batch or one item at a time: the same scores (left padding, reward tokens found per row).
    single = torch.stack([head.score([p], [m]).scores[0] for p, m in zip(prompts, images, strict=True)])
    torch.testing.assert_close(out.scores, single, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out.scores, head.score(["something else"] * 3, images).scores)  # the prompt matters


def test_videos_are_sampled_at_two_fps(head, sample_videos):
    path = sample_videos["bigbuckbunny"]
    sampled = head.load_media(path)
    _, probe = mmreward.media.load_video(path, num_frames=1)
    assert sampled.pixels.shape[0] == videoalign_num_frames(probe.total_frames, probe.source_fps, 2.0)
    assert math.isclose(sampled.fps, sampled.pixels.shape[0] / probe.duration)
    out = head.score(["a bunny", "bikes"], [path, sample_videos["bikes"]])
    assert not bool(out.failed.any()) and bool(torch.isfinite(out.scores).all())
    # In-memory videos: resampled from input_video_fps, or taken as already sampled; prepare() also takes the
    # canonical tensor directly (as mmreward serve calls it).
    video = torch.rand(24, 3, 56, 56)
    direct = head.score_prepared_batch(["a clip"], [head.prepare(video)], [None]).scores
    torch.testing.assert_close(direct, head.score(["a clip"], [video]).scores)
    assert head._sample_tensor_video(video).pixels.shape[0] == 24
    head.input_video_fps = 8.0
    try:
        assert head._sample_tensor_video(video).pixels.shape[0] == 6  # 3 s at 2 fps
    finally:
        head.input_video_fps = None


def test_single_file_layout_with_mlp_head(tiny_root, sample_images):
    preset = testing.tiny_vlm_preset("hpsv3", tiny_root)
    reward = mmreward.load_reward(str(preset))
    assert reward.dims == () and isinstance(reward.head, torch.nn.Sequential)
    out = reward.score(["a cat", "a dog"], sample_images[:2])
    with torch.inference_mode():
        raw = reward.forward_raw(
            reward._encode(["a cat", "a dog"], [reward.prepare(reward.load_media(p)) for p in sample_images[:2]])
        )
    assert raw.shape == (2, 2)  # (mu, log sigma)
    torch.testing.assert_close(out.scores, raw[:, 0])
    # A file missing tensors is refused rather than leaving random weights in place.
    directory = preset.parent
    state = load_file(directory / "HPSv3.safetensors")
    from safetensors.torch import save_file

    broken = tiny_root / "hpsv3-broken"
    broken.mkdir(exist_ok=True)
    save_file({k: v for k, v in state.items() if not k.startswith("visual.")}, broken / "HPSv3.safetensors")
    with pytest.raises(ConfigError, match="full checkpoint"):
        mmreward.load_reward(str(preset), weights=str(broken))


def test_loading_errors_are_clear(tiny_root, tmp_path):
    preset = testing.tiny_vlm_preset("videoreward", tiny_root)
    with pytest.raises(ConfigError, match="exactly once"):
        mmreward.load_reward(str(preset), template="hpsv3")
    with pytest.raises(WeightsNotFoundError, match="checkpoint-99"):
        mmreward.load_reward(str(preset), checkpoint_step=99)
    copy = tmp_path / "videoreward-copy"
    shutil.copytree(preset.parent, copy)
    config = json.loads((copy / "model_config.json").read_text())
    config["model_config"]["reward_token"] = "mean"
    (copy / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="reward_token='mean'"):
        mmreward.load_reward(str(preset), weights=str(copy))
    with pytest.raises(ConfigError, match="no model_config.json"):
        mmreward.load_reward(str(preset), weights=str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="KlingTeam/VideoReward"):
        mmreward.load_reward("videoreward")


def test_items_longer_than_the_context_fail_alone(head, sample_images):
    head.context_length, saved = 300, head.context_length
    try:
        out = head.score(["short", " ".join(["a long caption"] * 200)], sample_images[:2])
    finally:
        head.context_length = saved
    assert out.failed.tolist() == [False, True]
    assert "more than the model's context of 300" in out.errors[1]
    assert math.isfinite(float(out.scores[0])) and math.isnan(float(out.scores[1]))


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_other_backbones_score_images_and_videos(family, tiny_root, sample_images):
    """Qwen2.5-VL (fps-aware rotary positions) and Qwen3-VL (timestamps, deepstack features) heads: an image and a
    video in one batch score as they do alone."""
    reward = testing.tiny_reward_head(backbone=family, root=tiny_root)
    video = torch.rand(6, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    out = reward.score(["a cat", "a clip"], [sample_images[0], video])
    assert not bool(out.failed.any())
    alone = torch.stack(
        [reward.score([p], [m]).scores[0] for p, m in (("a cat", sample_images[0]), ("a clip", video))]
    )
    torch.testing.assert_close(out.scores, alone, atol=1e-4, rtol=1e-4)


def test_cli_scores_with_a_head_and_refuses_pairwise_judges(tiny_root, sample_images, sample_videos, tmp_path):
    from tests.cli_runs import run_cli

    head_preset = testing.tiny_vlm_preset("videoreward", tiny_root)
    judge_preset = testing.tiny_vlm_preset("unifiedreward-pairwise", tiny_root)
    out = tmp_path / "scores.jsonl"
    command = ["score", "--prompt", "a scene", "--no-progress"]
    media = [str(sample_images[0]), str(sample_videos["bikes"])]
    ok = run_cli(*command, "--reward", str(head_preset), "--output", str(out), *media)
    assert ok.returncode == 0, ok.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(not r["failed"] and {"videoreward.VQ", "videoreward.TA"} <= set(r) for r in rows)
    refused = run_cli(*command, "--reward", str(judge_preset), str(sample_images[0]))
    assert refused.returncode == 2 and "pairwise judge" in refused.stderr

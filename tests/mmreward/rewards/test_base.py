"""Every registered reward through the same contract checks (tiny random weights where weights are needed).

Shapes and dtype, determinism and batch invariance, per-item failure flags, compare() consistency, video
aggregation, and differentiability where declared.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import mmreward
from mmreward import media
from mmreward.rewards.registry import find_preset
from mmreward.testing import tiny_clip_reward

# VLM rewards (reward heads, generative judges, remote judges) see a video as a whole rather than frame by frame,
# pairwise judges have no absolute score, and remote ones need a server: tests/mmreward/rewards/vlm/ and
# tests/mmreward/rewards/test_win_rate.py check their contract.
_VLM_TYPES = {
    "vlm-head",
    "pairwise-judge",
    "cot-judge",
    "pointwise-judge",
    "checklist-judge",
    "flex-judge",
    "critique-judge",
    "edit-critique-judge",
    "edit-score-judge",
    "edit-pairwise-judge",
    "editreward",
    "videoscore2",
}
# Soft-TIFA asks the questions its data file lists for a prompt, and GenEval checks the objects its metadata lists,
# so they score only those prompts: tests/mmreward/rewards/test_soft_tifa.py and test_geneval.py check their contract.
_PROMPT_SET_TYPES = {"soft-tifa", "geneval"}
REGISTERED = [n for n in mmreward.list_rewards() if find_preset(n).type not in _VLM_TYPES | _PROMPT_SET_TYPES]
# Rewards whose class declares score_pixels; only these get the gradient tests below (from the class, so that no
# model is built to find out).
DIFFERENTIABLE = [n for n in REGISTERED if find_preset(n).reward_class().differentiable]
# Each names a text in double quotes, which the OCR reward looks for (the others read the prompt as it is).
PROMPTS = ['an astronaut with a "NASA" badge', 'a brick wall with "EXIT" painted on it', 'a grey cat, "Tom"']


def test_registry_lists_the_shipped_presets():
    assert set(REGISTERED) >= {
        "clip-score",
        "pickscore",
        "hpsv2",
        "hpsv2.1",
        "laion-aesthetic",
        "jpeg-compressibility",
        "jpeg-incompressibility",
    }


@pytest.fixture(scope="module", params=REGISTERED)
def reward(request, tiny_root):
    return tiny_clip_reward(request.param, root=tiny_root)


def test_scores_shape_dtype_and_failures(reward, sample_images, sample_videos, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    batch = [sample_images[0], tmp_path / "broken.png", sample_videos["carphone_pristine"], sample_images[1]]
    out = reward.score(['a "prompt"'] * 4, batch)
    assert out.scores.shape == (4,) and out.scores.dtype == torch.float32
    assert out.failed.tolist() == [False, True, False, False]
    assert math.isnan(out.scores[1]) and torch.isfinite(out.scores[[0, 2, 3]]).all()
    assert "broken.png" in out.errors[1] and out.errors[0] is None
    assert set(out.dims) == set(reward.dims)


def test_deterministic_and_batch_invariant(reward, sample_images):
    images = sample_images[:3]
    first = reward.score(PROMPTS, images).scores
    reward.batch_size, saved = 1, reward.batch_size
    try:
        one_by_one = reward.score(PROMPTS, images).scores
    finally:
        reward.batch_size = saved
    torch.testing.assert_close(first, reward.score(PROMPTS, images).scores, rtol=0, atol=0)
    torch.testing.assert_close(first, one_by_one, rtol=1e-5, atol=1e-5)


def test_in_memory_media_score_like_files(reward, sample_images):
    from_files = reward.score(PROMPTS[:2], sample_images[:2]).scores
    from_tensors = reward.score(PROMPTS[:2], [media.load_image(p) for p in sample_images[:2]]).scores
    torch.testing.assert_close(from_files, from_tensors)


def test_compare_is_sigmoid_of_score_gap_and_antisymmetric(reward, sample_images):
    a, b = sample_images[:2], sample_images[2:4]
    forward = reward.compare(PROMPTS[:2], a, b)
    backward = reward.compare(PROMPTS[:2], b, a)
    gap = reward.score(PROMPTS[:2], a).scores - reward.score(PROMPTS[:2], b).scores
    torch.testing.assert_close(forward.prob_a, torch.sigmoid(reward.pairwise_scale * gap))
    torch.testing.assert_close(forward.prob_a + backward.prob_a, torch.ones(2))
    assert forward.consistent.all() and not forward.failed.any() and (forward.tie == 0).all()


def test_video_score_is_aggregate_of_its_frames(reward, sample_videos):
    frames, _ = media.load_video(sample_videos["carphone_distorted"], num_frames=reward.video_num_frames)
    video_score = reward.score(['a man on the phone, "hello"'], [frames]).scores
    frame_scores = reward.score(['a man on the phone, "hello"'] * len(frames), list(frames)).scores
    torch.testing.assert_close(video_score, frame_scores.mean().view(1), rtol=1e-5, atol=1e-5)


def test_prompt_count_must_match(reward, sample_images):
    with pytest.raises(ValueError, match="got 1 prompts for 2 media items"):
        reward.score(["one"], sample_images[:2])


def test_differentiability_is_declared_by_the_class(reward, request):
    assert reward.differentiable == (request.node.callspec.params["reward"] in DIFFERENTIABLE)
    assert hasattr(reward, "score_pixels") == reward.differentiable


def test_the_clip_family_is_differentiable():
    assert set(DIFFERENTIABLE) >= {"clip-score", "pickscore", "hpsv2", "hpsv2.1", "laion-aesthetic"}


@pytest.fixture(scope="module", params=DIFFERENTIABLE)
def differentiable_reward(request, tiny_root):
    return tiny_clip_reward(request.param, root=tiny_root)


def test_differentiable_rewards_give_useful_pixel_gradients(differentiable_reward, sample_images):
    reward = differentiable_reward
    square = [media.load_image(p) for p in sample_images if p.suffix == ".png"]
    square = torch.stack([x for x in square if x.shape[-2:] == (512, 512)])
    prompts = ["an astronaut in a space suit"]
    # CLIPScore is w * max(cos, 0): with random weights most cosines are negative, where the gradient is 0 by
    # definition. Take the photo with the highest score, which is off that clamp for this tiny model.
    pixels = square[reward.score(prompts * len(square), square).scores.argmax()].unsqueeze(0)
    assert reward.score(prompts, pixels).scores.item() != 0
    # score_pixels agrees with score on the same pixels when score resizes in torch too (the presets' default
    # resize may be the references' 8-bit PIL one; the same reward with resize="torch" shares the model).
    torch_resize = copy.copy(reward)
    torch_resize.resize = "torch"
    torch.testing.assert_close(reward.score_pixels(prompts, pixels), torch_resize.score(prompts, pixels).scores)
    x = pixels.clone().requires_grad_(True)
    total = reward.score_pixels(prompts, x).sum()
    (grad,) = torch.autograd.grad(total, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # First-order check of the gradient's direction and size: a step d along it (clamped to the valid pixels)
    # changes the score by grad . d. With |d| = 0.1 over 512 x 512 x 3 pixels the second-order term is small:
    # measured |actual - predicted| / predicted <= 0.001 for every tiny model here (0.016 at |d| = 1), so a 5%
    # tolerance fails a gradient that misses a term of the score (e.g. the normalisation of the embedding).
    with torch.no_grad():
        moved = (pixels + 0.1 * grad / grad.norm()).clamp(0, 1)
        predicted = float((grad * (moved - pixels)).sum())
        actual = float(reward.score_pixels(prompts, moved).sum() - total)
    assert predicted > 0.05 * float(grad.norm())  # the clamp left most of the step
    assert actual == pytest.approx(predicted, rel=0.05)


def test_videos_through_score_pixels(differentiable_reward):
    video = torch.rand(2, 3, 3, 40, 48)  # (B, T, 3, H, W)
    per_frame = differentiable_reward.score_pixels(["a", "a", "a"], video[0])
    torch.testing.assert_close(
        differentiable_reward.score_pixels(["a", "b"], video)[0], per_frame.mean(), rtol=1e-5, atol=1e-5
    )

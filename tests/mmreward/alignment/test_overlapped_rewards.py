"""Rewards that overlap sampling: the same samples and the same rewards as scoring after the rollout, reward calls
that start while later micro-batches still sample, and group rewards called on complete groups only."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import nullcontext

import pytest
import torch

from mmreward.alignment import overlapped_rewards
from mmreward.alignment.group_rewards import PointwiseGroupReward, WinRateGroupReward
from mmreward.alignment.group_rollout import RolloutConfig
from mmreward.alignment.layout import GroupLayout
from mmreward.alignment.overlapped_rewards import (
    check_overlap_workers,
    complete_groups,
    micro_batches,
    rollout_and_reward,
)
from mmreward.errors import ConfigError
from mmreward.flow.models import load_flow_model
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.brightness import BrighterImageJudge
from mmreward.rewards.mix import RewardMix

BRIGHTNESS = "mmreward.rewards.brightness:BrightnessReward"
PROMPTS = ["a cat", "a dog", "a red car"]


class _Accelerator:
    device = torch.device("cpu")
    num_processes = 1

    @staticmethod
    def autocast():
        return nullcontext()

    @staticmethod
    def reduce(tensor, reduction):
        return tensor


@pytest.fixture(scope="module")
def model():
    return load_flow_model("sd3", "tiny", max_sequence_length=16)


def _run(model, reward, *, overlap, batch_size=2, group_size=3, same_noise=False, generator=None, workers=1):
    config = RolloutConfig(
        prompts_per_step=3, group_size=group_size, num_steps=3, guidance_scale=1.0, batch_size=batch_size,
        same_noise=same_noise,
    )  # fmt: skip
    return rollout_and_reward(
        model, PROMPTS, GroupLayout(3, group_size), config, reward, height=32, width=32, iteration=2, seed=5,
        accelerator=_Accelerator(), overlap=overlap, workers=workers, generator=generator,
    )  # fmt: skip


class _NoisyBrightness:
    """A pointwise reward that draws from the loop's generator per image, in sample order (as Adv-GRPO's
    discriminator draws its patch tokens), and fails the items of one prompt (with a reason)."""

    whole_groups = False
    dims = ("brightness",)
    weights = {"brightness": 1.0}

    def score(self, prompts, media, *, groups=None, generator=None):
        brightness = media.float().mean(dim=(1, 2, 3)) / 255
        noise = torch.stack([torch.rand((), generator=generator) for _ in range(len(media))])
        failed = torch.tensor([prompt == "a dog" for prompt in prompts])
        errors = [f"no dogs: {float(b):.4f}" if f else None for b, f in zip(brightness, failed, strict=True)]
        return RewardOutput(
            torch.where(failed, torch.nan, brightness + noise), {"brightness": brightness}, failed, errors
        )


def _assert_same_iteration(a, b):
    (batch_a, rewards_a, _), (batch_b, rewards_b, _) = a, b
    for name in ("latents", "next_latents", "log_probs", "final", "media", "group"):
        assert torch.equal(getattr(batch_a.rollout, name), getattr(batch_b.rollout, name)), name
    assert torch.equal(batch_a.rollout.cond.embeds, batch_b.rollout.cond.embeds)
    assert torch.equal(batch_a.rollout.cond.pooled, batch_b.rollout.cond.pooled)
    assert batch_a.rollout.prompts == batch_b.rollout.prompts
    assert torch.equal(batch_a.media, batch_b.media) and torch.equal(batch_a.index, batch_b.index)
    torch.testing.assert_close(rewards_a.scores, rewards_b.scores, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(rewards_a.failed, rewards_b.failed)
    assert rewards_a.dims.keys() == rewards_b.dims.keys()
    for name in rewards_a.dims:
        torch.testing.assert_close(rewards_a.dims[name], rewards_b.dims[name], rtol=0, atol=0, equal_nan=True)
    assert rewards_a.errors == rewards_b.errors


@pytest.mark.parametrize("same_noise", [False, True])
def test_overlap_gives_the_samples_and_rewards_of_scoring_after_the_rollout(model, same_noise):
    reward = PointwiseGroupReward(RewardMix({BRIGHTNESS: 1.0}))
    # 9 samples in micro-batches of 2: the last one is short
    overlapped = _run(model, reward, overlap=True, same_noise=same_noise)
    _assert_same_iteration(overlapped, _run(model, reward, overlap=False, same_noise=same_noise))
    brightness = overlapped[0].media.float().mean(dim=(1, 2, 3)) / 255
    torch.testing.assert_close(overlapped[1].scores, brightness, atol=1e-6, rtol=0)


def test_a_reward_drawing_from_the_generator_and_failing_items_is_unchanged(model):
    def run(overlap):
        return _run(model, _NoisyBrightness(), overlap=overlap, generator=torch.Generator().manual_seed(11))

    overlapped, sequential = run(True), run(False)
    _assert_same_iteration(overlapped, sequential)
    rewards = overlapped[1]
    assert [i for i, _ in rewards.errors] == rewards.failed.nonzero().flatten().tolist() == [3, 4, 5]
    assert all(reason.startswith("no dogs") for _, reason in rewards.errors)
    assert torch.isnan(rewards.scores[rewards.failed]).all() and torch.isfinite(rewards.scores[~rewards.failed]).all()


def test_win_rates_start_on_complete_groups_and_equal_the_sequential_ones(model, monkeypatch):
    judge = BrighterImageJudge(sharpness=1000.0)
    reward = WinRateGroupReward(judge, weight=0.4, mix=RewardMix({BRIGHTNESS: 0.6}))
    calls: list[list[int]] = []
    score = reward.score

    def recording(prompts, media, *, groups, generator=None):
        calls.append(groups.tolist())
        return score(prompts, media, groups=groups, generator=generator)

    monkeypatch.setattr(reward, "score", recording)
    overlapped = _run(model, reward, overlap=True, batch_size=2, group_size=3)
    # micro-batches end at rows 2, 4, 6, 8, 9: groups 0 (rows 0-2), 1 (3-5), 2 (6-8) complete at rows 4, 6, 9
    assert calls == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    calls.clear()
    _assert_same_iteration(overlapped, _run(model, reward, overlap=False, batch_size=2, group_size=3))
    assert calls == [[0, 0, 0, 1, 1, 1, 2, 2, 2]]


def test_the_first_reward_runs_while_later_micro_batches_sample(model, monkeypatch):
    sampling_third = threading.Event()
    calls = {"sample": 0}
    sample = overlapped_rewards.sample

    def counting_sample(*args, **kwargs):
        calls["sample"] += 1
        if calls["sample"] == 3:
            sampling_third.set()
        return sample(*args, **kwargs)

    seen: list[tuple[str, bool]] = []

    class Waiting(PointwiseGroupReward):
        def score(self, prompts, media, *, groups=None, generator=None):
            # Without overlap the third micro-batch would never start while this waits (then: False after 60 s).
            seen.append((threading.current_thread().name, sampling_third.wait(timeout=60)))
            return super().score(prompts, media, groups=groups, generator=generator)

    monkeypatch.setattr(overlapped_rewards, "sample", counting_sample)
    batch, rewards, _ = _run(model, Waiting(RewardMix({BRIGHTNESS: 1.0})), overlap=True, batch_size=3)
    assert calls["sample"] == 3 and len(seen) == 3
    assert all(name.startswith("reward") and ready for name, ready in seen)
    torch.testing.assert_close(rewards.scores, batch.media.float().mean(dim=(1, 2, 3)) / 255, atol=1e-6, rtol=0)


def test_a_reward_that_raises_stops_the_iteration_before_more_is_sampled(model, monkeypatch):
    submitted: list[Future] = []
    second_sampling = threading.Event()
    calls = {"sample": 0}
    sample = overlapped_rewards.sample

    class RecordingPool(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            submitted.append(super().submit(*args, **kwargs))
            return submitted[-1]

    def counting_sample(*args, **kwargs):
        calls["sample"] += 1
        if calls["sample"] == 2:  # the first micro-batch's reward raises now, while the second one samples
            second_sampling.set()
            assert len(submitted) == 1 and wait(submitted, timeout=60).done == set(submitted)
        return sample(*args, **kwargs)

    class Broken(PointwiseGroupReward):
        def score(self, prompts, media, *, groups=None, generator=None):
            # not before the second micro-batch started sampling: the check before it must find nothing failed
            assert second_sampling.wait(timeout=60)
            raise RuntimeError("reward server unreachable")

    monkeypatch.setattr(overlapped_rewards, "ThreadPoolExecutor", RecordingPool)
    monkeypatch.setattr(overlapped_rewards, "sample", counting_sample)
    with pytest.raises(RuntimeError, match="reward server unreachable"):
        _run(model, Broken(RewardMix({BRIGHTNESS: 1.0})), overlap=True)  # 5 micro-batches of 2
    assert calls["sample"] == 2


def test_micro_batches_and_complete_groups():
    assert micro_batches(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert micro_batches(2, 8) == [slice(0, 2)]
    group = torch.tensor([4, 4, 4, 5, 5, 5, 6, 6, 6])  # a process holding groups 4..6 of size 3
    assert [complete_groups(group, n) for n in range(10)] == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]


def test_overlap_workers_are_checked():
    check_overlap_workers(4)
    with pytest.raises(ConfigError, match="overlap_workers must be >= 1, got 0"):
        check_overlap_workers(0)
    with pytest.raises(ConfigError, match="overlap_workers: 1"):
        check_overlap_workers(2, torch.Generator())

"""A GRPO iteration's rollout: same-noise groups (Pref-GRPO --init_same_noise, Flow-GRPO sample.same_latent) and
MixGRPO's sliding SDE window."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from mmreward.alignment.group_rollout import (
    RolloutConfig,
    check_rollout_config,
    group_initial_noise,
    rollout_groups,
    rollout_window,
)
from mmreward.alignment.layout import GroupLayout
from mmreward.errors import ConfigError
from mmreward.flow.models import load_flow_model


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def autocast():
        return nullcontext()


def test_group_initial_noise_is_shared_within_a_group_and_independent_of_the_split():
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    noise = group_initial_noise((6, 4, 8, 8), groups, seed=3, iteration=5)
    assert torch.equal(noise[0], noise[1]) and torch.equal(noise[0], noise[2]) and torch.equal(noise[3], noise[5])
    assert not torch.allclose(noise[0], noise[3])
    # The second process of a 2-process run (samples 3..5) draws what the single process drew for them.
    torch.testing.assert_close(group_initial_noise((3, 4, 8, 8), groups[3:], seed=3, iteration=5), noise[3:])
    assert not torch.allclose(group_initial_noise((6, 4, 8, 8), groups, seed=3, iteration=6), noise)
    assert noise.std().item() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("same_noise", [True, False])
def test_same_noise_groups_start_together_and_differ_by_the_sde_noise(same_noise):
    model = load_flow_model("sd3", "tiny", max_sequence_length=16)
    config = RolloutConfig(
        prompts_per_step=2, group_size=3, num_steps=3, guidance_scale=1.0, batch_size=6, same_noise=same_noise
    )
    batch = rollout_groups(
        model,
        ["a cat", "a dog"],
        GroupLayout(2, 3),
        config,
        height=32,
        width=32,
        iteration=1,
        seed=0,
        accelerator=_Accelerator(),
    )
    start = batch.rollout.latents[:, 0]  # (6, *latent): the initial noise (the first step is stochastic)
    if same_noise:
        shape = model.latent_shape(6, 32, 32)
        torch.testing.assert_close(start, group_initial_noise(shape, batch.group, seed=0, iteration=1))
    assert torch.equal(start[0], start[1]) == same_noise and torch.equal(start[3], start[5]) == same_noise
    assert not torch.allclose(start[0], start[3])
    final = batch.rollout.final
    assert not torch.allclose(final[0], final[1], atol=1e-3)  # the SDE noise still separates a group's samples


def test_a_sliding_window_config_moves_the_stochastic_steps_over_iterations():
    """MixGRPO's schedule from the config: 2 SDE steps inside [0, 5) of 6, moving by 1 every 2 iterations; the rollout
    stores (and so trains) only the window's steps, and keeps their means on request."""
    config = RolloutConfig(
        prompts_per_step=1,
        group_size=2,
        num_steps=6,
        guidance_scale=1.0,
        sde_window_size=2,
        sde_window_range=[0, 5],
        sde_window_schedule="sliding",
        sde_window_shift_every=2,
        sde_window_stride=1,
    )
    check_rollout_config(config)
    windows = [rollout_window(config, k, seed=0) for k in range(10)]
    assert windows == [(0, 2)] * 2 + [(1, 3)] * 2 + [(2, 4)] * 2 + [(3, 5)] * 2 + [(4, 5)] * 2
    assert rollout_window(config, 10, seed=7) == (0, 2)  # rolled back; the seed plays no part
    model = load_flow_model("sd3", "tiny", max_sequence_length=16)
    batch = rollout_groups(
        model,
        ["a cat"],
        GroupLayout(1, 2),
        config,
        height=32,
        width=32,
        iteration=5,
        seed=0,
        accelerator=_Accelerator(),
        record_means=True,
    )
    assert batch.rollout.sde_steps.tolist() == [2, 3] and batch.rollout.log_probs.shape == (2, 2)
    assert batch.rollout.means.shape == batch.rollout.latents.shape


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sde_window_schedule": "sliding"}, "needs rollout.sde_window_size >= 1"),
        ({"sde_window_schedule": "sliding", "sde_window_size": 2, "sde_window_stride": 0}, "sde_window_stride must"),
        ({"sde_window_schedule": "sliding", "sde_window_size": 2, "sde_window_shift_every": 0}, "shift_every must"),
        ({"sde_window_schedule": "slide"}, "must be random or sliding, got 'slide'"),
    ],
)
def test_sliding_window_settings_are_checked_before_anything_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_rollout_config(RolloutConfig(num_steps=6, **overrides))

"""DiffusionNFT's pieces with hand-worked values: the optimality transform, the implicit velocities, the adaptive
x0 error, the negative-aware loss, the noise-level draw and the old policy's schedule and weights; and the
invariants the paper's derivation rests on (the implicit policies average to the old one; at ``v_theta = v_old``
the gradient is ``(2r - 1)`` times the flow-matching one, whatever beta is)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mmreward.alignment.nft import (
    OldPolicy,
    adaptive_x0_error,
    check_decay,
    group_optimality,
    implicit_velocities,
    nft_loss,
    old_policy_decay,
    optimality_probabilities,
    training_step_indices,
)
from mmreward.errors import ConfigError


def test_advantages_map_linearly_onto_zero_one_and_saturate_beyond_the_clip():
    a = torch.tensor([-10.0, -5.0, -2.5, 0.0, 2.5, 5.0, 7.0])
    r = optimality_probabilities(a, 5.0)
    assert r.tolist() == pytest.approx([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert optimality_probabilities(torch.tensor([1.0]), 2.0).item() == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="adv_clip_max"):
        optimality_probabilities(a, 0.0)


def test_group_optimality_centres_per_group_and_scales_by_the_global_std():
    # groups [0, 2] and [0, 2]: group means 1, global std (ddof 0) of [0, 2, 0, 2] is 1
    rewards, groups = torch.tensor([0.0, 2.0, 0.0, 2.0]), torch.tensor([0, 0, 1, 1])
    adv, r = group_optimality(rewards, groups, clip_max=5.0, eps=0.0)
    assert adv.values.tolist() == pytest.approx([-1.0, 1.0, -1.0, 1.0])
    assert r.tolist() == pytest.approx([0.4, 0.6, 0.4, 0.6])
    adv, r = group_optimality(rewards, groups, clip_max=5.0, eps=1e-4)
    assert r[0].item() == pytest.approx(0.5 - 0.1 / 1.0001, abs=1e-7)
    # per-group std: [0, 4] has std 2, [1, 2] std 0.5 -> every advantage is +-1
    adv, r = group_optimality(torch.tensor([0.0, 4.0, 1.0, 2.0]), groups, std="group", eps=0.0, clip_max=2.0)
    assert r.tolist() == pytest.approx([0.25, 0.75, 0.25, 0.75])


def test_constant_groups_are_trained_at_one_half_and_failed_rewards_are_not_trained():
    rewards = torch.tensor([3.0, 3.0, 1.0, math.nan, 2.0, 4.0])
    adv, r = group_optimality(rewards, torch.tensor([0, 0, 1, 1, 2, 2]), eps=0.0)
    assert adv.keep.tolist() == [True, True, False, False, True, True]  # group 1 has one valid reward left
    assert r[:2].tolist() == [0.5, 0.5]
    assert r[4].item() < 0.5 < r[5].item()


def test_implicit_velocities_hand_worked():
    v_pos, v_neg = implicit_velocities(torch.tensor([3.0]), torch.tensor([1.0]), 0.5)
    assert v_pos.item() == pytest.approx(2.0)  # 0.5 * 1 + 0.5 * 3
    assert v_neg.item() == pytest.approx(0.0)  # 1.5 * 1 - 0.5 * 3


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-10, 10), min_size=4, max_size=4),
    st.lists(st.floats(-10, 10), min_size=4, max_size=4),
    st.floats(0.01, 2.0),
)
def test_the_implicit_policies_average_to_the_old_one(theta, old, beta):
    v_theta, v_old = torch.tensor(theta, dtype=torch.float64), torch.tensor(old, dtype=torch.float64)
    v_pos, v_neg = implicit_velocities(v_theta, v_old, beta)
    assert torch.allclose((v_pos + v_neg) / 2, v_old, atol=1e-9)
    assert torch.allclose(v_pos - v_neg, 2 * beta * (v_theta - v_old), atol=1e-9)


def test_adaptive_error_divides_by_the_detached_mean_absolute_error():
    prediction = torch.tensor([[1.0, -3.0]], requires_grad=True)
    error = adaptive_x0_error(prediction, torch.zeros(1, 2))
    assert error.item() == pytest.approx(5.0 / 2.0)  # mean(e^2) = 5, mean|e| = 2
    error.sum().backward()
    assert prediction.grad.tolist() == [[pytest.approx(0.5), pytest.approx(-1.5)]]  # 2 e / (n w), w constant
    # an exact prediction: 0 over the weight's floor, not 0 / 0
    assert adaptive_x0_error(torch.zeros(1, 2), torch.zeros(1, 2)).item() == 0.0


def test_nft_loss_hand_worked():
    # x0 = 0, x_t = [1, 1], t = 0.5; the old policy predicts x0_old = x_t - t v_old = [0, 1]
    x0, x_t, sigma = torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0.5])
    v_old, v_theta, r = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 2.0]]), torch.tensor([0.75])
    # beta 1: v+ = v_theta -> x0+ = [0, 0], error 0; v- = [2, -2] -> x0- = [0, 2]: mean e^2 2 / mean|e| 1 = 2
    out = nft_loss(v_theta, v_old, x_t, x0, sigma, r, beta=1.0, clip_max=5.0)
    assert out.positive.item() == pytest.approx(0.0)
    assert out.negative.item() == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx((0.75 * 0.0 + 0.25 * 2.0) * 5.0)
    # beta 0.5: v+ = [2, 1] -> x0+ = [0, 0.5]: 0.125 / 0.25; v- = [2, -1] -> x0- = [0, 1.5]: 1.125 / 0.75
    out = nft_loss(v_theta, v_old, x_t, x0, sigma, r, beta=0.5, clip_max=5.0)
    assert out.positive.item() == pytest.approx(0.5)
    assert out.negative.item() == pytest.approx(1.5)
    assert out.loss.item() == pytest.approx((0.75 * 0.5 + 0.25 * 1.5) / 0.5 * 5.0)
    with pytest.raises(ConfigError, match="loss.beta"):
        nft_loss(v_theta, v_old, x_t, x0, sigma, r, beta=0.0, clip_max=5.0)


def test_good_samples_pull_the_velocity_toward_them_and_bad_ones_push_it_away():
    x0, x_t, sigma = torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0.5])
    v_old = torch.tensor([[1.0, 1.0]])  # x0_old = [0.5, 0.5]: the velocity that reproduces x0 is [2, 2]
    for r, sign in ((1.0, -1.0), (0.0, 1.0)):
        v = v_old.clone().requires_grad_(True)
        nft_loss(v, v_old, x_t, x0, sigma, torch.tensor([r]), beta=1.0, clip_max=5.0).loss.sum().backward()
        assert torch.all(torch.sign(v.grad) == sign), (r, v.grad)  # gradient descent raises v for r = 1


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.floats(0.0, 1.0),
    st.floats(0.05, 2.0),
    st.floats(0.05, 0.95),
)
def test_at_the_old_policy_the_gradient_is_two_r_minus_one_times_flow_matching_for_any_beta(seed, r, beta, t):
    g = torch.Generator().manual_seed(seed)
    x0, noise, v_old = (torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    sigma = torch.tensor([t], dtype=torch.float64)
    x_t = (1 - t) * x0 + t * noise
    v = v_old.clone().requires_grad_(True)
    nft_loss(v, v_old, x_t, x0, sigma, torch.tensor([r]), beta=beta, clip_max=5.0).loss.sum().backward()
    plain = v_old.clone().requires_grad_(True)
    adaptive_x0_error(x_t - t * plain, x0).sum().backward()  # the positive loss of plain fine-tuning on x0
    assert torch.allclose(v.grad, (2 * r - 1) * 5.0 * plain.grad, rtol=1e-4, atol=1e-6)  # nft_loss is float32


def test_training_levels_are_distinct_indices_of_the_grid():
    idx = training_step_indices(10, 9, torch.Generator().manual_seed(0))
    assert len(idx) == 9 and len(set(idx.tolist())) == 9 and 0 <= int(idx.min()) and int(idx.max()) < 10
    again = training_step_indices(10, 9, torch.Generator().manual_seed(0))
    assert idx.tolist() == again.tolist()
    for count in (0, 11):
        with pytest.raises(ConfigError, match=f"cannot train {count} of 10"):
            training_step_indices(10, count, torch.Generator())


@pytest.mark.parametrize(
    ("steps", "preset", "expected"),
    [
        (0, (0, 0.001, 0.5), 0.0),
        (1, (0, 0.001, 0.5), 0.001),
        (300, (0, 0.001, 0.5), 0.3),
        (2000, (0, 0.001, 0.5), 0.5),
        (74, (75, 0.0075, 0.999), 0.0),
        (75, (75, 0.0075, 0.999), 0.0),
        (76, (75, 0.0075, 0.999), 0.0075),
        (208, (75, 0.0075, 0.999), 0.9975),
        (209, (75, 0.0075, 0.999), 0.999),
        (50, (0, 0.0, 0.0), 0.0),
    ],
)
def test_old_policy_decay_follows_the_reference_presets(steps, preset, expected):
    flat, rate, cap = preset
    assert old_policy_decay(steps, flat=flat, rate=rate, cap=cap) == pytest.approx(expected)


def test_decay_schedule_errors_name_the_keys():
    with pytest.raises(ConfigError, match="old_decay_max"):
        check_decay(0, 0.001, 1.0)
    with pytest.raises(ConfigError, match="old_decay_rate"):
        check_decay(0, -0.1, 0.5)


def test_old_policy_starts_at_the_live_weights_follows_them_and_swaps_in_without_gradients():
    module = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, 2.0]]))
    old = OldPolicy(module)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[5.0, 6.0]]))
    old.follow(0.25)  # 0.25 old + 0.75 live
    assert old.snapshot["weight"].tolist() == [[4.0, 5.0]]
    x = torch.tensor([[1.0, 1.0]])
    with old.active():
        assert module(x).item() == pytest.approx(9.0)
        assert not torch.is_grad_enabled()
    assert module(x).item() == pytest.approx(11.0)  # the live weights are back
    old.follow(0.0)
    assert old.snapshot["weight"].tolist() == [[5.0, 6.0]]
    restored = OldPolicy(nn.Linear(2, 1, bias=False))
    restored.load_state_dict(old.state_dict())
    assert restored.snapshot["weight"].tolist() == [[5.0, 6.0]]

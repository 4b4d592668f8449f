"""Flow-DPO / Flow-RWR losses and the forward process against hand-computed values.

Worked example used below: errors e_policy_w = 0.3, e_ref_w = 0.5, e_policy_l = 0.6, e_ref_l = 0.4, beta = 10.
    d = (0.3 - 0.5) - (0.6 - 0.4) = -0.4,  margin m = -d / 2 = 0.2,  beta * m = 2
    sigmoid: -log sigmoid(2) = log(1 + e^-2) = 0.126928
    hinge:   relu(1 - 2) = 0
    ipo:     (0.2 - 1 / 20)^2 = 0.0225
    implicit rewards: chosen -10/2 * (0.3 - 0.5) = 1.0, rejected -10/2 * (0.6 - 0.4) = -1.0, margin 2.0 = beta * m
    (1 - t)^2 schedule at sigma = 0.5: beta_t = 10 * 0.25 = 2.5, sigmoid: -log sigmoid(0.5) = 0.474077
Flow-GRPO writes the sigmoid loss as -logsigmoid(-0.5 * beta * d), diffusers' Diffusion-DPO as
-logsigmoid(beta' * ((e_ref_w - e_ref_l) - (e_policy_w - e_policy_l))) with beta' = beta / 2: the same number.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from mmreward.flow.noising import logit_normal, noisy_latents, velocity_target
from mmreward.losses import flow_dpo_beta, flow_dpo_loss, flow_matching_error, flow_rwr_loss, rwr_weights

E = {"pw": torch.tensor([0.3]), "rw": torch.tensor([0.5]), "pl": torch.tensor([0.6]), "rl": torch.tensor([0.4])}


def _loss(**kwargs):
    return flow_dpo_loss(E["pw"], E["pl"], E["rw"], E["rl"], beta=10.0, **kwargs)


@pytest.mark.parametrize(("loss_type", "expected"), [("sigmoid", 0.126928), ("hinge", 0.0), ("ipo", 0.0225)])
def test_flow_dpo_hand_computed(loss_type, expected):
    out = _loss(loss_type=loss_type)
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert out.margin.item() == pytest.approx(0.2)
    assert out.chosen_reward.item() == pytest.approx(1.0) and out.rejected_reward.item() == pytest.approx(-1.0)
    assert out.reward_margin.item() == pytest.approx(2.0) and out.accuracy.item() == 1.0


def test_flow_dpo_matches_the_flow_grpo_and_diffusers_forms():
    g = torch.Generator().manual_seed(0)
    pw, pl, rw, rl = (torch.rand(8, generator=g) for _ in range(4))
    ours = flow_dpo_loss(pw, pl, rw, rl, beta=100.0).losses
    flow_grpo = -F.logsigmoid(-0.5 * 100.0 * ((pw - rw) - (pl - rl)))
    diffusers = -F.logsigmoid(50.0 * ((rw - rl) - (pw - pl)))
    torch.testing.assert_close(ours, flow_grpo)
    torch.testing.assert_close(ours, diffusers)


def test_beta_schedule_one_minus_t_squared():
    out = _loss(beta_schedule="one_minus_t_squared", sigma=torch.tensor([0.5]))
    assert out.beta.item() == pytest.approx(2.5)
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-6)  # 0.474077
    with pytest.raises(ValueError, match="needs each pair's sigma"):
        _loss(beta_schedule="one_minus_t_squared")


def test_wrongly_ranked_pair_has_negative_margin_and_gradient_pushes_the_right_way():
    policy_w = torch.tensor([0.6], requires_grad=True)
    out = flow_dpo_loss(policy_w, torch.tensor([0.3]), torch.tensor([0.5]), torch.tensor([0.5]), beta=10.0)
    assert out.accuracy.item() == 0.0 and out.margin.item() < 0
    out.loss.backward()
    assert policy_w.grad.item() > 0  # descending the loss lowers the chosen sample's error


def test_sum_reduction_with_beta_over_numel_equals_mean_reduction():
    g = torch.Generator().manual_seed(1)
    pred, ref, target = (torch.randn(4, 4, 3, 5, 5, generator=g) for _ in range(3))
    numel = 4 * 3 * 5 * 5
    mean_e, sum_e = flow_matching_error(pred, target), flow_matching_error(pred, target, "sum")
    torch.testing.assert_close(sum_e, mean_e * numel)
    assert mean_e[0].item() == pytest.approx(((pred[0] - target[0]) ** 2).mean().item())
    ref_mean, ref_sum = flow_matching_error(ref, target), flow_matching_error(ref, target, "sum")
    by_mean = flow_dpo_loss(mean_e[:2], mean_e[2:], ref_mean[:2], ref_mean[2:], beta=100.0)
    by_sum = flow_dpo_loss(sum_e[:2], sum_e[2:], ref_sum[:2], ref_sum[2:], beta=100.0 / numel)
    torch.testing.assert_close(by_mean.loss, by_sum.loss)


def test_rwr_weights_and_loss_hand_computed():
    """rewards [0, 1], temperature 1: softmax = [1, e] / (1 + e) -> times 2: [0.537883, 1.462117]."""
    weights = rwr_weights(torch.tensor([0.0, 1.0]), temperature=1.0)
    torch.testing.assert_close(weights, torch.tensor([0.537883, 1.462117]), rtol=0, atol=1e-6)
    loss = flow_rwr_loss(torch.tensor([2.0, 4.0]), weights)
    assert loss.item() == pytest.approx((0.537883 * 2 + 1.462117 * 4) / 2, abs=1e-5)
    flat = rwr_weights(torch.tensor([0.0, 1.0, 2.0]), temperature=1e6)  # large temperature: plain fine-tuning
    torch.testing.assert_close(flat, torch.ones(3), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        rwr_weights(torch.tensor([1.0]), temperature=0.0)


def test_forward_process():
    x0, noise = torch.full((2, 3), 2.0), torch.full((2, 3), -1.0)
    torch.testing.assert_close(
        noisy_latents(x0, noise, torch.tensor([0.0, 1.0])), torch.tensor([[2.0] * 3, [-1.0] * 3])
    )
    torch.testing.assert_close(noisy_latents(x0, noise, torch.tensor([0.25, 0.25]))[0], torch.full((3,), 1.25))
    torch.testing.assert_close(velocity_target(x0, noise), torch.full((2, 3), -3.0))
    u = logit_normal(20000, generator=torch.Generator().manual_seed(0))
    assert 0 < u.min() and u.max() < 1 and abs(u.median().item() - 0.5) < 0.01  # sigmoid(N(0, 1)): median 0.5


def test_training_sigmas_index_the_shifted_grid():
    """Flow-GRPO: sigma = scheduler.sigmas[floor(u * 1000)] of SD3's shifted 1000-step training grid."""
    from mmreward.flow.models import SD3Model
    from mmreward.tiny_models import tiny_pipeline

    model = SD3Model(tiny_pipeline("sd3"))
    grid = FlowMatchEulerDiscreteScheduler(shift=3.0).sigmas
    u = torch.tensor([0.0, 0.25, 0.5, 0.9999])
    expected = grid[[0, 250, 500, 999]]
    torch.testing.assert_close(model.training_sigmas(u), expected)
    assert model.training_sigmas(torch.tensor([0.0])).item() == 1.0


def test_flow_dpo_hinge_beta_dtype_and_messages():
    """Hinge: relu(1 - beta m) with m = -d / 2; errors (chosen 0.5 vs ref 1.0, rejected 1.0 vs ref 1.0) give
    d = -0.5, m = 0.25; beta 2 -> 0.5."""
    one = torch.tensor([1.0])
    out = flow_dpo_loss(torch.tensor([0.5]), one, one, one, beta=2.0, loss_type="hinge")
    assert float(out.loss) == pytest.approx(0.5)
    assert flow_dpo_beta(0.5, None).dtype == torch.float32
    with pytest.raises(ValueError) as unknown_type:
        flow_dpo_loss(one, one, one, one, beta=1.0, loss_type="kto")
    assert str(unknown_type.value) == "unknown Flow-DPO loss type 'kto'; use sigmoid, hinge or ipo"
    with pytest.raises(ValueError) as no_sigma:
        flow_dpo_beta(1.0, None, "one_minus_t_squared")
    assert str(no_sigma.value) == "the one_minus_t_squared beta schedule needs each pair's sigma"
    with pytest.raises(ValueError) as schedule:
        flow_dpo_beta(1.0, None, "cosine")
    assert str(schedule.value) == "unknown beta schedule 'cosine'; use constant or one_minus_t_squared"
    with pytest.raises(ValueError) as reduction:
        flow_matching_error(one, one, reduction="max")
    assert str(reduction.value) == "reduction must be 'mean' or 'sum', got 'max'"

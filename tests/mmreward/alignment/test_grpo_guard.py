"""GRPO-Guard's RatioNorm and step reweighting against hand-worked values (the reference's own numbers are in
tests/golden/grpo_guard/)."""

from __future__ import annotations

import pytest
import torch

from mmreward.alignment.grpo_guard import ratio_norm_log_ratio, step_reweight
from mmreward.flow.sde import gaussian_log_prob

# Two samples of two elements. Sample 0: mean - old = (0.2, -0.1), x' - old = (0.3, -0.2), products 0.06 and 0.02,
# their mean 0.04, / std 0.5 = 0.08. Sample 1: (0, 0.2) and (-0.3, 0.3): 0 and 0.06, mean 0.03, / 0.2 = 0.15.
MEAN = torch.tensor([[1.0, 2.0], [0.5, 0.5]])
OLD = torch.tensor([[0.8, 2.1], [0.5, 0.3]])
NEXT = torch.tensor([[1.1, 1.9], [0.2, 0.6]])
STD = torch.tensor([[0.5], [0.2]])


def test_ratio_norm_log_ratio_hand_worked():
    torch.testing.assert_close(ratio_norm_log_ratio(MEAN, OLD, NEXT, STD), torch.tensor([0.08, 0.15]))


def test_ratio_norm_is_the_references_std_times_the_shifted_gaussian_log_ratio():
    """The reference forms s * (logp - logp_old + mean((mu - mu_old)^2) / (2 s^2)) from two Gaussian log-densities;
    the closed form gives the same number without the cancellation."""
    logp, old = gaussian_log_prob(NEXT, MEAN, STD), gaussian_log_prob(NEXT, OLD, STD)
    shift = ((MEAN - OLD) ** 2).mean(dim=1) / (2 * STD.flatten() ** 2)
    reference = STD.flatten() * (logp - old + shift)
    torch.testing.assert_close(ratio_norm_log_ratio(MEAN, OLD, NEXT, STD), reference)
    # the raw log-ratios: log r / s - shift = 0.08 / 0.5 - 0.05 / 2 / 0.5 = 0.11 and 0.15 / 0.2 - 0.04 / 2 / 0.08 = 0.5
    torch.testing.assert_close(logp - old, torch.tensor([0.11, 0.5]))


def test_batch_shift_gives_every_sample_the_batch_mean_shift():
    """GRPO-Guard's code: log r_i = r_i + s (b_mean - b_i). With s = 0.5 for both: r = (0.04, 0.03) / 0.5 = (0.08,
    0.06); b = mean(delta^2) / (2 s^2) = (0.025, 0.02) / 0.5 = (0.05, 0.04), b_mean 0.045; so 0.08 - 0.0025 and
    0.06 + 0.0025."""
    std = torch.full((2, 1), 0.5)
    torch.testing.assert_close(ratio_norm_log_ratio(MEAN, OLD, NEXT, std), torch.tensor([0.08, 0.06]))
    torch.testing.assert_close(
        ratio_norm_log_ratio(MEAN, OLD, NEXT, std, shift="batch"), torch.tensor([0.0775, 0.0625])
    )
    with pytest.raises(ValueError, match="shift must be one of sample, batch"):
        ratio_norm_log_ratio(MEAN, OLD, NEXT, std, shift="group")


def test_ratio_norm_gradient_reaches_only_the_current_mean():
    """d/d mean of mean_elems((mean - old) (x' - old)) / s is (x' - old) / (n s): (0.3, -0.2) / (2 * 0.5) for sample 0
    and (-0.3, 0.3) / (2 * 0.2) for sample 1."""
    mean = MEAN.clone().requires_grad_(True)
    old = OLD.clone().requires_grad_(True)
    nxt = NEXT.clone().requires_grad_(True)
    ratio_norm_log_ratio(mean, old, nxt, STD).sum().backward()
    torch.testing.assert_close(mean.grad, torch.tensor([[0.3, -0.2], [-0.75, 0.75]]))
    assert old.grad is None and nxt.grad is None


def test_ratio_norm_is_zero_on_policy_and_checks_its_inputs():
    assert ratio_norm_log_ratio(OLD, OLD, NEXT, STD).abs().max() == 0
    with pytest.raises(
        ValueError, match=r"^mean \(2, 2\), old_mean \(2, 1\) and prev_sample \(2, 2\) must have the same"
    ):
        ratio_norm_log_ratio(MEAN, OLD[:, :1], NEXT, STD)
    with pytest.raises(ValueError, match=r"^RatioNorm needs a stochastic step \(std > 0\)"):
        ratio_norm_log_ratio(MEAN, OLD, NEXT, torch.zeros(2, 1))


def test_float64_inputs_give_float32_like_the_update():
    """The update's arithmetic is float32 whatever the schedule's or the step's dtype."""
    double = ratio_norm_log_ratio(MEAN.double(), OLD.double(), NEXT.double(), STD.double(), shift="batch")
    assert double.dtype == torch.float32
    assert ratio_norm_log_ratio(MEAN, OLD, NEXT, 0.5).dtype == torch.float32
    for sigma, sigma_next in ((torch.tensor(1.0, dtype=torch.float64), 0.75), (1.0, torch.tensor(0.75).double())):
        assert step_reweight(sigma, sigma_next).dtype == torch.float32


def test_step_reweight_is_one_over_the_sigma_gap():
    torch.testing.assert_close(step_reweight(1.0, 0.75), torch.tensor(4.0))
    torch.testing.assert_close(
        step_reweight(torch.tensor([0.5, 0.3]), torch.tensor([0.4, 0.0])), torch.tensor([10.0, 1 / 0.3])
    )
    with pytest.raises(ValueError, match="sigma > sigma_next"):
        step_reweight(0.3, 0.3)

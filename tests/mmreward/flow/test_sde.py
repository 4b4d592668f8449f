"""SDE step with log-probability: parity with formulas derived here, on a real diffusers sigma grid.

Derivations (notation of mmreward.flow.sde: sigma = t, dt = sigma_next - sigma < 0, velocity v = eps - x0):

Flow-SDE. The SDE ``dx = [v + s_t^2 / (2t) (x + (1 - t) v)] dt + s_t dw`` has the same marginals as the ODE
``dx = v dt`` (Flow-GRPO, appendix). One Euler-Maruyama step gives a Gaussian with
    mean = x + dt * v + dt * s^2 / (2 sigma) * (x + (1 - sigma) v)
         = x * (1 + s^2 dt / (2 sigma)) + v * (1 + s^2 (1 - sigma) / (2 sigma)) * dt      (rearranged below)
    std  = s * sqrt(-dt),   s = a * sqrt(sigma / (1 - sigma)), with 1 - sigma_next in the denominator at sigma = 1.
Dance-SDE (DanceGRPO) writes the mean through the score of x_t: with x0_hat = x - sigma v,
    score = -(x - (1 - sigma) x0_hat) / sigma^2,   mean = x + dt * v - 0.5 * eta^2 * score * dt,  std = eta sqrt(-dt).
    Since x - (1 - sigma) x0_hat = sigma (x + (1 - sigma) v), this is the Flow-SDE mean with s = eta (constant).
CPS: std = sigma_next * sin(a pi / 2), mean = (1 - sigma_next) x0_hat + sqrt(sigma_next^2 - std^2) x1_hat with
    x1_hat = x + (1 - sigma) v; at a = 0 it is (1 - sigma_next) x0_hat + sigma_next x1_hat = x + dt v (Euler).
Log-probability: the density of N(mean, std^2) at the next sample, averaged over the non-batch elements,
computed independently with torch.distributions.Normal.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from mmreward.flow.sde import gaussian_log_prob, sde_step

NUM_STEPS = 10


@pytest.fixture(scope="module")
def grid() -> tuple[torch.Tensor, torch.Tensor]:
    """SD3's shifted grid: timesteps and sigmas (num_steps + 1 values, 1 down to 0)."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(NUM_STEPS)
    assert scheduler.sigmas[0] == 1.0 and scheduler.sigmas[-1] == 0.0
    return scheduler.timesteps, scheduler.sigmas


def _tensors(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def _expected_flow(x, v, sigma, sigma_next, a, sigma_second):
    denominator = 1 - (sigma_second if sigma == 1 else sigma)
    s = a * math.sqrt(sigma / denominator)
    dt = sigma_next - sigma
    mean = x * (1 + s**2 * dt / (2 * sigma)) + v * (1 + s**2 * (1 - sigma) / (2 * sigma)) * dt
    return mean, s * math.sqrt(-dt)


def _normal_log_prob(sample, mean, std):
    per_element = torch.distributions.Normal(mean.double(), torch.as_tensor(std, dtype=torch.float64)).log_prob(
        sample.double()
    )
    return per_element.mean(dim=tuple(range(1, sample.ndim)))


@pytest.mark.parametrize("shape", [(2, 16, 8, 8), (2, 16, 3, 8, 8)], ids=["image", "video"])
@pytest.mark.parametrize("i", range(NUM_STEPS))
def test_flow_sde_matches_the_formula_at_every_step(grid, shape, i):
    _, sigmas = grid
    x, v, next_sample = _tensors(shape, seed=i)
    sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
    out = sde_step(v, x, sigmas[i], sigmas[i + 1], noise_level=0.7, sde_type="flow", prev_sample=next_sample)
    mean, std = _expected_flow(x.double(), v.double(), sigma, sigma_next, 0.7, float(sigmas[1]))
    torch.testing.assert_close(out.mean.double(), mean, rtol=1e-5, atol=1e-5)
    assert out.std.shape == (shape[0],) + (1,) * (len(shape) - 1)
    torch.testing.assert_close(out.std.double().flatten(), torch.full((shape[0],), std, dtype=torch.float64))
    torch.testing.assert_close(out.log_prob.double(), _normal_log_prob(next_sample, mean, std), rtol=1e-5, atol=1e-5)
    assert out.prev_sample.dtype == torch.float32 and torch.equal(out.prev_sample, next_sample)


@pytest.mark.parametrize("i", [0, 4, NUM_STEPS - 1])
def test_dance_equals_flow_with_a_constant_diffusion_coefficient(grid, i):
    _, sigmas = grid
    x, v, next_sample = _tensors((3, 4, 8, 8), seed=10 + i)
    sigma, sigma_next, eta = float(sigmas[i]), float(sigmas[i + 1]), 0.3
    out = sde_step(v, x, sigma, sigma_next, noise_level=eta, sde_type="dance", prev_sample=next_sample)
    dt = sigma_next - sigma
    x0_hat = x.double() - sigma * v.double()
    score = -(x.double() - (1 - sigma) * x0_hat) / sigma**2
    mean = x.double() + dt * v.double() - 0.5 * eta**2 * score * dt  # DanceGRPO's score form
    torch.testing.assert_close(out.mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.std.flatten().double(), torch.full((3,), eta * math.sqrt(-dt), dtype=torch.float64))
    torch.testing.assert_close(
        out.log_prob.double(), _normal_log_prob(next_sample, mean, eta * math.sqrt(-dt)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("i", range(NUM_STEPS - 1))
def test_cps_matches_the_formula(grid, i):
    _, sigmas = grid
    x, v, next_sample = _tensors((2, 16, 2, 8, 8), seed=20 + i)
    sigma, sigma_next, a = float(sigmas[i]), float(sigmas[i + 1]), 0.8
    out = sde_step(v, x, sigma, sigma_next, noise_level=a, sde_type="cps", prev_sample=next_sample)
    std = sigma_next * math.sin(a * math.pi / 2)
    x0_hat, x1_hat = x.double() - sigma * v.double(), x.double() + (1 - sigma) * v.double()
    mean = (1 - sigma_next) * x0_hat + math.sqrt(sigma_next**2 - std**2) * x1_hat
    torch.testing.assert_close(out.mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.log_prob.double(), _normal_log_prob(next_sample, mean, std), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("i", [0, NUM_STEPS - 3])  # 2 std^2 = 1.67 and 0.14: both far from 1
def test_cps_surrogate_is_the_squared_error_and_scales_the_log_ratio_by_two_variances(grid, i):
    """Flow-GRPO's and Adv-GRPO's CPS code trains on ``-mean((x' - mean)^2)``. Against the Gaussian log-density
    with the same std, log-ratios (and gradients in the mean) differ by the factor ``2 std^2``."""
    _, sigmas = grid
    x, v, next_sample = _tensors((2, 4, 8, 8), seed=40 + i)
    sigma, sigma_next, a = float(sigmas[i]), float(sigmas[i + 1]), 0.8
    kwargs = {"noise_level": a, "sde_type": "cps", "prev_sample": next_sample}
    out = sde_step(v, x, sigma, sigma_next, log_prob_kind="surrogate", **kwargs)
    expected = -((next_sample.double() - out.mean.double()) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.log_prob.double(), expected, rtol=1e-6, atol=1e-7)
    shifted = v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i))
    surrogate = sde_step(shifted, x, sigma, sigma_next, log_prob_kind="surrogate", **kwargs).log_prob - out.log_prob
    gaussian = (
        sde_step(shifted, x, sigma, sigma_next, log_prob_kind="gaussian", **kwargs).log_prob
        - sde_step(v, x, sigma, sigma_next, log_prob_kind="gaussian", **kwargs).log_prob
    )
    two_var = 2 * (sigma_next * math.sin(a * math.pi / 2)) ** 2
    torch.testing.assert_close(surrogate.double(), two_var * gaussian.double(), rtol=1e-3, atol=1e-7)
    assert not torch.allclose(surrogate, gaussian, rtol=0.1)
    with pytest.raises(ValueError, match="unknown log_prob_kind"):
        sde_step(v, x, sigma, sigma_next, log_prob_kind="mse", **kwargs)


def test_last_cps_step_is_deterministic_and_has_no_log_prob(grid):
    _, sigmas = grid
    x, v, _ = _tensors((2, 4, 8, 8))
    out = sde_step(v, x, sigmas[-2], sigmas[-1], noise_level=0.8, sde_type="cps")
    assert out.log_prob is None and torch.all(out.std == 0)
    torch.testing.assert_close(out.prev_sample, x - float(sigmas[-2]) * v)  # x0_hat


@pytest.mark.parametrize("sde_type", ["ode", "flow", "dance", "cps"])
def test_zero_noise_is_the_diffusers_euler_step_without_log_prob(grid, sde_type):
    timesteps, sigmas = grid
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(NUM_STEPS)
    x, v, _ = _tensors((2, 4, 8, 8), seed=3)
    for i in range(NUM_STEPS):
        euler = scheduler.step(v, timesteps[i], x, return_dict=False)[0]
        out = sde_step(v, x, sigmas[i], sigmas[i + 1], noise_level=0.0, sde_type=sde_type)
        torch.testing.assert_close(out.prev_sample, euler, rtol=1e-6, atol=1e-6)
        assert out.log_prob is None
        x = euler


def test_drawn_noise_has_the_stated_mean_and_std(grid):
    _, sigmas = grid
    x, v, _ = _tensors((4, 16, 32, 32), seed=5)
    out = sde_step(v, x, sigmas[2], sigmas[3], noise_level=0.7, generator=torch.Generator().manual_seed(0))
    z = (out.prev_sample - out.mean) / out.std
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02
    again = sde_step(v, x, sigmas[2], sigmas[3], noise_level=0.7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.prev_sample, out.prev_sample)


def test_bf16_inputs_are_computed_in_float32_and_gradients_reach_the_mean(grid):
    _, sigmas = grid
    x, v, next_sample = _tensors((2, 4, 8, 8), seed=7)
    v = v.to(torch.bfloat16).requires_grad_(True)
    out = sde_step(v, x.to(torch.bfloat16), sigmas[0], sigmas[1], noise_level=0.7, prev_sample=next_sample)
    assert out.mean.dtype == out.log_prob.dtype == torch.float32
    out.log_prob.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad.float()).all() and v.grad.abs().sum() > 0


def test_per_sample_sigmas_equal_separate_steps(grid):
    _, sigmas = grid
    x, v, next_sample = _tensors((2, 4, 8, 8), seed=8)
    both = sde_step(v, x, sigmas[[1, 5]], sigmas[[2, 6]], noise_level=0.7, prev_sample=next_sample)
    for row, i in enumerate((1, 5)):
        one = sde_step(
            v[row : row + 1],
            x[row : row + 1],
            sigmas[i],
            sigmas[i + 1],
            noise_level=0.7,
            prev_sample=next_sample[row : row + 1],
        )
        torch.testing.assert_close(both.log_prob[row : row + 1], one.log_prob)


def test_gaussian_log_prob_constant_term():
    """At the mean with std 1 the per-element log-density is -log sqrt(2 pi) = -0.918939."""
    zeros = torch.zeros(2, 3)
    torch.testing.assert_close(gaussian_log_prob(zeros, zeros, torch.ones(2, 1)), torch.full((2,), -0.9189385))


def test_bad_arguments_are_refused(grid):
    _, sigmas = grid
    x, v, _ = _tensors((2, 4, 8, 8))
    with pytest.raises(ValueError, match="unknown sde_type"):
        sde_step(v, x, 1.0, 0.5, noise_level=0.7, sde_type="sde")
    with pytest.raises(ValueError, match="sigma_next < sigma"):
        sde_step(v, x, 0.5, 0.6, noise_level=0.7)
    with pytest.raises(ValueError, match="same shape"):
        sde_step(v[:1], x, 1.0, 0.5, noise_level=0.7)
    with pytest.raises(ValueError, match="all stochastic or all deterministic"):
        sde_step(v, x, torch.tensor([0.5, 0.2]), torch.tensor([0.2, 0.0]), noise_level=0.8, sde_type="cps")

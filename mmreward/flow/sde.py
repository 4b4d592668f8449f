"""One reverse step of a rectified-flow sampler, as an SDE with a Gaussian log-probability (or plain Euler).

Convention (diffusers / SD3): ``x_t = (1 - t) x0 + t eps`` with ``t = sigma`` in [0, 1], ``sigma = 1`` is pure noise,
the model predicts the velocity ``v ~ eps - x0``, and sampling walks the sigma grid from 1 down to 0 with
``dt = sigma_next - sigma < 0``. Plain Euler is ``x' = x + dt * v``.

Stochastic samplers turn the ODE into an SDE with the same marginals, so each step is a Gaussian
``x' ~ N(mean, std^2)`` whose log-density the policy-gradient loops (Flow-GRPO, Pref-GRPO) differentiate:

``flow`` (Flow-GRPO, arXiv 2505.05470, eq. for ``dx = [v + s_t^2/(2t) (x + (1-t) v)] dt + s_t dw``):
    ``s = a * sqrt(sigma / (1 - sigma))``, ``mean = x + dt * [v + s^2 / (2 sigma) * (x + (1 - sigma) v)]``,
    ``std = s * sqrt(-dt)``. At ``sigma = 1`` the ratio is infinite; like Flow-GRPO the denominator then uses the
    next grid value (``1 - sigma_next``; Flow-GRPO's ``sigmas[1]``, which is ``sigma_next`` of the first step).
``dance`` (DanceGRPO): the same mean and std with a constant diffusion coefficient ``s = a`` (DanceGRPO writes the
    mean through the score ``-(x - (1 - sigma) x0_hat) / sigma^2``; it is algebraically the expression above).
``cps`` (Coefficients-Preserving Sampling, arXiv 2509.05952): ``std = sigma_next * sin(a pi / 2)``,
    ``x0_hat = x - sigma v``, ``x1_hat = x + (1 - sigma) v``,
    ``mean = (1 - sigma_next) x0_hat + sqrt(sigma_next^2 - std^2) x1_hat``.
``ode``: plain Euler; a point mass has no density, so ``log_prob`` is None (as for any step whose std is 0:
    ``noise_level = 0``, or the last CPS step where ``sigma_next = 0``).

``log_prob`` (``log_prob_kind="gaussian"``) is the Gaussian log-density of ``prev_sample`` *averaged* over the
non-batch elements (what Flow-GRPO and Pref-GRPO use for the flow SDE, so that ``exp(logp_new - logp_old)`` stays
near 1 and PPO clip ranges of 1e-4 make sense): ``mean_elems[-(x' - mean)^2 / (2 std^2) - log std - log sqrt(2 pi)]``,
with ``prev_sample`` detached so gradients reach only the mean. ``log_prob_kind="surrogate"`` is what Flow-GRPO's
and Adv-GRPO's CPS code (``sde_step_with_logprob`` with ``sde_type='cps'``, ``sde_step_with_logprob_new``) train on:
``mean_elems[-(x' - mean)^2]``, no variance and no constants. With the same std on both sides of a ratio, the
surrogate's log-ratio is the Gaussian one times ``2 std^2`` (its gradient with respect to the mean likewise), so a
clip range ``eps`` on the surrogate ratio equals a clip range ``eps / (2 std^2)`` on the Gaussian one: for CPS
(``std = sigma_next sin(a pi / 2)``, a = 0.8) ``2 std^2 = 1.81 sigma_next^2``, 1.47 at ``sigma_next = 0.9``, 0.16 at
``sigma_next = 0.3``.

All arithmetic is float32 whatever the input dtype (bf16 overflows in the mean; Flow-GRPO makes the same cast).
Works for image latents ``(B, C, H, W)``, video latents ``(B, C, T, H, W)`` and packed latents ``(B, L, D)``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from diffusers.utils.torch_utils import randn_tensor

SDEType = Literal["flow", "dance", "cps", "ode"]
SDE_TYPES = ("flow", "dance", "cps", "ode")
LogProbKind = Literal["gaussian", "surrogate"]
LOG_PROB_KINDS = ("gaussian", "surrogate")

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class SDEStep(NamedTuple):
    """Result of :func:`sde_step`; tensors are float32.

    prev_sample: the next sample ``x'`` (drawn, or the one passed in), shaped like ``sample``.
    mean: the step's mean, shaped like ``sample`` (carries gradients from ``velocity``).
    std: the full standard deviation of the step's noise, ``(B, 1, ..., 1)``; zeros for deterministic steps.
    log_prob: ``(B,)`` per-element mean Gaussian log-density of ``prev_sample`` (or the CPS surrogate
        ``-mean((x' - mean)^2)``); None for deterministic steps.
    """

    prev_sample: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    log_prob: torch.Tensor | None


def _per_sample(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A scalar or ``(B,)`` sigma -> float32 ``(B or 1, 1, ..., 1)`` broadcastable against ``like``."""
    value = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] not in (1, like.shape[0])):
        raise ValueError(f"sigma must be a scalar or have one value per sample ({like.shape[0]}); got {value.shape}")
    return value.reshape(-1, *([1] * (like.ndim - 1)))


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(B,)`` Gaussian log-density of ``sample`` under ``N(mean, std^2)``, averaged over the non-batch elements.

    ``sample`` is detached (the log-probability is a function of the policy's mean, not of the drawn sample).
    """
    sample = sample.detach().float()
    mean = mean.float()
    std = std.float()
    per_element = -((sample - mean) ** 2) / (2 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    return per_element.mean(dim=tuple(range(1, per_element.ndim)))


def surrogate_log_prob(sample: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``(B,)`` ``-mean((sample - mean)^2)`` over the non-batch elements, ``sample`` detached: the CPS recipes'
    stand-in for the log-density (Flow-GRPO / Adv-GRPO "remove all constants"); ``2 std^2`` times the Gaussian
    log-density up to a constant."""
    per_element = -((sample.detach().float() - mean.float()) ** 2)
    return per_element.mean(dim=tuple(range(1, per_element.ndim)))


def sde_step(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_next: float | torch.Tensor,
    *,
    noise_level: float,
    sde_type: SDEType = "flow",
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    log_prob_kind: LogProbKind = "gaussian",
) -> SDEStep:
    """One step from ``sigma`` to ``sigma_next`` (see the module docstring for the formulas).

    Args:
        velocity: the model's velocity at ``(sample, sigma)``, shaped like ``sample``.
        sample: the current latents ``x``.
        sigma, sigma_next: current and next noise level, floats or ``(B,)`` tensors, ``sigma_next < sigma``.
        noise_level: ``a`` in the formulas (Flow-GRPO: 0.7 for SD3.5, 0.9 for FLUX; CPS: 0.8); ignored for ``ode``.
        sde_type: ``"flow"``, ``"dance"``, ``"cps"`` or ``"ode"``.
        prev_sample: evaluate the log-probability of this given next sample instead of drawing one (training:
            the latents stored at rollout time).
        generator: random generator(s) for the drawn noise (one per sample for batch-independent noise).
        log_prob_kind: ``"gaussian"`` (the log-density) or ``"surrogate"`` (``-mean((x' - mean)^2)``, the CPS
            recipes'); see the module docstring for how the two ratios relate.
    """
    if sde_type not in SDE_TYPES:
        raise ValueError(f"unknown sde_type {sde_type!r}; use one of {', '.join(SDE_TYPES)}")
    if log_prob_kind not in LOG_PROB_KINDS:
        raise ValueError(f"unknown log_prob_kind {log_prob_kind!r}; use one of {', '.join(LOG_PROB_KINDS)}")
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if velocity.shape != sample.shape:
        raise ValueError(f"velocity {tuple(velocity.shape)} and sample {tuple(sample.shape)} must have the same shape")
    # bf16 overflows in the mean (x * s^2 / sigma terms): all arithmetic in float32.
    v = velocity.float()
    x = sample.float()
    s_cur = _per_sample(sigma, x)
    s_next = _per_sample(sigma_next, x)
    if bool((s_next >= s_cur).any()) or bool((s_cur > 1).any()) or bool((s_next < 0).any()):
        raise ValueError("sigmas must satisfy 0 <= sigma_next < sigma <= 1 (sampling runs from noise to data)")
    dt = s_next - s_cur  # < 0

    if sde_type == "ode":
        mean = x + dt * v
        std = torch.zeros_like(s_cur)
    elif sde_type in ("flow", "dance"):
        if sde_type == "flow":
            denominator = 1 - torch.where(s_cur == 1, s_next, s_cur)
            diffusion = noise_level * torch.sqrt(s_cur / denominator)
        else:
            diffusion = torch.full_like(s_cur, noise_level)
        mean = x + dt * (v + diffusion**2 / (2 * s_cur) * (x + (1 - s_cur) * v))
        std = diffusion * torch.sqrt(-dt)
    else:  # cps
        std = s_next * math.sin(noise_level * math.pi / 2)
        x0_hat = x - s_cur * v
        x1_hat = x + (1 - s_cur) * v
        mean = (1 - s_next) * x0_hat + torch.sqrt(s_next**2 - std**2) * x1_hat

    std = std.expand(x.shape[0], *std.shape[1:])
    deterministic = std == 0
    if bool(deterministic.any()) and not bool(deterministic.all()):
        raise ValueError(
            "some samples of this step are deterministic (std 0) and others are not; a batch must be all "
            "stochastic or all deterministic (split the batch, or avoid sigma_next = 0 with sde_type='cps')"
        )
    if prev_sample is None:
        if bool(deterministic.all()):
            prev_sample = mean
        else:
            noise = randn_tensor(tuple(x.shape), generator=generator, device=x.device, dtype=torch.float32)
            prev_sample = mean + std * noise
    else:
        if prev_sample.shape != x.shape:
            raise ValueError(f"prev_sample {tuple(prev_sample.shape)} must be shaped like sample {tuple(x.shape)}")
        prev_sample = prev_sample.float()
    if bool(deterministic.all()):
        log_prob = None
    elif log_prob_kind == "surrogate":
        log_prob = surrogate_log_prob(prev_sample, mean)
    else:
        log_prob = gaussian_log_prob(prev_sample, mean, std)
    return SDEStep(prev_sample=prev_sample, mean=mean, std=std, log_prob=log_prob)

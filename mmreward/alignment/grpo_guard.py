"""GRPO-Guard's regulated clipping (Wang et al. 2025, arXiv 2510.22319): RatioNorm and the per-step gradient
reweighting, as pure functions of one denoising step. Pref-GRPO's ``--rationorm`` is the same computation.

The authors' code (Flow-GRPO repository, ``scripts/train_sd3_GRPO_Guard.py`` with ``config.rationorm``; Pref-GRPO
``fastvideo/train_flux.py --rationorm``) forms, for a step with noise scale ``s = sqrt(-dt) sigma_t`` (the step's
full standard deviation) and the rollout's mean ``mu_old`` of that step,

    log r = s * (logp - logp_old + mean((mu - mu_old)^2) / (2 s^2))        ratio = exp(log r)
    loss  = max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)) / (-dt)

Why: with ``x' = mu_old + s z`` (``z`` the step's standard noise) the Gaussian log-ratio is
``-mean((mu - mu_old)^2) / (2 s^2) - mean((mu_old - mu) z) / s``. Its first term is never positive, so the ratio's
mean sits below 1 and clipping misses over-confident positive-advantage samples; both terms grow as ``s`` shrinks,
so late (low-noise) steps have the widest ratios. Adding the mean-shift term back and multiplying by ``s`` leaves

    log r = mean((mu - mu_old) (x' - mu_old)) / s = mean((mu - mu_old) z)

(expand ``(x' - mu_old)^2 - (x' - mu)^2 = (mu - mu_old)(2 x' - mu - mu_old)``): centred on 0 under the rollout's
noise, with one scale at every step. :func:`ratio_norm_log_ratio` computes this closed form (no difference of two
large log-densities); it is the reference's expression exactly for the Gaussian log-density, and for the CPS
surrogate too, since it never reads a log-probability (the references ship RatioNorm with the flow SDE only).

Where the two references differ: Pref-GRPO's mean-shift term is per sample, as above. GRPO-Guard's code averages it
over its dims ``range(1, log_prob.ndim)``, which is empty for the ``(B,)`` log-probability, and ``mean(dim=())``
reduces every dim: each sample gets the micro-batch's mean shift ``b_mean``, i.e.
``log r_i = mean((mu_i - mu_old_i) z_i) + s (b_mean - b_i)`` with ``b_i = mean((mu_i - mu_old_i)^2) / (2 s^2)``.
``shift="sample"`` (default) is the derivation's and Pref-GRPO's; ``shift="batch"`` reproduces GRPO-Guard's code
(with its micro-batches: ``train.micro_batch_size`` = its ``train.batch_size``).

The gradient of ``log r`` with respect to the velocity scales with ``d mu / d v``, proportional to ``dt``; dividing the
step's loss by ``-dt`` (:func:`step_reweight`) gives every step the same weight in the update.
"""

from __future__ import annotations

from typing import Literal

import torch

RatioNormShift = Literal["sample", "batch"]
RATIO_NORM_SHIFTS = ("sample", "batch")


def ratio_norm_log_ratio(
    mean: torch.Tensor,
    old_mean: torch.Tensor,
    prev_sample: torch.Tensor,
    std: torch.Tensor,
    shift: RatioNormShift = "sample",
) -> torch.Tensor:
    """``(B,)`` RatioNorm's log-ratio ``mean_elems((mean - old_mean) * (prev_sample - old_mean)) / std``, float32.

    ``mean``: the step's mean under the current policy (carries the gradient); ``old_mean``, ``prev_sample``: the
    rollout's mean and drawn next latents (detached), shaped like ``mean``; ``std``: the step's standard deviation,
    ``(B, 1, ..., 1)`` or a scalar. Equals ``std * (logp - logp_old + mean((mean - old_mean)^2) / (2 std^2))`` for the
    Gaussian log-density (module docstring). ``shift="batch"``: the mean-shift term is the batch's mean, as
    GRPO-Guard's code (module docstring); it adds ``std * (b_mean - b_i)``.
    """
    if shift not in RATIO_NORM_SHIFTS:
        raise ValueError(f"shift must be one of {', '.join(RATIO_NORM_SHIFTS)}, got {shift!r}")
    if not mean.shape == old_mean.shape == prev_sample.shape:
        raise ValueError(
            f"mean {tuple(mean.shape)}, old_mean {tuple(old_mean.shape)} and prev_sample {tuple(prev_sample.shape)} "
            "must have the same shape"
        )
    std = torch.as_tensor(std, dtype=torch.float32, device=mean.device)
    if bool((std <= 0).any()):
        raise ValueError("RatioNorm needs a stochastic step (std > 0); a deterministic step has no ratio")
    old_mean = old_mean.detach().float()
    delta = mean.float() - old_mean
    dims = tuple(range(1, delta.ndim))
    log_ratio = (delta * (prev_sample.detach().float() - old_mean) / std).mean(dim=dims)
    if shift == "batch":
        std_b = std.reshape(-1)  # (B,) or (1,): the step's std per sample
        shifts = (delta**2).mean(dim=dims) / (2 * std_b**2)  # (B,) b_i
        log_ratio = log_ratio + std_b * (shifts.mean() - shifts)
    return log_ratio


def step_reweight(sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
    """GRPO-Guard's weight of a step's policy loss, ``1 / (sigma - sigma_next)`` (``1 / sqrt(-dt)^2`` in the
    reference), float32; e.g. 10 steps on SD3.5's shift-3 grid: 25.1 at the first step (sigma 1 -> 0.960), 3.7 at
    the ninth (0.278 -> 0.009)."""
    gap = torch.as_tensor(sigma, dtype=torch.float32) - torch.as_tensor(sigma_next, dtype=torch.float32)
    if bool((gap <= 0).any()):
        raise ValueError(f"a denoising step needs sigma > sigma_next, got {sigma} -> {sigma_next}")
    return 1.0 / gap

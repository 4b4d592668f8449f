"""The rectified-flow forward process used by training losses: noise draws, noisy latents, velocity targets.

``x_t = (1 - sigma) x0 + sigma eps`` and the velocity target ``eps - x0`` (the diffusers / SD3 convention). Noise
levels are drawn logit-normally (SD3, arXiv 2403.03206, section 3.1: ``u = sigmoid(n)``, ``n ~ N(m, s^2)``), which
puts most training signal at intermediate noise.
"""

from __future__ import annotations

import torch


def logit_normal(
    n: int, *, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(n,)`` float32 draws ``sigmoid(N(mean, std^2))`` in (0, 1), on the CPU (move them where needed)."""
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator))


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 - sigma) x0 + sigma * noise``, with ``sigma`` of shape ``(B,)`` broadcast over the rest."""
    sigma = sigma.to(x0.device, torch.float32).reshape(-1, *([1] * (x0.ndim - 1)))
    return (1 - sigma) * x0.float() + sigma * noise.float()


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching regression target ``noise - x0`` (float32)."""
    return noise.float() - x0.float()

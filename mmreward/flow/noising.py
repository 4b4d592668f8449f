"""The rectified-flow forward process used by training losses: noise draws, noisy latents, velocity targets.

``x_t = (1 - sigma) x0 + sigma eps`` and the velocity target ``eps - x0`` (the diffusers / SD3 convention). Noise
levels are drawn logit-normally (SD3, arXiv 2403.03206, section 3.1: ``u = sigmoid(n)``, ``n ~ N(m, s^2)``), which
puts most training signal at intermediate noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def per_sample_noise(
    generators: Sequence[torch.Generator],
    shape: Sequence[int],
    level: Callable[[torch.Generator], torch.Tensor],
    sides: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, from its own generator: a noise level ``u = level(g)`` (one number), then ``sides`` Gaussian
    noise tensors of ``shape`` (the two sides of a pair share the level). Returns ``u (B,)`` and noise
    ``(sides, B, *shape)``. A sample's draws do not depend on how the batch is split across processes; every
    level is drawn before any noise, so the draws of a generator come in a fixed order."""
    u = torch.cat([level(g) for g in generators])
    noise = torch.stack([torch.randn(sides, *shape, generator=g) for g in generators], dim=1)
    return u, noise

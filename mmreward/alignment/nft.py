"""DiffusionNFT: online reinforcement learning of a flow model on the forward process (Zheng et al. 2025,
"DiffusionNFT: Online Diffusion Reinforcement with Forward Process", arXiv 2509.16117; reference code
NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py``).

No likelihoods and no SDE: samples come from any sampler (ODE by default) of the *old* policy ``v_old``; each is
rewarded, and its reward becomes an optimality probability ``r`` in [0, 1] within its prompt's group
(:func:`optimality_probabilities`). Training re-noises the clean samples, ``x_t = (1 - t) x0 + t eps``, and fits the
paper's two implicit policies, built from the old and the trained velocity (:func:`implicit_velocities`):

    v+ = (1 - beta) v_old + beta v_theta        (the positive policy: should reproduce good samples)
    v- = (1 + beta) v_old - beta v_theta        (the negative policy: should reproduce bad samples)

with the negative-aware loss :func:`nft_loss` (the paper's objective with the reference's adaptive x0 weighting)

    L = adv_clip_max / beta * mean_i [ r_i ||x0+_i - x0_i||^2_w + (1 - r_i) ||x0-_i - x0_i||^2_w ]

where ``x0+- = x_t - t v+-`` and ``||e||^2_w = mean(e^2) / sg(mean|e|)`` (the reference's per-sample adaptive
weight, clipped below at 1e-5). Moving ``v_theta`` along ``v+ - v_old`` pulls good samples in and pushes bad
ones out: the implied policy improvement direction is ``(2r - 1)`` times the flow-matching direction. After each
iteration the old policy moves toward the trained one, ``old <- decay old + (1 - decay) theta``, with the
reference's warm-up schedule of ``decay`` (:func:`old_policy_decay`); :class:`OldPolicy` keeps the old adapter as a
snapshot of the LoRA weights (adapter-sized memory, no second model), :class:`FrozenOldPolicy` the old weights of a
full fine-tuning run as a frozen copy of the transformer (sharded like the trained one under FSDP2).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch

from mmreward.alignment.advantages import Advantages, group_advantages
from mmreward.errors import ConfigError
from mmreward.flow.models import FlowModel, PromptEmbeds
from mmreward.flow.noising import noisy_latents
from mmreward.train.lora import LoraReference
from mmreward.train.policy import FrozenReference, Policy

# The reference's decay_type presets: (flat steps, rate per optimizer step, cap); config/nft.py uses 1 for GenEval,
# PickScore, HPSv2 and the multi-reward run, 2 for OCR.
OLD_DECAY_PRESETS: dict[int, tuple[int, float, float]] = {0: (0, 0.0, 0.0), 1: (0, 0.001, 0.5), 2: (75, 0.0075, 0.999)}
WEIGHT_FLOOR = 1e-5  # the reference's clip(min=0.00001) on the adaptive weight


def optimality_probabilities(advantages: torch.Tensor, clip_max: float) -> torch.Tensor:
    """``r = clamp(clamp(A, -c, c) / c / 2 + 1/2, 0, 1)`` with ``c = clip_max``: advantage ``-c`` maps to 0 (surely
    bad), 0 to 1/2, ``+c`` to 1 (surely good) -- the reference's ``normalized_advantages_clip``."""
    if clip_max <= 0:
        raise ConfigError(f"the advantage clip (loss.adv_clip_max) must be > 0, got {clip_max}")
    clipped = advantages.float().clamp(-clip_max, clip_max)
    return (clipped / clip_max / 2.0 + 0.5).clamp(0.0, 1.0)


def group_optimality(
    rewards: torch.Tensor,
    groups: torch.Tensor,
    *,
    clip_max: float = 5.0,
    std: Literal["global", "group"] = "global",
    eps: float = 1e-4,
) -> tuple[Advantages, torch.Tensor]:
    """Rewards ``(n,)`` of samples in prompt ``groups`` ``(n,)`` to advantages and optimality probabilities ``(n,)``.

    As the reference (``PerPromptStatTracker(global_std=True)``, ``np.std``): ``A = (R - mean of the group) / (std +
    eps)`` with the standard deviation of all the iteration's rewards (ddof 0; ``std="group"``: the group's), then
    :func:`optimality_probabilities`. Every sample is trained, a constant group too (``r = 1/2`` keeps the policy
    near the old one); failed rewards (NaN) have ``keep`` False and must be left out of the loss.
    """
    adv = group_advantages(rewards, groups, std=std, ddof=0, eps=eps, clip=clip_max, drop_zero_groups=False)
    return adv, optimality_probabilities(adv.values, clip_max)


def implicit_velocities(v_theta: torch.Tensor, v_old: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's implicit positive and negative velocities (reference ``positive_prediction`` and
    ``implicit_negative_prediction``): ``v+ = (1 - beta) v_old + beta v_theta`` and ``v- = (1 + beta) v_old - beta
    v_theta``; ``v_old`` is treated as a constant. Their mean is ``v_old`` whatever ``v_theta`` is."""
    v_old = v_old.detach()
    return beta * v_theta + (1 - beta) * v_old, (1.0 + beta) * v_old - beta * v_theta


def adaptive_x0_error(x0_prediction: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``(B,)`` per-sample ``mean((x0_hat - x0)^2) / sg(max(mean|x0_hat - x0|, 1e-5))``: the reference's adaptive
    weighting, which divides each sample's squared error by its (gradient-free, float64) mean absolute error so every
    sample and noise level contributes on a similar scale."""
    dims = tuple(range(1, x0.ndim))
    error = x0_prediction - x0
    with torch.no_grad():
        weight = error.double().abs().mean(dim=dims, keepdim=True).clamp(min=WEIGHT_FLOOR)
    return (error**2 / weight).mean(dim=dims)


@dataclass
class NFTLoss:
    """``loss``: ``(B,)`` per-sample ``adv_clip_max / beta * (r pos + (1 - r) neg)`` (average it over samples);
    ``positive``/``negative``: ``(B,)`` the adaptive x0 errors of the implicit policies."""

    loss: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor


def nft_loss(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    x_t: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    r: torch.Tensor,
    *,
    beta: float,
    clip_max: float,
) -> NFTLoss:
    """DiffusionNFT's negative-aware loss on freshly noised samples (see the module docstring).

    Args:
        v_theta, v_old: ``(B, *latent)`` the trained and the old policy's velocity at ``(x_t, sigma)``.
        x_t: ``(B, *latent)`` ``(1 - sigma) x0 + sigma eps``; x0: ``(B, *latent)`` the clean samples.
        sigma: ``(B,)`` noise levels; r: ``(B,)`` optimality probabilities in [0, 1].
        beta: the implicit-policy step (reference ``config.beta``: 1, 0.1 for OCR and multi-reward);
        clip_max: the advantage clip, which the reference also multiplies the loss by.
    The arithmetic is float32 whatever the velocities' dtype.
    """
    if beta <= 0:
        raise ConfigError(f"the NFT beta (loss.beta) must be > 0, got {beta}")
    x0, x_t = x0.float(), x_t.float()
    t = sigma.float().reshape(-1, *([1] * (x0.ndim - 1)))
    positive_v, negative_v = implicit_velocities(v_theta.float(), v_old.float(), beta)
    positive = adaptive_x0_error(x_t - t * positive_v, x0)
    negative = adaptive_x0_error(x_t - t * negative_v, x0)
    r = r.float()
    loss = (r * positive / beta + (1.0 - r) * negative / beta) * clip_max
    return NFTLoss(loss, positive, negative)


def training_step_indices(num_steps: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``(count,)`` distinct indices into the sampling grid's ``num_steps`` noise levels, in random order (the
    reference trains each sample at the first ``int(num_steps * timestep_fraction)`` of a permutation of its
    sampling timesteps, a fresh noise each)."""
    if not 1 <= count <= num_steps:
        raise ConfigError(f"cannot train {count} of {num_steps} sampling steps; need 1 <= count <= num_steps")
    return torch.randperm(num_steps, generator=generator)[:count]


def old_policy_decay(optimizer_steps: int, *, flat: int, rate: float, cap: float) -> float:
    """The weight of the old policy in ``old <- decay old + (1 - decay) theta`` after ``optimizer_steps`` optimizer
    steps (reference ``return_decay``): 0 for the first ``flat`` steps (the old policy is the current one), then
    ``min((steps - flat) rate, cap)``. Decay 0 makes the method on-policy; a growing decay slows the old policy
    down as training goes on."""
    if optimizer_steps < flat:
        return 0.0
    return min((optimizer_steps - flat) * rate, cap)


def check_decay(flat: int, rate: float, cap: float) -> None:
    """Errors in an old-policy schedule, named by their config keys."""
    if flat < 0 or rate < 0:
        raise ConfigError(f"loss.old_decay_flat and loss.old_decay_rate must be >= 0, got {flat} and {rate}")
    if not 0.0 <= cap < 1.0:
        raise ConfigError(f"loss.old_decay_max must be in [0, 1) (1 would freeze the old policy), got {cap}")


class OldPolicy(LoraReference):
    """The old policy ``v_old`` of a LoRA run: a snapshot of the adapter weights, swapped in by :meth:`active`
    (inherited), that starts equal to the live adapter and follows it with :meth:`follow` (the reference keeps a
    second peft adapter "old"; a snapshot costs the same memory and needs no adapter switching)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.refresh()

    def follow(self, decay: float) -> None:
        """``old <- decay old + (1 - decay) theta`` for every adapter tensor."""
        with torch.no_grad():
            for name, param in self.params.items():
                self.snapshot[name].lerp_(param.detach().to(self.snapshot[name].dtype), 1.0 - decay)


class FrozenOldPolicy(FrozenReference):
    """The old policy of a full fine-tuning run: a frozen copy of the initial transformer (``Policy.frozen_copy``),
    swapped into the flow model by :meth:`active` (inherited), following the trained weights with :meth:`follow`.
    Under FSDP2 the copy is sharded exactly like the trained module, so each process holds and moves only its own
    1/N of it (the lerp is elementwise on matching shards)."""

    def follow(self, decay: float) -> None:
        """``old <- decay old + (1 - decay) theta`` for every transformer weight."""
        with torch.no_grad():
            for old, param in zip(self.frozen.parameters(), self.live.parameters(), strict=True):
                old.lerp_(param.detach(), 1.0 - decay)


def old_policy(policy: Policy) -> OldPolicy | FrozenOldPolicy:
    """The old policy of ``policy``: a snapshot of the adapter (LoRA), or of the full weights when
    :func:`mmreward.train.policy.load_policy` was asked for a frozen copy (``model.train: full``)."""
    if policy.frozen_copy is not None:
        return FrozenOldPolicy(policy.model, policy.frozen_copy, policy.unwrapped)
    if policy.train_mode != "lora":
        raise ConfigError("a full fine-tuning policy needs load_policy(..., frozen_copy=True) for its old policy")
    return OldPolicy(policy.unwrapped)


@dataclass
class LevelLoss:
    """One noise level of an NFT update, per sample ``(B,)``: ``total`` (the NFT loss plus ``kl_beta`` x ``kl``, to
    be averaged), the NFT loss's parts ``nft``, the KL ``kl = mean (v_theta - v_base)^2`` (0 when not computed) and
    ``deviation = mean (v_theta - v_old)^2`` (gradient-free, the reference's ``old_deviate``)."""

    total: torch.Tensor
    nft: NFTLoss
    kl: torch.Tensor
    deviation: torch.Tensor


def level_loss(
    model: FlowModel,
    x0: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    cond: PromptEmbeds,
    r: torch.Tensor,
    *,
    old: OldPolicy | FrozenOldPolicy,
    reference: LoraReference | FrozenReference | None,
    transformer: torch.nn.Module,
    beta: float,
    clip_max: float,
    kl_beta: float,
    guidance: float,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> LevelLoss:
    """The reference's training step at one noise level (one ``j_idx`` of its loop): ``x_t = (1 - sigma) x0 + sigma
    noise``, the old policy's velocity (no gradient), the base model's (``reference``, read only when ``kl_beta > 0``)
    and the trained one through ``transformer`` (the graph the caller back-propagates), then :func:`nft_loss`.

    ``x0``/``noise``: ``(B, *latent)``; ``sigma``, ``r``: ``(B,)``; ``guidance``: the conditioning the velocity is
    trained at (1 for CFG families: NFT trains without CFG; FLUX.1-dev: its guidance embedding). ``autocast`` gives
    the mixed-precision context of every forward."""
    x_t = noisy_latents(x0, noise, sigma)
    with old.active(), autocast():
        v_old = model.velocity(x_t, sigma, cond, guidance_scale=guidance)
    v_ref = None
    if kl_beta > 0:
        if reference is None:
            raise ConfigError("loss.kl_beta > 0 needs the base model: load the policy with needs_reference=True")
        with reference.active(), autocast():
            v_ref = model.velocity(x_t, sigma, cond, guidance_scale=guidance)
    with autocast():
        v = model.velocity(x_t, sigma, cond, guidance_scale=guidance, transformer=transformer)
    out = nft_loss(v, v_old, x_t, x0, sigma, r, beta=beta, clip_max=clip_max)
    dims = tuple(range(1, v.ndim))
    kl = torch.zeros_like(out.loss)
    if v_ref is not None:
        kl = ((v.float() - v_ref.float()) ** 2).mean(dim=dims)
    deviation = ((v.detach().float() - v_old.float()) ** 2).mean(dim=dims)
    return LevelLoss(out.loss + kl_beta * kl, out, kl, deviation)

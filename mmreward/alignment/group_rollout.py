"""The rollout of a GRPO iteration: this process's slice of the ``P x G`` samples, drawn with the SDE sampler (with
per-step log-probabilities) from one seeded generator per sample, and decoded to the 8-bit media rewards see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from mmreward.alignment.layout import GroupLayout
from mmreward.errors import ConfigError
from mmreward.flow.models import FlowModel
from mmreward.flow.rollout import Rollout, random_sde_window, sample, seeded, sliding_sde_window
from mmreward.media import to_uint8


@dataclass
class SamplerConfig:
    """How a program samples from the generator while it trains: steps, CFG, the SDE and its noise (Flow-DPO's
    ``online.sampling:``; the sampling part of a GRPO program's ``rollout:``)."""

    num_steps: int = 10  # denoising steps of a training rollout (Flow-GRPO SD3.5: 10; evaluation uses more)
    guidance_scale: float = 4.5  # CFG (FLUX.1-dev: the guidance embedding)
    negative_prompt: str = ""
    sde_type: Literal["flow", "dance", "cps", "ode"] = "flow"  # ode: deterministic, no log-probabilities
    noise_level: float = 0.7  # a: 0.7 SD3.5 / Pref-GRPO, 0.9 FLUX, 0.8 CPS
    # what a CPS step's log-probability is: surrogate -mean((x' - mean)^2) (Flow-GRPO's and Adv-GRPO's CPS recipes;
    # its log-ratios are 2 std^2 x the Gaussian ones, so loss.clip_range bounds that scaled ratio) or gaussian
    cps_log_prob: Literal["surrogate", "gaussian"] = "surrogate"
    sde_window_size: int = 0  # 0: every step stochastic; k: a window of k SDE steps, the others ODE
    sde_window_range: list[int] = field(default_factory=list)  # [low, high) for the window; [] = all steps
    # where the window goes each iteration: random (a new random place, Flow-GRPO-Fast) or sliding (MixGRPO: from the
    # range's start, sde_window_stride steps later every sde_window_shift_every iterations; see sliding_sde_window)
    sde_window_schedule: Literal["random", "sliding"] = "random"
    sde_window_shift_every: int = 25  # sliding: iterations before the window moves (MixGRPO iters_per_group)
    sde_window_stride: int = 1  # sliding: steps it moves by (MixGRPO prog_overlap_step; its no-overlap mode: size)
    sde_window_roll_back: bool = True  # sliding: after the range's end start again (MixGRPO --roll_back); else stay
    batch_size: int = 8  # samples per transformer call


@dataclass
class RolloutConfig(SamplerConfig):
    """How training samples are drawn (the ``rollout:`` section of a GRPO program's config): the sampler and the
    ``P x G`` samples of an iteration."""

    sde_type: Literal["flow", "dance", "cps"] = "flow"  # GRPO trains on per-step log-probabilities: no ODE
    prompts_per_step: int = 48  # P, over all processes (Flow-GRPO SD3.5: 48 groups of 24 per epoch)
    group_size: int = 24  # G samples per prompt
    # the samples of a group start from one initial noise and differ only by the SDE noise (Pref-GRPO
    # --init_same_noise, Flow-GRPO sample.same_latent); false: one initial noise per sample
    same_noise: bool = False


def check_sampler_config(sampler: SamplerConfig, section: str) -> None:
    """Errors that can be found before any model loads; ``section`` names the config section in messages."""
    for name in ("num_steps", "batch_size"):
        if getattr(sampler, name) < 1:
            raise ConfigError(f"{section}.{name} must be >= 1, got {getattr(sampler, name)}")
    if sampler.sde_type != "ode" and sampler.noise_level <= 0:
        raise ConfigError(f"{section}.noise_level must be > 0 for a stochastic rollout, got {sampler.noise_level}")
    if sampler.cps_log_prob not in ("surrogate", "gaussian"):
        raise ConfigError(f"{section}.cps_log_prob must be surrogate or gaussian, got {sampler.cps_log_prob!r}")
    if sampler.sde_window_range and len(sampler.sde_window_range) != 2:
        raise ConfigError(f"{section}.sde_window_range must be [low, high], got {sampler.sde_window_range}")
    if sampler.sde_window_range and not sampler.sde_window_size:
        raise ConfigError(f"{section}.sde_window_range needs {section}.sde_window_size >= 1 (the window's length)")
    if sampler.sde_window_schedule not in ("random", "sliding"):
        raise ConfigError(
            f"{section}.sde_window_schedule must be random or sliding, got {sampler.sde_window_schedule!r}"
        )
    if sampler.sde_window_schedule == "sliding":
        if not sampler.sde_window_size:
            raise ConfigError(
                f"{section}.sde_window_schedule=sliding needs {section}.sde_window_size >= 1 (the window's length)"
            )
        for name in ("sde_window_shift_every", "sde_window_stride"):
            if getattr(sampler, name) < 1:
                raise ConfigError(f"{section}.{name} must be >= 1, got {getattr(sampler, name)}")
    if sampler.sde_window_size:
        low, high = sampler.sde_window_range or (0, sampler.num_steps)
        last = sampler.num_steps - 1 if sampler.sde_type == "cps" else sampler.num_steps
        if not 0 <= low < high <= last or sampler.sde_window_size > high - low:
            raise ConfigError(
                f"an SDE window of {sampler.sde_window_size} steps does not fit in [{low}, {high}) of "
                f"{sampler.num_steps} steps" + (" (CPS cannot use the last step)" if sampler.sde_type == "cps" else "")
            )


def check_rollout_config(rollout: RolloutConfig) -> None:
    """Errors that can be found before any model loads."""
    if rollout.prompts_per_step < 1:
        raise ConfigError(f"rollout.prompts_per_step must be >= 1, got {rollout.prompts_per_step}")
    check_sampler_config(rollout, "rollout")
    if rollout.group_size < 2:
        raise ConfigError(
            f"rollout.group_size must be >= 2 (advantages compare samples of a prompt), got {rollout.group_size}"
        )


@dataclass
class GroupBatch:
    """This process's share of an iteration's samples.

    Attributes:
        rollout: the samples with their stored steps (``N`` samples, in global order).
        index: ``(N,)`` global sample indices; ``group``: ``(N,)`` their prompt (group) indices.
        prompts: the iteration's ``P`` prompts (group ``g`` was drawn from ``prompts[g]``).
        media: ``(N, ...)`` uint8 decoded samples (what rewards see, like a saved 8-bit file).
        batch_size: samples per transformer call during the rollout (the on-policy diagnosis replays it).
        sources: editing families: the iteration's ``P`` source images (group ``g`` edits ``sources[g]``), or None.
    """

    rollout: Rollout
    index: torch.Tensor
    group: torch.Tensor
    prompts: list[str]
    media: torch.Tensor
    batch_size: int
    sources: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.index)


def rollout_window(rollout: SamplerConfig, iteration: int, seed: int) -> tuple[int, int] | None:
    """This iteration's SDE window: None (every step stochastic) or a window of ``sde_window_size`` steps, at a
    random place drawn the same on every process, or where MixGRPO's sliding schedule puts it at ``iteration``
    (:func:`mmreward.flow.rollout.sliding_sde_window`; a function of the iteration, so a resumed run continues it)."""
    if not rollout.sde_window_size:
        return None
    low, high = rollout.sde_window_range or (0, rollout.num_steps - (1 if rollout.sde_type == "cps" else 0))
    if rollout.sde_window_schedule == "sliding":
        return sliding_sde_window(
            iteration,
            rollout.sde_window_size,
            (low, high),
            shift_every=rollout.sde_window_shift_every,
            stride=rollout.sde_window_stride,
            roll_back=rollout.sde_window_roll_back,
        )
    return random_sde_window(
        rollout.num_steps, rollout.sde_window_size, (low, high), generator=seeded(seed, "sde-window", iteration)
    )


def group_initial_noise(shape: tuple[int, ...], groups: torch.Tensor, seed: int, iteration: int) -> torch.Tensor:
    """``shape = (N, *latent)`` float32 initial noise where every sample of a group gets the same draw, from a
    generator seeded by ``(seed, "group-noise", iteration, group)``: the same on any number of processes."""
    draws = {
        int(g): torch.randn(shape[1:], generator=seeded(seed, "group-noise", iteration, int(g)), dtype=torch.float32)
        for g in groups.unique()
    }
    return torch.stack([draws[int(g)] for g in groups])


def rollout_groups(
    model: FlowModel,
    prompts: Sequence[str],
    layout: GroupLayout,
    rollout: RolloutConfig,
    *,
    height: int,
    width: int,
    num_frames: int | None = None,
    iteration: int,
    seed: int,
    accelerator: Any,
    transformer: nn.Module | None = None,
    record_means: bool = False,
    sources: Sequence[torch.Tensor] | None = None,
) -> GroupBatch:
    """Sample this process's slice of the iteration with log-probabilities (no gradients), decoded for rewards.

    Sample ``i`` uses its own generator seeded by ``(seed, iteration, i)``, so the same run on any number of
    processes draws the same samples. With ``rollout.same_noise`` the initial noise of every sample of group ``g``
    comes from one generator seeded by ``(seed, iteration, g)`` (:func:`group_initial_noise`).
    ``transformer`` defaults to the model's own (the live policy weights). ``record_means`` keeps each stochastic
    step's mean in the rollout (``loss.ratio_norm`` needs it). ``sources``: editing families' source image of each
    of the iteration's prompts.
    """
    if len(prompts) != layout.prompts:
        raise ValueError(f"{len(prompts)} prompts for a layout of {layout.prompts}")
    index = layout.local_index()
    group = index // layout.group_size
    local_prompts = [prompts[int(g)] for g in group]
    latent_shape = model.latent_shape(len(index), height, width, num_frames)
    with accelerator.autocast():
        samples = sample(
            model,
            local_prompts,
            group_size=1,
            num_steps=rollout.num_steps,
            height=height,
            width=width,
            num_frames=num_frames,
            guidance_scale=rollout.guidance_scale,
            negative_prompt=rollout.negative_prompt,
            sde_type=rollout.sde_type,
            noise_level=rollout.noise_level,
            sde_window=rollout_window(rollout, iteration, seed),
            generator=[seeded(seed, "rollout", iteration, int(i)) for i in index],
            batch_size=rollout.batch_size,
            transformer=transformer,
            cps_log_prob=rollout.cps_log_prob,
            initial_noise=group_initial_noise(latent_shape, group, seed, iteration) if rollout.same_noise else None,
            record_means=record_means,
            sources=None if sources is None else [sources[int(g)] for g in group],
        )
    source_list = None if sources is None else list(sources)
    return GroupBatch(samples, index, group, list(prompts), to_uint8(samples.media), rollout.batch_size, source_list)

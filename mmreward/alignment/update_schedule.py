"""Which samples and denoising steps each micro-batch and optimizer step of a GRPO update trains: the policy
objective's settings (``loss:``) and :func:`update_schedule`, a pure function of the kept samples, the seed and the
batch settings, so the clipped update (:mod:`mmreward.alignment.clipped_update`) is a short loop over its result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from mmreward.alignment.grpo_guard import RATIO_NORM_SHIFTS
from mmreward.errors import ConfigError
from mmreward.flow.models import CFG_GRADS, FlowModel
from mmreward.flow.rollout import Rollout, seeded
from mmreward.train.sections import TrainConfig


@dataclass
class GRPOLossConfig:
    """The policy-gradient objective (``loss:``)."""

    # PPO clip on the per-step ratio (Flow-GRPO 1e-4; Fast/CPS 1e-5). Under CPS with rollout.cps_log_prob=surrogate
    # the ratio is exp(-mean (x' - mean)^2 + old), whose log is 2 std^2 x the Gaussian log-ratio: eps there equals
    # eps / (2 std^2) on the Gaussian ratio (see mmreward.flow.sde)
    clip_range: float = 1e-4
    kl_beta: float = 0.0  # weight of the KL to the reference (adapter disabled); 0 skips the reference pass
    kl_includes_dt: bool = False  # False: Flow-GRPO's KL (no step size, = -dt * KL); True: the true KL (Pref-GRPO)
    # Pref-GRPO's adaptive KL (--kl_adaptive of its Wan2.1/2.2 UnifiedReward-Flex scripts): kl_beta is the starting
    # weight, moved after every step towards a mean KL of kl_target (mmreward.alignment.adaptive_kl); defaults: the
    # reference's argument defaults (its recipe: target 0.0025, horizon 80, beta in [0.004, 0.006])
    kl_adaptive: bool = False
    kl_target: float = 0.0  # the step's mean KL the weight steers to (> 0 with kl_adaptive)
    kl_horizon: int = 100  # steps over which a relative KL error of 1 moves the weight by a factor e
    kl_beta_min: float = 0.0
    kl_beta_max: float = 1.0e6
    kl_ema_alpha: float = 0.2  # the KL's EMA: ema <- (1 - alpha) ema + alpha KL (the first step's KL starts it)
    cfg: bool = True  # the training forward uses the rollout's CFG (Flow-GRPO train.cfg); False: conditional only
    # where the CFG forward's gradient flows: detach_uncond (Flow-GRPO detaches the unconditional prediction, so the
    # gradient is g x that of the conditional branch) or both (Pref-GRPO's Wan trainer; d v = (1-g) dv_neg + g dv_pos)
    cfg_grad: Literal["detach_uncond", "both"] = "detach_uncond"
    # GRPO-Guard's RatioNorm (arXiv 2510.22319; Pref-GRPO --rationorm): the clip sees exp(mean((mean - old mean) x
    # the step's noise)) instead of the raw ratio, centred on 1 with one scale at every step (the rollout records its
    # step means for it; see mmreward.alignment.grpo_guard); clip_range bounds that ratio (the references: 2e-6-4e-6)
    ratio_norm: bool = False
    ratio_norm_reweight: bool = True  # with ratio_norm: each step's policy loss / (sigma - sigma_next), as both refs
    # with ratio_norm: the mean-shift term per sample (Pref-GRPO, the derivation) or the micro-batch's mean (what
    # GRPO-Guard's code computes: its mean over dim=() reduces the whole batch)
    ratio_norm_shift: Literal["sample", "batch"] = "sample"
    timestep_fraction: float = 0.99  # trains int(S * fraction) of the S stored SDE steps (>= 1)
    timestep_order: Literal["first", "random"] = "first"  # first: Flow-GRPO; random subset: Pref-GRPO/DanceGRPO


def check_loss_config(loss: GRPOLossConfig) -> None:
    if loss.clip_range <= 0:
        raise ConfigError(f"loss.clip_range must be > 0, got {loss.clip_range}")
    if loss.kl_beta < 0:
        raise ConfigError(f"loss.kl_beta must be >= 0, got {loss.kl_beta}")
    if loss.kl_adaptive:
        check_adaptive_kl(loss)
    if loss.cfg_grad not in CFG_GRADS:
        raise ConfigError(f"loss.cfg_grad must be one of {', '.join(CFG_GRADS)}, got {loss.cfg_grad!r}")
    if loss.ratio_norm_shift not in RATIO_NORM_SHIFTS:
        raise ConfigError(
            f"loss.ratio_norm_shift must be one of {', '.join(RATIO_NORM_SHIFTS)}, got {loss.ratio_norm_shift!r}"
        )
    if not 0 < loss.timestep_fraction <= 1:
        raise ConfigError(f"loss.timestep_fraction must be in (0, 1], got {loss.timestep_fraction}")


def check_adaptive_kl(loss: GRPOLossConfig) -> None:
    """The adaptive KL's settings (``loss.kl_adaptive``), named by their keys."""
    if loss.kl_target <= 0:
        raise ConfigError(
            f"loss.kl_adaptive steers the KL weight towards loss.kl_target, which must be > 0 (got {loss.kl_target}); "
            "Pref-GRPO's Wan2.2 recipe uses 0.0025"
        )
    if loss.kl_horizon < 1:
        raise ConfigError(f"loss.kl_horizon must be >= 1 step, got {loss.kl_horizon}")
    if not 0 <= loss.kl_beta_min <= loss.kl_beta_max:
        raise ConfigError(
            f"loss.kl_beta_min and loss.kl_beta_max must satisfy 0 <= min <= max, got {loss.kl_beta_min} and "
            f"{loss.kl_beta_max}"
        )
    if not 0 < loss.kl_ema_alpha <= 1:
        raise ConfigError(f"loss.kl_ema_alpha must be in (0, 1], got {loss.kl_ema_alpha}")


def trained_steps(stored: int, loss: GRPOLossConfig, generator: torch.Generator | None = None) -> list[int]:
    """Indices (into the rollout's stored SDE steps) of the steps a micro-batch trains: the first
    ``int(stored * fraction)`` (at least 1), or as many chosen at random."""
    count = max(1, int(stored * loss.timestep_fraction))
    if loss.timestep_order == "first":
        return list(range(count))
    return sorted(torch.randperm(stored, generator=generator)[:count].tolist())


def training_guidance(model: FlowModel, rollout: Rollout, loss: GRPOLossConfig) -> float:
    """The guidance scale of the training forward: the rollout's, or 1 (conditional only) with ``cfg=False`` on a
    model with batch CFG. FLUX.1-dev's guidance is an embedding, part of the policy: it is always kept."""
    return rollout.guidance_scale if loss.cfg or not model.batch_cfg else 1.0


@dataclass(frozen=True)
class MicroBatch:
    """One forward/backward group of an update: ``rows`` (indices into this process's samples) trained at each of
    ``steps`` (indices into the rollout's stored SDE steps), every row with ``weight`` (0 for a padding row), the
    loss sum multiplied by ``scale``; ``last`` marks the update's last micro-batch (where gradients synchronize)."""

    epoch: int
    update: int
    rows: list[int]
    weight: float
    steps: list[int]
    scale: float
    last: bool


def split_sizes(count: int, parts: int) -> list[int]:
    """Sizes of :func:`torch.tensor_split` of ``count`` items into ``parts``: the first ``count % parts`` get one
    more (e.g. 5 into 2: [3, 2])."""
    base, extra = divmod(count, parts)
    return [base + 1 if k < extra else base for k in range(parts)]


def update_schedule(
    kept: torch.Tensor,
    kept_per_process: list[int],
    *,
    stored_steps: int,
    loss: GRPOLossConfig,
    micro_batch_size: int,
    updates: int = 1,
    inner_epochs: int = 1,
    seed: tuple = (0,),
) -> list[list[MicroBatch]]:
    """The micro-batches of every optimizer step of one GRPO update on this process.

    Per inner epoch the ``kept`` samples (``(K,)`` local indices) are shuffled (``seeded(*seed, "shuffle", epoch)``)
    and split into ``updates`` consecutive parts, one optimizer step each. A step whose part is empty on every process
    (``kept_per_process``, in process order) is left out. Otherwise it runs ``ceil(largest / micro_batch_size)``
    micro-batches, the largest part over the processes deciding, so every process makes the same number of backward
    calls (DDP); a process whose micro-batch is empty trains row 0 with weight 0. Each micro-batch trains the steps
    of :func:`trained_steps` (``seeded(*seed, "steps", epoch, update, m)``) and is scaled by
    ``world / (total * len(steps))`` with ``total`` the step's samples over all processes: the gradient of the step
    is then the mean over its samples and trained steps, whatever the process count.
    """
    world = len(kept_per_process)
    plan = []
    for epoch in range(inner_epochs):
        order = kept[torch.randperm(len(kept), generator=seeded(*seed, "shuffle", epoch))]
        parts = torch.tensor_split(order, updates)
        sizes = [split_sizes(count, updates) for count in kept_per_process]  # [process][update]
        for u, part in enumerate(parts):
            total, largest = sum(s[u] for s in sizes), max(s[u] for s in sizes)
            if total == 0:
                continue  # no process has a sample to train in this update
            micro_batches = torch.tensor_split(part, math.ceil(largest / micro_batch_size))
            step_plan = []
            for m, rows in enumerate(micro_batches):
                steps = trained_steps(stored_steps, loss, seeded(*seed, "steps", epoch, u, m))
                padding = len(rows) == 0
                step_plan.append(
                    MicroBatch(
                        epoch=epoch,
                        update=u,
                        rows=[0] if padding else rows.tolist(),
                        weight=0.0 if padding else 1.0,
                        steps=steps,
                        scale=world / (total * len(steps)),
                        last=m == len(micro_batches) - 1,
                    )
                )
            plan.append(step_plan)
    return plan


@dataclass
class GRPOTrainConfig(TrainConfig):
    """The ``train:`` section of a GRPO program: the shared optimizer settings and how a rollout is trained."""

    # max_steps counts rollouts; each runs updates_per_step x inner_epochs optimizer steps
    micro_batch_size: int = 8  # samples per training forward (keep it equal to rollout.batch_size: same numerics)
    updates_per_step: int = 1  # optimizer steps per rollout and inner epoch (Flow-GRPO SD3.5: 2)
    inner_epochs: int = 1  # passes over a rollout's samples (Flow-GRPO: 1)
    save_every: int = 50
    on_policy_tolerance: float = 1e-4  # --check-on-policy: largest |ratio - 1| accepted at the first inner step

    def optimizer_steps(self, policy_iterations: int | None = None) -> int:
        """The learning-rate schedule's length: ``policy_iterations`` (default ``max_steps``; fewer when a program
        skips the update on some iterations) x updates per step x inner epochs."""
        iterations = self.max_steps if policy_iterations is None else policy_iterations
        return iterations * self.updates_per_step * self.inner_epochs

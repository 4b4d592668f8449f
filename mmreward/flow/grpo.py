"""Group-relative policy optimization of rectified-flow generators: the loop pieces Flow-GRPO, Pref-GRPO and
Adv-GRPO share, as functions a program calls in order.

Flow-GRPO (arXiv 2505.05470) samples a group of G images per prompt with an SDE sampler that has per-step
log-probabilities, rewards them, normalizes the rewards within the group into advantages, and takes PPO-clipped
policy-gradient steps on the stored denoising steps. Pref-GRPO (arXiv 2508.20751) replaces the pointwise reward by
each sample's win rate against the rest of its group under a pairwise judge, which the paper shows resists reward
hacking. Adv-GRPO (arXiv 2511.20256) co-trains the reward. One iteration here:

1. :func:`iteration_prompts` draws P prompts; :class:`GroupLayout` lays the ``P x G`` samples out prompt-major and
   gives each process a contiguous slice (a group may span processes when G exceeds the slice).
2. :func:`rollout_groups` samples this process's slice with one seeded generator per sample, so samples do not
   depend on the number of processes (Flow-GRPO issue #7: shared seeds shrink exploration).
3. :func:`compute_rewards` calls a :class:`GroupReward` (a weighted reward mix, a judge's win rates, or a
   co-trained discriminator) and returns every sample's reward on every process. Rewards that need whole groups
   (win rates) get them: the group's media are gathered to one process first, so a judge never compares only a
   per-process slice (Pref-GRPO issue #18).
4. :func:`group_advantages` normalizes per prompt, masks failed rewards and drops groups with nothing to learn.
5. :func:`grpo_update` re-evaluates the stored steps under the current weights and takes clipped steps, with the
   optional KL to the reference (the model without its LoRA adapter) and the "ratio == 1" on-policy check.

Evaluation on held-out prompts lives in :mod:`mmreward.flow.evaluation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from mmreward import media as media_io
from mmreward.errors import ConfigError, MMRewardError
from mmreward.flow.models import FlowModel
from mmreward.flow.rollout import Rollout, policy_step, random_sde_window, sample, seeded
from mmreward.losses import grpo_clip_loss, step_kl
from mmreward.rewards.mix import RewardMix
from mmreward.rewards.win_rate import group_win_rates

# ---------------------------------------------------------------------------------------------------- settings


@dataclass
class RolloutConfig:
    """How training samples are drawn (the ``rollout:`` section of a GRPO program's config)."""

    prompts_per_step: int = 48  # P, over all processes (Flow-GRPO SD3.5: 48 groups of 24 per epoch)
    group_size: int = 24  # G samples per prompt
    num_steps: int = 10  # denoising steps of a training rollout (Flow-GRPO SD3.5: 10; evaluation uses more)
    guidance_scale: float = 4.5  # CFG (FLUX.1-dev: the guidance embedding)
    negative_prompt: str = ""
    sde_type: Literal["flow", "dance", "cps"] = "flow"
    noise_level: float = 0.7  # a: 0.7 SD3.5 / Pref-GRPO, 0.9 FLUX, 0.8 CPS
    sde_window_size: int = 0  # 0: every step stochastic; k: a random window of k SDE steps (Flow-GRPO-Fast)
    sde_window_range: list[int] = field(default_factory=list)  # [low, high) for the window; [] = all steps
    batch_size: int = 8  # samples per transformer call


@dataclass
class AdvantageConfig:
    """Group normalization of rewards (``advantage:``)."""

    std: Literal["global", "group"] = "global"  # Flow-GRPO: std of all rewards of the step; Pref-GRPO: per group
    ddof: int = 0  # 0: Flow-GRPO (np.std); 1: Pref-GRPO (torch.std)
    eps: float = 1e-4  # added to the std (Flow-GRPO 1e-4, Pref-GRPO 1e-8)
    clip: float = 5.0  # |A| <= clip (Flow-GRPO adv_clip_max); 0 = no clipping
    drop_zero_groups: bool = True  # groups whose advantages are all zero (equal rewards) are not trained


@dataclass
class GRPOLossConfig:
    """The policy-gradient objective (``loss:``)."""

    clip_range: float = 1e-4  # PPO clip on the per-step ratio (Flow-GRPO 1e-4; Fast/CPS 1e-5)
    kl_beta: float = 0.0  # weight of the KL to the reference (adapter disabled); 0 skips the reference pass
    kl_includes_dt: bool = False  # False: Flow-GRPO's KL (no step size, = -dt * KL); True: the true KL (Pref-GRPO)
    cfg: bool = True  # the training forward uses the rollout's CFG (Flow-GRPO train.cfg); False: conditional only
    timestep_fraction: float = 0.99  # trains int(S * fraction) of the S stored SDE steps (>= 1)
    timestep_order: Literal["first", "random"] = "first"  # first: Flow-GRPO; random subset: Pref-GRPO/DanceGRPO


def check_rollout_config(rollout: RolloutConfig) -> None:
    """Errors that can be found before any model loads."""
    for name in ("prompts_per_step", "num_steps", "batch_size"):
        if getattr(rollout, name) < 1:
            raise ConfigError(f"rollout.{name} must be >= 1, got {getattr(rollout, name)}")
    if rollout.group_size < 2:
        raise ConfigError(
            f"rollout.group_size must be >= 2 (advantages compare samples of a prompt), got {rollout.group_size}"
        )
    if rollout.noise_level <= 0:
        raise ConfigError(f"rollout.noise_level must be > 0 for a stochastic rollout, got {rollout.noise_level}")
    if rollout.sde_window_range and len(rollout.sde_window_range) != 2:
        raise ConfigError(f"rollout.sde_window_range must be [low, high], got {rollout.sde_window_range}")
    if rollout.sde_window_range and not rollout.sde_window_size:
        raise ConfigError("rollout.sde_window_range needs rollout.sde_window_size >= 1 (the window's length)")
    if rollout.sde_window_size:
        low, high = rollout.sde_window_range or (0, rollout.num_steps)
        last = rollout.num_steps - 1 if rollout.sde_type == "cps" else rollout.num_steps
        if not 0 <= low < high <= last or rollout.sde_window_size > high - low:
            raise ConfigError(
                f"an SDE window of {rollout.sde_window_size} steps does not fit in [{low}, {high}) of "
                f"{rollout.num_steps} steps" + (" (CPS cannot use the last step)" if rollout.sde_type == "cps" else "")
            )


def check_loss_config(loss: GRPOLossConfig) -> None:
    if loss.clip_range <= 0:
        raise ConfigError(f"loss.clip_range must be > 0, got {loss.clip_range}")
    if loss.kl_beta < 0:
        raise ConfigError(f"loss.kl_beta must be >= 0, got {loss.kl_beta}")
    if not 0 < loss.timestep_fraction <= 1:
        raise ConfigError(f"loss.timestep_fraction must be in (0, 1], got {loss.timestep_fraction}")


# ------------------------------------------------------------------------------------------------ group layout


@dataclass(frozen=True)
class GroupLayout:
    """The ``P x G`` samples of one iteration, prompt-major (global sample ``i`` belongs to prompt ``i // G``),
    split into contiguous slices of ``N = P G / world`` samples: process ``r`` holds samples ``[r N, (r + 1) N)``.

    Groups are *local* when every slice holds whole groups (``N % G == 0``); otherwise a group spans processes and
    rewards that need whole groups are computed by the group's owner (:meth:`owner`) after a gather.
    """

    prompts: int
    group_size: int
    world: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        if self.total % self.world:
            raise ConfigError(
                f"{self.prompts} prompts x {self.group_size} samples = {self.total} samples per step cannot be split "
                f"evenly over {self.world} processes; make rollout.prompts_per_step x rollout.group_size a multiple "
                f"of {self.world}"
            )

    @property
    def total(self) -> int:
        return self.prompts * self.group_size

    @property
    def per_rank(self) -> int:
        return self.total // self.world

    @property
    def groups_are_local(self) -> bool:
        return self.per_rank % self.group_size == 0

    def local_index(self) -> torch.Tensor:
        """``(N,)`` global indices of this process's samples."""
        return torch.arange(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)

    def owner(self, group: int) -> int:
        """The process that computes group-level rewards for ``group``: its holder when groups are local, else
        round-robin (every process judges about as many groups)."""
        if self.groups_are_local:
            return group * self.group_size // self.per_rank
        return group % self.world

    def owners(self) -> torch.Tensor:
        """``(P G,)`` the owner of each sample's group."""
        per_group = torch.tensor([self.owner(g) for g in range(self.prompts)])
        return per_group.repeat_interleave(self.group_size)


def iteration_prompts(prompts: Sequence[str], iteration: int, count: int, seed: int) -> list[str]:
    """The ``count`` prompts of an iteration: consecutive slices of a stream of seeded permutations of the prompt
    set (every prompt once per pass), the same on every process and after a resume."""
    chosen = []
    for k in range(count):
        epoch, offset = divmod(iteration * count + k, len(prompts))
        order = torch.randperm(len(prompts), generator=seeded(seed, "prompts", epoch))
        chosen.append(prompts[int(order[offset])])
    return chosen


def exchange_rows(local: torch.Tensor, destination: torch.Tensor, accelerator: Any, max_bytes: int = 1 << 26):
    """Deliver rows of a tensor laid out like :class:`GroupLayout` (process ``r`` holds global rows
    ``[r N, (r + 1) N)``) to the process that needs each.

    ``destination`` is ``(world N,)``, the same on every process: the rank that needs each global row, or -1.
    Returns ``(index, rows)`` of the rows this process receives, in increasing global index. Every process must call
    this (the transfers are collective); rows go in chunks of at most ``max_bytes`` per process, so peak memory stays
    bounded whatever the batch.
    """
    rank, world = accelerator.process_index, accelerator.num_processes
    size = local.shape[0]
    if destination.shape != (world * size,):
        raise ValueError(f"destination must have one entry per global row ({world * size}), got {destination.shape}")
    if world == 1:
        index = (destination == rank).nonzero().flatten()
        return index, local[index.to(local.device)]
    needed = destination.view(world, size)  # (world, N): who needs row k of process r
    positions = (needed >= 0).any(dim=0).nonzero().flatten().tolist()
    row_bytes = max(1, local[0].numel() * local.element_size())
    chunk = max(1, max_bytes // (row_bytes * world))
    kept_index, kept_rows = [], []
    for start in range(0, len(positions), chunk):
        part = positions[start : start + chunk]
        gathered = accelerator.gather(local[part].contiguous())  # (world * len(part), ...), process-major
        for r in range(world):
            for t, k in enumerate(part):
                if int(needed[r, k]) == rank:
                    kept_index.append(r * size + k)
                    kept_rows.append(gathered[r * len(part) + t])
    if not kept_rows:
        return torch.zeros(0, dtype=torch.long), local[:0]
    order = sorted(range(len(kept_index)), key=kept_index.__getitem__)
    return torch.tensor([kept_index[i] for i in order]), torch.stack([kept_rows[i] for i in order])


# ----------------------------------------------------------------------------------------------------- rollout


@dataclass
class GroupBatch:
    """This process's share of an iteration's samples.

    Attributes:
        rollout: the samples with their stored steps (``N`` samples, in global order).
        index: ``(N,)`` global sample indices; ``group``: ``(N,)`` their prompt (group) indices.
        prompts: the iteration's ``P`` prompts (group ``g`` was drawn from ``prompts[g]``).
        media: ``(N, ...)`` uint8 decoded samples (what rewards see, like a saved 8-bit file).
        batch_size: samples per transformer call during the rollout (the on-policy diagnosis replays it).
    """

    rollout: Rollout
    index: torch.Tensor
    group: torch.Tensor
    prompts: list[str]
    media: torch.Tensor
    batch_size: int

    def __len__(self) -> int:
        return len(self.index)


def to_uint8(media: torch.Tensor) -> torch.Tensor:
    """Canonical float media in [0, 1] -> uint8, rounded (Flow-GRPO hands rewards 8-bit images the same way)."""
    return (media.float().clamp(0, 1) * 255).round().to(torch.uint8)


def rollout_window(rollout: RolloutConfig, iteration: int, seed: int) -> tuple[int, int] | None:
    """This iteration's SDE window: None (every step stochastic) or a random window of ``sde_window_size`` steps,
    drawn the same on every process."""
    if not rollout.sde_window_size:
        return None
    low, high = rollout.sde_window_range or (0, rollout.num_steps - (1 if rollout.sde_type == "cps" else 0))
    return random_sde_window(
        rollout.num_steps, rollout.sde_window_size, (low, high), generator=seeded(seed, "sde-window", iteration)
    )


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
) -> GroupBatch:
    """Sample this process's slice of the iteration with log-probabilities (no gradients), decoded for rewards.

    Sample ``i`` uses its own generator seeded by ``(seed, iteration, i)``, so the same run on any number of
    processes draws the same samples. ``transformer`` defaults to the model's own (the live policy weights).
    """
    if len(prompts) != layout.prompts:
        raise ValueError(f"{len(prompts)} prompts for a layout of {layout.prompts}")
    index = layout.local_index()
    group = index // layout.group_size
    local_prompts = [prompts[int(g)] for g in group]
    with accelerator.autocast():
        samples = sample(
            model, local_prompts, group_size=1, num_steps=rollout.num_steps, height=height, width=width,
            num_frames=num_frames, guidance_scale=rollout.guidance_scale, negative_prompt=rollout.negative_prompt,
            sde_type=rollout.sde_type, noise_level=rollout.noise_level,
            sde_window=rollout_window(rollout, iteration, seed),
            generator=[seeded(seed, "rollout", iteration, int(i)) for i in index], batch_size=rollout.batch_size,
            transformer=transformer,
        )  # fmt: skip
    return GroupBatch(samples, index, group, list(prompts), to_uint8(samples.media), rollout.batch_size)


# ----------------------------------------------------------------------------------------------------- rewards


@dataclass
class RewardBatch:
    """Rewards of a batch of samples.

    Attributes:
        scores: ``(n,)`` float32 reward, NaN where failed.
        failed: ``(n,)`` bool; ``errors`` the reason per failed item.
        components: per-sample values to log, by name (each reward of a mix, the win rate); NaN where missing.
    """

    scores: torch.Tensor
    failed: torch.Tensor
    errors: list[str | None]
    components: dict[str, torch.Tensor] = field(default_factory=dict)


class GroupReward(Protocol):
    """What the loop calls to reward samples: ``reward(prompts, media, groups) -> RewardBatch``.

    ``media`` is a ``(n, ...)`` uint8 batch (images ``(n, 3, H, W)``, videos ``(n, T, 3, H, W)``), ``groups`` the
    ``(n,)`` group index of each sample. ``whole_groups``: True if the reward compares samples within a group (each
    call then holds complete groups); ``components``: the names of :attr:`RewardBatch.components` it returns.
    Adv-GRPO's discriminator, or any other learned reward, plugs in by implementing this.
    """

    whole_groups: bool
    components: tuple[str, ...]

    def __call__(self, prompts: list[str], media: torch.Tensor, groups: torch.Tensor) -> RewardBatch: ...


class MixReward:
    """Pointwise rewards (Flow-GRPO): a weighted :class:`~mmreward.rewards.mix.RewardMix`; a sample fails when any
    of its rewards fails."""

    whole_groups = False

    def __init__(self, mix: RewardMix) -> None:
        self.mix = mix
        self.components = tuple(mix.weights)

    def __call__(self, prompts, media, groups) -> RewardBatch:
        out = self.mix.score(prompts, media)
        return RewardBatch(out.total.float(), out.failed, list(out.errors), dict(out.scores))


class WinRateReward:
    """Pref-GRPO's reward: each sample's win rate against the other samples of its group under a pairwise judge
    (:func:`mmreward.rewards.win_rate.group_win_rates`, the batched form of :func:`mmreward.win_rate`; every
    pair in both presentation orders by default, all groups of a call in as few judge batches as it allows)."""

    whole_groups = True
    components = ("win_rate",)

    def __init__(self, judge: Any, orders: str = "both") -> None:
        self.judge = judge
        self.orders = orders

    def __call__(self, prompts, media, groups) -> RewardBatch:
        out = group_win_rates(self.judge, list(prompts), media_io.as_items(media), groups.tolist(), self.orders)
        return RewardBatch(out.scores.float(), out.failed, list(out.errors), {"win_rate": out.scores.float()})


@dataclass
class GroupRewards:
    """Every sample's reward, on every process (``(P G,)`` tensors on the CPU), and the failures' reasons
    (``[(global index, reason)]``, all processes' failures)."""

    scores: torch.Tensor
    failed: torch.Tensor
    components: dict[str, torch.Tensor]
    errors: list[tuple[int, str]]


def compute_rewards(reward: GroupReward, batch: GroupBatch, layout: GroupLayout, accelerator: Any) -> GroupRewards:
    """Reward every sample of the iteration and share the result with every process (see the module docstring).

    Pointwise rewards score each process's own samples. Group rewards are computed by each group's owner: when
    groups span processes the media are first delivered to the owners with :func:`exchange_rows`.
    """
    G = layout.group_size
    if not reward.whole_groups or layout.groups_are_local:  # local groups: each process owns the groups it holds
        index, media = batch.index, batch.media
    else:
        index, media = exchange_rows(batch.media, layout.owners(), accelerator)
    scores = torch.zeros(layout.total)
    failed = torch.zeros(layout.total)
    components = {name: torch.zeros(layout.total) for name in reward.components}
    present = {name: torch.zeros(layout.total) for name in reward.components}
    errors: list[tuple[int, str]] = []
    if len(index):
        out = reward([batch.prompts[int(i) // G] for i in index], media, index // G)
        scores[index] = torch.nan_to_num(out.scores.float().cpu())
        failed[index] = out.failed.float().cpu()
        for name in reward.components:
            values = out.components.get(name)
            if values is not None:
                values = values.float().cpu()
                components[name][index] = torch.nan_to_num(values)
                present[name][index] = torch.isfinite(values).float()
        errors = [(int(i), e or "failed") for i, e, f in zip(index, out.errors, out.failed, strict=True) if f]
    # Each sample is computed by exactly one process: a sum over processes assembles the whole step.
    packed = torch.stack([scores, failed, *components.values(), *present.values()]).to(accelerator.device)
    packed = accelerator.reduce(packed, "sum").cpu()
    scores, failed = packed[0], packed[1] > 0.5
    k = len(components)
    components = {
        name: torch.where(packed[2 + k + n] > 0.5, packed[2 + n], torch.full_like(packed[2 + n], math.nan))
        for n, name in enumerate(components)
    }
    if bool(failed.any()) and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        errors = gather_object(errors)
    return GroupRewards(torch.where(failed, torch.full_like(scores, math.nan), scores), failed, components, errors)


# -------------------------------------------------------------------------------------------------- advantages


@dataclass
class Advantages:
    """``values``: ``(n,)`` float32 advantages (0 where not trained); ``keep``: ``(n,)`` bool, the samples the
    update trains; ``stats``: numbers to log."""

    values: torch.Tensor
    keep: torch.Tensor
    stats: dict[str, float]


def group_advantages(
    rewards: torch.Tensor,
    groups: torch.Tensor,
    *,
    std: Literal["global", "group"] = "global",
    ddof: int = 0,
    eps: float = 1e-4,
    clip: float = 5.0,
    drop_zero_groups: bool = True,
) -> Advantages:
    """Per-prompt normalized advantages ``A_i = (r_i - mean_g) / (std + eps)``, clipped to ``[-clip, clip]``.

    ``mean_g`` is the mean reward of sample i's group; ``std`` is the standard deviation of all valid rewards
    (``"global"``, Flow-GRPO's ``global_std``) or of the group's (``"group"``), with ``ddof`` (0: numpy's default as
    in Flow-GRPO; 1: torch's, as in Pref-GRPO). Failed rewards (NaN) are left out of every mean and std, get
    advantage 0 and are not trained; a group with fewer than 2 valid rewards has nothing to compare and is not
    trained; with ``drop_zero_groups`` a group whose advantages are all 0 (all rewards equal) is not trained either
    (Flow-GRPO drops zero-advantage samples: they carry no policy gradient).
    """
    if std not in ("global", "group"):
        raise ConfigError(f"advantage std must be 'global' or 'group', got {std!r}")
    rewards = rewards.float()
    valid = torch.isfinite(rewards)
    values = torch.zeros_like(rewards)
    keep = torch.zeros_like(valid)
    if int(valid.sum()) > ddof:
        global_std = rewards[valid].std(correction=ddof)
    else:
        global_std = torch.tensor(0.0)
    dropped = incomplete = 0
    unique = groups.unique()
    for g in unique:
        members = (groups == g) & valid
        if bool(((groups == g) & ~valid).any()):
            incomplete += 1
        if int(members.sum()) < 2:
            dropped += 1
            continue
        r = rewards[members]
        scale = global_std if std == "global" else (r.std(correction=ddof) if len(r) > ddof else torch.tensor(0.0))
        centered = r - r.mean()
        # A constant group has std 0: its advantages are 0 (not 0 / 0 when eps is 0).
        a = torch.where(centered == 0, torch.zeros_like(r), centered / (scale + eps))
        if clip > 0:
            a = a.clamp(-clip, clip)
        values[members] = a
        if drop_zero_groups and bool((a == 0).all()):
            dropped += 1
            continue
        keep[members] = True
    trained = values[keep]
    spreads = [rewards[(groups == g) & valid] for g in unique]
    spreads = [float(r.max() - r.min()) for r in spreads if len(r) >= 2]
    stats = {
        "reward/group_spread": sum(spreads) / len(spreads) if spreads else math.nan,
        "adv/mean_abs": float(trained.abs().mean()) if len(trained) else 0.0,
        "adv/max_abs": float(trained.abs().max()) if len(trained) else 0.0,
        "adv/clipped_frac": float((trained.abs() >= clip).float().mean()) if len(trained) and clip > 0 else 0.0,
        "groups/dropped": float(dropped),
        "groups/with_failures": float(incomplete),
        "samples/trained": float(keep.sum()),
    }
    if std == "global":
        stats["reward/std_used"] = float(global_std)
    return Advantages(values, keep, stats)


# ------------------------------------------------------------------------------------------------------ update


@dataclass
class PolicyOptimizer:
    """What one optimizer step does: clip the gradient norm, step (unless the norm is not finite: the step is
    skipped and counted by ``guard``), then the learning-rate schedule and the EMA of the adapter."""

    params: list[nn.Parameter]
    optimizer: Any
    lr_scheduler: Any
    max_grad_norm: float
    guard: Any  # mmreward.train.guards.NonFiniteGuard
    ema: Any = None  # mmreward.train.ema.EMA

    def step(self, accelerator: Any) -> tuple[bool, float]:
        grad_norm = accelerator.clip_grad_norm_(self.params, self.max_grad_norm)
        grad_norm = float(grad_norm) if grad_norm is not None else math.nan
        applied = self.guard.ok(grad_norm)
        if applied:
            self.optimizer.step()
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step()
        self.optimizer.zero_grad(set_to_none=True)
        return applied, grad_norm


class OffPolicyError(MMRewardError, RuntimeError):
    """The first inner step's importance ratio is not 1: the update does not evaluate the policy that sampled."""


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


def grpo_update(
    model: FlowModel,
    batch: GroupBatch,
    advantages: torch.Tensor,
    keep: torch.Tensor,
    *,
    transformer: nn.Module,
    reference: Any,
    optimizer: PolicyOptimizer,
    loss: GRPOLossConfig,
    micro_batch_size: int,
    updates: int = 1,
    inner_epochs: int = 1,
    accelerator: Any,
    seed: tuple = (0,),
    on_policy_tolerance: float | None = None,
    mixed_precision: str = "no",
) -> dict[str, float]:
    """Clipped policy-gradient steps on the stored SDE steps of ``batch`` (this process's samples).

    The trained samples (``keep``, ``(N,)``) are shuffled and split into ``updates`` optimizer steps per inner
    epoch; each update runs micro-batches of at most ``micro_batch_size`` samples, and each micro-batch one forward
    and backward per trained step (:func:`trained_steps`), so activations of one step are alive at a time. The
    objective of an update is the mean over its samples (on all processes) and trained steps of
    ``grpo_clip_loss + kl_beta * step_kl``; processes with fewer samples run padding rows with weight 0, so every
    process makes the same number of backward calls (DDP).

    ``on_policy_tolerance``: before the first optimizer step the policy *is* the sampling policy, so
    ``exp(logp - logp_old)`` must be 1; if the first micro-batch deviates by more than this, the update stops with
    :class:`OffPolicyError` naming the setting that breaks it (see :func:`diagnose_off_policy`). The deviation
    is always returned as ``ratio/first_dev``. Returns the update's metrics (means over processes).
    """
    rollout = batch.rollout
    device = accelerator.device
    world = accelerator.num_processes
    stored = rollout.log_probs.shape[1]
    if stored == 0:
        raise ConfigError("the rollout stored no SDE steps (sde_type 'ode' or an empty window); nothing to train")
    guidance = training_guidance(model, rollout, loss)
    advantages = advantages.to(device).float()
    old_log_probs = rollout.log_probs.to(device)
    kept = keep.nonzero().flatten()
    sums: dict[str, float] = {}
    count = 0.0
    grad_norms, first_dev, applied_steps = [], None, 0

    def add(name: str, values: torch.Tensor, weights: torch.Tensor) -> None:
        sums[name] = sums.get(name, 0.0) + float((values.detach().float() * weights).sum())

    for epoch in range(inner_epochs):
        order = kept[torch.randperm(len(kept), generator=seeded(*seed, "shuffle", epoch))]
        parts = torch.tensor_split(order, updates)
        sizes = accelerator.gather(torch.tensor([[len(p) for p in parts]], device=device)).cpu()  # (world, U)
        for u, part in enumerate(parts):
            total, largest = int(sizes[:, u].sum()), int(sizes[:, u].max())
            if total == 0:
                continue  # no process has a sample to train in this update
            micro_batches = torch.tensor_split(part, math.ceil(largest / micro_batch_size))
            for m, rows in enumerate(micro_batches):
                weights = torch.ones(len(rows), device=device)
                if len(rows) == 0:  # padding: a real sample with weight 0 keeps the backward calls in step
                    rows, weights = torch.zeros(1, dtype=torch.long), torch.zeros(1, device=device)
                steps = trained_steps(stored, loss, seeded(*seed, "steps", epoch, u, m))
                scale = world / (total * len(steps))
                deviations = []
                for n, j in enumerate(steps):
                    last = m == len(micro_batches) - 1 and n == len(steps) - 1
                    with accelerator.no_sync(transformer) if not last else nullcontext():
                        ref_mean = None
                        if loss.kl_beta > 0:
                            with reference.active(), accelerator.autocast():
                                ref_mean = policy_step(model, rollout, j, rows=rows, guidance_scale=guidance).mean
                        with accelerator.autocast():
                            step = policy_step(
                                model, rollout, j, rows=rows, transformer=transformer, guidance_scale=guidance
                            )
                        out = grpo_clip_loss(step.log_prob, old_log_probs[rows, j], advantages[rows], loss.clip_range)
                        per_sample = out.losses
                        if ref_mean is not None:
                            i = int(rollout.sde_steps[j])
                            dt = rollout.sigmas[i + 1] - rollout.sigmas[i]
                            kl = step_kl(step.mean, ref_mean, step.std, dt, sde_type=rollout.sde_type,
                                         includes_dt=loss.kl_includes_dt)  # fmt: skip
                            per_sample = per_sample + loss.kl_beta * kl
                            add("kl", kl, weights)
                        accelerator.backward((weights * per_sample).sum() * scale)
                    add("policy_loss", out.losses, weights)
                    add("ratio", out.ratio, weights)
                    add("clipfrac", out.clipped.float(), weights)
                    add("approx_kl", out.approx_kl, weights)
                    add("loss", per_sample, weights)
                    count += float(weights.sum())
                    deviations.append((out.ratio - 1).abs().max())
                if first_dev is None:
                    first_dev = _global_max(torch.stack(deviations).max(), accelerator)
                    if on_policy_tolerance is not None and first_dev > on_policy_tolerance:
                        optimizer.optimizer.zero_grad(set_to_none=True)
                        reason = diagnose_off_policy(
                            model, batch, rows, steps[0], loss=loss, accelerator=accelerator,
                            tolerance=on_policy_tolerance, mixed_precision=mixed_precision,
                        )  # fmt: skip
                        raise OffPolicyError(
                            f"on-policy check failed: the first inner step's importance ratio deviates from 1 by "
                            f"{first_dev:.3g} (tolerance {on_policy_tolerance:g}). {reason}"
                        )
            applied, grad_norm = optimizer.step(accelerator)
            applied_steps += int(applied)
            grad_norms.append(grad_norm)
    totals = torch.tensor([count, *sums.values()], device=device, dtype=torch.float64)
    totals = accelerator.reduce(totals, "sum").cpu()
    metrics = {f"update/{name}": float(totals[1 + n] / totals[0]) if totals[0] else math.nan
               for n, name in enumerate(sums)}  # fmt: skip
    metrics["update/optimizer_steps"] = float(applied_steps)
    metrics["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else math.nan
    metrics["ratio/first_dev"] = first_dev if first_dev is not None else math.nan
    return metrics


def _global_max(value: torch.Tensor, accelerator: Any) -> float:
    return float(accelerator.gather(value.detach().float().reshape(1).to(accelerator.device)).max())


@torch.no_grad()
def _ratio_deviation(model, rollout, rows, j, guidance, accelerator, chunks=None) -> float:
    """``max |exp(logp - logp_old) - 1|`` of step ``j`` for ``rows``, the current weights evaluated in ``chunks``
    (lists of rows run as one batch; default: all rows at once)."""
    deviation = 0.0
    for chunk in chunks or [rows.tolist()]:
        with accelerator.autocast():
            step = policy_step(model, rollout, j, rows=chunk, guidance_scale=guidance)
        ratio = torch.exp(step.log_prob - rollout.log_probs[torch.as_tensor(chunk), j].to(step.log_prob.device))
        positions = [chunk.index(int(r)) for r in rows if int(r) in chunk]
        if positions:
            deviation = max(deviation, float((ratio[positions] - 1).abs().max()))
    return deviation


def diagnose_off_policy(
    model: FlowModel,
    batch: GroupBatch,
    rows: torch.Tensor,
    j: int,
    *,
    loss: GRPOLossConfig,
    accelerator: Any,
    tolerance: float,
    mixed_precision: str,
) -> str:
    """Say which setting makes the update's log-probabilities differ from the rollout's, by recomputing step ``j``
    of ``rows`` (no gradients, current weights = the sampling weights) with the differences removed in turn:

    1. CFG: the rollout sampled with CFG and the training forward runs without (``loss.cfg=False``);
    2. batch size: the same rows run in the rollout's own batches, with its CFG (transformer outputs depend
       slightly on the batch shape; Flow-GRPO's FAQ: keep the training batch equal to the sampling batch);
    3. precision: neither explains it and the run uses mixed precision (bf16 kernels differ between the
       no-gradient rollout and the training forward; Flow-GRPO's FAQ recommends fp16 for SD3);
    4. otherwise something changes the model between sampling and training (dropout, swapped weights).
    """
    rollout = batch.rollout
    sampled = rollout.guidance_scale
    cfg_differs = training_guidance(model, rollout, loss) != sampled
    if cfg_differs and _ratio_deviation(model, rollout, rows, j, sampled, accelerator) <= tolerance:
        return (
            f"Cause: CFG mismatch. The rollout sampled with guidance_scale={sampled} but the training forward runs "
            "without CFG (loss.cfg=false), so it evaluates another policy. Set loss.cfg=true, or sample without CFG "
            "(rollout.guidance_scale=1) for CFG-free training."
        )
    # The rollout ran the transformer on consecutive local rows in batches of batch.batch_size.
    size = batch.batch_size
    chunks = [list(range(start, min(start + size, len(batch)))) for start in range(0, len(batch), size)]
    wanted = [c for c in chunks if any(int(r) in c for r in rows)]
    if _ratio_deviation(model, rollout, rows, j, sampled, accelerator, wanted) <= tolerance:
        return (
            (
                "Causes: CFG mismatch (loss.cfg=false while the rollout used CFG; set loss.cfg=true) and batch size. "
                if cfg_differs
                else "Cause: batch size. "
            )
            + f"Recomputed in the rollout's own batches ({size} samples per transformer call) the ratio is 1, but "
            f"the update's micro-batches ({len(rows)} samples) change the transformer's numerics enough to matter "
            f"in {mixed_precision if mixed_precision != 'no' else 'float32'}. Make train.micro_batch_size equal to "
            "rollout.batch_size (and the samples per process a multiple of it)."
        )
    if mixed_precision != "no":
        return (
            f"Cause: precision. With train.mixed_precision={mixed_precision} the rollout (no gradients) and the "
            "training forward take different kernels; neither the CFG nor the batch shape explains the gap. Use "
            "fp16 for SD3 (Flow-GRPO's advice), or run the check with train.mixed_precision=no to confirm the rest "
            "of the setup is on-policy."
        )
    return (
        "Cause unknown: the same rows in the rollout's batches, with its CFG, in float32, still give another "
        "log-probability. Something changes the policy between sampling and training: dropout in the transformer "
        "or the LoRA (lora dropout must be 0), or weights swapped in between (EMA weights must only be used for "
        "evaluation)."
    )

"""Group-relative advantages (Flow-GRPO, arXiv 2505.05470; Pref-GRPO, arXiv 2508.20751): each reward normalized
within the group of samples of its prompt.

With several rewards, Flow-GRPO normalizes their weighted sum (:func:`group_advantages` of the mix); Pref-GRPO
(``compute_weighted_advantages`` in its rewards dispatcher) normalizes each reward within the group first and then
weights the advantages (``per_reward``), and with ``--apply_gdpo`` standardizes the weighted advantages over all
samples of the step (``batch_normalize``): :func:`weighted_group_advantages`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from mmreward.errors import ConfigError


@dataclass
class AdvantageConfig:
    """Group normalization of rewards (``advantage:``)."""

    std: Literal["global", "group"] = "global"  # Flow-GRPO: std of all rewards of the step; Pref-GRPO: per group
    ddof: int = 0  # 0: Flow-GRPO (np.std); 1: Pref-GRPO (torch.std)
    eps: float = 1e-4  # added to the std (Flow-GRPO 1e-4, Pref-GRPO 1e-8)
    clip: float = 5.0  # |A| <= clip (Flow-GRPO adv_clip_max); 0 = no clipping
    drop_zero_groups: bool = True  # groups whose advantages are all zero (equal rewards) are not trained
    per_reward: bool = False  # Pref-GRPO: normalize each reward within its group, then weight (else: the weighted sum)
    batch_normalize: bool = False  # GDPO (Pref-GRPO --apply_gdpo): standardize the advantages over the step's samples


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
    # float64, as Flow-GRPO's numpy statistics: float32 keeps ~7 digits of a reward, so rewards spread by 1e-3 around
    # 0.5 would lose ~4 of them in r - mean (advantages off by ~1e-5 relative)
    rewards = rewards.double()
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
    return Advantages(values.float(), keep, stats)


def weighted_group_advantages(
    dims: dict[str, torch.Tensor],
    weights: dict[str, float],
    groups: torch.Tensor,
    *,
    std: Literal["global", "group"] = "group",
    ddof: int = 1,
    eps: float = 1e-8,
    clip: float = 5.0,
    drop_zero_groups: bool = True,
    batch_normalize: bool = False,
) -> Advantages:
    """Pref-GRPO's advantages of several rewards: ``A_i = sum_k w_k (r_ki - mean_g r_k) / (std_k + eps)``, each
    reward ``dims[k]`` normalized within the groups as :func:`group_advantages` does (``std``, ``ddof``, ``eps``),
    then weighted by ``weights[k]``. ``batch_normalize`` (GDPO) then standardizes the weighted advantages over every
    sample that has them, ``(A - mean) / (std(ddof) + eps)``; ``clip`` bounds the result (Pref-GRPO clips at the
    loss, after both). A sample failed in any reward (NaN) gets advantage 0 and is not trained; groups with fewer
    than 2 complete samples, or (``drop_zero_groups``) whose weighted advantages are all 0, are not trained.
    """
    if not weights:
        raise ConfigError("per-reward advantages need the weight of each reward (an empty weight mapping was given)")
    missing = [name for name in weights if name not in dims]
    if missing:
        raise ConfigError(
            f"per-reward advantages: no per-sample values for {missing}; the reward returns {list(dims)}"
        )
    valid = torch.stack([torch.isfinite(dims[name].float()) for name in weights]).all(dim=0)
    nan = torch.tensor(math.nan)
    total = torch.zeros(len(groups))
    for name, weight in weights.items():
        one = group_advantages(
            torch.where(valid, dims[name].float(), nan),
            groups,
            std=std,
            ddof=ddof,
            eps=eps,
            clip=0.0,
            drop_zero_groups=False,
        )
        total += weight * one.values
    # The same for every reward (NaN in any reward is NaN in all): the groups with >= 2 complete samples.
    keep = one.keep
    zero_groups = torch.zeros_like(keep)
    for g in groups.unique():
        members = (groups == g) & keep
        if drop_zero_groups and bool(members.any()) and bool((total[members] == 0).all()):
            zero_groups |= members
    if batch_normalize and int(keep.sum()) > ddof:
        trained = total[keep]
        total = torch.where(keep, (total - trained.mean()) / (trained.std(correction=ddof) + eps), torch.zeros(()))
    if clip > 0:
        total = total.clamp(-clip, clip)
    keep &= ~zero_groups
    # Zero groups stay 0: the batch mean is 0 in exact arithmetic (each group's advantages sum to 0), not in floats.
    total = torch.where(keep, total, torch.zeros(()))
    trained = total[keep]
    stats = {
        "adv/mean_abs": float(trained.abs().mean()) if len(trained) else 0.0,
        "adv/max_abs": float(trained.abs().max()) if len(trained) else 0.0,
        "adv/clipped_frac": float((trained.abs() >= clip).float().mean()) if len(trained) and clip > 0 else 0.0,
        "groups/dropped": float(len(groups.unique()) - len(groups[keep].unique())),
        "samples/trained": float(keep.sum()),
    }
    return Advantages(total, keep, stats)


def step_advantages(
    scores: torch.Tensor,
    dims: dict[str, torch.Tensor],
    weights: dict[str, float],
    groups: torch.Tensor,
    config: AdvantageConfig,
) -> Advantages:
    """The advantages ``config`` (``advantage:``) asks for: of the weighted reward ``scores`` (Flow-GRPO), or per
    reward then weighted (``per_reward``, Pref-GRPO), optionally standardized over the step (``batch_normalize``)."""
    if config.per_reward or config.batch_normalize:
        per_reward = weights if config.per_reward else {"score": 1.0}
        values = dims if config.per_reward else {"score": scores}
        return weighted_group_advantages(
            values,
            per_reward,
            groups,
            std=config.std,
            ddof=config.ddof,
            eps=config.eps,
            clip=config.clip,
            drop_zero_groups=config.drop_zero_groups,
            batch_normalize=config.batch_normalize,
        )
    return group_advantages(
        scores,
        groups,
        std=config.std,
        ddof=config.ddof,
        eps=config.eps,
        clip=config.clip,
        drop_zero_groups=config.drop_zero_groups,
    )

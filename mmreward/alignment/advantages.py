"""Group-relative advantages (Flow-GRPO, arXiv 2505.05470; Pref-GRPO, arXiv 2508.20751): each reward normalized
within the group of samples of its prompt."""

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

"""Rewards of a GRPO iteration: the reward types the loop calls (a weighted reward mix, a judge's win rates within
the group, or Adv-GRPO's discriminator) and :func:`compute_rewards`, which rewards every sample once and shares the
result with every process.

Rewards that need whole groups (win rates) get them: the group's media are gathered to one process first, so a judge
never compares only a per-process slice (Pref-GRPO issue #18).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mmreward import media as media_io
from mmreward.alignment.group_rollout import GroupBatch
from mmreward.alignment.layout import GroupLayout, exchange_rows
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.mix import RewardMix
from mmreward.rewards.win_rate import group_win_rates


class GroupReward(Protocol):
    """What the loop calls to reward samples: ``score(prompts, media, groups=, generator=) -> RewardOutput``, the
    reward contract of :mod:`mmreward.rewards.base` with the two things a group reward may need besides.

    ``media`` is a ``(n, ...)`` uint8 batch (images ``(n, 3, H, W)``, videos ``(n, T, 3, H, W)``), ``groups`` the
    ``(n,)`` group index of each sample, ``generator`` the randomness a learned reward draws (Adv-GRPO's patch
    tokens), seeded by the program so rewards are reproducible after a resume. ``whole_groups``: True if the
    reward compares samples within a group (each call then holds complete groups); ``dims``: the names of the
    per-sample values it returns in :attr:`RewardOutput.dims` (each reward of a mix, the win rate), logged;
    ``weights``: the weight of each of them in ``scores`` (a weighted sum), for per-reward advantages.
    ``sources``: editing families' source image of each sample (canonical ``(3, H, W)``), given to the rewards that
    compare an edit with its source (``uses_source``); None for text-to-media families.
    """

    whole_groups: bool
    dims: tuple[str, ...]
    weights: dict[str, float]

    def score(
        self,
        prompts: list[str],
        media: torch.Tensor,
        *,
        groups: torch.Tensor,
        generator: torch.Generator | None,
        sources: list[torch.Tensor] | None = None,
    ) -> RewardOutput: ...


class PointwiseGroupReward:
    """Pointwise rewards (Flow-GRPO): a weighted :class:`~mmreward.rewards.mix.RewardMix`; a sample fails when any
    of its rewards fails."""

    whole_groups = False

    def __init__(self, mix: RewardMix) -> None:
        self.mix = mix
        self.dims = tuple(mix.weights)
        self.weights = dict(mix.weights)

    def score(self, prompts, media, *, groups=None, generator=None, sources=None) -> RewardOutput:
        return self.mix.score(prompts, media, sources=sources)


class WinRateGroupReward:
    """Pref-GRPO's reward: each sample's win rate against the other samples of its group under a pairwise judge
    (:func:`mmreward.rewards.win_rate.group_win_rates`, the batched form of :func:`mmreward.win_rate`; every
    pair in both presentation orders by default, all groups of a call in as few judge batches as it allows),
    times ``weight``, plus an optional weighted mix of pointwise rewards (Pref-GRPO's FLUX recipe: 0.4 x the
    UnifiedReward-Think win rate + 0.6 x CLIP). A sample fails when its win rate or any reward of the mix fails."""

    whole_groups = True

    def __init__(self, judge: Any, orders: str = "both", weight: float = 1.0, mix: RewardMix | None = None) -> None:
        self.judge = judge
        self.orders = orders
        self.weight = weight
        self.mix = mix
        self.weights = {"win_rate": weight, **(mix.weights if mix is not None else {})}
        self.dims = tuple(self.weights)

    def score(self, prompts, media, *, groups, generator=None, sources=None) -> RewardOutput:
        # Judges of edits (uses_source) see each sample's source image; the others judge the samples alone.
        judge_sources = sources if getattr(self.judge, "uses_source", False) else None
        out = group_win_rates(
            self.judge, list(prompts), media_io.as_items(media), groups.tolist(), self.orders, sources=judge_sources
        )
        win_rate = out.scores.float()
        dims = {"win_rate": win_rate}
        failed, errors = out.failed.bool(), list(out.errors)
        total = self.weight * torch.nan_to_num(win_rate)
        if self.mix is not None:
            mixed = self.mix.score(prompts, media, sources=sources)
            total = total + torch.nan_to_num(mixed.scores.float())
            dims.update(mixed.dims)
            errors = [a or b for a, b in zip(errors, mixed.errors, strict=True)]
            failed = failed | mixed.failed.bool()
        return RewardOutput(torch.where(failed, torch.nan, total), dims, failed, errors)


@dataclass
class IterationRewards:
    """Every sample's reward of an iteration, on every process (``(P G,)`` tensors on the CPU): ``scores`` (NaN
    where failed), ``failed``, the per-sample ``dims`` of the reward (NaN where missing), the failures' reasons
    (``errors``: ``[(global index, reason)]``, all processes' failures) and the weight of each dim in ``scores``."""

    scores: torch.Tensor
    failed: torch.Tensor
    dims: dict[str, torch.Tensor]
    errors: list[tuple[int, str]]
    weights: dict[str, float] = field(default_factory=dict)


def compute_rewards(
    reward: GroupReward,
    batch: GroupBatch,
    layout: GroupLayout,
    accelerator: Any,
    generator: torch.Generator | None = None,
) -> IterationRewards:
    """Reward every sample of the iteration and share the result with every process (see the module docstring);
    ``generator`` goes to the reward (see :class:`GroupReward`).

    Pointwise rewards score each process's own samples. Group rewards are computed by each group's owner: when
    groups span processes the media are first delivered to the owners with :func:`exchange_rows`.
    """
    if not reward.whole_groups or layout.groups_are_local:  # local groups: each process owns the groups it holds
        index, media = batch.index, batch.media
    else:
        index, media = exchange_rows(batch.media, layout.owners(), accelerator)
    parts = []
    if len(index):
        parts.append(
            (index, score_rows(reward, batch.prompts, index, media, layout.group_size, generator, batch.sources))
        )
    return share_rewards(reward, parts, layout, accelerator)


def score_rows(
    reward: GroupReward,
    prompts: list[str],
    index: torch.Tensor,
    media: torch.Tensor,
    group_size: int,
    generator: torch.Generator | None = None,
    sources: list[torch.Tensor] | None = None,
) -> RewardOutput:
    """The reward of the samples with global indices ``index`` ``(n,)`` and media ``(n, ...)``; ``prompts`` are the
    iteration's ``P`` prompts (sample ``i`` belongs to group ``i // group_size``), ``sources`` their ``P`` source
    images (editing) or None."""
    kwargs = {} if sources is None else {"sources": [sources[int(i) // group_size] for i in index]}
    return reward.score(
        [prompts[int(i) // group_size] for i in index],
        media,
        groups=index // group_size,
        generator=generator,
        **kwargs,
    )


def share_rewards(
    reward: GroupReward, parts: list[tuple[torch.Tensor, RewardOutput]], layout: GroupLayout, accelerator: Any
) -> IterationRewards:
    """Assemble the iteration's rewards on every process from what each process scored: ``parts`` holds
    ``(global indices (n,), their RewardOutput)`` pairs (one for the whole local share, or one per micro-batch
    when rewards overlap the rollout); every sample is scored by exactly one process. A collective: every process
    calls it, with or without parts."""
    scores = torch.zeros(layout.total)
    failed = torch.zeros(layout.total)
    dims = {name: torch.zeros(layout.total) for name in reward.dims}
    present = {name: torch.zeros(layout.total) for name in reward.dims}
    errors: list[tuple[int, str]] = []
    for index, out in parts:
        scores[index] = torch.nan_to_num(out.scores.float().cpu())
        failed[index] = out.failed.float().cpu()
        for name in reward.dims:
            values = out.dims.get(name)
            if values is not None:
                values = values.float().cpu()
                dims[name][index] = torch.nan_to_num(values)
                present[name][index] = torch.isfinite(values).float()
        errors += [(int(i), e or "failed") for i, e, f in zip(index, out.errors, out.failed, strict=True) if f]
    # Each sample is computed by exactly one process: a sum over processes assembles the whole step.
    packed = torch.stack([scores, failed, *dims.values(), *present.values()]).to(accelerator.device)
    packed = accelerator.reduce(packed, "sum").cpu()
    scores, failed = packed[0], packed[1] > 0.5
    k = len(dims)
    dims = {
        name: torch.where(packed[2 + k + n] > 0.5, packed[2 + n], torch.full_like(packed[2 + n], math.nan))
        for n, name in enumerate(dims)
    }
    if bool(failed.any()) and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        errors = gather_object(errors)
    scores = torch.where(failed, torch.full_like(scores, math.nan), scores)
    return IterationRewards(scores, failed, dims, errors, dict(reward.weights))


def reward_metrics(rewards: IterationRewards, failed_total: int) -> dict[str, float]:
    """The reward numbers logged every step: mean and std of the valid rewards, each component's mean, failures."""
    valid = rewards.scores[~rewards.failed]
    return {
        "reward/mean": float(valid.mean()) if len(valid) else float("nan"),
        "reward/std": float(valid.std()) if len(valid) > 1 else float("nan"),
        **{f"reward/{name}": float(values.nanmean()) for name, values in rewards.dims.items()},
        "reward/failed": int(rewards.failed.sum()),
        "reward/failed_total": failed_total,
    }


def write_reward_failures(
    output: Path, rewards: IterationRewards, prompts: list[str], group_size: int, step: int
) -> None:
    """Append this step's failed rewards (sample, prompt, reason) to ``output/reward_failures.jsonl``."""
    if not rewards.errors:
        return
    with (output / "reward_failures.jsonl").open("a", encoding="utf-8") as f:
        for index, reason in rewards.errors:
            f.write(
                json.dumps({"step": step, "sample": index, "prompt": prompts[index // group_size], "reason": reason})
                + "\n"
            )

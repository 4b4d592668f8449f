"""Online preference data for Flow-DPO and Flow-RWR: every round the reference samples ``N`` images or videos per
prompt, a reward mix ranks them, and the best and worst of a prompt become a pair (DPO) or every sample is kept
with the weight ``exp(reward / temperature)`` (RWR). Editing families sample edits of each prompt's source image, the
rewards that declare ``uses_source`` score them against it, and the training rows keep the source's file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from mmreward.alignment.group_rollout import SamplerConfig, rollout_window
from mmreward.alignment.preference_sets import TrainingSet
from mmreward.data.prompts import load_sources
from mmreward.flow.models import FlowModel
from mmreward.flow.rollout import sample, seeded
from mmreward.losses import rwr_weights
from mmreward.rewards.base import RewardOutput
from mmreward.rewards.mix import RewardMix
from mmreward.train.lora import LoraReference

T = TypeVar("T")


@dataclass
class OnlineConfig:
    rewards: dict[str, float] = field(default_factory=dict)  # e.g. {pickscore: 1.0}
    prompts_per_round: int = 8  # per process
    samples_per_prompt: int = 24  # N; best vs worst becomes a pair (Flow-GRPO's DPO: 24)
    round_steps: int = 50  # optimizer steps trained on one round's pairs before new samples are drawn
    ref_refresh_every: int = 0  # steps; 0 = the base model stays the reference (offline DPO)
    sampling: SamplerConfig = field(default_factory=lambda: SamplerConfig(num_steps=40))  # the reference's samples


def round_prompts(
    prompts: Sequence[T], round_index: int, per_process: int, rank: int, world: int, seed: int
) -> list[T]:
    """This process's prompts (or prompt indices) for one round: consecutive slices of a stream of seeded
    permutations."""
    chosen = []
    for k in range(per_process):
        position = (round_index * world + rank) * per_process + k
        epoch, offset = divmod(position, len(prompts))
        order = torch.randperm(len(prompts), generator=seeded(seed, "prompts", epoch))
        chosen.append(prompts[int(order[offset])])
    return chosen


def build_online_round(
    cfg: Any,
    model: FlowModel,
    rewards: RewardMix,
    reference: LoraReference,
    prompts: list[str],
    round_index: int,
    accelerator: Any,
    sources: list[Path] | None = None,
) -> tuple[TrainingSet, dict[str, float]]:
    """Sample with the reference, score with the reward mix, keep best-vs-worst pairs (DPO) or all (RWR).
    ``sources``: editing families, the source image file of each prompt (its samples are edits of it)."""
    group, sampler, seed = cfg.online.samples_per_prompt, cfg.online.sampling, cfg.train.seed
    with reference.active(), accelerator.autocast():
        rollout = sample(
            model,
            prompts,
            group_size=group,
            num_steps=sampler.num_steps,
            height=cfg.model.height,
            width=cfg.model.width,
            num_frames=cfg.model.num_frames,
            guidance_scale=sampler.guidance_scale,
            negative_prompt=sampler.negative_prompt,
            sde_type=sampler.sde_type,
            noise_level=sampler.noise_level,
            sde_window=rollout_window(sampler, round_index, seed),
            generator=seeded(seed, accelerator.process_index, "round", round_index),
            batch_size=sampler.batch_size,
            sources=None if sources is None else load_sources(sources),
        )
    scored = rewards.score(rollout.prompts, rollout.media, sources=rollout.sources)  # sources: (P N,) or None
    return round_training_set(
        prompts, rollout.final.cpu(), scored, group, cfg.loss.type, cfg.loss.rwr_temperature, sources
    )


def round_training_set(
    prompts: list[str],
    final: torch.Tensor,
    scored: RewardOutput,
    group: int,
    loss_type: str,
    rwr_temperature: float,
    sources: list[Path] | None = None,
) -> tuple[TrainingSet, dict[str, float]]:
    """One round's training data from its scored samples, and the round's statistics.

    Args:
        prompts: the ``P`` prompts of the round.
        final: ``(P * N, *latent)`` final latents, prompt-major (sample ``j`` of prompt ``p`` is row ``p * N + j``).
        scored: the reward mix's output on the ``P * N`` decoded samples, in the same order.
        group: ``N``, samples per prompt.
        loss_type: ``"rwr"`` keeps every scored sample with its weight ``N' * softmax(r / rwr_temperature)``
            (over the ``N'`` scored samples of the round); any DPO loss keeps, per prompt, the best scored sample
            as chosen and the worst as rejected, skipping prompts with fewer than two scored samples or no reward
            difference.
        sources: editing families, the source image file of each of the ``P`` prompts (kept with its rows).
    """
    total = scored.scores.view(len(prompts), group)  # (P, N)
    valid = ~scored.failed.view(len(prompts), group)
    # The mean of no values is NaN: a round where every sample failed reports NaN rewards.
    stats = {"round/reward_mean": float(total[valid].mean()), "round/failed_samples": float((~valid).sum())}
    for name, values in scored.dims.items():
        stats[f"round/reward_{name}"] = float(values[~scored.failed].mean())
    if loss_type == "rwr":
        keep = valid.flatten().nonzero().flatten()
        weights = rwr_weights(scored.scores[keep], rwr_temperature)
        kept_sources = None if sources is None else [sources[int(i) // group] for i in keep]
        return (
            TrainingSet([prompts[int(i) // group] for i in keep], final[keep], weights=weights, sources=kept_sources),
            stats,
        )
    best, worst, kept, unusable = [], [], [], 0
    for p in range(len(prompts)):
        rows = valid[p].nonzero().flatten()
        if len(rows) < 2 or total[p, rows].max() == total[p, rows].min():
            unusable += 1  # fewer than two scored samples, or all rewards equal: no preference to learn
            continue
        best.append(p * group + int(rows[total[p, rows].argmax()]))
        worst.append(p * group + int(rows[total[p, rows].argmin()]))
        kept.append(p)
    stats["round/unusable_prompts"] = float(unusable)
    if best:
        stats["round/best_minus_worst"] = float((scored.scores[best] - scored.scores[worst]).mean())
    kept_sources = None if sources is None else [sources[p] for p in kept]
    # no usable prompt: (0, *latent) each
    return TrainingSet([prompts[p] for p in kept], final[best], final[worst], sources=kept_sources), stats

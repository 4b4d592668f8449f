"""The training and held-out parts of a latent-reward run's data, and the rows of each global batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mmreward.data.media_pairs import SkippedPair
from mmreward.errors import ConfigError
from mmreward.flow.rollout import seeded
from mmreward.reward_training.latent_data import Plan, distill_dims
from mmreward.reward_training.latent_encoding import Latents
from mmreward.reward_training.latent_sections import LatentDataConfig


@dataclass
class TrainingData:
    """Pairs ``(dim, winner, loser)`` (pairs, synthetic) or items with standardized targets (distill), split
    into training and held-out parts."""

    dims: list[str]
    train: list[tuple[int, int, int]] | list[int]
    heldout: list[tuple[int, int, int]] | list[int]
    targets: dict[int, torch.Tensor] = field(default_factory=dict)  # distill: item -> (K,) standardized
    skipped: list[SkippedPair] = field(default_factory=list)


def split_data(data: LatentDataConfig, seed: int, plan: Plan, latents: Latents) -> TrainingData:
    """Hold out a seeded ``data.holdout`` share of the usable pairs (pairs whose items were both read), or of the
    distillation samples every reward scored, after standardizing each dimension's scores over those samples."""
    order = lambda n: torch.randperm(n, generator=seeded(seed, "holdout")).tolist()  # noqa: E731
    if data.source != "distill":
        usable, skipped = [], list(plan.skipped)
        for dim, winner, loser in plan.pairs:
            bad = [latents.failed[i] for i in (winner, loser) if i in latents.failed]
            if bad:
                skipped.append(SkippedPair(-1, f"{plan.dims[dim]}: {bad[0]}"))
            else:
                usable.append((dim, winner, loser))
        if len(usable) < 2:
            raise ConfigError(f"{len(usable)} usable pairs; need at least 2 (one to train, one to hold out)")
        shuffled = [usable[i] for i in order(len(usable))]
        cut = max(1, round(data.holdout * len(usable)))
        return TrainingData(plan.dims, shuffled[cut:], shuffled[:cut], skipped=skipped)
    # distill: standardize each dimension over the samples that scored (failed samples are dropped)
    dims = distill_dims(data.rewards)
    items = sorted(latents.targets)
    targets = torch.stack([latents.targets[i] for i in items])  # (N, K)
    ok = ~torch.isnan(targets).any(dim=1)
    kept = [i for i, good in zip(items, ok.tolist(), strict=True) if good]
    skipped = [SkippedPair(i, "a reward failed on this sample") for i in sorted(set(items) - set(kept))]
    if len(kept) < 4:
        raise ConfigError(f"only {len(kept)} generated samples were scored by every reward; need at least 4")
    values = targets[ok]
    standardized = (values - values.mean(0)) / values.std(0).clamp_min(1e-8)
    table = dict(zip(kept, standardized.unbind(0), strict=True))
    shuffled = [kept[i] for i in order(len(kept))]
    cut = max(2, round(data.holdout * len(kept)))
    return TrainingData(dims, shuffled[cut:], shuffled[:cut], table, skipped)


def global_rows(size: int, step: int, global_batch: int, seed: int) -> list[int]:
    """Rows of one global batch: consecutive slices of a seeded permutation per epoch (wrapping around), so 1 or N
    processes see the same global batch."""
    rows = []
    position = step * global_batch
    while len(rows) < global_batch:
        epoch, offset = divmod(position, size)
        order = torch.randperm(size, generator=seeded(seed, "epoch", epoch))
        take = min(global_batch - len(rows), size - offset)
        rows += order[offset : offset + take].tolist()
        position += take
    return rows

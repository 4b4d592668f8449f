"""The ``mmreward score`` engine: decode and preprocess in loader workers while the models score.

Decoding images and videos is CPU work that the model does not need to wait for: a ``DataLoader`` with worker
processes runs each reward's :meth:`~mmreward.rewards.base.RewardModel.prepare` (media conversion, resize,
normalization) for the next batches while the main process runs the models on the current one. Identical
inputs (same file bytes, same prompt) are prepared and scored once. Media are decoded once per distinct video
sampling setting, not once per reward.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mmreward.errors import MediaError
from mmreward.rewards.base import RewardModel
from mmreward.score_inputs import Item, content_key


@dataclass
class ScoredRow:
    """One output row: the item, the weighted total, each reward's score and dimensions."""

    path: str
    prompt: str | None
    score: float
    rewards: dict[str, float]
    failed: bool
    error: str | None
    dims: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "prompt": self.prompt,
            "score": _finite_or_none(self.score),
            **{name: _finite_or_none(value) for name, value in self.rewards.items()},
            **{name: _finite_or_none(value) for name, value in self.dims.items()},
            "failed": self.failed,
            "error": self.error,
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _sampling_key(reward: RewardModel) -> tuple:
    # Rewards that override load_media (VLM heads sample videos VideoAlign's way and keep the fps; judges refuse
    # short videos) convert media their own way, so they share decoded media only with rewards of their class.
    # Judges also choose their frames by a rule (other rewards have none).
    frame_rule = getattr(reward, "frame_rule", None)
    return (type(reward).load_media, reward.video_fps, reward.video_num_frames, frame_rule, reward.max_pixels)


class PreparedMedia(Dataset):
    """Item ``i`` -> ``{reward name: prepared input or the error message}``, computed in loader workers.

    Media are converted once per distinct video-sampling setting among the rewards, then prepared per reward.
    """

    def __init__(self, paths: list[str], rewards: dict[str, RewardModel]) -> None:
        self.paths = paths
        self.rewards = rewards
        self.groups: dict[tuple, list[str]] = {}
        for name, reward in rewards.items():
            self.groups.setdefault(_sampling_key(reward), []).append(name)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        prepared: dict[str, Any] = {}
        for names in self.groups.values():
            first = self.rewards[names[0]]
            try:
                media = first.load_media(self.paths[index])
            except MediaError as err:
                prepared.update({name: str(err) for name in names})
                continue
            for name in names:
                try:
                    prepared[name] = self.rewards[name].prepare(media)
                except MediaError as err:
                    prepared[name] = str(err)
        return prepared


def _identity(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


def default_workers() -> int:
    """Loader workers: one per spare core, at least one (decoding overlaps compute even on two cores)."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def score_items(
    items: list[Item],
    rewards: dict[str, RewardModel],
    weights: dict[str, float],
    *,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[ScoredRow]:
    """Score ``items`` with every reward; yields one row per item, in input order, each as soon as its batch is
    scored.

    Items that already carry an error (missing file, bad manifest) are yielded as failed rows without decoding.
    An item fails when any reward fails on it (its total would otherwise silently leave a term out); the
    per-reward scores of the rewards that succeeded are still reported.

    Args:
        rewards: loaded rewards by output column name.
        weights: weight of each reward in the total ``score = sum(w * reward)``.
        progress: called with the number of items finished after each batch.
    """
    # Unique work: one entry per distinct (file bytes, extension, prompt). The extension is part of the key because
    # it decides how the bytes are decoded (two empty files a.png and b.mp4 fail for different reasons).
    keys: list[tuple[str, str, str] | None] = []
    unique: dict[tuple[str, str, str], int] = {}
    unique_paths: list[str] = []
    unique_prompts: list[str] = []
    for item in items:
        if item.error is not None:
            keys.append(None)
            continue
        try:
            key = (content_key(item.path), Path(item.path).suffix.lower(), item.prompt or "")
        except OSError as err:
            item.error = f"cannot read file: {err.strerror or err}"
            keys.append(None)
            continue
        keys.append(key)
        if key not in unique:
            unique[key] = len(unique_paths)
            unique_paths.append(item.path)
            unique_prompts.append(item.prompt or "")

    names = list(rewards)
    results: list[tuple[dict[str, float], dict[str, float], dict[str, str]]] = []

    def row(item: Item, key: tuple[str, str, str] | None) -> ScoredRow:
        if key is None:
            return ScoredRow(item.path, item.prompt, math.nan, {n: math.nan for n in names}, True, item.error)
        index = unique[key]
        per_reward, dims, errors = results[index]
        # A copy's error is about the copy: the scored file's name in the message becomes this item's.
        error = "; ".join(f"{n}: {e}" for n, e in errors.items()).replace(unique_paths[index], item.path) or None
        total = math.nan if error else sum(weights[n] * per_reward[n] for n in names)
        return ScoredRow(item.path, item.prompt, total, per_reward, error is not None, error, dims)

    # Rows are yielded as soon as their unique item is scored (unique items are scored in first-appearance order,
    # so a row is ready once every row before it is), which lets a caller record progress batch by batch.
    batches = _score_unique(unique_paths, unique_prompts, rewards, batch_size, num_workers, progress)
    position = 0
    while True:
        while position < len(items) and (keys[position] is None or unique[keys[position]] < len(results)):
            yield row(items[position], keys[position])
            position += 1
        batch = next(batches, None)
        if batch is None:  # every unique item is scored, so every row was yielded
            return
        results.extend(batch)


def _score_unique(
    paths: list[str],
    prompts: list[str],
    rewards: dict[str, RewardModel],
    batch_size: int,
    num_workers: int | None,
    progress: Callable[[int], None] | None,
) -> Iterator[list[tuple[dict[str, float], dict[str, float], dict[str, str]]]]:
    """Per batch of unique items, in order: per item (score per reward, ``reward.dim`` values, error per failed
    reward)."""
    if not paths:
        return
    workers = default_workers() if num_workers is None else num_workers
    pin = any(r.device.type == "cuda" for r in rewards.values())
    loader = DataLoader(
        PreparedMedia(paths, rewards),
        batch_size=batch_size,
        shuffle=False,
        num_workers=min(workers, math.ceil(len(paths) / batch_size)),
        collate_fn=_identity,
        pin_memory=pin,
        # fork shares the loaded models with the workers without pickling them; workers never use the models.
        multiprocessing_context="fork"
        if workers > 0 and "fork" in torch.multiprocessing.get_all_start_methods()
        else None,
        prefetch_factor=2 if workers > 0 else None,
        persistent_workers=False,
    )
    start = 0
    for batch in loader:
        batch_prompts = prompts[start : start + len(batch)]
        scores = {name: [math.nan] * len(batch) for name in rewards}
        dims: list[dict[str, float]] = [{} for _ in batch]
        errors: list[dict[str, str]] = [{} for _ in batch]
        for name, reward in rewards.items():
            prepared = [sample[name] for sample in batch]
            item_errors = [p if isinstance(p, str) else None for p in prepared]
            out = reward.score_prepared_batch(batch_prompts, prepared, item_errors)
            for i in range(len(batch)):
                if out.failed[i]:
                    errors[i][name] = out.errors[i] or "failed"
                scores[name][i] = float(out.scores[i])
                for dim, values in out.dims.items():
                    dims[i][f"{name}.{dim}"] = float(values[i])
        start += len(batch)
        if progress is not None:
            progress(len(batch))
        yield [({name: scores[name][i] for name in rewards}, dims[i], errors[i]) for i in range(len(batch))]

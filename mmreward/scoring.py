"""The ``mmreward score`` engine: decode and preprocess in loader workers while the models score.

Decoding images and videos is CPU work that the model does not need to wait for: a ``DataLoader`` with worker
processes runs each reward's :meth:`~mmreward.rewards.base.RewardModel.prepare` (media conversion, resize,
normalization) for the next batches while the main process runs the models on the current one. Identical
inputs (same file bytes, same prompt, and for editing rewards the same source bytes) are prepared and scored
once. Media are decoded once per distinct video sampling setting, not once per reward.

Rewards that compare an edit with its source image (``uses_source``) are given each item's source, prepared like
the item, as ``(item, source)`` pairs (the contract of :meth:`~mmreward.rewards.base.RewardModel.score`); other
rewards score the media alone.
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
    """One output row: the item, the weighted total, each reward's score and dimensions, and the item's source
    image when it has one (a ``source`` column after ``prompt``)."""

    path: str
    prompt: str | None
    score: float
    rewards: dict[str, float]
    failed: bool
    error: str | None
    dims: dict[str, float] = field(default_factory=dict)
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "prompt": self.prompt,
            **({} if self.source is None else {"source": self.source}),
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
    A reward with ``uses_source`` gets ``(prepared item, prepared source)``; its item fails on its own when the
    source cannot be read (``source: <reason>``), the other rewards still score it. ``sources[i]`` is None only
    when no reward uses sources (the command refuses that case up front).
    """

    def __init__(self, paths: list[str], sources: list[str | None], rewards: dict[str, RewardModel]) -> None:
        self.paths = paths
        self.sources = sources
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
            # Rewards of one group convert media the same way, so the source is converted once for them all.
            source, source_error = None, None
            if any(self.rewards[name].uses_source for name in names):
                try:
                    source = first.load_media(self.sources[index])
                except MediaError as err:
                    source_error = f"source: {err}"
            for name in names:
                reward = self.rewards[name]
                if reward.uses_source and source_error is not None:
                    prepared[name] = source_error
                    continue
                try:
                    item = reward.prepare(media)
                except MediaError as err:
                    prepared[name] = str(err)
                    continue
                if not reward.uses_source:
                    prepared[name] = item
                    continue
                try:
                    prepared[name] = (item, reward.prepare(source))
                except MediaError as err:
                    prepared[name] = f"source: {err}"
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
    per-reward scores of the rewards that succeeded are still reported. Rewards with ``uses_source`` are given
    each item's ``source`` (every valid item must have one; the command checks this before loading weights).

    Args:
        rewards: loaded rewards by output column name.
        weights: weight of each reward in the total ``score = sum(w * reward)``.
        progress: called with the number of items finished after each batch.
    """
    # Unique work: one entry per distinct (file bytes, extension, prompt, source). The extension is part of the key
    # because it decides how the bytes are decoded (two empty files a.png and b.mp4 fail for different reasons).
    # The source counts only when a reward reads it: by its bytes and extension, or by its path when it cannot be
    # read (the worker then records why, for the rewards that need it).
    uses_source = any(reward.uses_source for reward in rewards.values())
    keys: list[tuple[str, ...] | None] = []
    unique: dict[tuple[str, ...], int] = {}
    unique_paths: list[str] = []
    unique_prompts: list[str] = []
    unique_sources: list[str | None] = []
    for item in items:
        if item.error is not None:
            keys.append(None)
            continue
        try:
            key: tuple[str, ...] = (content_key(item.path), Path(item.path).suffix.lower(), item.prompt or "")
        except OSError as err:
            item.error = f"cannot read file: {err.strerror or err}"
            keys.append(None)
            continue
        if uses_source and item.source is not None:
            try:
                key += (content_key(item.source), Path(item.source).suffix.lower())
            except OSError:
                key += ("unreadable", item.source)
        keys.append(key)
        if key not in unique:
            unique[key] = len(unique_paths)
            unique_paths.append(item.path)
            unique_prompts.append(item.prompt or "")
            unique_sources.append(item.source if uses_source else None)

    names = list(rewards)
    results: list[tuple[dict[str, float], dict[str, float], dict[str, str]]] = []

    def row(item: Item, key: tuple[str, ...] | None) -> ScoredRow:
        if key is None:
            nan = {n: math.nan for n in names}
            return ScoredRow(item.path, item.prompt, math.nan, nan, True, item.error, source=item.source)
        index = unique[key]
        per_reward, dims, errors = results[index]
        # A copy's error is about the copy: the scored file's name in the message becomes this item's.
        error = "; ".join(f"{n}: {e}" for n, e in errors.items()).replace(unique_paths[index], item.path) or None
        total = math.nan if error else sum(weights[n] * per_reward[n] for n in names)
        return ScoredRow(item.path, item.prompt, total, per_reward, error is not None, error, dims, item.source)

    # Rows are yielded as soon as their unique item is scored (unique items are scored in first-appearance order,
    # so a row is ready once every row before it is), which lets a caller record progress batch by batch.
    batches = _score_unique(unique_paths, unique_prompts, unique_sources, rewards, batch_size, num_workers, progress)
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
    sources: list[str | None],
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
        PreparedMedia(paths, sources, rewards),
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

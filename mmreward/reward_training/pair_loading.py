"""Preference pairs for reward-model training: the pair files read and split, a dataset that prepares both sides
with the task, batches, and an epoch order that a resumed run reproduces."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mmreward.data.pairs import LabeledPair, read_pairs, split_pairs
from mmreward.errors import MediaError
from mmreward.reward_training.sections import PairFileDataConfig


def read_training_pairs(
    data: PairFileDataConfig, dims: list[str], seed: int
) -> tuple[list[LabeledPair], list[LabeledPair]]:
    """``(training, validation)`` pairs: the validation file, or a seeded ``data.validation_fraction`` of the
    training file; with ``data.use_ties`` off, pairs tied on every dimension are dropped first."""
    pairs = read_pairs(data.train, dims, data.media_root)
    if not data.use_ties:
        pairs = [p for p in pairs if any(p.labels[d] in (1, -1) for d in dims)]
    if data.validation:
        return pairs, read_pairs(data.validation, dims, data.media_root)
    return split_pairs(pairs, data.validation_fraction, seed)


class PairDataset(Dataset):
    """Pair ``i`` -> both sides prepared by the task, prompt, labels and margins ``(D,)``; None if unusable."""

    def __init__(
        self, pairs: list[LabeledPair], task: Any, dims: list[str], margin: float, signed_margin: bool = False
    ) -> None:
        self.pairs, self.task, self.dims, self.margin = pairs, task, dims, margin
        self.signed_margin = signed_margin

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        pair = self.pairs[index]
        try:
            a, b = self.task.prepare(pair.path_a), self.task.prepare(pair.path_b)
        except MediaError as err:
            print(f"skipping pair {index}: {err}", file=sys.stderr)
            return None
        labels = torch.tensor([pair.labels[d] for d in self.dims])
        # The margin loss wants the chosen side's lead where the file has MOS columns: |MOS_A - MOS_B|, or signed
        # as VideoAlign computes it (MOS of the labelled winner minus the other's; negative where they disagree).
        margins = torch.tensor([self._margin(pair, d) for d in self.dims], dtype=torch.float32)
        return {"a": a, "b": b, "prompt": pair.prompt, "labels": labels, "margins": margins}

    def _margin(self, pair: LabeledPair, dim: str) -> float:
        if dim not in pair.mos_gap:
            return self.margin
        gap = pair.mos_gap[dim]  # MOS_A - MOS_B
        if not self.signed_margin:
            return abs(gap)
        return -gap if pair.labels[dim] == -1 else gap


def collate_pairs(items: list[dict[str, Any] | None], task: Any) -> dict[str, Any] | None:
    """The task's model inputs with labels and margins ``(B, D)``; unreadable pairs (None) are left out."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    return {
        **task.collate(items),
        "labels": torch.stack([it["labels"] for it in items]),
        "margins": torch.stack([it["margins"] for it in items]),
    }


class EpochShuffle(Sampler[int]):
    """A permutation that depends only on (seed, epoch), so a resumed run sees the same batches in each epoch."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def pair_loader(
    pairs: list[LabeledPair],
    task: Any,
    dims: list[str],
    margin: float,
    batch_size: int,
    num_workers: int,
    sampler: Sampler | None = None,
    signed_margin: bool = False,
) -> DataLoader:
    """Batches of :func:`collate_pairs` over ``pairs`` (in order, or in ``sampler``'s order)."""
    return DataLoader(
        PairDataset(pairs, task, dims, margin, signed_margin),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(collate_pairs, task=task),
    )

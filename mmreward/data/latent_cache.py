"""VAE latents of a training set, encoded once and read back memory-mapped.

Every process encodes its share of the media into one safetensors shard under the run's ``cache/`` folder (named by
a hash of what the latents depend on, so a changed data or model setting encodes again and an unchanged one is
reused on resume); training then reads rows of every shard on demand, so sets larger than host memory work.
Media are streamed: at most ``batch_size`` items are decoded at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def cache_key(fingerprint: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``fingerprint`` (JSON, sorted keys): what the cached latents depend on."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def file_fingerprint(path: str | Path) -> list[int]:
    """``[size, mtime_ns]`` of a data file: an edited table gives another cache key."""
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def shard_paths(folder: str | Path, name: str, key: str, world: int) -> list[Path]:
    """``folder/{name}-{key}-{r}of{world}.safetensors`` for every process ``r``."""
    return [Path(folder) / f"{name}-{key}-{r}of{world}.safetensors" for r in range(world)]


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write one process's shard atomically (a temporary file, then a rename): a stopped run never leaves a
    half-written shard that a resume would trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def open_shards(paths: Sequence[Path]) -> list[Any]:
    """Memory-mapped handles of the shards (``handle.metadata()``, ``handle.get_slice(name)``)."""
    return [safe_open(str(path), "pt") for path in paths]


class MappedRows:
    """Rows of a tensor stored across shards, read on demand: ``rows[keys]`` stacks the rows at
    ``where[key] = (shard, row in shard)`` for each key (``where`` a list by position or a dict by item id)."""

    def __init__(self, slices: list[Any], where: Sequence[tuple[int, int]] | Mapping[int, tuple[int, int]]) -> None:
        self.slices, self.where = slices, where

    def __len__(self) -> int:
        return len(self.where)

    def __getitem__(self, keys: list[int]) -> torch.Tensor:
        return torch.stack([self.slices[self.where[k][0]][self.where[k][1]] for k in keys])


def encode_streamed(
    model: Any,
    items: Iterable[tuple[Any, Sequence[torch.Tensor]]],
    batch_size: int,
    empty: Sequence[int],
    sides: int = 1,
) -> tuple[list[Any], list[torch.Tensor]]:
    """VAE latents of streamed items, ``batch_size`` items per ``model.encode_media`` call and side.

    ``items`` yields ``(key, media)`` with one media tensor per side (a pair has ``sides=2``: chosen, rejected).
    Returns the keys in order and, per side, the float32 CPU latents ``(n, *latent)``; ``empty`` is the latent shape
    of zero items (``(0, *latent)``), so a process without items still writes a shard of the right shape.
    """
    keys: list[Any] = []
    latents = [[torch.zeros(empty)] for _ in range(sides)]
    buffer: list[tuple[Any, Sequence[torch.Tensor]]] = []

    def flush() -> None:
        if not buffer:
            return
        with torch.no_grad():
            for side, out in enumerate(latents):
                out.append(model.encode_media(torch.stack([media[side] for _, media in buffer])).float().cpu())
        keys.extend(key for key, _ in buffer)
        buffer.clear()

    for item in items:
        buffer.append(item)
        if len(buffer) == batch_size:
            flush()
    flush()
    return keys, [torch.cat(side) for side in latents]

"""What Flow-DPO and Flow-RWR train on, offline: pairs from a table of media files (images or videos, VideoAlign's
pair schema) or synthetic brightness pairs, VAE-encoded once into the run's latent cache
(:mod:`mmreward.data.latent_cache`) and read memory-mapped, and the rows of each micro-batch.

Functions take the program's config (``cfg``): its ``data``, ``model``, ``train`` and ``output_dir``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from mmreward.data.latent_cache import (
    MappedRows,
    cache_key,
    encode_streamed,
    file_fingerprint,
    open_shards,
    shard_paths,
    write_shard,
)
from mmreward.data.media_pairs import SkippedPair, load_fitted, read_pair_table
from mmreward.data.prompts import load_sources
from mmreward.data.synthetic_brightness import PROMPTS, bright_and_dark
from mmreward.errors import ConfigError, MediaError
from mmreward.flow.models import FlowModel, PromptEmbeds
from mmreward.flow.rollout import seeded


@dataclass
class PairDataConfig:
    source: Literal["offline", "synthetic", "online"] = "online"
    pairs: str | None = None  # offline: pair table (.csv / .jsonl)
    media_root: str | None = None  # offline: base of relative paths (default: the table's directory)
    label_columns: list[str] = field(default_factory=list)  # VideoAlign schema: dimensions that vote, e.g. [TA]
    video_fps: float | None = 16.0  # videos are read at the generator's frame rate (Wan 2.1: 16); None: spread
    num_synthetic: int = 32  # synthetic: number of pairs
    # online: text file, one prompt per line; editing families: a .jsonl/.csv/.tsv table with prompt and image columns
    prompts: str | None = None
    # editing families: the source image column of data.pairs (offline; paths like chosen/rejected) and data.prompts
    image_column: str = "image"
    encode_batch_size: int = 8  # media per VAE call when caching latents


@dataclass
class TrainingSet:
    """What the loss trains on: ``chosen`` latents with their prompts, and for DPO ``rejected`` ones (pairs);
    for RWR per-sample ``weights`` instead. Editing families: ``sources[i]``, the source image file row ``i`` edits
    (read when a batch draws it)."""

    prompts: list[str]
    chosen: torch.Tensor | MappedRows  # (N, *latent)
    rejected: torch.Tensor | MappedRows | None = None  # (N, *latent)
    weights: torch.Tensor | None = None  # (N,)
    sources: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, rows: list[int]) -> TrainingSet:
        return TrainingSet(
            [self.prompts[i] for i in rows],
            self.chosen[rows],
            None if self.rejected is None else self.rejected[rows],
            None if self.weights is None else self.weights[rows],
            None if self.sources is None else [self.sources[i] for i in rows],
        )

    def conditioning(self, model: FlowModel, size: dict[str, int | None]) -> PromptEmbeds:
        """The rows' prompt conditioning, for editing and image-to-video families encoded with their source images
        (``size``: the training media's ``height``, ``width`` and ``num_frames``, ``FlowModelConfig.sample_size()``,
        which image-to-video conditioning needs)."""
        sources = None if self.sources is None else load_sources(self.sources)
        at = (size["height"], size["width"], size["num_frames"])
        return model.encode_prompts(self.prompts, sources=sources, size=at)


def synthetic_pairs(
    cfg: Any, kind: str, rank: int, world: int
) -> Iterator[tuple[int, str, torch.Tensor, torch.Tensor]]:
    """Random smooth textures; the chosen one is the same texture brighter (mean ~0.7 vs ~0.3). Yields
    ``(id, prompt, None, chosen, rejected)`` for this process's share (ids ``rank, rank + world, ...``; no source
    image)."""
    g = seeded(cfg.train.seed, "synthetic")
    frames = cfg.model.num_frames if kind == "video" else 1
    for i in range(cfg.data.num_synthetic):
        coarse = torch.rand(frames, 3, 4, 4, generator=g)  # drawn for every pair, so all shares see one stream
        if i % world != rank:
            continue
        bright, dark = bright_and_dark(coarse, cfg.model.height, cfg.model.width)  # (T, 3, H, W) each
        yield i, PROMPTS[i % len(PROMPTS)], None, *((bright, dark) if kind == "video" else (bright[0], dark[0]))


def file_pairs(
    cfg: Any, kind: str, rank: int, world: int, skipped: list[SkippedPair], *, editing: bool = False
) -> Iterator[tuple[int, str, Path | None, torch.Tensor, torch.Tensor]]:
    """This process's share of the pair table (rows ``r`` with ``r % world == rank``) at the model's size (see
    mmreward.data.media_pairs for the rule) as ``(row, prompt, source, chosen, rejected)``; ``editing``: each row's
    source image file from ``data.image_column`` (else None). Rows that cannot be used go to ``skipped`` with
    their reason."""
    data, size = cfg.data, cfg.model
    table = read_pair_table(
        data.pairs,
        media_root=data.media_root,
        label_columns=data.label_columns,
        source_column=data.image_column if editing else None,
    )
    skipped.extend(s for s in table.skipped if s.row % world == rank)
    for pair in table.pairs:
        if pair.row % world != rank:
            continue
        try:
            sides = [
                load_fitted(
                    p, kind=kind, height=size.height, width=size.width, num_frames=size.num_frames, fps=data.video_fps
                )
                for p in (pair.chosen, pair.rejected)
            ]
        except MediaError as err:
            skipped.append(SkippedPair(pair.row, str(err)))
            continue
        yield pair.row, pair.prompt, pair.source, sides[0], sides[1]


def build_offline_set(cfg: Any, model: FlowModel, accelerator: Any) -> tuple[TrainingSet, list[SkippedPair]]:
    """Bring the pairs (files or synthetic) to the model's size and VAE-encode them once into
    ``output_dir/cache``: each process encodes its share into a shard file; training then reads every shard
    memory-mapped, in table order (so 1 or N processes see the same data). Editing families' source image files
    are kept as paths beside the latents (the conditioning encodes them with the prompt as batches draw them)."""
    data, size = cfg.data, cfg.model
    rank, world = accelerator.process_index, accelerator.num_processes
    fingerprint = {
        "data": asdict(data),
        "family": size.family,
        "path": size.path,
        "height": size.height,
        "width": size.width,
        "num_frames": size.num_frames,
        "seed": cfg.train.seed,
    }
    if data.source == "offline":
        fingerprint["table"] = file_fingerprint(data.pairs)
    shards = shard_paths(Path(cfg.output_dir) / "cache", "pairs", cache_key(fingerprint), world)
    if not shards[rank].is_file():
        skipped: list[SkippedPair] = []
        source = (
            synthetic_pairs(cfg, model.media_kind, rank, world)
            if data.source == "synthetic"
            else file_pairs(cfg, model.media_kind, rank, world, skipped, editing=cfg.model.takes_sources())
        )
        empty = model.latent_shape(0, size.height, size.width, size.num_frames)
        keys, (chosen, rejected) = encode_streamed(
            model, (((i, p, s), (c, r)) for i, p, s, c, r in source), data.encode_batch_size, empty, sides=2
        )
        meta = {
            "ids": json.dumps([i for i, _, _ in keys]),
            "prompts": json.dumps([p for _, p, _ in keys]),
            "sources": json.dumps([None if s is None else str(s) for _, _, s in keys]),
            "skipped": json.dumps([asdict(s) for s in skipped]),
        }
        write_shard(shards[rank], {"chosen": chosen, "rejected": rejected}, meta)
    accelerator.wait_for_everyone()
    handles = open_shards(shards)
    entries, skipped = [], []
    for shard, handle in enumerate(handles):
        meta = handle.metadata()
        ids, prompts, sources = (json.loads(meta[key]) for key in ("ids", "prompts", "sources"))
        entries += [
            (pair_id, prompt, shard, row, source)
            for row, (pair_id, prompt, source) in enumerate(zip(ids, prompts, sources, strict=True))
        ]
        skipped += [SkippedPair(**s) for s in json.loads(meta["skipped"])]
    skipped.sort(key=lambda s: s.row)
    if not entries:
        reasons = "; ".join(f"row {s.row}: {s.reason}" for s in skipped[:5])
        raise ConfigError(f"no usable pairs in {data.pairs!r}; all {len(skipped)} rows were skipped ({reasons})")
    entries.sort()  # table order
    index = [(shard, row) for _, _, shard, row, _ in entries]
    chosen = MappedRows([h.get_slice("chosen") for h in handles], index)
    rejected = MappedRows([h.get_slice("rejected") for h in handles], index)
    sources = [Path(e[4]) for e in entries] if cfg.model.takes_sources() else None
    return TrainingSet([e[1] for e in entries], chosen, rejected, sources=sources), skipped


def batch_rows(
    size: int, step: int, micro: int, cfg: Any, rank: int, world: int, online: bool
) -> tuple[list[int], list[str]]:
    """This process's micro-batch: row indices, and a label per sample that seeds its noise.

    Offline: consecutive global batches of a seeded permutation per epoch, each process taking its slice, and
    noise seeded by the position in the global batch (the same run on 1 or N processes draws the same noise).
    Online: each process cycles through its own round's pairs.
    """
    b, accum = cfg.train.batch_size, cfg.train.gradient_accumulation_steps
    if online:
        position = ((step % cfg.online.round_steps) * accum + micro) * b
        order = torch.randperm(
            size, generator=seeded(cfg.train.seed, rank, "round-order", step // cfg.online.round_steps)
        )
        return [int(order[(position + k) % size]) for k in range(b)], [f"rank{rank}-{k}" for k in range(b)]
    per_epoch = size // (b * world)  # global batches per epoch (the incomplete tail is dropped)
    epoch, index = divmod(step * accum + micro, per_epoch)
    order = torch.randperm(size, generator=seeded(cfg.train.seed, "epoch", epoch))
    start = index * b * world + rank * b
    return order[start : start + b].tolist(), [str(rank * b + k) for k in range(b)]

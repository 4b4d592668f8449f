"""Clean latents of a latent-reward run's items, encoded once: media files and synthetic textures through the
VAE, distillation samples drawn by the generator and scored by every reward. Each process encodes its share into
``output_dir/cache`` (:mod:`mmreward.data.latent_cache`); training reads every shard memory-mapped.

Functions take the program's config (``cfg``): its ``data``, ``model``, ``train.seed`` and ``output_dir``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

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
from mmreward.data.media_pairs import load_fitted
from mmreward.data.synthetic_brightness import graded_texture
from mmreward.errors import MediaError
from mmreward.flow.models import FlowModel
from mmreward.flow.rollout import sample_ode, seeded
from mmreward.guidance.latent_reward import pooled_text
from mmreward.reward_training.latent_data import Plan
from mmreward.rewards.registry import load_reward


def synthetic_media(cfg: Any, item: int, kind: str) -> torch.Tensor:
    """Pair ``i`` is items ``2i`` (chosen) and ``2i + 1``: one random smooth texture (coarse and fine detail,
    random contrast) at two brightness levels at least 0.1 apart, the chosen one brighter. Only brightness
    differs inside a pair, so brightness is the only thing the preference teaches."""
    frames = cfg.model.num_frames if kind == "video" else 1
    generator = seeded(cfg.train.seed, "synthetic", item // 2)
    media = graded_texture(generator, frames, cfg.model.height, cfg.model.width, brighter=item % 2 == 0)
    return media if kind == "video" else media[0]


def encode_share(
    cfg: Any, plan: Plan, model: FlowModel, rank: int, world: int
) -> tuple[list[int], torch.Tensor, torch.Tensor, dict[int, str]]:
    """This process's items (``i % world == rank``) as clean latents ``(n, *latent)``, with their targets
    ``(n, K)`` (distill; empty otherwise) and the reasons of items that could not be read."""
    data, size = cfg.data, cfg.model
    shape = model.latent_shape(0, size.height, size.width, size.num_frames)
    mine = [i for i in range(len(plan.items)) if i % world == rank]
    failed: dict[int, str] = {}
    if data.source == "distill":
        return (*_distill_share(cfg, plan, model, mine), failed)

    def readable() -> Iterator[tuple[int, list[torch.Tensor]]]:
        for i in mine:
            try:
                if data.source == "synthetic":
                    media = synthetic_media(cfg, i, model.media_kind)
                else:
                    media = load_fitted(
                        plan.items[i],
                        kind=model.media_kind,
                        height=size.height,
                        width=size.width,
                        num_frames=size.num_frames,
                        fps=data.video_fps,
                    )
            except MediaError as err:
                failed[i] = str(err)
                continue
            yield i, [media]

    ids, (latents,) = encode_streamed(model, readable(), data.encode_batch_size, shape)
    return ids, latents, torch.zeros(len(ids), 0), failed


def _distill_share(
    cfg: Any, plan: Plan, model: FlowModel, mine: list[int]
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Sample this process's items with the generator (seed per item) and score them with every reward."""
    data, size = cfg.data, cfg.model
    rewards = [load_reward(name, device=model.device) for name in data.rewards]
    latents, targets = [], []
    for start in range(0, len(mine), data.encode_batch_size):
        chunk = mine[start : start + data.encode_batch_size]
        finals, media = [], []
        for i in chunk:  # one call per item: its own seed, so the sample does not depend on the sharding
            out = sample_ode(
                model,
                [plan.prompts[i]],
                num_steps=data.num_steps,
                height=size.height,
                width=size.width,
                num_frames=size.num_frames,
                guidance_scale=data.guidance_scale,
                generator=seeded(cfg.train.seed, "distill", i),
            )
            finals.append(out.final.cpu())
            media.append(out.media[0].cpu())
        columns = []
        for reward in rewards:
            scored = reward.score([plan.prompts[i] for i in chunk], media)
            columns += [scored.scores, *scored.dims.values()]
        latents.append(torch.cat(finals))
        targets.append(torch.stack(columns, dim=1))  # (n, K), NaN where a reward failed
    empty = torch.zeros(0, *model.latent_shape(1, size.height, size.width, size.num_frames)[1:])
    return mine, torch.cat([empty, *latents]), torch.cat(targets) if targets else torch.zeros(0, len(rewards))


class Latents:
    """Clean latents by item id (``latents[items]``), read on demand from the memory-mapped shards of every
    process, with each item's distillation targets and the reasons of items that could not be read."""

    def __init__(self, paths: list[Path]) -> None:
        handles = open_shards(paths)
        where: dict[int, tuple[int, int]] = {}
        self.failed: dict[int, str] = {}
        self.targets: dict[int, torch.Tensor] = {}
        for shard, handle in enumerate(handles):
            meta = handle.metadata()
            ids = json.loads(meta["ids"])
            where.update({item: (shard, row) for row, item in enumerate(ids)})
            self.failed.update({int(k): v for k, v in json.loads(meta["failed"]).items()})
            targets = handle.get_tensor("targets")
            self.targets.update({item: targets[row] for row, item in enumerate(ids)})
        self.rows = MappedRows([h.get_slice("latents") for h in handles], where)

    def __getitem__(self, items: list[int]) -> torch.Tensor:
        return self.rows[items]


def build_cache(cfg: Any, plan: Plan, model: FlowModel, accelerator) -> Latents:
    """Encode this process's items once into ``output_dir/cache`` (see :mod:`mmreward.data.latent_cache`)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    fingerprint = {"data": asdict(cfg.data), "model": asdict(cfg.model), "seed": cfg.train.seed}
    if cfg.data.source == "pairs":
        fingerprint["table"] = file_fingerprint(cfg.data.pairs)
    shards = shard_paths(Path(cfg.output_dir) / "cache", "latents", cache_key(fingerprint), world)
    if not shards[rank].is_file():
        ids, latents, targets, failed = encode_share(cfg, plan, model, rank, world)
        meta = {"ids": json.dumps(ids), "failed": json.dumps(failed)}
        write_shard(shards[rank], {"latents": latents, "targets": targets}, meta)
    accelerator.wait_for_everyone()
    return Latents(shards)


PromptLookup = Callable[[list[int]], torch.Tensor]


def prompt_embeddings(model: FlowModel, prompts: list[str], device: torch.device) -> tuple[PromptLookup, int]:
    """The generator's pooled prompt embedding of every item, computed once per distinct prompt, as a lookup
    ``items -> (n, D)`` on ``device`` and its width ``D``; the text encoders are then freed."""
    unique = sorted(set(prompts))
    table = dict(zip(unique, pooled_text(model, unique).cpu().unbind(0), strict=True))
    by_item = torch.stack([table[p] for p in prompts])  # (items, D)
    model.release_text_encoders()

    def lookup(items: list[int]) -> torch.Tensor:
        return by_item[items].to(device)

    return lookup, by_item.shape[1]

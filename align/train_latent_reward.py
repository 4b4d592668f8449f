"""Train Flow-NRG's latent reward: a time-conditioned reward on *noisy* generator latents, one output per dimension.

Paper: "Improving Video Generation with Human Feedback" (VideoAlign), arXiv 2501.13918, Flow-NRG. Guidance
evaluates the reward on the noisy latent ``x_t`` of every sampling step, so the reward is trained on
``x_t = (1 - t) x0 + t eps`` (Table 7: trained on clean latents it fails). No public code exists; what differs:
the reward is a small convolutional network on the latents (mmreward.guidance.latent_reward), not the first
layers of the generator, so guidance costs no transformer backward.

    python align/train_latent_reward.py --config configs/tiny/train_latent_reward.yaml      # tiny SD3, CPU
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml align/train_latent_reward.py \\
        --config my_config.yaml --model.family wan --data.label_columns '[VQ,MQ,TA]'

Data (``data.source``):
- ``pairs``: a pair table as align/flow_dpo.py reads it (``prompt, chosen, rejected`` or VideoAlign's
  ``path_A, path_B, prompt`` + labels). With the VideoAlign schema every column of ``data.label_columns`` is a
  dimension trained on its own labels (ties skipped per dimension); otherwise one dimension ``data.dim_name``.
  Loss: Bradley-Terry on noised latents, ``-log sigmoid(r_k(x_t^w, t) - r_k(x_t^l, t))``, the same ``t`` for both
  sides and independent noise (at sampling time there is one ``x_t``, not a pair sharing its noise).
- ``distill``: the generator samples ``data.samples_per_prompt`` images/videos per prompt and every reward of
  ``data.rewards`` (any mmreward reward, differentiable or not) scores them; each reward (and each of its
  dimensions) becomes a dimension. Loss: mean squared error to the standardized scores, whose minimizer is
  ``E[r(x0) | x_t, t]``, the quantity a guidance gradient should follow.
- ``synthetic``: pairs of random smooth textures at random brightness, the brighter one preferred (tests, demos).

Noise levels: ``u ~ U(0, 1)`` mapped through the generator's shifted training grid (the levels sampling visits).
Media are VAE-encoded once, each process its share, into ``output_dir/cache`` and read memory-mapped. A share of
the pairs (``data.holdout``) is held out; pairwise accuracy on them at ``train.eval_sigmas`` is logged and saved
to ``eval.json``. Output: ``output_dir/latent_reward`` (load with ``mmreward.guidance.latent_reward.
load_latent_reward``; guide with ``mmreward generate --method nrg --guide output_dir/latent_reward``), plus
``config.yaml``, ``metrics.jsonl``, ``skipped_pairs.jsonl`` and resumable checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator

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
from mmreward.data.prompts import read_prompts
from mmreward.data.synthetic_brightness import PROMPTS, graded_texture
from mmreward.errors import ConfigError, MediaError
from mmreward.flow.models import FlowModel, load_flow_model
from mmreward.flow.noising import noisy_latents, per_sample_noise
from mmreward.flow.rollout import sample_ode, seeded
from mmreward.guidance.latent_reward import LatentRewardModel, LatentRewardSpec, pooled_text
from mmreward.rewards.registry import load_reward, resolve_reward
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config, save_config
from mmreward.train.guards import NonFiniteGuard, finite_everywhere
from mmreward.train.tracking import Tracker

# ----------------------------------------------------------------------------------------------------- config


@dataclass
class ModelConfig:
    family: Literal["sd3", "flux", "wan"] = "sd3"
    path: str = "stabilityai/stable-diffusion-3.5-medium"  # hub id, local directory, or "tiny"
    height: int = 512
    width: int = 512
    num_frames: int | None = None  # videos (wan) only: 4k + 1 frames
    max_sequence_length: int = 256
    dtype: str = "float32"  # generator weights (distill sampling)
    vae_dtype: str = "float32"


@dataclass
class RewardModelConfig:
    width: int = 64
    depth: int = 3
    text_conditioning: bool = True  # condition on the generator's pooled prompt embedding (needed for alignment)


@dataclass
class DataConfig:
    source: Literal["pairs", "distill", "synthetic"] = "pairs"
    pairs: str | None = None  # pairs: table (.csv / .jsonl)
    media_root: str | None = None  # pairs: base of relative paths (default: the table's directory)
    label_columns: list[str] = field(default_factory=list)  # VideoAlign schema: one dimension per column
    dim_name: str = "preference"  # pairs with chosen/rejected columns: the single dimension's name
    video_fps: float | None = 16.0  # videos are read at the generator's frame rate; None: spread over the clip
    prompts: str | None = None  # distill: text file, one prompt per line
    rewards: list[str] = field(default_factory=list)  # distill: reward names (each becomes a dimension)
    samples_per_prompt: int = 8  # distill
    num_steps: int = 28  # distill: sampling steps
    guidance_scale: float = 1.0  # distill: classifier-free guidance while sampling
    num_synthetic: int = 64  # synthetic: number of pairs
    holdout: float = 0.1  # fraction of pairs (distill: of samples) held out for evaluation
    encode_batch_size: int = 8  # media per VAE call (pairs) or samples per transformer call (distill)


@dataclass
class TrainConfig:
    max_steps: int = 2000
    batch_size: int = 64  # pairs (or samples) per process per step
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_every: int = 200
    eval_sigmas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 0.9])
    # "sampling": the noise levels sampling visits (what guidance needs); "clean": t = 0 only, the clean-latent
    # reward of VideoAlign's Table 7 ablation (it fails as a guide), for comparisons
    noise_levels: Literal["sampling", "clean"] = "sampling"
    max_nonfinite_steps: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = True
    log_every: int = 10


@dataclass
class TrainLatentRewardConfig:
    output_dir: str = "outputs/latent_reward"
    logging: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl, tensorboard, wandb
    model: ModelConfig = field(default_factory=ModelConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        data, model, train = self.data, self.model, self.train
        if data.source == "pairs" and not data.pairs:
            raise ConfigError("data.source=pairs needs data.pairs (a .csv or .jsonl pair table)")
        if data.source == "distill" and (not data.prompts or not data.rewards):
            raise ConfigError("data.source=distill needs data.prompts (a text file) and data.rewards (reward names)")
        if data.source == "distill" and data.samples_per_prompt < 2:
            raise ConfigError(f"data.samples_per_prompt must be >= 2, got {data.samples_per_prompt}")
        if not 0 < data.holdout < 1:
            raise ConfigError(f"data.holdout must be in (0, 1), got {data.holdout}")
        if model.family == "wan" and not model.num_frames:
            raise ConfigError("model.family=wan generates videos; set model.num_frames (4k + 1, e.g. 33)")
        if model.family != "wan" and model.num_frames:
            raise ConfigError(f"model.family={model.family} generates images; remove model.num_frames")
        if any(not 0 <= s <= 1 for s in train.eval_sigmas):
            raise ConfigError(f"train.eval_sigmas must lie in [0, 1], got {train.eval_sigmas}")
        for name, value in [("train.max_steps", train.max_steps), ("train.batch_size", train.batch_size),
                            ("train.eval_every", train.eval_every), ("train.save_every", train.save_every),
                            ("reward_model.width", self.reward_model.width),
                            ("reward_model.depth", self.reward_model.depth)]:  # fmt: skip
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")


# ---------------------------------------------------------------------------------------------------- the data


@dataclass
class Plan:
    """What to encode and how it is labelled, before any model loads. Items are media (pairs, synthetic) or
    samples to generate (distill), identified by their position in ``items``."""

    dims: list[str]
    items: list[str]  # pairs: file paths; synthetic: ""; distill: prompts (one per sample)
    prompts: list[str]
    pairs: list[tuple[int, int, int]] = field(default_factory=list)  # (dim, winner item, loser item)
    skipped: list[SkippedPair] = field(default_factory=list)


def plan_data(cfg: TrainLatentRewardConfig) -> Plan:
    """Read the pair table or prompts and check them (and the rewards' names) before any model loads."""
    data = cfg.data
    if data.source == "synthetic":
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(data.num_synthetic) for _ in range(2)]
        pairs = [(0, 2 * i, 2 * i + 1) for i in range(data.num_synthetic)]  # orientation fixed when drawn
        return Plan(["brightness"], [""] * len(prompts), prompts, pairs)
    if data.source == "distill":
        for name in data.rewards:
            resolve_reward(name)  # unknown names fail here, before the generator loads
        prompts = [p for p in read_prompts(data.prompts) for _ in range(data.samples_per_prompt)]
        return Plan([], prompts, prompts)
    dims = list(data.label_columns) or [data.dim_name]
    items: dict[str, int] = {}
    prompts: list[str] = []
    plan = Plan(dims, [], prompts)
    for k, dim in enumerate(dims):
        columns = [dim] if data.label_columns else []
        table = read_pair_table(data.pairs, media_root=data.media_root, label_columns=columns)
        if data.label_columns:
            plan.skipped += [SkippedPair(s.row, f"{dim}: {s.reason}") for s in table.skipped]
        elif k == 0:
            plan.skipped += table.skipped
        for pair in table.pairs:
            ids = []
            for path in (pair.chosen, pair.rejected):
                key = str(path)
                if key not in items:
                    items[key] = len(items)
                    prompts.append(pair.prompt)
                ids.append(items[key])
            plan.pairs.append((k, ids[0], ids[1]))
    if not plan.pairs:
        reasons = "; ".join(f"row {s.row}: {s.reason}" for s in plan.skipped[:5])
        raise ConfigError(f"no usable pairs in {data.pairs!r}; all rows were skipped ({reasons})")
    plan.items = list(items)
    return plan


def synthetic_media(cfg: TrainLatentRewardConfig, item: int, kind: str) -> torch.Tensor:
    """Pair ``i`` is items ``2i`` (chosen) and ``2i + 1``: one random smooth texture (coarse and fine detail,
    random contrast) at two brightness levels at least 0.1 apart, the chosen one brighter. Only brightness
    differs inside a pair, so brightness is the only thing the preference teaches."""
    frames = cfg.model.num_frames if kind == "video" else 1
    generator = seeded(cfg.train.seed, "synthetic", item // 2)
    media = graded_texture(generator, frames, cfg.model.height, cfg.model.width, brighter=item % 2 == 0)
    return media if kind == "video" else media[0]


def encode_share(
    cfg: TrainLatentRewardConfig, plan: Plan, model: FlowModel, rank: int, world: int
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
                    media = load_fitted(plan.items[i], kind=model.media_kind, height=size.height, width=size.width,
                                        num_frames=size.num_frames, fps=data.video_fps)  # fmt: skip
            except MediaError as err:
                failed[i] = str(err)
                continue
            yield i, [media]

    ids, (latents,) = encode_streamed(model, readable(), data.encode_batch_size, shape)
    return ids, latents, torch.zeros(len(ids), 0), failed


def _distill_share(cfg, plan: Plan, model: FlowModel, mine: list[int]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Sample this process's items with the generator (seed per item) and score them with every reward."""
    data, size = cfg.data, cfg.model
    rewards = [load_reward(name, device=model.device) for name in data.rewards]
    latents, targets = [], []
    for start in range(0, len(mine), data.encode_batch_size):
        chunk = mine[start : start + data.encode_batch_size]
        finals, media = [], []
        for i in chunk:  # one call per item: its own seed, so the sample does not depend on the sharding
            out = sample_ode(
                model, [plan.prompts[i]], num_steps=data.num_steps, height=size.height, width=size.width,
                num_frames=size.num_frames, guidance_scale=data.guidance_scale,
                generator=seeded(cfg.train.seed, "distill", i),
            )  # fmt: skip
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


def distill_dims(names: list[str]) -> list[str]:
    """Dimension names of distilled rewards: the reward's name, then ``name.dim`` for each of its dims."""
    dims = []
    for name in names:
        cls, kwargs, display = resolve_reward(name)
        dims += [display, *[f"{display}.{d}" for d in kwargs.get("dims", cls.dims)]]
    return dims


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
        self.where = where
        self.rows = MappedRows([h.get_slice("latents") for h in handles], where)

    def __getitem__(self, items: list[int]) -> torch.Tensor:
        return self.rows[items]


def build_cache(cfg: TrainLatentRewardConfig, plan: Plan, model: FlowModel, accelerator: Accelerator) -> Latents:
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


@dataclass
class TrainingData:
    """Pairs ``(dim, winner, loser)`` (pairs, synthetic) or items with standardized targets (distill), split
    into training and held-out parts."""

    dims: list[str]
    train: list[tuple[int, int, int]] | list[int]
    heldout: list[tuple[int, int, int]] | list[int]
    targets: dict[int, torch.Tensor] = field(default_factory=dict)  # distill: item -> (K,) standardized
    skipped: list[SkippedPair] = field(default_factory=list)


def split_data(cfg: TrainLatentRewardConfig, plan: Plan, latents: Latents) -> TrainingData:
    order = lambda n: torch.randperm(n, generator=seeded(cfg.train.seed, "holdout")).tolist()  # noqa: E731
    if cfg.data.source != "distill":
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
        cut = max(1, round(cfg.data.holdout * len(usable)))
        return TrainingData(plan.dims, shuffled[cut:], shuffled[:cut], skipped=skipped)
    # distill: standardize each dimension over the samples that scored (failed samples are dropped)
    dims = distill_dims(cfg.data.rewards)
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
    cut = max(2, round(cfg.data.holdout * len(kept)))
    return TrainingData(dims, shuffled[cut:], shuffled[:cut], table, skipped)


# ----------------------------------------------------------------------------------------------- the objective


def draw_noise(
    model: FlowModel, shape: list[int], generators: list[torch.Generator], kind: str, sides: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, from its own generator (:func:`per_sample_noise`): a noise level (``u ~ U(0, 1)`` through the
    generator's shifted training grid; 0 for ``kind="clean"``) and ``sides`` noise tensors. Returns ``sigma (B,)``
    and noise ``(sides, B, *shape)``."""
    u, noise = per_sample_noise(generators, shape, lambda g: torch.rand(1, generator=g), sides)
    return (model.training_sigmas(u) if kind == "sampling" else torch.zeros(len(generators))), noise


def pair_margins(reward, latents: Latents, text, batch, sigma, noise_w, noise_l, device) -> torch.Tensor:
    """``(B,)`` margins ``r_k(x_t^w, t) - r_k(x_t^l, t)`` of pairs ``(k, w, l)`` noised at ``sigma``."""
    dims = torch.tensor([b[0] for b in batch], device=device)
    winners, losers = latents[[b[1] for b in batch]].to(device), latents[[b[2] for b in batch]].to(device)
    sigma = sigma.to(device)
    x_w, x_l = noisy_latents(winners, noise_w.to(device), sigma), noisy_latents(losers, noise_l.to(device), sigma)
    prompts_text = None if text is None else torch.cat([text([b[1] for b in batch]), text([b[2] for b in batch])])
    scores = reward(torch.cat([x_w, x_l]), torch.cat([sigma, sigma]), prompts_text)  # (2B, K): winners, losers
    rows = torch.arange(len(batch), device=device)
    return scores[rows, dims] - scores[rows + len(batch), dims]


def distill_loss(reward, latents: Latents, text, items, targets, sigma, noise, device):
    """Regression of every dimension onto the standardized scores of the clean sample."""
    x_t = noisy_latents(latents[items].to(device), noise.to(device), sigma.to(device))
    prediction = reward(x_t, sigma.to(device), None if text is None else text(items))
    target = torch.stack([targets[i] for i in items]).to(device)
    return F.mse_loss(prediction, target), {"target_corr": _correlation(prediction.detach(), target)}


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(0), b - b.mean(0)
    return ((a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0)).clamp_min(1e-8)).mean()


@torch.no_grad()
def evaluate(cfg, reward, model: FlowModel, latents: Latents, text, data: TrainingData, device) -> dict[str, float]:
    """Held-out pairwise accuracy per dimension at each of ``train.eval_sigmas`` (fixed noise). Distill: over all
    held-out sample pairs whose targets differ, the fraction the reward orders like the targets."""
    results: dict[str, float] = {}
    for s in cfg.train.eval_sigmas:
        g = seeded(cfg.train.seed, "eval", s)
        if cfg.data.source != "distill":
            pairs = data.heldout
            noise = torch.randn(2, len(pairs), *latents[[pairs[0][1]]].shape[1:], generator=g)
            margins = []
            for start in range(0, len(pairs), cfg.train.batch_size):
                batch = pairs[start : start + cfg.train.batch_size]
                end = start + len(batch)
                sigma = torch.full((len(batch),), float(s))
                margins.append(pair_margins(reward, latents, text, batch, sigma, noise[0, start:end],
                                            noise[1, start:end], device).cpu())  # fmt: skip
            correct = torch.cat(margins) > 0
            dims = torch.tensor([p[0] for p in pairs])
            for k, dim in enumerate(data.dims):
                if bool((dims == k).any()):
                    results[f"eval/acc_{dim}_t{s:g}"] = float(correct[dims == k].float().mean())
        else:
            items = data.heldout
            x0 = latents[items].to(device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            sigma = torch.full((len(items),), float(s), device=device)
            prediction = reward(noisy_latents(x0, noise, sigma), sigma, None if text is None else text(items)).cpu()
            target = torch.stack([data.targets[i] for i in items])
            for k, dim in enumerate(data.dims):
                dt, dp = target[:, k, None] - target[None, :, k], prediction[:, k, None] - prediction[None, :, k]
                mask = dt.abs() > 1e-6
                results[f"eval/acc_{dim}_t{s:g}"] = float(((dt * dp > 0) & mask).sum() / mask.sum().clamp_min(1))
    return results


# ------------------------------------------------------------------------------------------------------ main


def main(cfg: TrainLatentRewardConfig) -> Path:
    train = cfg.train
    plan = plan_data(cfg)  # bad tables, empty prompt files and unknown rewards fail before any model loads
    accelerator = Accelerator()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise ConfigError(
            f"{launched} processes were launched but accelerate set up {accelerator.num_processes}; on a machine "
            "without GPUs set ACCELERATE_USE_CPU=1"
        )
    output = Path(cfg.output_dir)
    if accelerator.is_main_process:
        save_config(cfg, output)
    tracker = Tracker(output, cfg.logging, run_name=output.name, config=asdict(cfg),
                      enabled=accelerator.is_main_process)  # fmt: skip
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device

    # -- generator (VAE, text encoders; the transformer for distill), data
    model = load_flow_model(
        cfg.model.family, cfg.model.path, device=device, dtype=cfg.model.dtype, vae_dtype=cfg.model.vae_dtype,
        max_sequence_length=cfg.model.max_sequence_length,
    )  # fmt: skip
    latent_shape = list(model.latent_shape(1, cfg.model.height, cfg.model.width, cfg.model.num_frames)[1:])
    latents = build_cache(cfg, plan, model, accelerator)
    data = split_data(cfg, plan, latents)
    text, text_size = None, 0
    if cfg.reward_model.text_conditioning:
        # Pooled prompt embeddings of every item, computed once; the text encoders are then freed.
        unique = sorted(set(plan.prompts))
        table = dict(zip(unique, pooled_text(model, unique).cpu().unbind(0), strict=True))
        by_item = torch.stack([table[p] for p in plan.prompts])  # (items, D)
        text_size = by_item.shape[1]
        model.release_text_encoders()

        def text(items: list[int]) -> torch.Tensor:
            return by_item[items].to(device)

    if accelerator.is_main_process:
        with (output / "skipped_pairs.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(s)) + "\n" for s in data.skipped)
        if data.skipped:
            print(f"train_latent_reward: skipped {len(data.skipped)} (reasons in {output / 'skipped_pairs.jsonl'})",
                  file=sys.stderr)  # fmt: skip

    # -- the latent reward, optimizer, resume
    spec = LatentRewardSpec(
        family=cfg.model.family, latent_shape=latent_shape, dims=data.dims,
        text_dim=int(text_size), width=cfg.reward_model.width,
        depth=cfg.reward_model.depth, generator=cfg.model.path,
    )  # fmt: skip
    torch.manual_seed(train.seed)
    unwrapped = LatentRewardModel(spec).to(device)
    optimizer = torch.optim.AdamW(unwrapped.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay)
    reward, optimizer = accelerator.prepare(unwrapped, optimizer)
    guard = NonFiniteGuard(train.max_nonfinite_steps)
    step = 0
    checkpoint = latest_checkpoint(output / "checkpoints") if train.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, modules={"latent_reward": unwrapped}, states={"optimizer": optimizer},
                                rank=rank)  # fmt: skip
        step, guard.skipped = state["step"], state["nonfinite_skipped"]

    # -- loop: a global batch of train.batch_size x world from a seeded permutation per epoch, one slice each
    size, b = len(data.train), train.batch_size
    evaluation: dict[str, float] = {}
    while step < train.max_steps:
        rows = global_rows(size, step, b * world, train.seed)[rank * b : (rank + 1) * b]
        batch = [data.train[i] for i in rows]
        generators = [seeded(train.seed, "step", step, rank * b + k) for k in range(len(batch))]
        sides = 1 if cfg.data.source == "distill" else 2
        sigma, noise = draw_noise(model, latent_shape, generators, train.noise_levels, sides)
        unwrapped.train()
        if cfg.data.source == "distill":
            loss, stats = distill_loss(reward, latents, text, batch, data.targets, sigma, noise[0], device)
        else:
            margin = pair_margins(reward, latents, text, batch, sigma, noise[0], noise[1], device)
            # Bradley-Terry on noised latents
            loss, stats = -F.logsigmoid(margin).mean(), {"accuracy": (margin.detach() > 0).float().mean()}
        finite = finite_everywhere(loss, accelerator.reduce)  # every process skips the same backward
        if finite:
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(unwrapped.parameters(), train.max_grad_norm)
            optimizer.step()
        applied = guard.ok(loss if finite else float("nan"))
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if applied and (step % train.log_every == 0 or step == train.max_steps):
            logged = {"loss": loss.detach(), **stats}
            logged = {k: accelerator.reduce(v.float().reshape(1).to(device), "mean").item() for k, v in logged.items()}
            tracker.log(step, {**logged, "grad_norm": float(grad_norm), "nonfinite_skipped": guard.skipped})
        if step % train.eval_every == 0 or step == train.max_steps:
            unwrapped.eval()
            evaluation = evaluate(cfg, unwrapped, model, latents, text, data, device)
            tracker.log(step, evaluation)
        if step % train.save_every == 0 or step == train.max_steps:
            save_checkpoint(
                output / "checkpoints", step, modules={"latent_reward": unwrapped}, states={"optimizer": optimizer},
                extra={"nonfinite_skipped": guard.skipped}, keep_last=train.keep_checkpoints, rank=rank,
                barrier=accelerator.wait_for_everyone,
            )  # fmt: skip

    # -- save
    accelerator.wait_for_everyone()
    target = output / "latent_reward"
    if accelerator.is_main_process:
        if not evaluation:  # resumed at max_steps: evaluate what was loaded
            evaluation = evaluate(cfg, unwrapped.eval(), model, latents, text, data, device)
        (output / "eval.json").write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
        unwrapped.spec.training = {
            "source": cfg.data.source, "steps": step, "train_size": size, "heldout_size": len(data.heldout),
            "heldout_accuracy": evaluation,
        }  # fmt: skip
        unwrapped.save(target)
    tracker.close()
    accelerator.end_training()
    return target


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


if __name__ == "__main__":
    main(parse_config(TrainLatentRewardConfig, description=__doc__.splitlines()[0]))

"""Flow-DPO and Flow-RWR: preference alignment of rectified-flow generators (SD3, FLUX, Wan) with LoRA.

Paper: "Improving Video Generation with Human Feedback" (VideoAlign), arXiv 2501.13918 -- Flow-DPO is
Diffusion-DPO written for velocity prediction, Flow-RWR reward-weighted flow matching. The only public Flow-DPO
code is yifan123/flow_grpo ``scripts/train_sd3_dpo.py`` (SD3.5, images); this program follows its recipe (shared
noise and noise level for the two sides of a pair, logit-normal levels on the shifted 1000-step grid, per-element
mean errors, constant beta = 100, conditional velocity without CFG, reference = the model without its adapter)
and adds what it lacks: offline pairs (images or videos, VideoAlign's pair schema), video generators, hinge/IPO
losses, the paper's (1 - t)^2 beta as an option, and exact resume.

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml align/flow_dpo.py \\
        --config configs/align/flow_dpo_sd3.yaml [--train.learning_rate 1e-4 ...]
    python align/flow_dpo.py --config configs/tiny/flow_dpo.yaml          # tiny random SD3 on the CPU

Pairs come from ``data.source``:
- ``offline``: a pair table (prompt + chosen/rejected media files, or VideoAlign's path_A/path_B + labels);
- ``synthetic``: random textures where the brighter one is preferred (smoke tests, CPU demos);
- ``online``: every ``online.round_steps`` optimizer steps the reference draws ``online.samples_per_prompt``
  samples per prompt, the reward mix ranks them and the best and worst form a pair (Flow-RWR trains on all of
  them, weighted by ``exp(reward / temperature)``). ``online.ref_refresh_every`` makes the current policy the
  new reference every so many steps (online DPO); 0 keeps the base model.
Offline and synthetic media are VAE-encoded once (each process its share) and cached under ``output_dir/cache``;
training reads the cache memory-mapped, so pair sets larger than host memory work.

Writes ``output_dir/config.yaml``, ``metrics.jsonl`` (loss, implicit accuracy, implicit reward margin, ...),
``skipped_pairs.jsonl``, atomic checkpoints under ``checkpoints/`` (resumed automatically), and the final LoRA in
the diffusers format under ``lora/`` (EMA weights when EMA is on): ``pipeline.load_lora_weights(output_dir/lora)``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from accelerate import Accelerator

from mmreward.alignment.group_rollout import SamplerConfig, check_sampler_config, rollout_window
from mmreward.data.latent_cache import (
    MappedRows,
    cache_key,
    encode_streamed,
    file_fingerprint,
    open_shards,
    shard_paths,
    write_shard,
)
from mmreward.data.media_pairs import SkippedPair, load_fitted, read_pairs
from mmreward.data.prompts import read_prompts
from mmreward.data.synthetic_brightness import PROMPTS, bright_and_dark
from mmreward.errors import ConfigError, MediaError
from mmreward.flow.models import FlowModel, PromptEmbeds
from mmreward.flow.noising import logit_normal, noisy_latents, per_sample_noise, velocity_target
from mmreward.flow.rollout import sample, seeded
from mmreward.losses import flow_dpo_loss, flow_matching_error, flow_rwr_loss, rwr_weights
from mmreward.rewards.mix import RewardMix
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config
from mmreward.train.guards import finite_everywhere
from mmreward.train.lora import LoraReference
from mmreward.train.policy import encode_prompts_once, load_lora_policy
from mmreward.train.run import finish_lora_run, start_run
from mmreward.train.sections import FlowModelConfig, LoraConfig, TrainConfig, check_media_kind

# ----------------------------------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    source: Literal["offline", "synthetic", "online"] = "online"
    pairs: str | None = None  # offline: pair table (.csv / .jsonl)
    media_root: str | None = None  # offline: base of relative paths (default: the table's directory)
    label_columns: list[str] = field(default_factory=list)  # VideoAlign schema: dimensions that vote, e.g. [TA]
    video_fps: float | None = 16.0  # videos are read at the generator's frame rate (Wan 2.1: 16); None: spread
    num_synthetic: int = 32  # synthetic: number of pairs
    prompts: str | None = None  # online: text file, one prompt per line
    encode_batch_size: int = 8  # media per VAE call when caching latents


@dataclass
class OnlineConfig:
    rewards: dict[str, float] = field(default_factory=dict)  # e.g. {pickscore: 1.0}
    prompts_per_round: int = 8  # per process
    samples_per_prompt: int = 24  # N; best vs worst becomes a pair (Flow-GRPO's DPO: 24)
    round_steps: int = 50  # optimizer steps trained on one round's pairs before new samples are drawn
    ref_refresh_every: int = 0  # steps; 0 = the base model stays the reference (offline DPO)
    sampling: SamplerConfig = field(default_factory=lambda: SamplerConfig(num_steps=40))  # the reference's samples


@dataclass
class LossConfig:
    type: Literal["sigmoid", "hinge", "ipo", "rwr"] = "sigmoid"
    beta: float = 100.0  # for the chosen reduction: beta_sum = beta_mean / (elements per sample)
    beta_schedule: Literal["constant", "one_minus_t_squared"] = "constant"
    reduction: Literal["mean", "sum"] = "mean"
    logit_mean: float = 0.0  # noise levels: u = sigmoid(N(logit_mean, logit_std^2)) -> shifted grid
    logit_std: float = 1.0
    rwr_temperature: float = 1.0


@dataclass
class DPOTrainConfig(TrainConfig):
    """``train:``: the shared optimizer settings and the pair batches (one optimizer step per training step)."""

    batch_size: int = 2  # pairs per process per micro-batch
    gradient_accumulation_steps: int = 1


@dataclass
class FlowDPOConfig:
    output_dir: str = "outputs/flow_dpo"
    logging: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl, tensorboard, wandb
    model: FlowModelConfig = field(default_factory=FlowModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: DPOTrainConfig = field(default_factory=DPOTrainConfig)

    def __post_init__(self) -> None:
        """Cross-field rules, checked before anything is loaded."""
        data, online, loss, train, model = self.data, self.online, self.loss, self.train, self.model
        if data.source == "offline" and not data.pairs:
            raise ConfigError("data.source=offline needs data.pairs (a .csv or .jsonl pair table)")
        if data.source == "online":
            if not data.prompts:
                raise ConfigError("data.source=online needs data.prompts (a text file, one prompt per line)")
            if not online.rewards:
                raise ConfigError("data.source=online needs online.rewards, e.g. {pickscore: 1.0}")
            if online.samples_per_prompt < 2:
                raise ConfigError(f"online.samples_per_prompt must be >= 2, got {online.samples_per_prompt}")
            check_sampler_config(online.sampling, "online.sampling")
            if train.save_every % online.round_steps:
                raise ConfigError(
                    f"train.save_every ({train.save_every}) must be a multiple of online.round_steps "
                    f"({online.round_steps}): checkpoints are written at round boundaries so a resumed run draws "
                    "the same samples"
                )
        if loss.type == "rwr" and data.source != "online":
            raise ConfigError(
                "loss.type=rwr (Flow-RWR) weights generated samples by their reward; it needs data.source=online"
            )
        if loss.type == "ipo" and loss.beta_schedule == "one_minus_t_squared":
            raise ConfigError(
                "loss.type=ipo with beta_schedule=one_minus_t_squared: IPO's target 1/(2 beta_t) is infinite where "
                "(1 - t)^2 = 0; use beta_schedule=constant"
            )
        check_media_kind(model)
        for name, value in [("train.max_steps", train.max_steps), ("train.batch_size", train.batch_size),
                            ("train.gradient_accumulation_steps", train.gradient_accumulation_steps),
                            ("train.save_every", train.save_every), ("online.round_steps", online.round_steps),
                            ("loss.beta", loss.beta), ("lora.rank", self.lora.rank)]:  # fmt: skip
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")


# ------------------------------------------------------------------------------------------------- pair sets


@dataclass
class TrainingSet:
    """What the loss trains on: ``chosen`` latents with their prompts, and for DPO ``rejected`` ones (pairs);
    for RWR per-sample ``weights`` instead."""

    prompts: list[str]
    chosen: torch.Tensor | MappedRows  # (N, *latent)
    rejected: torch.Tensor | MappedRows | None = None  # (N, *latent)
    weights: torch.Tensor | None = None  # (N,)

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, rows: list[int]) -> TrainingSet:
        return TrainingSet(
            [self.prompts[i] for i in rows],
            self.chosen[rows],
            None if self.rejected is None else self.rejected[rows],
            None if self.weights is None else self.weights[rows],
        )


def synthetic_pairs(
    cfg: FlowDPOConfig, kind: str, rank: int, world: int
) -> Iterator[tuple[int, str, torch.Tensor, torch.Tensor]]:
    """Random smooth textures; the chosen one is the same texture brighter (mean ~0.7 vs ~0.3). Yields
    ``(id, prompt, chosen, rejected)`` for this process's share (ids ``rank, rank + world, ...``)."""
    g = seeded(cfg.train.seed, "synthetic")
    frames = cfg.model.num_frames if kind == "video" else 1
    for i in range(cfg.data.num_synthetic):
        coarse = torch.rand(frames, 3, 4, 4, generator=g)  # drawn for every pair, so all shares see one stream
        if i % world != rank:
            continue
        bright, dark = bright_and_dark(coarse, cfg.model.height, cfg.model.width)  # (T, 3, H, W) each
        yield i, PROMPTS[i % len(PROMPTS)], *((bright, dark) if kind == "video" else (bright[0], dark[0]))


def file_pairs(
    cfg: FlowDPOConfig, kind: str, rank: int, world: int, skipped: list[SkippedPair]
) -> Iterator[tuple[int, str, torch.Tensor, torch.Tensor]]:
    """This process's share of the pair table (rows ``r`` with ``r % world == rank``) at the model's size (see
    mmreward.data.media_pairs for the rule); rows that cannot be used go to ``skipped`` with their reason."""
    data, size = cfg.data, cfg.model
    table = read_pairs(data.pairs, media_root=data.media_root, label_columns=data.label_columns)
    skipped.extend(s for s in table.skipped if s.row % world == rank)
    for pair in table.pairs:
        if pair.row % world != rank:
            continue
        try:
            sides = [load_fitted(p, kind=kind, height=size.height, width=size.width, num_frames=size.num_frames,
                                 fps=data.video_fps) for p in (pair.chosen, pair.rejected)]  # fmt: skip
        except MediaError as err:
            skipped.append(SkippedPair(pair.row, str(err)))
            continue
        yield pair.row, pair.prompt, sides[0], sides[1]


def build_offline_set(
    cfg: FlowDPOConfig, model: FlowModel, accelerator: Accelerator
) -> tuple[TrainingSet, list[SkippedPair]]:
    """Bring the pairs (files or synthetic) to the model's size and VAE-encode them once into
    ``output_dir/cache``: each process encodes its share into a shard file; training then reads every shard
    memory-mapped, in table order (so 1 or N processes see the same data)."""
    data, size = cfg.data, cfg.model
    rank, world = accelerator.process_index, accelerator.num_processes
    fingerprint = {"data": asdict(data), "family": size.family, "path": size.path, "height": size.height,
                   "width": size.width, "num_frames": size.num_frames, "seed": cfg.train.seed}  # fmt: skip
    if data.source == "offline":
        fingerprint["table"] = file_fingerprint(data.pairs)
    shards = shard_paths(Path(cfg.output_dir) / "cache", "pairs", cache_key(fingerprint), world)
    if not shards[rank].is_file():
        skipped: list[SkippedPair] = []
        source = (
            synthetic_pairs(cfg, model.media_kind, rank, world)
            if data.source == "synthetic"
            else file_pairs(cfg, model.media_kind, rank, world, skipped)
        )
        empty = model.latent_shape(0, size.height, size.width, size.num_frames)
        keys, (chosen, rejected) = encode_streamed(
            model, (((i, p), (c, r)) for i, p, c, r in source), data.encode_batch_size, empty, sides=2
        )
        meta = {"ids": json.dumps([i for i, _ in keys]), "prompts": json.dumps([p for _, p in keys]),
                "skipped": json.dumps([asdict(s) for s in skipped])}  # fmt: skip
        write_shard(shards[rank], {"chosen": chosen, "rejected": rejected}, meta)
    accelerator.wait_for_everyone()
    handles = open_shards(shards)
    entries, skipped = [], []
    for shard, handle in enumerate(handles):
        meta = handle.metadata()
        ids, prompts = json.loads(meta["ids"]), json.loads(meta["prompts"])
        entries += [
            (pair_id, prompt, shard, row) for row, (pair_id, prompt) in enumerate(zip(ids, prompts, strict=True))
        ]
        skipped += [SkippedPair(**s) for s in json.loads(meta["skipped"])]
    skipped.sort(key=lambda s: s.row)
    if not entries:
        reasons = "; ".join(f"row {s.row}: {s.reason}" for s in skipped[:5])
        raise ConfigError(f"no usable pairs in {data.pairs!r}; all {len(skipped)} rows were skipped ({reasons})")
    entries.sort()  # table order
    index = [(shard, row) for _, _, shard, row in entries]
    chosen = MappedRows([h.get_slice("chosen") for h in handles], index)
    rejected = MappedRows([h.get_slice("rejected") for h in handles], index)
    return TrainingSet([e[1] for e in entries], chosen, rejected), skipped


def round_prompts(prompts: list[str], round_index: int, per_process: int, rank: int, world: int, seed: int):
    """This process's prompts for one round: consecutive slices of a stream of seeded permutations."""
    chosen = []
    for k in range(per_process):
        position = (round_index * world + rank) * per_process + k
        epoch, offset = divmod(position, len(prompts))
        order = torch.randperm(len(prompts), generator=seeded(seed, "prompts", epoch))
        chosen.append(prompts[int(order[offset])])
    return chosen


def build_online_round(
    cfg: FlowDPOConfig,
    model: FlowModel,
    rewards: RewardMix,
    reference: LoraReference,
    prompts: list[str],
    round_index: int,
    accelerator: Accelerator,
) -> tuple[TrainingSet, dict[str, float]]:
    """Sample with the reference, score with the reward mix, keep best-vs-worst pairs (DPO) or all (RWR)."""
    group, sampler, seed = cfg.online.samples_per_prompt, cfg.online.sampling, cfg.train.seed
    with reference.active(), accelerator.autocast():
        rollout = sample(
            model, prompts, group_size=group, num_steps=sampler.num_steps, height=cfg.model.height,
            width=cfg.model.width, num_frames=cfg.model.num_frames, guidance_scale=sampler.guidance_scale,
            negative_prompt=sampler.negative_prompt, sde_type=sampler.sde_type, noise_level=sampler.noise_level,
            sde_window=rollout_window(sampler, round_index, seed),
            generator=seeded(seed, accelerator.process_index, "round", round_index), batch_size=sampler.batch_size,
        )  # fmt: skip
    scored = rewards.score(rollout.prompts, rollout.media)
    total = scored.total.view(len(prompts), group)  # (P, N)
    valid = ~scored.failed.view(len(prompts), group)
    stats = {"round/reward_mean": float(total[valid].mean()) if valid.any() else math.nan,
             "round/failed_samples": float((~valid).sum())}  # fmt: skip
    for name, values in scored.scores.items():
        stats[f"round/reward_{name}"] = float(values[~scored.failed].mean()) if valid.any() else math.nan
    final = rollout.final.cpu()
    if cfg.loss.type == "rwr":
        keep = valid.flatten().nonzero().flatten()
        weights = rwr_weights(scored.total[keep], cfg.loss.rwr_temperature)
        return TrainingSet([rollout.prompts[i] for i in keep], final[keep], weights=weights), stats
    best, worst, kept_prompts, unusable = [], [], [], 0
    for p in range(len(prompts)):
        rows = valid[p].nonzero().flatten()
        if len(rows) < 2 or total[p, rows].max() == total[p, rows].min():
            unusable += 1  # fewer than two scored samples, or all rewards equal: no preference to learn
            continue
        best.append(p * group + int(rows[total[p, rows].argmax()]))
        worst.append(p * group + int(rows[total[p, rows].argmin()]))
        kept_prompts.append(prompts[p])
    stats["round/unusable_prompts"] = float(unusable)
    if best:
        stats["round/best_minus_worst"] = float((scored.total[best] - scored.total[worst]).mean())
    chosen = final[best] if best else final[:0]
    return TrainingSet(kept_prompts, chosen, final[worst] if best else final[:0]), stats


# ---------------------------------------------------------------------------------------------------- losses


def draw_noise(cfg: FlowDPOConfig, model: FlowModel, shape: torch.Size, generators: list[torch.Generator]):
    """Per sample, from its own generator: a noise level (logit-normal on the shifted grid) and a Gaussian noise
    tensor of the latent's shape (``shape`` is the batch's), see :func:`per_sample_noise`."""
    loss = cfg.loss
    u, noise = per_sample_noise(
        generators, shape[1:], lambda g: logit_normal(1, mean=loss.logit_mean, std=loss.logit_std, generator=g)
    )
    return model.training_sigmas(u), noise[0]


def dpo_loss(cfg, model, transformer, reference, batch: TrainingSet, generators, accelerator):
    """Flow-DPO on a batch of pairs: one shared noise and noise level per pair, reference first (no graph kept)."""
    size = len(batch)
    sigma, noise = draw_noise(cfg, model, batch.chosen.shape, generators)
    x0 = torch.cat([batch.chosen, batch.rejected]).to(accelerator.device)  # (2B, *latent): chosen, then rejected
    noise2, sigma2 = torch.cat([noise, noise]).to(accelerator.device), torch.cat([sigma, sigma]).to(accelerator.device)
    x_t, target = noisy_latents(x0, noise2, sigma2), velocity_target(x0, noise2)
    cond = model.encode_prompts(batch.prompts)
    cond2 = PromptEmbeds.cat([cond, cond])
    with reference.active(), accelerator.autocast():
        ref_error = flow_matching_error(model.velocity(x_t, sigma2, cond2), target, cfg.loss.reduction)
    with accelerator.autocast():
        policy_error = flow_matching_error(
            model.velocity(x_t, sigma2, cond2, transformer=transformer), target, cfg.loss.reduction
        )
    out = flow_dpo_loss(
        policy_error[:size], policy_error[size:], ref_error[:size], ref_error[size:], beta=cfg.loss.beta,
        loss_type=cfg.loss.type, beta_schedule=cfg.loss.beta_schedule, sigma=sigma.to(accelerator.device),
    )  # fmt: skip
    metrics = {"implicit_acc": out.accuracy, "reward_chosen": out.chosen_reward.mean(),
               "reward_rejected": out.rejected_reward.mean(), "reward_margin": out.reward_margin.mean(),
               "margin": out.margin.mean(), "beta_t": out.beta.mean(), "sigma": sigma.mean()}  # fmt: skip
    return out.loss, metrics


def rwr_loss(cfg, model, transformer, reference, batch: TrainingSet, generators, accelerator):
    """Flow-RWR: reward-weighted flow matching on generated samples (no reference pass)."""
    sigma, noise = draw_noise(cfg, model, batch.chosen.shape, generators)
    x0, noise, sigma = batch.chosen.to(accelerator.device), noise.to(accelerator.device), sigma.to(accelerator.device)
    with accelerator.autocast():
        prediction = model.velocity(
            noisy_latents(x0, noise, sigma), sigma, model.encode_prompts(batch.prompts), transformer=transformer
        )
    error = flow_matching_error(prediction, velocity_target(x0, noise), cfg.loss.reduction)
    return flow_rwr_loss(error, batch.weights), {"weight_max": batch.weights.max(), "sigma": sigma.mean()}


# ------------------------------------------------------------------------------------------------------ main


def main(cfg: FlowDPOConfig) -> Path:
    train = cfg.train
    run = start_run(cfg, "flow_dpo")
    accelerator, output, tracker = run
    rank, world = accelerator.process_index, accelerator.num_processes
    prompt_list = read_prompts(cfg.data.prompts) if cfg.data.source == "online" else []

    # -- model, adapter, reference, optimizer (one optimizer step per training step)
    policy = load_lora_policy(cfg, accelerator, optimizer_steps=train.max_steps)
    model, transformer, reference = policy.model, policy.transformer, policy.reference

    # -- data
    rewards = None
    skipped: list[SkippedPair] = []
    if cfg.data.source == "online":
        rewards = RewardMix(cfg.online.rewards, device=accelerator.device)
        data, needed = None, {*prompt_list, cfg.online.sampling.negative_prompt}
    else:
        data, skipped = build_offline_set(cfg, model, accelerator)
        needed = set(data.prompts)
        if len(data) < train.batch_size * world:
            raise ConfigError(
                f"{len(data)} usable pairs, fewer than one batch ({train.batch_size} x {world} processes)"
            )
    encode_prompts_once(model, needed, cfg.model.prompt_cache_size)
    if accelerator.is_main_process:
        with (output / "skipped_pairs.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(s)) + "\n" for s in skipped)
        if skipped:
            print(
                f"flow_dpo: skipped {len(skipped)} pairs (reasons in {output / 'skipped_pairs.jsonl'})",
                file=sys.stderr,
            )

    # -- resume
    step, refreshes = 0, 0
    states = {**policy.states(), "reference": reference}
    checkpoint = latest_checkpoint(output / "checkpoints") if train.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, modules={"transformer": policy.unwrapped}, states=states, rank=rank)
        step, refreshes = state["step"], state["refreshes"]
        policy.guard.skipped = state["nonfinite_skipped"]

    # -- loop
    compute_loss = rwr_loss if cfg.loss.type == "rwr" else dpo_loss
    current: TrainingSet | None = data
    round_stats: dict[str, float] = {}
    while step < train.max_steps:
        if cfg.data.source == "online" and (current is None or step % cfg.online.round_steps == 0):
            round_index = step // cfg.online.round_steps
            current, round_stats = build_online_round(
                cfg, model, rewards, reference,
                round_prompts(prompt_list, round_index, cfg.online.prompts_per_round, rank, world, train.seed),
                round_index, accelerator,
            )  # fmt: skip
            counts = accelerator.gather(torch.tensor([len(current)], device=accelerator.device))
            if int(counts.min()) == 0:
                raise ConfigError(
                    f"round {round_index}: a process has no usable pairs (all samples of its prompts tied or failed; "
                    f"pair counts per process: {counts.tolist()}); raise online.prompts_per_round or "
                    "online.samples_per_prompt, or check the rewards"
                )
        step_metrics: dict[str, list[torch.Tensor]] = {}
        window_ok = True
        for micro in range(train.gradient_accumulation_steps):
            rows, positions = batch_rows(
                len(current), step, micro, cfg, rank, world, online=cfg.data.source == "online"
            )
            generators = [seeded(train.seed, step, micro, position) for position in positions]
            batch = current.select(rows)
            last = micro == train.gradient_accumulation_steps - 1
            with accelerator.no_sync(transformer) if not last else nullcontext():
                loss, metrics = compute_loss(cfg, model, transformer, reference, batch, generators, accelerator)
                if not finite_everywhere(loss, accelerator.reduce):  # every process skips the same backward
                    window_ok = False
                    continue
                accelerator.backward(loss / train.gradient_accumulation_steps)
            for name, value in {"loss": loss, **metrics}.items():
                step_metrics.setdefault(name, []).append(value.detach().float().reshape(()))
        # A non-finite micro-batch skips the whole step (counted; the run stops after too many in a row).
        step_loss = torch.stack(step_metrics["loss"]).mean() if window_ok else float("nan")
        applied, grad_norm = policy.optimizer.step_if_loss_finite(step_loss, accelerator)
        step += 1
        if cfg.online.ref_refresh_every and step % cfg.online.ref_refresh_every == 0:
            reference.refresh()
            refreshes += 1
        if applied and step % train.log_every == 0:
            logged = {name: accelerator.reduce(torch.stack(v).mean().to(accelerator.device), "mean").item()
                      for name, v in step_metrics.items()}  # fmt: skip
            logged |= {"grad_norm": grad_norm, "lr": policy.lr_scheduler.get_last_lr()[0],
                       "nonfinite_skipped": policy.guard.skipped, "skipped_pairs": len(skipped),
                       "reference_refreshes": refreshes, **round_stats}  # fmt: skip
            round_stats = {}
            tracker.log(step, logged)
        if step % train.save_every == 0 or step == train.max_steps:
            save_checkpoint(
                output / "checkpoints", step, modules={"transformer": policy.unwrapped}, states=states,
                extra={"refreshes": refreshes, "nonfinite_skipped": policy.guard.skipped},
                keep_last=train.keep_checkpoints, rank=rank, barrier=accelerator.wait_for_everyone,
            )  # fmt: skip

    return finish_lora_run(run, policy)


def batch_rows(
    size: int, step: int, micro: int, cfg: FlowDPOConfig, rank: int, world: int, online: bool
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


if __name__ == "__main__":
    main(parse_config(FlowDPOConfig, description=__doc__.splitlines()[0]))

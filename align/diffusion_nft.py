"""DiffusionNFT: online RL of rectified-flow generators (every family of :mod:`mmreward.flow.models`, editing
families included) on the forward process, LoRA or full.

DiffusionNFT (Zheng et al. 2025, arXiv 2509.16117; reference NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py``)
needs no log-probabilities and no SDE sampler and trains without CFG: each iteration the *old* policy samples a
group of G images or videos per prompt (deterministic ODE by default), every sample is rewarded (any registered
reward or weighted mix, or its win rate in its group under a pairwise judge), rewards become optimality
probabilities ``r`` in [0, 1] per group, and the clean samples are re-noised at several of the sampling grid's noise
levels to fit the implicit positive and negative policies built from the old and current velocity (the loss and its
formulas: :mod:`mmreward.alignment.nft`). After each iteration the old policy (a snapshot of the LoRA weights, or of
the full weights) moves toward the trained one on the reference's decay schedule. ``reward.mode`` picks the reward:

- ``pointwise``: the weighted mix ``reward.rewards: {name: weight}`` of any registered rewards;
- ``pairwise``: :func:`mmreward.win_rate` of every sample in its group under ``reward.judge`` (weighted by
  ``reward.judge_weight``), plus the optional weighted pointwise ``reward.rewards``.

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml align/diffusion_nft.py \\
        --config configs/align/diffusion_nft_sd3.yaml [--train.learning_rate 1e-4 ...]
    python align/diffusion_nft.py --config configs/tiny/diffusion_nft.yaml      # tiny random SD3 on the CPU
    python align/diffusion_nft.py --config ... --train.max_steps 0   # read the data, then stop
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        align/diffusion_nft.py --config configs/tiny/diffusion_nft_fsdp.yaml   # full fine-tuning, FSDP2, CPU

One step: P prompts (``rollout.prompts_per_step``, over all processes) x G samples laid out prompt-major over the
processes (``rollout.policy``: drawn by the old policy, as the reference, or the current one); rewards of a group are
computed with the whole group in hand; ``train.updates_per_step`` optimizer steps per pass over the samples
(``train.inner_epochs`` passes), each sample trained at ``int(rollout.num_steps x loss.timestep_fraction)`` distinct
noise levels of the sampling grid with a fresh noise each; ``loss.kl_beta`` adds the reference's velocity KL to the
base model (adapter off). Samples whose reward failed contribute nothing.

``model.train: full`` fine-tunes every transformer weight: the old policy is then a frozen copy of the transformer
moved by the same rule, and the base model for the KL (or the base-model evaluation samples) a second frozen copy of
the initial weights, made only when ``loss.kl_beta > 0`` or ``eval.every > 0``. ``train.sharding: fsdp2`` or
``configs/accelerate/fsdp.yaml`` shards the model, both copies, gradients, optimizer and EMA with FSDP2
(:mod:`mmreward.train.sharding`); checkpoints are then sharded (``checkpoints/step-*/sharded/``, the old policy
included) and resume exactly on the same process count.

Editing families (``qwenimage-edit``, ``flux-kontext``): ``data.prompts`` is a prompt table with a source image
column (``data.image_column``; ``.jsonl`` / ``.csv`` / ``.tsv``, every line checked first, a bad line left out with
its line number); each group edits its prompt's source, the source latents travel with the prompt's conditioning
into every NFT forward (old, current and base velocity), and rewards that declare ``uses_source`` are given the
sources (``configs/tiny/diffusion_nft_edit.yaml``).

Deliberate difference: the reference samples with a 2nd-order DPM solver (``sample.solver = "dpm2"``); the samplers
here are Euler (ODE) and the SDEs of :mod:`mmreward.flow.sde` (``rollout.sde_type``). NFT accepts samples from any
sampler; more ODE steps (``rollout.num_steps``) bring Euler samples closer.

Writes ``output_dir/config.yaml``, ``metrics.jsonl`` (reward, advantages, optimality, loss, positive/negative
errors, old-policy deviation, KL, old-policy decay, grad norm, step-time split; ``eval/*`` rows with held-out rewards,
win rate or reward gain against the base model and diversity), ``eval/step-*.png`` (``.mp4`` for video) sample
grids, ``reward_failures.jsonl``, atomic checkpoints under ``checkpoints/`` (adapter or weights, old policy, optimizer,
EMA; resumed automatically), and the final LoRA in the diffusers format under ``lora/`` (EMA weights when EMA is on):
``pipeline.load_lora_weights(output_dir/lora)``; a full fine-tune writes the transformer in the diffusers model layout
under ``transformer/`` instead.
"""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from mmreward.alignment.group_rewards import (
    PointwiseGroupReward,
    WinRateGroupReward,
    compute_rewards,
    reward_metrics,
    write_reward_failures,
)
from mmreward.alignment.group_rollout import GroupBatch, RolloutConfig, check_rollout_config, rollout_groups
from mmreward.alignment.layout import GroupLayout, iteration_prompts
from mmreward.alignment.monitor import (
    EvalConfig,
    HeldOutEvaluation,
    check_eval_config,
    load_diversity_features,
)
from mmreward.alignment.nft import (
    OLD_DECAY_PRESETS,
    FrozenOldPolicy,
    OldPolicy,
    check_decay,
    group_optimality,
    level_loss,
    old_policy,
    old_policy_decay,
    training_step_indices,
)
from mmreward.alignment.prompt_sets import read_held_out, read_training_prompts
from mmreward.alignment.update_schedule import split_sizes
from mmreward.errors import ConfigError
from mmreward.flow.rollout import seeded
from mmreward.rewards.mix import RewardMix
from mmreward.rewards.registry import load_reward
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config, require_positive
from mmreward.train.policy import Policy, encode_prompts_once, load_policy
from mmreward.train.run import clock, data_checked, finish_policy_run, open_run, require_steps, start_processes
from mmreward.train.sections import FlowModelConfig, LoraConfig, PromptDataConfig, TrainConfig, check_media_kind

# ----------------------------------------------------------------------------------------------------- config

_FLAT, _RATE, _CAP = OLD_DECAY_PRESETS[1]


@dataclass
class NFTRolloutConfig(RolloutConfig):
    """``rollout:``: the sampler (ODE, CFG off: the reference's NFT configs) and the ``P x G`` samples."""

    sde_type: Literal["ode", "flow", "dance", "cps"] = "ode"
    guidance_scale: float = 1.0
    policy: Literal["old", "current"] = "old"  # which weights draw the samples (the reference: the old policy)


@dataclass
class RewardConfig:
    mode: Literal["pairwise", "pointwise"] = "pointwise"
    judge: str | None = None  # pairwise: a judge preset (unifiedreward-think, *-remote), preset file or module:Class
    judge_options: dict[str, Any] = field(default_factory=dict)  # overrides for the judge (dtype, endpoint, ...)
    orders: Literal["both", "ab", "random"] = "both"  # presentation orders per pair (both cancels position bias)
    judge_weight: float = 1.0  # pairwise: weight of the win rate in the reward
    rewards: dict[str, float] = field(default_factory=dict)  # {reward name: weight}; pairwise: added to the win rate


@dataclass
class NFTLossConfig:
    """``loss:``: the optimality transform, the negative-aware loss and the old policy's schedule (reference
    defaults: ``config/nft.py`` and ``config/base.py``)."""

    beta: float = 1.0  # implicit-policy step (reference config.beta: 1.0; 0.1 for OCR and multi-reward)
    adv_clip_max: float = 5.0  # |A| clip, r = A / clip / 2 + 1/2, and the loss's scale (train.adv_clip_max)
    std: Literal["global", "group"] = "global"  # std of all the iteration's rewards (sample.global_std) or per group
    eps: float = 1e-4  # added to the std
    timestep_fraction: float = 0.99  # trained noise levels per sample: int(rollout.num_steps x this)
    kl_beta: float = 1e-4  # weight of mean (v_theta - v_base)^2 (train.beta); 0 skips the base-model forward
    # old <- decay old + (1 - decay) theta after every iteration, decay = min(max(steps - flat, 0) x rate, max)
    # over optimizer steps taken (reference decay_type 1: 0, 0.001, 0.5; decay_type 2, OCR: 75, 0.0075, 0.999)
    old_decay_flat: int = _FLAT
    old_decay_rate: float = _RATE
    old_decay_max: float = _CAP


@dataclass
class NFTTrainConfig(TrainConfig):
    """``train:``: the shared optimizer settings and how an iteration's samples are trained."""

    # max_steps counts iterations (rollouts); each runs updates_per_step x inner_epochs optimizer steps
    micro_batch_size: int = 8  # samples per training forward
    updates_per_step: int = 1  # optimizer steps per pass over the iteration's samples (reference SD3.5: 1; OCR: 2)
    inner_epochs: int = 1  # passes over the samples (reference num_inner_epochs: 1)
    ema_every: int = 1  # the reference's evaluation EMA: decay 0.9 after every optimizer step
    save_every: int = 50

    def optimizer_steps(self) -> int:
        """The learning-rate schedule's length."""
        return self.max_steps * self.updates_per_step * self.inner_epochs


@dataclass
class DiffusionNFTConfig:
    output_dir: str = "outputs/diffusion_nft"
    logging: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl, tensorboard, wandb
    model: FlowModelConfig = field(default_factory=FlowModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    rollout: NFTRolloutConfig = field(default_factory=NFTRolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    loss: NFTLossConfig = field(default_factory=NFTLossConfig)
    train: NFTTrainConfig = field(default_factory=NFTTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        """Cross-field rules, checked before anything is loaded."""
        reward, train, loss = self.reward, self.train, self.loss
        if not self.data.prompts:
            raise ConfigError("data.prompts is required: a .txt file (one prompt per line) or a prompt table")
        if reward.mode == "pairwise" and not reward.judge:
            raise ConfigError("reward.mode=pairwise needs reward.judge, e.g. unifiedreward-think or a *-remote preset")
        if reward.mode == "pointwise" and not reward.rewards:
            raise ConfigError("reward.mode=pointwise needs reward.rewards, e.g. {pickscore: 1.0}")
        if reward.mode == "pointwise" and reward.judge:
            raise ConfigError("reward.judge is for reward.mode=pairwise; remove it or set the mode to pairwise")
        if self.eval.every and not self.data.eval_prompts:
            raise ConfigError("eval.every > 0 needs data.eval_prompts (held-out prompts); or set eval.every: 0")
        check_media_kind(self.model, editing=True)
        check_rollout_config(self.rollout)
        require_steps(train.max_steps)
        require_positive(
            {
                "train.micro_batch_size": train.micro_batch_size,
                "train.updates_per_step": train.updates_per_step,
                "train.inner_epochs": train.inner_epochs,
                "train.save_every": train.save_every,
                "lora.rank": self.lora.rank,
                "loss.beta": loss.beta,
                "loss.adv_clip_max": loss.adv_clip_max,
            }
        )
        if not 0.0 < loss.timestep_fraction <= 1.0:
            raise ConfigError(f"loss.timestep_fraction must be in (0, 1], got {loss.timestep_fraction}")
        if trained_levels(self) < 1:
            raise ConfigError(
                f"loss.timestep_fraction {loss.timestep_fraction} x rollout.num_steps {self.rollout.num_steps} trains "
                "no noise level; raise either so that their product is >= 1"
            )
        if loss.kl_beta < 0 or loss.eps < 0:
            raise ConfigError(f"loss.kl_beta and loss.eps must be >= 0, got {loss.kl_beta} and {loss.eps}")
        check_decay(loss.old_decay_flat, loss.old_decay_rate, loss.old_decay_max)
        check_eval_config(self.eval)


def trained_levels(cfg: DiffusionNFTConfig) -> int:
    """Noise levels each sample is trained at per pass: the reference's ``int(num_steps * timestep_fraction)``."""
    return int(cfg.rollout.num_steps * cfg.loss.timestep_fraction)


# ------------------------------------------------------------------------------------------------------ update


def nft_update(
    cfg: DiffusionNFTConfig,
    policy: Policy,
    old: OldPolicy | FrozenOldPolicy,
    batch: GroupBatch,
    r: torch.Tensor,
    keep: torch.Tensor,
    *,
    step: int,
    accelerator: Any,
) -> dict[str, float]:
    """Train on this process's samples of one iteration; returns the averaged loss terms and the grad norm.

    ``r`` and ``keep`` are ``(N,)`` for this process's samples (optimality probabilities; False where the reward
    failed). Every process runs the same number of forwards (the layout gives each the same number of samples), so
    DDP's gradient average is the mean over all samples of an update: each process scales its summed loss by
    ``1 / (its samples in the update x trained levels)``, like the reference's ``loss / effective_grad_accum_steps``.
    Sample ``i`` draws its noise levels and noises from ``seeded(seed, "nft", step, epoch, i)``: the same on any
    number of processes and after a resume.
    """
    train, loss_cfg, model = cfg.train, cfg.loss, policy.model
    device = accelerator.device
    rollout = batch.rollout
    grid = rollout.sigmas[:-1].float()  # (K,) the sampling levels; the last, 0, is the clean sample
    levels = trained_levels(cfg)
    guidance = 1.0 if model.batch_cfg else cfg.rollout.guidance_scale  # CFG-free (FLUX: its guidance embedding)
    local = len(batch)
    weight = keep.float().to(device)
    r = r.to(device)
    totals: dict[str, float] = {}
    count = 0
    grad_norms = []
    for epoch in range(train.inner_epochs):
        order = torch.randperm(
            local, generator=seeded(train.seed, "nft-order", step, epoch, accelerator.process_index)
        )
        generators = {int(k): seeded(train.seed, "nft", step, epoch, int(batch.index[k])) for k in range(local)}
        start = 0
        for size in split_sizes(local, train.updates_per_step):
            update = order[start : start + size]
            start += size
            micro = [update[m : m + train.micro_batch_size] for m in range(0, size, train.micro_batch_size)]
            scale = 1.0 / (size * levels)
            for m, rows in enumerate(micro):
                gens = [generators[int(k)] for k in rows]
                # (b, levels): each sample's noise levels, then one fresh noise per level, drawn in a fixed order
                chosen = torch.stack([training_step_indices(len(grid), levels, g) for g in gens])
                x0 = rollout.final[rows].float().to(device)  # (b, *latent)
                cond = rollout.cond.select(rows)
                for j in range(levels):
                    sigma = grid[chosen[:, j]].to(device)  # (b,)
                    noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(device)
                    last = m == len(micro) - 1 and j == levels - 1
                    with accelerator.no_sync(policy.transformer) if not last else nullcontext():
                        out = level_loss(
                            model,
                            x0,
                            noise,
                            sigma,
                            cond,
                            r[rows],
                            old=old,
                            reference=policy.reference,
                            transformer=policy.transformer,
                            beta=loss_cfg.beta,
                            clip_max=loss_cfg.adv_clip_max,
                            kl_beta=loss_cfg.kl_beta,
                            guidance=guidance,
                            autocast=accelerator.autocast,
                        )
                        accelerator.backward((out.total * weight[rows]).sum() * scale)
                    terms = {
                        "loss/nft": out.nft.loss,
                        "loss/positive": out.nft.positive,
                        "loss/negative": out.nft.negative,
                        "loss/kl": out.kl,
                        "old/deviation": out.deviation,
                        "sigma": sigma,
                    }
                    for name, value in terms.items():
                        totals[name] = totals.get(name, 0.0) + float(value.detach().sum())
                    count += len(rows)
            _, grad_norm = policy.optimizer.step(accelerator)
            grad_norms.append(grad_norm)
    packed = torch.tensor([*totals.values(), count], dtype=torch.float64, device=device)
    packed = accelerator.reduce(packed, "sum").cpu()
    metrics = {name: float(packed[n] / packed[-1]) for n, name in enumerate(totals)}
    metrics["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else math.nan
    return metrics


# ------------------------------------------------------------------------------------------------------ main


def main(cfg: DiffusionNFTConfig) -> Path | None:
    """Train; returns the exported folder (``lora/`` or ``transformer/``), or None for ``train.max_steps 0`` (the
    data is read, nothing else)."""
    train, rollout_cfg, eval_cfg, loss_cfg = cfg.train, cfg.rollout, cfg.eval, cfg.loss
    accelerator = start_processes(cfg, "diffusion_nft")
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    layout = GroupLayout(rollout_cfg.prompts_per_step, rollout_cfg.group_size, world, rank)
    check_eval_config(eval_cfg, world)
    if layout.per_rank < train.updates_per_step:
        raise ConfigError(
            f"train.updates_per_step {train.updates_per_step} needs at least that many samples per process, got "
            f"{layout.per_rank}; lower it or raise rollout.prompts_per_step x rollout.group_size"
        )
    # editing families: every prompt has a source image (prompt files with an image column)
    editing = cfg.model.takes_sources()
    prompts = read_training_prompts(cfg.data, editing=editing, program="diffusion_nft", accelerator=accelerator)
    eval_prompts, eval_sources = read_held_out(
        cfg.data, eval_cfg, editing=editing, program="diffusion_nft", accelerator=accelerator
    )
    if train.max_steps == 0:
        counts = {"data.prompts": len(prompts), "data.eval_prompts": len(eval_prompts)}
        data_checked("diffusion_nft", counts, accelerator)
        return None
    run = open_run(cfg, accelerator)
    output, tracker = run.output, run.tracker

    # -- rewards (before the generator: a wrong reward name fails in seconds)
    if cfg.reward.mode == "pairwise":
        judge = load_reward(cfg.reward.judge, **{"device": device, **cfg.reward.judge_options})
        mix = RewardMix(cfg.reward.rewards, device=device) if cfg.reward.rewards else None
        reward = WinRateGroupReward(judge, cfg.reward.orders, weight=cfg.reward.judge_weight, mix=mix)
    else:
        judge = None
        reward = PointwiseGroupReward(RewardMix(cfg.reward.rewards, device=device))
    eval_weights = eval_cfg.rewards or cfg.reward.rewards
    eval_rewards = None
    if eval_cfg.every and eval_weights:
        eval_rewards = reward.mix if eval_weights == cfg.reward.rewards else RewardMix(eval_weights, device=device)
    features = load_diversity_features(eval_cfg, device)

    # -- model, adapter or full weights, old policy (a snapshot of the adapter, or a frozen copy of the full weights
    # sharded like them), base model (full fine-tuning: a frozen copy, only for the KL term or base-model samples)
    needs_reference = loss_cfg.kl_beta > 0 or bool(eval_cfg.every)
    policy = load_policy(
        cfg, accelerator, optimizer_steps=train.optimizer_steps(), needs_reference=needs_reference, frozen_copy=True
    )
    if not editing:  # editing prompts are encoded with their source images, as steps draw them
        encode_prompts_once(
            policy.model, {*prompts.prompts, *eval_prompts, rollout_cfg.negative_prompt}, cfg.model.prompt_cache_size
        )
    model, guard = policy.model, policy.guard
    old = old_policy(policy)
    size = cfg.model.sample_size()
    steps_per_iteration = train.updates_per_step * train.inner_epochs

    # -- resume
    step, failed_total = 0, 0
    extras = {"old_policy": old}  # shaped like the trained weights: sharded with them under FSDP2
    checkpoint = latest_checkpoint(output / "checkpoints") if train.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, **policy.checkpoint_args(extras), rank=rank)
        step, failed_total, guard.skipped = state["step"], state["failed_total"], state["nonfinite_skipped"]

    # -- held-out evaluation: ODE samples from fixed seeds, scored, compared with the base model's, saved as a grid
    run_eval = HeldOutEvaluation(
        policy,
        eval_prompts,
        eval_cfg,
        size,
        rollout_cfg.negative_prompt,
        accelerator,
        train.seed,
        output,
        tracker,
        rewards=eval_rewards,
        judge=judge,
        orders=cfg.reward.orders,
        features=features,
        sources=eval_sources,
    )

    base = base_scores = None  # the base model's samples on the same seeds: the comparison point of every evaluation
    if eval_cfg.every:
        base, base_scores = run_eval(0, base_model=True, log=step == 0)

    # -- loop: rollout, rewards, optimality, update, old policy
    groups = torch.arange(layout.prompts).repeat_interleave(layout.group_size)  # (P G,) group of every sample
    while step < train.max_steps:
        start = clock(device)
        drawn = iteration_prompts(range(len(prompts)), step, layout.prompts, train.seed)
        step_prompts = [prompts.prompts[i] for i in drawn]
        with old.active() if rollout_cfg.policy == "old" else nullcontext():
            batch = rollout_groups(
                model,
                step_prompts,
                layout,
                rollout_cfg,
                **size,
                iteration=step,
                seed=train.seed,
                accelerator=accelerator,
                sources=prompts.source_images(drawn),
            )
        rolled = clock(device)
        rewards = compute_rewards(reward, batch, layout, accelerator)
        rewarded = clock(device)
        adv, r = group_optimality(
            rewards.scores, groups, clip_max=loss_cfg.adv_clip_max, std=loss_cfg.std, eps=loss_cfg.eps
        )
        updated = nft_update(
            cfg, policy, old, batch, r[batch.index], adv.keep[batch.index], step=step, accelerator=accelerator
        )
        decay = old_policy_decay(
            (step + 1) * steps_per_iteration,
            flat=loss_cfg.old_decay_flat,
            rate=loss_cfg.old_decay_rate,
            cap=loss_cfg.old_decay_max,
        )
        old.follow(decay)
        step += 1
        done = clock(device)
        failed_total += int(rewards.failed.sum())
        if accelerator.is_main_process:
            write_reward_failures(output, rewards, step_prompts, layout.group_size, step)
        if step % train.log_every == 0:
            trained = r[adv.keep]
            logged = {
                **reward_metrics(rewards, failed_total),
                **adv.stats,
                **updated,
                "optimality/mean": float(trained.mean()) if len(trained) else math.nan,
                "optimality/saturated_frac": float(((trained == 0) | (trained == 1)).float().mean())
                if len(trained)
                else math.nan,
                "old/decay": decay,
                "lr": policy.lr_scheduler.get_last_lr()[0],
                "nonfinite_skipped": guard.skipped,
                "time/rollout": rolled - start,
                "time/reward": rewarded - rolled,
                "time/update": done - rewarded,
                "time/step": done - start,
            }
            if device.type == "cuda":
                logged["memory/peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            tracker.log(step, logged)
        if eval_cfg.every and (step % eval_cfg.every == 0 or step == train.max_steps):
            run_eval(step, base=base, base_scores=base_scores)
        if step % train.save_every == 0 or step == train.max_steps:
            save_checkpoint(
                output / "checkpoints",
                step,
                **policy.trained_state(extras),
                extra={"failed_total": failed_total, "nonfinite_skipped": guard.skipped},
                keep_last=train.keep_checkpoints,
                rank=rank,
                barrier=accelerator.wait_for_everyone,
            )

    return finish_policy_run(run, policy)


if __name__ == "__main__":
    try:
        main(parse_config(DiffusionNFTConfig, description=__doc__.splitlines()[0]))
    except ConfigError as err:  # a bad option, prompt file, judge or model: named in the message, no traceback
        print(f"diffusion_nft: {err}", file=sys.stderr)
        raise SystemExit(2) from None

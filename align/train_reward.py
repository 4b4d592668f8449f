"""Train a VLM reward model with per-dimension reward tokens (VideoReward recipe) from preference pairs.

    python align/train_reward.py --config configs/tiny/train_reward.yaml --data.train pairs.csv
    accelerate launch align/train_reward.py --config configs/align/train_reward_videoreward.yaml

Recipe (Liu et al. 2025, VideoAlign ``train.sh``): a Qwen2-VL base gets one special token per dimension
(``<|VQ_reward|>`` ...) whose last hidden state a linear head reads (token i -> dimension i). Trained: LoRA on
the language model's linear layers, the vision tower and the merger, the reward tokens' embedding rows (only
those rows; the rest of the vocabulary is left as it was) and the head, each with its own learning rate. Loss per
dimension (``mmreward.losses``): ``bt``, ``btt`` (Bradley-Terry with ties, theta = 5) or ``margin``; labels
A/B/same from a pair file in VideoAlign's schema (``mmreward.data.pairs``).

With ``model.kind: judge`` the same program fine-tunes a generative pairwise judge (UnifiedReward-style) as a
classifier over its verdict sentences: each pair is shown in both presentation orders, and the loss is the
cross-entropy of the labelled verdict ("Image 1 is better", "Image 2 is better", the tie sentence) under the
judge's one-pass logit read-out (``mmreward.rewards.vlm.local_backend.VerdictReadout``), for the dimension
``model.judge_dim``.

``model.init_from`` continues a trained head model (VideoReward, HPSv3, a VideoAlign-layout checkpoint or a
directory this program saved) instead of starting a fresh head: its weights with its LoRA merged, head, reward
tokens, stats, position mode and resizing are the start; the saved directory adds the tensors it changed from
the base weights, so it loads on the base alone.

Every epoch the per-dimension accuracy on the validation pairs is logged without ties (pairs humans split) and
with ties (tie-calibrated, with its threshold), as in VideoGen-RewardBench. Checkpoints are atomic and resume
exactly (model, optimizer, scheduler, RNG, data position). The output directory loads with
``load_reward(output_dir)``: a head model in the VideoAlign layout with the dimensions' normalization stats, or
the judge's merged weights with its processor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mmreward.data.pairs import LabeledPair
from mmreward.errors import ConfigError
from mmreward.reward_training.pair_loading import EpochShuffle, pair_loader, read_training_pairs
from mmreward.reward_training.sections import (
    LogConfig,
    PairFileDataConfig,
    RewardLoraConfig,
    RewardModelConfig,
    RewardTrainConfig,
)
from mmreward.reward_training.tasks import build_task
from mmreward.reward_training.trainable import TokenRowMask, make_trainable, warmup_constant
from mmreward.reward_training.validation import accuracies, gather_margins
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config, save_config
from mmreward.train.distributed import check_launch, make_accelerator
from mmreward.train.guards import NonFiniteGuard, finite_everywhere
from mmreward.train.sharding import OptimizerSteps, ShardedState, clip_grad_norm, shard_with_groups
from mmreward.train.tracking import Tracker

# ----------------------------------------------------------------------------------------------------- config


@dataclass
class TrainRewardConfig:
    output_dir: str = "runs/train_reward"
    model: RewardModelConfig = field(default_factory=RewardModelConfig)
    lora: RewardLoraConfig = field(default_factory=RewardLoraConfig)
    data: PairFileDataConfig = field(default_factory=PairFileDataConfig)
    train: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if not self.model.dims:
            raise ConfigError("model.dims must name at least one dimension")
        if self.train.batch_size < 1 or self.train.grad_accum < 1:
            raise ConfigError("train.batch_size and train.grad_accum must be >= 1")
        if self.train.epochs < (0 if self.model.init_from else 1):
            raise ConfigError(
                f"train.epochs must be >= 1 (0 only with model.init_from, to save that checkpoint untrained), got "
                f"{self.train.epochs}"
            )
        if self.model.kind == "judge" and (self.model.train == "full" or self.train.sharding == "fsdp2"):
            raise ConfigError(
                f"model.train={self.model.train} with train.sharding={self.train.sharding} is for model.kind head; "
                "a judge trains LoRA under DDP (model.train lora, train.sharding ddp)"
            )
        if self.model.init_from is not None and self.model.kind != "head":
            raise ConfigError("model.init_from continues a head model; a judge starts from model.base")
        if self.model.init_filename is not None and self.model.init_from is None:
            raise ConfigError("model.init_filename names a file inside model.init_from; set model.init_from too")
        if self.train.stats == "keep" and self.model.init_from is None:
            raise ConfigError(
                "train.stats=keep keeps the stats of model.init_from; set it, or use train.stats: measure"
            )
        if self.model.base is None and self.model.init_from is None:
            self.model.base = "Qwen/Qwen2-VL-2B-Instruct"
        if not 0.0 <= self.train.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.train.warmup_ratio}")
        if self.model.judge_dim is not None and self.model.judge_dim not in self.model.dims:
            raise ConfigError(f"model.judge_dim {self.model.judge_dim!r} is not one of model.dims {self.model.dims}")
        # With init_from an unset template is the checkpoint preset's (videoreward for a bare checkpoint).
        if self.model.template is None and self.model.template_file is None and self.model.init_from is None:
            self.model.template = "videoreward" if self.model.kind == "head" else "unifiedreward-pairwise"


# ------------------------------------------------------------------------------------------------------ main


def main(cfg: TrainRewardConfig) -> Path:
    from accelerate.utils import set_seed

    if not cfg.data.train:
        raise ConfigError("data.train is required: a pair file (CSV or JSONL) in VideoAlign's schema")
    train = cfg.train
    accelerator = make_accelerator(mixed_precision=train.mixed_precision, gradient_accumulation_steps=train.grad_accum)
    sharding = check_launch(accelerator, train.sharding)
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        save_config(cfg, out)
    set_seed(train.seed)
    dims = list(cfg.model.dims)

    # Data first: a bad pair file fails before any model loads.
    train_pairs, val_pairs = read_training_pairs(cfg.data, dims, train.seed)

    task = build_task(cfg, accelerator.device, accelerator.is_main_process, accelerator.wait_for_everyone)
    groups = make_trainable(task, cfg)
    token_rows = TokenRowMask(task.model, task.token_ids)
    sharded = sharding == "fsdp2" and torch.distributed.is_initialized()
    if sharded:  # the decoder layers and vision blocks, then the scorer (head, embeddings, norms)
        groups = shard_with_groups(
            task.module, groups, blocks_of=task.model, mixed_precision=accelerator.mixed_precision
        )
    optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(train_pairs) / (train.batch_size * accelerator.num_processes * train.grad_accum))
    total_steps = steps_per_epoch * train.epochs
    scheduler = warmup_constant(optimizer, round(train.warmup_ratio * total_steps))

    def loader(pairs: list[LabeledPair], sampler: EpochShuffle | None = None) -> DataLoader:
        return pair_loader(
            pairs, task, dims, train.margin, train.batch_size, cfg.data.num_workers, sampler, train.signed_margin
        )

    train_loader = loader(train_pairs, EpochShuffle(len(train_pairs), train.seed))
    if sharding == "fsdp2":
        # FSDP2 (mmreward.train.sharding): accelerate prepares the data only; OptimizerSteps steps as its wrappers do.
        train_loader, val_loader = accelerator.prepare(train_loader, loader(val_pairs))
        module = task.module
    else:
        module, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
            task.module, optimizer, train_loader, loader(val_pairs), scheduler
        )
    steps = OptimizerSteps(optimizer, scheduler, accelerator, prepared=sharding == "ddp")
    saved = (
        {"modules": {}, "states": {"scheduler": scheduler}}
        if sharding == "fsdp2"
        else {
            "modules": {"model": accelerator.unwrap_model(module)},
            "states": {"optimizer": optimizer, "scheduler": scheduler},
        }
    )
    collective = ShardedState(module, optimizer, trainable_only=True) if sharding == "fsdp2" else None
    tracker = Tracker(out, cfg.log.backends, run_name=out.name, enabled=accelerator.is_main_process)
    guard = NonFiniteGuard(train.max_skips)
    step, start_epoch, skip_batches = 0, 0, 0
    checkpoints = out / "checkpoints"
    latest = latest_checkpoint(checkpoints) if train.resume else None
    if latest is not None:
        state = load_checkpoint(latest, **saved, collective=collective, rank=accelerator.process_index)
        step, start_epoch, skip_batches = state["step"], state["epoch"], state["batches_done"]
        accelerator.print(f"resumed from {latest} (step {step}, epoch {start_epoch}, batch {skip_batches})")

    def checkpoint(epoch: int, batches_done: int) -> None:
        save_checkpoint(
            checkpoints,
            step,
            **saved,
            collective=collective,
            extra={"epoch": epoch, "batches_done": batches_done},
            rank=accelerator.process_index,
            barrier=accelerator.wait_for_everyone,
        )

    accelerator.print(
        f"{cfg.model.kind}: {len(train_pairs)} training / {len(val_pairs)} validation pairs, dims {task.dims}, "
        f"{train.epochs} epoch(s) of {steps_per_epoch} step(s)"
    )
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, train.epochs):
        train_loader.set_epoch(epoch)  # the prepared loader passes it on to EpochShuffle
        running, counted = 0.0, 0
        for batch_index, batch in enumerate(train_loader):
            if (epoch == start_epoch and batch_index < skip_batches) or batch is None:
                continue
            with accelerator.accumulate(module):
                loss, used = task.loss(module, batch)
                # Decided jointly: a NaN on one process must skip the backward on all of them (DDP would hang).
                if not guard.ok(loss if finite_everywhere(loss, accelerator.reduce) else float("nan")):
                    steps.zero_grad()
                    continue
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    token_rows.apply()
                    if train.max_grad_norm > 0 and sharded:
                        clip_grad_norm([p for p in module.parameters() if p.grad is not None], train.max_grad_norm)
                    elif train.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(module.parameters(), train.max_grad_norm)
                steps.step()
                steps.zero_grad()
            # The mean over the processes: the loss of the whole global batch, as one process would log it.
            running, counted = running + float(accelerator.reduce(loss.detach(), "mean")), counted + (used > 0)
            if accelerator.sync_gradients:
                step += 1
                if step % cfg.log.every == 0 and counted:
                    logged = {"train/loss": running / counted, "train/epoch": epoch, "train/skipped": guard.skipped}
                    tracker.log(step, logged)
                    running, counted = 0.0, 0
                if train.checkpoint_every and step % train.checkpoint_every == 0:
                    checkpoint(epoch, batch_index + 1)
        metrics = accuracies(*gather_margins(task, module, val_loader, accelerator), task.dims)
        tracker.log(step, {"epoch": epoch + 1, **metrics})
        accelerator.print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        checkpoint(epoch + 1, 0)

    task.save(module, step, accelerator.prepare(loader(train_pairs[: train.stats_pairs])), accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tracker.log(step, {"final/" + k.removeprefix("val/"): v for k, v in metrics.items()})
    tracker.close()
    accelerator.print(f"saved to {out} (load it with mmreward.load_reward({str(out)!r}))")
    accelerator.end_training()  # tears down the process group before exit
    return out


if __name__ == "__main__":
    main(parse_config(TrainRewardConfig, description=__doc__.split("\n\n")[0]))

"""Train a VLM reward model with per-dimension reward tokens (VideoReward recipe) from preference pairs.

    python align/train_reward.py --config configs/tiny/train_reward.yaml --data.train pairs.csv
    accelerate launch align/train_reward.py --config configs/align/train_reward_videoreward.yaml

Recipe (Liu et al. 2025, VideoAlign ``train.sh``): a Qwen2-VL base gets one special token per dimension
(``<|VQ_reward|>`` ...) whose last hidden state a linear head reads (token i -> dimension i). Trained: LoRA on
the language model's linear layers, the vision tower and the merger, the reward tokens' embedding rows (only
those rows; the rest of the vocabulary is left as it was) and the head, each with its own learning rate. Loss per
dimension (``mmreward.losses``): ``bt``, ``btt`` (Bradley-Terry with ties, theta = 5) or ``margin``; labels
A/B/same from a pair file in VideoAlign's schema (``mmreward.data.pairs``).

Every epoch the per-dimension accuracy on the validation pairs is logged without ties (pairs humans split) and
with ties (tie-calibrated, with its threshold), as in VideoGen-RewardBench. Checkpoints are atomic and resume
exactly (model, optimizer, scheduler, RNG, data position). The output directory holds the model in the VideoAlign
layout with the reward tokens' normalization stats and ``mmreward_reward.yaml``, so ``load_reward(output_dir)``
scores with it.
"""

from __future__ import annotations

import functools
import math
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from mmreward.data.pairs import INVALID, PreferencePair, read_pairs, split_pairs
from mmreward.errors import ConfigError, MediaError
from mmreward.evaluation.metrics import accuracy_with_ties, accuracy_without_ties
from mmreward.losses import preference_loss
from mmreward.rewards.registry import SAVED_REWARD_FILE
from mmreward.rewards.vlm.checkpoints import save_head_checkpoint
from mmreward.rewards.vlm.heads import VLMHeadReward
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config, save_config
from mmreward.train.guards import NonFiniteGuard
from mmreward.train.tracking import Tracker

# ------------------------------------------------------------------------------------------------------ config


@dataclass
class ModelConfig:
    base: str = "Qwen/Qwen2-VL-2B-Instruct"  # hub id or local dir; "tiny" builds a tiny random Qwen2-VL (CPU runs)
    dims: list[str] = field(default_factory=lambda: ["VQ", "MQ", "TA"])
    head: Literal["linear", "mlp"] = "linear"
    template: str | None = "videoreward"
    template_file: str | None = None  # your own template YAML (one <|{dim}_reward|> token per dimension)
    dtype: str = "float32"
    attn_implementation: str = "auto"
    gradient_checkpointing: bool = False


@dataclass
class LoraConfig:
    enabled: bool = True
    rank: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class DataConfig:
    train: str = ""  # pair file (CSV or JSONL); see mmreward/data/pairs.py
    validation: str | None = None  # default: hold out validation_fraction of the training pairs
    validation_fraction: float = 0.1
    media_root: str | None = None
    use_ties: bool = True  # False drops pairs tied on every dimension (VideoAlign use_tied_data)
    video_fps: float = 2.0
    frame_min_pixels: int = 128 * 28 * 28
    frame_max_pixels: int = 448 * 448
    image_min_pixels: int | None = None
    image_max_pixels: int | None = None
    num_workers: int = 0


@dataclass
class TrainConfig:
    loss: Literal["bt", "btt", "margin"] = "btt"
    theta: float = 5.0
    margin: float = 0.57  # constant margin where the pair file has no MOS columns
    epochs: int = 3
    batch_size: int = 1  # pairs per process and step
    grad_accum: int = 4
    lr: float = 2e-6  # LoRA
    vision_lr: float = 2e-6
    merger_lr: float = 2e-6
    token_lr: float = 2e-6  # reward-token embedding rows
    head_lr: float = 2e-6
    train_vision: bool = True
    train_merger: bool = True
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    checkpoint_every: int = 0  # optimizer steps; 0 = at the end of every epoch
    resume: bool = True
    max_skips: int = 10
    stats_pairs: int = 256  # pairs whose rewards give the saved normalization stats


@dataclass
class LogConfig:
    backends: list[str] = field(default_factory=lambda: ["jsonl"])
    every: int = 10


@dataclass
class TrainRewardConfig:
    output_dir: str = "runs/train_reward"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if not self.data.train:
            raise ConfigError("data.train is required: a pair file (CSV or JSONL) in VideoAlign's schema")
        if not self.model.dims:
            raise ConfigError("model.dims must name at least one dimension")
        if self.train.epochs < 1 or self.train.batch_size < 1 or self.train.grad_accum < 1:
            raise ConfigError("train.epochs, train.batch_size and train.grad_accum must be >= 1")
        if not 0.0 <= self.train.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.train.warmup_ratio}")


# ------------------------------------------------------------------------------------------------------- data


class PairDataset(Dataset):
    """Pair ``i`` -> prepared media of both sides, prompt, labels ``(D,)`` and margins ``(D,)``; None if unreadable."""

    def __init__(self, pairs: list[PreferencePair], reward: VLMHeadReward, dims: list[str], margin: float) -> None:
        self.pairs, self.reward, self.dims, self.margin = pairs, reward, dims, margin

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        pair = self.pairs[index]
        try:
            a = self.reward.prepare(self.reward.load_media(pair.path_a))
            b = self.reward.prepare(self.reward.load_media(pair.path_b))
        except MediaError as err:
            print(f"skipping pair {index}: {err}", file=sys.stderr)
            return None
        labels = torch.tensor([pair.labels[d] for d in self.dims])
        # The margin loss wants the chosen side's MOS lead: sign(label) * (MOS_A - MOS_B), else the constant.
        margins = torch.tensor(
            [abs(pair.mos_gap[d]) if d in pair.mos_gap else self.margin for d in self.dims], dtype=torch.float32
        )
        return {"a": a, "b": b, "prompt": pair.prompt, "labels": labels, "margins": margins}


def collate(items: list[dict[str, Any] | None], reward: VLMHeadReward) -> dict[str, Any] | None:
    """Both sides of every pair in one processor batch (rows 0..B-1 are A, B..2B-1 are B)."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    prompts = [it["prompt"] for it in items]
    inputs = reward._encode(prompts + prompts, [it["a"] for it in items] + [it["b"] for it in items])
    return {
        "inputs": inputs,
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


class PairScorer(nn.Module):
    """The trainable modules as one ``nn.Module`` (one DDP wrapper); ``forward`` gives raw rewards ``(2B, D)``."""

    def __init__(self, reward: VLMHeadReward) -> None:
        super().__init__()
        self.model = reward.model
        self.head = reward.head
        self._reward = [reward]  # a list, so the reward is not registered as a submodule

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._reward[0].forward_raw(inputs)


# ------------------------------------------------------------------------------------------------------ build


def build_reward(cfg: TrainRewardConfig, device: torch.device, is_main: bool, wait) -> tuple[VLMHeadReward, str]:
    """The untrained head model on the configured base; ``tiny`` builds (once) a tiny random base in output_dir."""
    base = cfg.model.base
    if base == "tiny":
        from mmreward.testing import tiny_vlm_backbone

        tiny_dir = Path(cfg.output_dir) / "tiny-base"
        if is_main:
            tiny_vlm_backbone(tiny_dir)
        wait()
        base = str(tiny_dir)
    reward = VLMHeadReward.untrained(
        base,
        dims=cfg.model.dims,
        head=cfg.model.head,
        template=cfg.model.template,
        template_file=cfg.model.template_file,
        video_fps=cfg.data.video_fps,
        frame_min_pixels=cfg.data.frame_min_pixels,
        frame_max_pixels=cfg.data.frame_max_pixels,
        image_min_pixels=cfg.data.image_min_pixels,
        image_max_pixels=cfg.data.image_max_pixels,
        attn_implementation=cfg.model.attn_implementation,
        device=device,
        dtype=cfg.model.dtype,
        seed=cfg.train.seed,
    )
    return reward, base


def make_trainable(reward: VLMHeadReward, cfg: TrainRewardConfig) -> list[dict[str, Any]]:
    """Add LoRA, choose what trains, and return optimizer parameter groups with their learning rates."""
    model, head, train = reward.model, reward.head, cfg.train
    if cfg.lora.enabled:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model

        # Only the language model's layers; the vision tower trains in full (VideoAlign ablation, issue #16).
        names = "|".join(cfg.lora.target_modules)
        pattern = rf"language_model\.layers\.\d+\.(self_attn|mlp)\.({names})"
        lora = PeftLoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                              target_modules=pattern)  # fmt: skip
        inject_adapter_in_model(lora, model)
    model.requires_grad_(False)
    groups: list[dict[str, Any]] = []

    def group(params: list[nn.Parameter], lr: float, weight_decay: float = train.weight_decay) -> None:
        for p in params:
            p.requires_grad_(True)
        if params:
            groups.append({"params": params, "lr": lr, "weight_decay": weight_decay})

    named = dict(model.named_parameters())
    group([p for n, p in named.items() if "lora_" in n], train.lr)
    if train.train_vision:
        group([p for n, p in named.items() if n.startswith("visual.") and ".merger." not in n], train.vision_lr)
    if train.train_merger:
        group([p for n, p in named.items() if n.startswith("visual.merger.")], train.merger_lr)
    # Reward-token rows only: the gradient of every other row is zeroed, and without weight decay Adam then
    # leaves those rows exactly as they were.
    embeddings = model.get_input_embeddings().weight
    mask = torch.zeros(embeddings.shape[0], 1, device=embeddings.device, dtype=embeddings.dtype)
    mask[reward.token_ids] = 1.0
    group([embeddings], train.token_lr, weight_decay=0.0)
    embeddings.register_hook(lambda grad: grad * mask)
    head.requires_grad_(True)
    group(list(head.parameters()), train.head_lr)
    model.train()
    head.train()
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return groups


def warmup_constant(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the configured rates, then constant (VideoAlign's ``constant_with_warmup``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))


# --------------------------------------------------------------------------------------------------- evaluate


@torch.no_grad()
def raw_rewards(scorer: nn.Module, loader: DataLoader, accelerator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(r_a, r_b, labels)`` over ``loader``, each ``(N, D)``, gathered across processes."""
    scorer.eval()
    outs_a, outs_b, labels = [], [], []
    for batch in loader:
        if batch is None:
            continue
        raw = scorer(batch["inputs"]).float()
        size = batch["labels"].shape[0]
        outs_a.append(raw[:size])
        outs_b.append(raw[size:])
        labels.append(batch["labels"].to(raw.device))
    scorer.train()
    if not outs_a:
        raise ConfigError("no readable validation pairs")
    gathered = [accelerator.gather_for_metrics(torch.cat(x)) for x in (outs_a, outs_b, labels)]
    return gathered[0].cpu(), gathered[1].cpu(), gathered[2].cpu()


def accuracies(r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor, dims: list[str]) -> dict[str, float]:
    """Per dimension: accuracy without ties (pairs humans split), and tie-calibrated accuracy with its threshold."""
    metrics: dict[str, float] = {}
    for k, dim in enumerate(dims):
        valid = labels[:, k] != INVALID
        human, margin = labels[valid, k].numpy(), (r_a[valid, k] - r_b[valid, k]).numpy()
        if (human != 0).any():
            metrics[f"val/{dim}/acc_without_ties"] = accuracy_without_ties(human, margin)
        if valid.any():
            metrics[f"val/{dim}/acc_with_ties"], metrics[f"val/{dim}/tie_threshold"] = accuracy_with_ties(
                human, margin
            )
    return metrics


# ------------------------------------------------------------------------------------------------------- save


def save_reward_dir(cfg, reward: VLMHeadReward, scorer: PairScorer, base: str, step: int, stats) -> Path:
    """Write the trained model (VideoAlign layout) and ``mmreward_reward.yaml`` into ``output_dir``."""
    out = Path(cfg.output_dir)
    lora, trained = {}, {}
    for name, param in scorer.model.named_parameters():
        if not param.requires_grad:
            continue
        (lora if "lora_" in name else trained)[name] = param
    trained.update({f"rm_head.{k}": v for k, v in scorer.head.state_dict().items()})
    lora_config = None
    if lora:
        lora_config = {"r": cfg.lora.rank, "lora_alpha": cfg.lora.alpha, "target_modules": cfg.lora.target_modules}
    for old in out.glob("checkpoint-*"):
        shutil.rmtree(old)
    save_head_checkpoint(
        out,
        step=step,
        base_model=base,
        dims=tuple(cfg.model.dims),
        reward_tokens=tuple(reward.spec.reward_tokens),
        head_kind=cfg.model.head,
        output_dim=reward.output_dim,
        lora=lora,
        lora_config=lora_config,
        trained=trained,
        stats=stats,
        data_config={"fps": cfg.data.video_fps, "max_frame_pixels": cfg.data.frame_max_pixels},
    )
    # Paths inside the directory are written "./..." so the directory can be moved (see find_preset).
    base_ref = "./" + Path(base).resolve().relative_to(out.resolve()).as_posix() if _inside(base, out) else base
    preset: dict[str, Any] = {"type": "vlm-head", "weights": "./", "base_model": base_ref}
    if cfg.model.template_file:
        shutil.copy(cfg.model.template_file, out / "template.yaml")
        preset["template_file"] = "./template.yaml"
    else:
        preset["template"] = cfg.model.template
    preset.update(
        video_fps=cfg.data.video_fps,
        frame_min_pixels=cfg.data.frame_min_pixels,
        frame_max_pixels=cfg.data.frame_max_pixels,
    )
    if cfg.data.image_min_pixels is not None:
        preset["image_min_pixels"] = cfg.data.image_min_pixels
    if cfg.data.image_max_pixels is not None:
        preset["image_max_pixels"] = cfg.data.image_max_pixels
    (out / SAVED_REWARD_FILE).write_text(yaml.safe_dump(preset, sort_keys=False))
    return out


def _inside(path: str, directory: Path) -> bool:
    try:
        Path(path).resolve().relative_to(directory.resolve())
    except (ValueError, OSError):
        return False
    return True


# -------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg = parse_config(TrainRewardConfig, argv, description=__doc__.split("\n\n")[0])
    train = cfg.train
    accelerator = Accelerator(mixed_precision=train.mixed_precision, gradient_accumulation_steps=train.grad_accum)
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        save_config(cfg, out)
    set_seed(train.seed)
    dims = list(cfg.model.dims)

    # Data first: a bad pair file fails before any model loads.
    pairs = read_pairs(cfg.data.train, dims, cfg.data.media_root)
    if not cfg.data.use_ties:
        pairs = [p for p in pairs if any(p.labels[d] in (1, -1) for d in dims)]
    if cfg.data.validation:
        train_pairs, val_pairs = pairs, read_pairs(cfg.data.validation, dims, cfg.data.media_root)
    else:
        train_pairs, val_pairs = split_pairs(pairs, cfg.data.validation_fraction, train.seed)

    reward, base = build_reward(cfg, accelerator.device, accelerator.is_main_process, accelerator.wait_for_everyone)
    groups = make_trainable(reward, cfg)
    scorer = PairScorer(reward)
    optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(train_pairs) / (train.batch_size * accelerator.num_processes * train.grad_accum))
    total_steps = steps_per_epoch * train.epochs
    scheduler = warmup_constant(optimizer, round(train.warmup_ratio * total_steps))

    def loader(pairs: list[PreferencePair], sampler: Sampler | None = None) -> DataLoader:
        dataset = PairDataset(pairs, reward, dims, train.margin)
        return DataLoader(dataset, batch_size=train.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                          collate_fn=functools.partial(collate, reward=reward))  # fmt: skip

    shuffle = EpochShuffle(len(train_pairs), train.seed)
    train_loader, val_loader = loader(train_pairs, shuffle), loader(val_pairs)
    scorer, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        scorer, optimizer, train_loader, val_loader, scheduler
    )
    tracker = Tracker(out, cfg.log.backends, run_name=out.name, enabled=accelerator.is_main_process)
    guard = NonFiniteGuard(train.max_skips)
    step, start_epoch, skip_batches = 0, 0, 0
    checkpoints = out / "checkpoints"
    latest = latest_checkpoint(checkpoints) if train.resume else None
    if latest is not None:
        state = load_checkpoint(latest, modules={"scorer": accelerator.unwrap_model(scorer)},
                                states={"optimizer": optimizer, "scheduler": scheduler},
                                rank=accelerator.process_index)  # fmt: skip
        step, start_epoch, skip_batches = state["step"], state["epoch"], state["batches_done"]
        accelerator.print(f"resumed from {latest} (step {step}, epoch {start_epoch}, batch {skip_batches})")

    def checkpoint(epoch: int, batches_done: int) -> None:
        save_checkpoint(checkpoints, step, modules={"scorer": accelerator.unwrap_model(scorer)},
                        states={"optimizer": optimizer, "scheduler": scheduler},
                        extra={"epoch": epoch, "batches_done": batches_done}, rank=accelerator.process_index,
                        barrier=accelerator.wait_for_everyone)  # fmt: skip

    accelerator.print(
        f"{len(train_pairs)} training / {len(val_pairs)} validation pairs, dims {dims}, {train.epochs} epoch(s) of "
        f"{steps_per_epoch} step(s), loss {train.loss}"
    )
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, train.epochs):
        train_loader.set_epoch(epoch)  # the prepared loader passes it on to EpochShuffle
        running, counted = 0.0, 0
        for batch_index, batch in enumerate(train_loader):
            if epoch == start_epoch and batch_index < skip_batches:
                continue
            if batch is None:
                continue
            with accelerator.accumulate(scorer):
                raw = scorer(batch["inputs"])  # (2B, D)
                size = batch["labels"].shape[0]
                loss, used = preference_loss(
                    raw[:size], raw[size:], batch["labels"], train.loss, theta=train.theta, margin=batch["margins"]
                )
                if not guard.ok(loss):
                    optimizer.zero_grad()
                    continue
                accelerator.backward(loss)
                if accelerator.sync_gradients and train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(scorer.parameters(), train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running, counted = running + float(loss.detach()), counted + (used > 0)
            if accelerator.sync_gradients:
                step += 1
                if step % cfg.log.every == 0 and counted:
                    logged = {"train/loss": running / counted, "train/epoch": epoch, "train/skipped": guard.skipped}
                    tracker.log(step, logged)
                    running, counted = 0.0, 0
                if train.checkpoint_every and step % train.checkpoint_every == 0:
                    checkpoint(epoch, batch_index + 1)
        metrics = accuracies(*raw_rewards(scorer, val_loader, accelerator), dims)
        tracker.log(step, {"epoch": epoch + 1, **metrics})
        accelerator.print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        checkpoint(epoch + 1, 0)

    # Normalization stats: mean and std of each dimension's raw reward over (up to stats_pairs) training pairs.
    stats_loader = accelerator.prepare(loader(train_pairs[: train.stats_pairs]))
    r_a, r_b, _ = raw_rewards(scorer, stats_loader, accelerator)
    both = torch.cat([r_a, r_b])
    stats = {d: (float(both[:, k].mean()), float(both[:, k].std().clamp(min=1e-6))) for k, d in enumerate(dims)}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_reward_dir(cfg, reward, accelerator.unwrap_model(scorer), base, step, stats)
        tracker.log(step, {"final/" + k.removeprefix("val/"): v for k, v in metrics.items()})
    tracker.close()
    accelerator.print(f"saved to {out} (load it with mmreward.load_reward({str(out)!r}))")


if __name__ == "__main__":
    main()

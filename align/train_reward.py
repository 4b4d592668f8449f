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

Every epoch the per-dimension accuracy on the validation pairs is logged without ties (pairs humans split) and
with ties (tie-calibrated, with its threshold), as in VideoGen-RewardBench. Checkpoints are atomic and resume
exactly (model, optimizer, scheduler, RNG, data position). The output directory loads with
``load_reward(output_dir)``: a head model in the VideoAlign layout with the dimensions' normalization stats, or
the judge's merged weights with its processor.
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
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from mmreward.data.pairs import INVALID, PreferencePair, read_pairs, split_pairs
from mmreward.errors import ConfigError, MediaError
from mmreward.evaluation.metrics import accuracy_with_ties, accuracy_without_ties
from mmreward.losses import preference_loss
from mmreward.rewards.registry import SAVED_REWARD_FILE
from mmreward.rewards.vlm.backbone import PromptSequence
from mmreward.rewards.vlm.checkpoints import merge_lora, save_head_checkpoint
from mmreward.rewards.vlm.heads import VLMHeadReward
from mmreward.rewards.vlm.pairwise import PairwiseJudge
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config, save_config
from mmreward.train.guards import NonFiniteGuard, finite_everywhere
from mmreward.train.tracking import Tracker

# ------------------------------------------------------------------------------------------------------ config


@dataclass
class ModelConfig:
    kind: Literal["head", "judge"] = "head"
    base: str = "Qwen/Qwen2-VL-2B-Instruct"  # hub id or local dir; "tiny" builds a tiny random Qwen2-VL (CPU runs)
    dims: list[str] = field(default_factory=lambda: ["VQ", "MQ", "TA"])  # label columns of the pair file
    head: Literal["linear", "mlp"] = "linear"
    judge_dim: str | None = None  # judge: the label column it learns (default: the first of dims)
    template: str | None = None  # default: videoreward (head) / unifiedreward-pairwise (judge)
    template_file: str | None = None  # your own template YAML (head: one <|{dim}_reward|> token per dimension)
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
    video_num_frames: int = 8  # judge: frames shown per video
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
        if not self.model.dims:
            raise ConfigError("model.dims must name at least one dimension")
        if self.train.epochs < 1 or self.train.batch_size < 1 or self.train.grad_accum < 1:
            raise ConfigError("train.epochs, train.batch_size and train.grad_accum must be >= 1")
        if not 0.0 <= self.train.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.train.warmup_ratio}")
        if self.model.judge_dim is not None and self.model.judge_dim not in self.model.dims:
            raise ConfigError(f"model.judge_dim {self.model.judge_dim!r} is not one of model.dims {self.model.dims}")
        if self.model.template is None and self.model.template_file is None:
            self.model.template = "videoreward" if self.model.kind == "head" else "unifiedreward-pairwise"


# ------------------------------------------------------------------------------------------------------- data


class PairDataset(Dataset):
    """Pair ``i`` -> both sides prepared by the task, prompt, labels and margins ``(D,)``; None if unusable."""

    def __init__(self, pairs: list[PreferencePair], task, dims: list[str], margin: float) -> None:
        self.pairs, self.task, self.dims, self.margin = pairs, task, dims, margin

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
        # The margin loss wants the chosen side's lead: |MOS_A - MOS_B| where the file has MOS columns.
        margins = torch.tensor(
            [abs(pair.mos_gap[d]) if d in pair.mos_gap else self.margin for d in self.dims], dtype=torch.float32
        )
        return {"a": a, "b": b, "prompt": pair.prompt, "labels": labels, "margins": margins}


def collate(items: list[dict[str, Any] | None], task) -> dict[str, Any] | None:
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


# ------------------------------------------------------------------------------------------------------ tasks


class PairScorer(nn.Module):
    """Head task's trainable modules as one ``nn.Module`` (one DDP wrapper): raw rewards ``(2B, D)``."""

    def __init__(self, reward: VLMHeadReward) -> None:
        super().__init__()
        self.model = reward.model
        self.head = reward.head
        self._reward = [reward]  # a list, so the reward is not registered as a submodule

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._reward[0].forward_raw(inputs)


class HeadTask:
    """A per-dimension reward head (VideoReward): Bradley-Terry-type loss on ``r(A) - r(B)`` per dimension."""

    def __init__(self, cfg: TrainRewardConfig, reward: VLMHeadReward, base: str) -> None:
        self.cfg, self.reward, self.base = cfg, reward, base
        self.module = PairScorer(reward)
        self.dims = list(cfg.model.dims)
        self.label_index = list(range(len(self.dims)))
        self.model, self.extra_params, self.token_ids = reward.model, list(reward.head.parameters()), reward.token_ids

    def prepare(self, path: str) -> Any:
        return self.reward.prepare(self.reward.load_media(path))

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        # Both sides in one processor batch: rows 0..B-1 are the A sides, B..2B-1 the B sides.
        prompts = [it["prompt"] for it in items]
        return {
            "inputs": self.reward._encode(prompts + prompts, [it["a"] for it in items] + [it["b"] for it in items])
        }

    def rewards(self, module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        raw = module(batch["inputs"])  # (2B, D)
        size = batch["labels"].shape[0]
        return raw[:size], raw[size:]

    def loss(self, module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        r_a, r_b = self.rewards(module, batch)
        train = self.cfg.train
        return preference_loss(r_a, r_b, batch["labels"], train.loss, theta=train.theta, margin=batch["margins"])

    def margins(self, module: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        r_a, r_b = self.rewards(module, batch)
        return (r_a - r_b).float()

    def save(self, module: nn.Module, step: int, stats_loader: DataLoader, accelerator) -> None:
        # Normalization stats: mean and std of each dimension's raw reward over (up to stats_pairs) training pairs.
        r_a, r_b = gather_rewards(self, module, stats_loader, accelerator)
        both = torch.cat([r_a, r_b])
        stats = {
            d: (float(both[:, k].mean()), float(both[:, k].std().clamp(min=1e-6))) for k, d in enumerate(self.dims)
        }
        if accelerator.is_main_process:
            save_head_dir(self.cfg, self.reward, accelerator.unwrap_model(module), self.base, step, stats)


class JudgeScorer(nn.Module):
    """Judge task's model: log-probabilities of (first, second, tie) for every pair in both orders, ``(2B, 3)``."""

    def __init__(self, judge: PairwiseJudge) -> None:
        super().__init__()
        self.model = judge.backend.backbone.model
        self._judge = [judge]

    def forward(self, visuals: list, ids: list[list[int]], kinds: list[str]) -> torch.Tensor:
        judge = self._judge[0]
        backend, backbone = judge.backend, judge.backend.backbone
        encoded = backbone.encode(visuals)  # visuals[2k], visuals[2k + 1] are pair k's A and B
        sequences = []
        for k in range(len(kinds)):
            a, b = encoded[2 * k], encoded[2 * k + 1]
            sequences += [PromptSequence(ids[2 * k], [a, b]), PromptSequence(ids[2 * k + 1], [b, a])]
        batch = backbone.assemble(sequences)
        readouts = {k: backend.verdict_readout(judge.template.section(k).verdicts) for k in set(kinds)}
        depth = max(len(readouts[k].path) for k in kinds) + 1
        logits = self.model(**batch.as_kwargs(), logits_to_keep=depth, use_cache=False).logits
        rows = []
        for row, kind in enumerate(kind for kind in kinds for _ in range(2)):
            readout = readouts[kind]
            rows.append(readout.log_probs(logits[row : row + 1, depth - len(readout.path) - 1 :])[0])
        return torch.stack(rows)  # rows 2k: A shown first, 2k + 1: B shown first


class JudgeTask:
    """A generative pairwise judge trained as a classifier over its verdict sentences, both orders per pair."""

    def __init__(self, cfg: TrainRewardConfig, judge: PairwiseJudge, base: str) -> None:
        self.cfg, self.judge, self.base = cfg, judge, base
        self.module = JudgeScorer(judge)
        dim = cfg.model.judge_dim or cfg.model.dims[0]
        self.dims, self.label_index = [dim], [cfg.model.dims.index(dim)]
        self.model, self.extra_params, self.token_ids = judge.backend.backbone.model, [], []

    def prepare(self, path: str) -> Any:
        return self.judge.prepare(self.judge.load_media(path))

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        visuals, ids, kinds = [], [], []
        for it in items:
            a, b = it["a"], it["b"]
            if a.kind != b.kind:
                raise MediaError(f"pair of an {a.kind} and a {b.kind}; a judge compares like with like")
            section = self.judge.template.section(a.kind)
            path = list(self.judge.backend.verdict_readout(section.verdicts).path)
            question = self.judge.ask(section, it["prompt"], {"media_a": 0, "media_b": 1})
            for first, second in ((a, b), (b, a)):  # both presentation orders
                ids.append(self.judge.backend.prompt_ids(question, [first.data, second.data]) + path)
            visuals += [a.data, b.data]
            kinds.append(a.kind)
        return {"visuals": visuals, "ids": ids, "kinds": kinds}

    def _log_probs(self, module: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return module(batch["visuals"], batch["ids"], batch["kinds"])

    def loss(self, module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        logp = self._log_probs(module, batch)  # (2B, 3)
        labels = batch["labels"][:, self.label_index[0]]
        # A better: first when A is shown first, second when B is; B better: the reverse; tie: the tie sentence.
        target_ab = torch.where(labels == 1, 0, torch.where(labels == -1, 1, 2))
        target_ba = torch.where(labels == 1, 1, torch.where(labels == -1, 0, 2))
        targets = torch.stack([target_ab, target_ba], dim=1).flatten().to(logp.device)
        usable = (labels != INVALID) & ((labels != 0) | torch.tensor(self.judge.has_tie))
        usable = usable.repeat_interleave(2).to(logp.device)
        count = int(usable.sum())
        if count == 0:
            return logp.sum() * 0.0, 0
        return F.nll_loss(logp[usable], targets[usable]), count

    def margins(self, module: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logp = self._log_probs(module, batch).view(-1, 2, 3)  # (B, order, outcome)
        # Log-odds of A over B, averaged over both orders (log space: no cancellation when P(tie) is near 1).
        log_a = (logp[:, 0, 0] + logp[:, 1, 1]) / 2
        log_b = (logp[:, 0, 1] + logp[:, 1, 0]) / 2
        return (log_a - log_b).unsqueeze(1).float()  # (B, 1)

    def save(self, module: nn.Module, step: int, stats_loader: DataLoader, accelerator) -> None:
        if accelerator.is_main_process:
            save_judge_dir(self.cfg, self.judge, accelerator.unwrap_model(module), self.base)


def build_task(cfg: TrainRewardConfig, device: torch.device, is_main: bool, wait) -> HeadTask | JudgeTask:
    """The untrained model on the configured base; ``tiny`` builds (once) a tiny random base in output_dir."""
    base = cfg.model.base
    if base == "tiny":
        from mmreward.testing import tiny_vlm_backbone

        tiny_dir = Path(cfg.output_dir) / "tiny-base"
        if is_main:
            tiny_vlm_backbone(tiny_dir)
        wait()
        base = str(tiny_dir)
    common = dict(
        template=cfg.model.template, template_file=cfg.model.template_file, image_min_pixels=cfg.data.image_min_pixels,
        image_max_pixels=cfg.data.image_max_pixels, attn_implementation=cfg.model.attn_implementation, device=device,
        dtype=cfg.model.dtype,
    )  # fmt: skip
    if cfg.model.kind == "judge":
        judge = PairwiseJudge(
            "local", weights=base, mode="logits", video_num_frames=cfg.data.video_num_frames, **common
        )
        return JudgeTask(cfg, judge, base)
    reward = VLMHeadReward.untrained(
        base, dims=cfg.model.dims, head=cfg.model.head, video_fps=cfg.data.video_fps,
        frame_min_pixels=cfg.data.frame_min_pixels, frame_max_pixels=cfg.data.frame_max_pixels, seed=cfg.train.seed,
        **common,
    )  # fmt: skip
    return HeadTask(cfg, reward, base)


def make_trainable(task: HeadTask | JudgeTask, cfg: TrainRewardConfig) -> list[dict[str, Any]]:
    """Add LoRA, choose what trains, and return optimizer parameter groups with their learning rates."""
    model, train = task.model, cfg.train
    if cfg.lora.enabled:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model

        # Only the language model's layers; the vision tower trains in full (VideoAlign ablation, issue #16).
        names = "|".join(cfg.lora.target_modules)
        pattern = rf"(?:.*\.)?language_model\.layers\.\d+\.(self_attn|mlp)\.({names})"
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
    visual = {n: p for n, p in named.items() if n.startswith("visual.") or ".visual." in n}
    group([p for n, p in named.items() if "lora_" in n], train.lr)
    if train.train_vision:
        group([p for n, p in visual.items() if ".merger." not in n], train.vision_lr)
    if train.train_merger:
        group([p for n, p in visual.items() if ".merger." in n], train.merger_lr)
    if task.token_ids:
        # Reward-token rows only: the gradient of every other row is zeroed, and without weight decay Adam then
        # leaves those rows exactly as they were.
        embeddings = model.get_input_embeddings().weight
        mask = torch.zeros(embeddings.shape[0], 1, device=embeddings.device, dtype=embeddings.dtype)
        mask[task.token_ids] = 1.0
        group([embeddings], train.token_lr, weight_decay=0.0)
        embeddings.register_hook(lambda grad: grad * mask)
    group(task.extra_params, train.head_lr)
    task.module.train()
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return groups


def warmup_constant(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the configured rates, then constant (VideoAlign's ``constant_with_warmup``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))


# --------------------------------------------------------------------------------------------------- evaluate


@torch.no_grad()
def gather_margins(task, module: nn.Module, loader: DataLoader, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(margins, labels)`` over ``loader``, each ``(N, D)`` for the task's dims, gathered across processes."""
    module.eval()
    margins, labels = [], []
    for batch in loader:
        if batch is not None:
            margins.append(task.margins(module, batch))
            labels.append(batch["labels"][:, task.label_index].to(margins[-1].device))
    module.train()
    if not margins:
        raise ConfigError("no readable validation pairs")
    return accelerator.gather_for_metrics(torch.cat(margins)).cpu(), accelerator.gather_for_metrics(
        torch.cat(labels)
    ).cpu()


@torch.no_grad()
def gather_rewards(
    task: HeadTask, module: nn.Module, loader: DataLoader, accelerator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw head rewards ``(r_a, r_b)`` over ``loader``, gathered across processes."""
    module.eval()
    outs_a, outs_b = [], []
    for batch in loader:
        if batch is not None:
            r_a, r_b = task.rewards(module, batch)
            outs_a.append(r_a.float())
            outs_b.append(r_b.float())
    module.train()
    return accelerator.gather_for_metrics(torch.cat(outs_a)).cpu(), accelerator.gather_for_metrics(
        torch.cat(outs_b)
    ).cpu()


def accuracies(margins: torch.Tensor, labels: torch.Tensor, dims: list[str]) -> dict[str, float]:
    """Per dimension: accuracy without ties (pairs humans split), and tie-calibrated accuracy with its threshold."""
    metrics: dict[str, float] = {}
    for k, dim in enumerate(dims):
        valid = labels[:, k] != INVALID
        human, margin = labels[valid, k].numpy(), margins[valid, k].numpy()
        if (human != 0).any():
            metrics[f"val/{dim}/acc_without_ties"] = accuracy_without_ties(human, margin)
        if valid.any():
            metrics[f"val/{dim}/acc_with_ties"], metrics[f"val/{dim}/tie_threshold"] = accuracy_with_ties(
                human, margin
            )
    return metrics


# ------------------------------------------------------------------------------------------------------- save


def _relative(path: str, directory: Path) -> str:
    """``"./sub"`` for a path inside ``directory`` (a saved directory can then be moved; see find_preset)."""
    try:
        return "./" + Path(path).resolve().relative_to(directory.resolve()).as_posix()
    except (ValueError, OSError):
        return path


def _template_and_pixels(cfg: TrainRewardConfig, out: Path) -> dict[str, Any]:
    preset: dict[str, Any] = {}
    if cfg.model.template_file:
        shutil.copy(cfg.model.template_file, out / "template.yaml")
        preset["template_file"] = "./template.yaml"
    else:
        preset["template"] = cfg.model.template
    if cfg.data.image_min_pixels is not None:
        preset["image_min_pixels"] = cfg.data.image_min_pixels
    if cfg.data.image_max_pixels is not None:
        preset["image_max_pixels"] = cfg.data.image_max_pixels
    return preset


def save_head_dir(cfg, reward: VLMHeadReward, scorer: PairScorer, base: str, step: int, stats) -> Path:
    """Write the trained head model (VideoAlign layout) and ``mmreward_reward.yaml`` into ``output_dir``."""
    out = Path(cfg.output_dir)
    lora, trained = {}, {}
    for name, param in scorer.model.named_parameters():
        if param.requires_grad:
            (lora if "lora_" in name else trained)[name] = param
    trained.update({f"rm_head.{k}": v for k, v in scorer.head.state_dict().items()})
    lora_config = None
    if lora:
        lora_config = {"r": cfg.lora.rank, "lora_alpha": cfg.lora.alpha, "target_modules": cfg.lora.target_modules}
    for old in out.glob("checkpoint-*"):
        shutil.rmtree(old)
    save_head_checkpoint(
        out, step=step, base_model=base, dims=tuple(cfg.model.dims), reward_tokens=tuple(reward.spec.reward_tokens),
        head_kind=cfg.model.head, output_dim=reward.output_dim, lora=lora, lora_config=lora_config, trained=trained,
        stats=stats, data_config={"fps": cfg.data.video_fps, "max_frame_pixels": cfg.data.frame_max_pixels},
    )  # fmt: skip
    preset = {
        "type": "vlm-head",
        "weights": "./",
        "base_model": _relative(base, out),
        **_template_and_pixels(cfg, out),
    }
    preset.update(video_fps=cfg.data.video_fps, frame_min_pixels=cfg.data.frame_min_pixels,
                  frame_max_pixels=cfg.data.frame_max_pixels)  # fmt: skip
    (out / SAVED_REWARD_FILE).write_text(yaml.safe_dump(preset, sort_keys=False))
    return out


def save_judge_dir(cfg, judge: PairwiseJudge, scorer: JudgeScorer, base: str) -> Path:
    """Merge the LoRA into a fresh copy of the base, copy the other trained tensors, save it with its processor."""
    from transformers import AutoModelForImageTextToText

    out = Path(cfg.output_dir)
    target = out / "judge"
    fresh = AutoModelForImageTextToText.from_pretrained(judge.backend.directory, dtype=scorer.model.dtype)
    lora, own = {}, fresh.state_dict()
    with torch.no_grad():
        for name, param in scorer.model.named_parameters():
            if not param.requires_grad:
                continue
            if "lora_" in name:
                lora[name] = param.detach().cpu()
            else:
                own[name].copy_(param.detach().cpu())
    if lora:
        merge_lora(fresh.model, lora, cfg.lora.alpha / cfg.lora.rank, source="training run")
    fresh.save_pretrained(target)
    judge.backend.backbone.processor.save_pretrained(target)
    preset = {"type": "pairwise-judge", "backend": "local", "weights": "./judge", "mode": "logits",
              **_template_and_pixels(cfg, out), "video_num_frames": cfg.data.video_num_frames}  # fmt: skip
    (out / SAVED_REWARD_FILE).write_text(yaml.safe_dump(preset, sort_keys=False))
    return out


# -------------------------------------------------------------------------------------------------------- main


def main(cfg: TrainRewardConfig) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if not cfg.data.train:
        raise ConfigError("data.train is required: a pair file (CSV or JSONL) in VideoAlign's schema")
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

    task = build_task(cfg, accelerator.device, accelerator.is_main_process, accelerator.wait_for_everyone)
    optimizer = torch.optim.AdamW(make_trainable(task, cfg))
    steps_per_epoch = math.ceil(len(train_pairs) / (train.batch_size * accelerator.num_processes * train.grad_accum))
    total_steps = steps_per_epoch * train.epochs
    scheduler = warmup_constant(optimizer, round(train.warmup_ratio * total_steps))

    def loader(pairs: list[PreferencePair], sampler: Sampler | None = None) -> DataLoader:
        dataset = PairDataset(pairs, task, dims, train.margin)
        return DataLoader(dataset, batch_size=train.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                          collate_fn=functools.partial(collate, task=task))  # fmt: skip

    train_loader = loader(train_pairs, EpochShuffle(len(train_pairs), train.seed))
    module, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        task.module, optimizer, train_loader, loader(val_pairs), scheduler
    )
    tracker = Tracker(out, cfg.log.backends, run_name=out.name, enabled=accelerator.is_main_process)
    guard = NonFiniteGuard(train.max_skips)
    step, start_epoch, skip_batches = 0, 0, 0
    checkpoints = out / "checkpoints"
    latest = latest_checkpoint(checkpoints) if train.resume else None
    if latest is not None:
        state = load_checkpoint(latest, modules={"model": accelerator.unwrap_model(module)},
                                states={"optimizer": optimizer, "scheduler": scheduler},
                                rank=accelerator.process_index)  # fmt: skip
        step, start_epoch, skip_batches = state["step"], state["epoch"], state["batches_done"]
        accelerator.print(f"resumed from {latest} (step {step}, epoch {start_epoch}, batch {skip_batches})")

    def checkpoint(epoch: int, batches_done: int) -> None:
        save_checkpoint(checkpoints, step, modules={"model": accelerator.unwrap_model(module)},
                        states={"optimizer": optimizer, "scheduler": scheduler},
                        extra={"epoch": epoch, "batches_done": batches_done}, rank=accelerator.process_index,
                        barrier=accelerator.wait_for_everyone)  # fmt: skip

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
                    optimizer.zero_grad()
                    continue
                accelerator.backward(loss)
                if accelerator.sync_gradients and train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(module.parameters(), train.max_grad_norm)
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

"""The head task (VideoReward, Liu et al. 2025): one reward token per dimension whose last hidden state a head
reads; a Bradley-Terry-type loss (``mmreward.losses.preference_loss``) on ``r(A) - r(B)`` per dimension, or
HPSv3's uncertainty loss for one token read as ``(mu, log sigma)``. Saved in VideoAlign's checkpoint layout with
the dimensions' normalization stats."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from mmreward.errors import ConfigError
from mmreward.losses import preference_loss
from mmreward.reward_training.saved_presets import relative_to_output, template_and_pixels
from mmreward.reward_training.validation import gather_rewards
from mmreward.rewards.registry import SAVED_REWARD_FILE
from mmreward.rewards.vlm.checkpoints import save_head_checkpoint
from mmreward.rewards.vlm.heads import VLMHeadReward


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

    def __init__(self, cfg: Any, reward: VLMHeadReward, base: str) -> None:
        self.cfg, self.reward, self.base = cfg, reward, base
        self.module = PairScorer(reward)
        self.dims = list(cfg.model.dims)
        self.label_index = list(range(len(self.dims)))
        self.model, self.extra_params, self.token_ids = reward.model, list(reward.head.parameters()), reward.token_ids

    @classmethod
    def untrained(cls, cfg: Any, base: str, common: dict[str, Any]) -> HeadTask:
        """The task on a fresh head over ``base`` (``common``: the constructor arguments heads and judges share)."""
        data = cfg.data
        if cfg.train.loss == "uncertainty" and (cfg.model.head_output_dim != 2 or len(cfg.model.dims) != 1):
            raise ConfigError(
                f"train.loss=uncertainty reads (mu, log sigma) from one reward token: set model.head_output_dim: 2 "
                f"(got {cfg.model.head_output_dim}) and one dimension in model.dims (got {list(cfg.model.dims)})"
            )
        reward = VLMHeadReward.untrained(
            base,
            dims=cfg.model.dims,
            head=cfg.model.head,
            head_output_dim=cfg.model.head_output_dim,
            video_fps=data.video_fps,
            frame_min_pixels=data.frame_min_pixels,
            frame_max_pixels=data.frame_max_pixels,
            positions=cfg.model.positions,
            frame_resize=cfg.model.frame_resize,
            image_resize=cfg.model.image_resize,
            seed=cfg.train.seed,
            **common,
        )
        return cls(cfg, reward, base)

    def prepare(self, path: str) -> Any:
        return self.reward.prepare(self.reward.load_media(path))

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        # Both sides in one processor batch: rows 0..B-1 are the A sides, B..2B-1 the B sides.
        prompts = [it["prompt"] for it in items]
        return {
            "inputs": self.reward._encode(prompts + prompts, [it["a"] for it in items] + [it["b"] for it in items])
        }

    def rewards(self, module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sides' raw rewards, ``(B, D)``; ``(B, 1, 2)`` ``(mu, log sigma)`` for the uncertainty loss."""
        raw = module(batch["inputs"])  # (2B, D), or (2B, 2) for one token read as (mu, log sigma)
        size = batch["labels"].shape[0]
        if self.cfg.train.loss == "uncertainty":
            raw = raw.view(2 * size, 1, 2)
        return raw[:size], raw[size:]

    def loss(self, module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        r_a, r_b = self.rewards(module, batch)
        train = self.cfg.train
        return preference_loss(
            r_a,
            r_b,
            batch["labels"],
            train.loss,
            theta=train.theta,
            margin=batch["margins"],
            reduction=train.loss_reduction,
        )

    def margins(self, module: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """``(B, D)`` reward gaps (of mu for the uncertainty loss)."""
        r_a, r_b = self.rewards(module, batch)
        if self.cfg.train.loss == "uncertainty":
            r_a, r_b = r_a[..., 0], r_b[..., 0]
        return (r_a - r_b).float()

    def save(self, module: nn.Module, step: int, stats_loader: DataLoader, accelerator) -> None:
        # Normalization stats: mean and std of each dimension's raw reward over (up to stats_pairs) training pairs.
        r_a, r_b = gather_rewards(self, module, stats_loader, accelerator)
        both = torch.cat([r_a, r_b])  # (2N, D), or (2N, 1, 2) with the uncertainty loss: the stats are mu's
        if self.cfg.train.loss == "uncertainty":
            both = both[..., 0]
        stats = {
            d: (float(both[:, k].mean()), float(both[:, k].std().clamp(min=1e-6))) for k, d in enumerate(self.dims)
        }
        if accelerator.is_main_process:
            save_head_dir(self.cfg, self.reward, accelerator.unwrap_model(module), self.base, step, stats)


def save_head_dir(cfg: Any, reward: VLMHeadReward, scorer: PairScorer, base: str, step: int, stats) -> Path:
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
        positions=reward.positions,
        frame_resize=reward.frame_resize,
        image_resize=reward.image_resize,
    )
    preset = {
        "type": "vlm-head",
        "weights": "./",
        "base_model": relative_to_output(base, out),
        **template_and_pixels(cfg, out),
    }
    preset.update(
        video_fps=cfg.data.video_fps,
        frame_min_pixels=cfg.data.frame_min_pixels,
        frame_max_pixels=cfg.data.frame_max_pixels,
    )
    (out / SAVED_REWARD_FILE).write_text(yaml.safe_dump(preset, sort_keys=False))
    return out

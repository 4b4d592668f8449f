"""The untrained reward model a run starts from, as a training task: :class:`HeadTask` or :class:`JudgeTask`.

A task owns the model's trainable modules (``module``, one DDP wrapper), prepares and collates pair sides, and
gives the loss, validation margins and the saved directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmreward.reward_training.head_task import HeadTask
from mmreward.reward_training.judge_task import JudgeTask


def build_task(cfg: Any, device: torch.device, is_main: bool, wait: Callable[[], None]) -> HeadTask | JudgeTask:
    """The untrained model on the configured base; ``tiny`` builds (once) a tiny random base in output_dir."""
    base = cfg.model.base
    if base == "tiny":
        from mmreward.tiny_models import tiny_vlm_backbone

        tiny_dir = Path(cfg.output_dir) / "tiny-base"
        if is_main:
            tiny_vlm_backbone(tiny_dir)
        wait()
        base = str(tiny_dir)
    common = dict(
        template=cfg.model.template,
        template_file=cfg.model.template_file,
        image_min_pixels=cfg.data.image_min_pixels,
        image_max_pixels=cfg.data.image_max_pixels,
        attn_implementation=cfg.model.attn_implementation,
        device=device,
        dtype=cfg.model.dtype,
    )
    task = JudgeTask if cfg.model.kind == "judge" else HeadTask
    return task.untrained(cfg, base, common)

"""The prompts an online alignment program draws from (Flow-GRPO / Pref-GRPO, DiffusionNFT, Adv-GRPO, online
Flow-DPO): a prompt file for text families, and for editing families a prompt table with a source image column whose
lines are checked up front (a bad line is left out and reported once with its line number and fix; the others
train). Source images stay files until a step draws them (:func:`mmreward.data.prompts.load_sources`), so a large
editing set is not held in memory."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmreward.alignment.monitor import EvalConfig, read_eval_prompts
from mmreward.data.prompts import load_sources, read_edit_prompts, read_prompts
from mmreward.errors import ConfigError
from mmreward.train.sections import PromptDataConfig


@dataclass
class PromptSet:
    """``prompts[i]`` and, for editing families, its source image file ``sources[i]`` (None for text families)."""

    prompts: list[str]
    sources: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def source_images(self, index: Sequence[int]) -> list[torch.Tensor] | None:
        """Canonical source images ``(3, H, W)`` of the prompts at ``index`` (None for text families)."""
        return None if self.sources is None else load_sources([self.sources[int(i)] for i in index])


def read_prompt_set(
    path: str | Path,
    column: str | None,
    image_column: str,
    *,
    editing: bool,
    program: str,
    accelerator: Any,
) -> PromptSet:
    """The prompts of ``path``, with their source image files when ``editing``; lines of an editing set that were
    left out are printed once (by the main process), each with its line number and reason."""
    if not editing:
        return PromptSet(read_prompts(path, column))
    edit = read_edit_prompts(path, column, image_column)
    if edit.skipped and accelerator.is_main_process:
        shown = "\n  ".join(edit.skipped[:10])
        more = f"\n  ... and {len(edit.skipped) - 10} more" if len(edit.skipped) > 10 else ""
        print(f"{program}: left out {len(edit.skipped)} lines of {path}:\n  {shown}{more}", file=sys.stderr)
    return PromptSet(edit.prompts, edit.images)


def read_training_prompts(data: PromptDataConfig, *, editing: bool, program: str, accelerator: Any) -> PromptSet:
    """``data.prompts`` (``data.image_column`` holds the sources of an editing set)."""
    return read_prompt_set(
        data.prompts, data.prompt_column, data.image_column, editing=editing, program=program, accelerator=accelerator
    )


def read_held_out(
    data: PromptDataConfig, eval_cfg: EvalConfig, *, editing: bool, program: str, accelerator: Any
) -> tuple[list[str], list[torch.Tensor] | None]:
    """The first ``eval.num_prompts`` held-out prompts and, for editing families, their source images (loaded:
    every evaluation edits the same few); ``([], None)`` when evaluation is off."""
    if not editing:
        return read_eval_prompts(data.eval_prompts, data.eval_prompt_column, eval_cfg), None
    if not eval_cfg.every:
        return [], None
    held_out = read_prompt_set(
        data.eval_prompts,
        data.eval_prompt_column,
        data.image_column,
        editing=True,
        program=program,
        accelerator=accelerator,
    )
    if len(held_out) < eval_cfg.num_prompts:
        raise ConfigError(f"eval.num_prompts={eval_cfg.num_prompts} but {data.eval_prompts!r} has {len(held_out)}")
    return held_out.prompts[: eval_cfg.num_prompts], held_out.source_images(range(eval_cfg.num_prompts))

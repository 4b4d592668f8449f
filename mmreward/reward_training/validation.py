"""Validation of a reward model on preference pairs: margins and raw rewards gathered across processes, and the
per-dimension accuracies of VideoGen-RewardBench (without ties, and tie-calibrated with its threshold)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from mmreward.data.pairs import INVALID
from mmreward.errors import ConfigError
from mmreward.evaluation.metrics import accuracy_with_ties, accuracy_without_ties


@torch.no_grad()
def gather_margins(task: Any, module: nn.Module, loader: DataLoader, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
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
    return (
        accelerator.gather_for_metrics(torch.cat(margins)).cpu(),
        accelerator.gather_for_metrics(torch.cat(labels)).cpu(),
    )


@torch.no_grad()
def gather_rewards(task: Any, module: nn.Module, loader: DataLoader, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw rewards ``(r_a, r_b)``, each ``(N, D)``, of a task with ``rewards`` over ``loader``, gathered across
    processes."""
    module.eval()
    outs_a, outs_b = [], []
    for batch in loader:
        if batch is not None:
            r_a, r_b = task.rewards(module, batch)
            outs_a.append(r_a.float())
            outs_b.append(r_b.float())
    module.train()
    return (
        accelerator.gather_for_metrics(torch.cat(outs_a)).cpu(),
        accelerator.gather_for_metrics(torch.cat(outs_b)).cpu(),
    )


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

"""Pure loss math for preference learning. ``d`` is always ``r(chosen) - r(rejected)`` (or ``r(A) - r(B)``).

- **Bradley-Terry** (Bradley & Terry 1952): ``P(chosen wins) = sigmoid(d)``; loss ``-log sigmoid(d)``.
- **Bradley-Terry with ties** (Rao & Kupper 1967, the ``btt`` loss of VideoAlign, theta = 5 by default):
  ``P(A wins) = sigmoid(d - ln theta)``, ``P(B wins) = sigmoid(-d - ln theta)`` and
  ``P(tie) = (theta^2 - 1) sigmoid(d - ln theta) sigmoid(-d - ln theta)``; the three add up to 1 for every d.
  The loss is the negative log-probability of the observed outcome.
- **Margin** (VideoAlign ``margin``/``constant_margin``): ``-log sigmoid(d - m)``; the chosen side must win by
  ``m`` (a MOS gap, or a constant such as 0.57).

:func:`preference_loss` applies them to per-dimension labels in VideoAlign's encoding (+1 A better, -1 B better,
0 tie, anything else invalid) and averages over the valid entries.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from mmreward.errors import ConfigError

LossKind = Literal["bt", "btt", "margin"]


def bradley_terry_loss(diff: torch.Tensor) -> torch.Tensor:
    """``-log sigmoid(d)`` elementwise (``softplus(-d)``, stable for large ``|d|``)."""
    return F.softplus(-diff)


def bt_with_ties_loss(diff: torch.Tensor, tie: torch.Tensor, theta: float = 5.0) -> torch.Tensor:
    """Rao-Kupper negative log-likelihood elementwise.

    Non-tie (``tie`` False, ``diff = r_chosen - r_rejected``): ``-log sigmoid(d - ln theta)``.
    Tie: ``-log sigmoid(d - ln theta) - log sigmoid(-d - ln theta) - ln(theta^2 - 1)`` (symmetric in d).
    """
    if theta <= 1.0:
        raise ConfigError(f"theta must be > 1 (P(tie) = 0 at theta = 1), got {theta}")
    log_theta = math.log(theta)
    win = F.softplus(-(diff - log_theta))
    tied = win + F.softplus(diff + log_theta) - math.log(theta**2 - 1.0)
    return torch.where(tie, tied, win)


def margin_loss(diff: torch.Tensor, margin: torch.Tensor | float) -> torch.Tensor:
    """``-log sigmoid(d - m)`` elementwise."""
    return F.softplus(-(diff - margin))


def rao_kupper_probabilities(diff: torch.Tensor, theta: float = 5.0) -> torch.Tensor:
    """``(P(A wins), P(B wins), P(tie))`` stacked on the last dim for ``diff = r_A - r_B``."""
    log_theta = math.log(theta)
    p_a = torch.sigmoid(diff - log_theta)
    p_b = torch.sigmoid(-diff - log_theta)
    return torch.stack([p_a, p_b, (theta**2 - 1.0) * p_a * p_b], dim=-1)


def preference_loss(
    reward_a: torch.Tensor,
    reward_b: torch.Tensor,
    labels: torch.Tensor,
    kind: LossKind = "btt",
    *,
    theta: float = 5.0,
    margin: torch.Tensor | float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Mean loss over valid (pair, dimension) entries and the number of entries it averaged.

    Args:
        reward_a, reward_b: ``(B, D)`` rewards of the two sides.
        labels: ``(B, D)`` +1 (A better), -1 (B better), 0 (tie); other values are ignored.
        kind: ``bt`` (ties ignored), ``btt`` (ties modelled) or ``margin`` (ties ignored).
        margin: ``(B, D)`` or a constant, for ``kind="margin"``.

    With no usable entry the loss is a zero that still depends on the rewards (so every process in a
    distributed step runs the same backward), and the count is 0.
    """
    if reward_a.shape != reward_b.shape or reward_a.shape != labels.shape:
        raise ValueError(
            f"shapes differ: rewards {tuple(reward_a.shape)}, {tuple(reward_b.shape)}, labels {tuple(labels.shape)}"
        )
    decided = (labels == 1) | (labels == -1)
    sign = torch.where(labels == -1, -1.0, 1.0).to(reward_a.dtype)
    diff = sign * (reward_a - reward_b)  # r_chosen - r_rejected for decided pairs; r_A - r_B for ties
    if kind == "bt":
        losses, used = bradley_terry_loss(diff), decided
    elif kind == "btt":
        losses, used = bt_with_ties_loss(diff, labels == 0, theta), decided | (labels == 0)
    elif kind == "margin":
        losses, used = margin_loss(diff, margin), decided
    else:
        raise ConfigError(f"loss must be 'bt', 'btt' or 'margin', got {kind!r}")
    count = int(used.sum())
    if count == 0:
        return (reward_a - reward_b).sum() * 0.0, 0
    return losses[used].mean(), count

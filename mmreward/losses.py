"""Pure loss math on tensors (no models, no I/O), each function checked against hand-derived values in tests.

Generator alignment (this section): flow-matching errors, Flow-DPO and Flow-RWR (VideoAlign, arXiv 2501.13918).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------------- generator alignment losses

Reduction = Literal["mean", "sum"]
DPOLossType = Literal["sigmoid", "hinge", "ipo"]
BetaSchedule = Literal["constant", "one_minus_t_squared"]


def flow_matching_error(prediction: torch.Tensor, target: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """``(B,)`` squared velocity error per sample, float32: the mean (default) or sum over the non-batch elements.

    The mean keeps the scale independent of resolution and frame count (Flow-GRPO's Flow-DPO uses it with
    ``beta = 100``); the sum is the paper's ``||.||^2``. Equal losses need ``beta_sum = beta_mean / N`` where ``N``
    is the number of elements per sample.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    squared = (prediction.float() - target.float()) ** 2
    dims = tuple(range(1, squared.ndim))
    return squared.mean(dim=dims) if reduction == "mean" else squared.sum(dim=dims)


@dataclass
class FlowDPOOutput:
    """Flow-DPO loss and its diagnostics (all ``(B,)`` except ``loss``)."""

    loss: torch.Tensor  # scalar, mean over pairs
    losses: torch.Tensor
    margin: torch.Tensor  # m = -d / 2, the implicit log-likelihood-ratio margin (positive: pair ranked right)
    chosen_reward: torch.Tensor  # -beta_t / 2 * (e_policy_w - e_ref_w)
    rejected_reward: torch.Tensor  # -beta_t / 2 * (e_policy_l - e_ref_l)
    beta: torch.Tensor  # beta_t used per pair

    @property
    def accuracy(self) -> torch.Tensor:
        """Implicit accuracy: fraction of pairs whose margin is positive."""
        return (self.margin > 0).float().mean()

    @property
    def reward_margin(self) -> torch.Tensor:
        return self.chosen_reward - self.rejected_reward


def flow_dpo_beta(beta: float, sigma: torch.Tensor | None, schedule: BetaSchedule = "constant") -> torch.Tensor:
    """Per-pair ``beta_t``: constant, or ``beta * (1 - t)^2`` (the schedule the Flow-DPO derivation gives; the
    paper finds it over-weights low noise relative to high noise and reward-hacks, so constant is the default)."""
    if schedule == "constant":
        return torch.as_tensor(beta, dtype=torch.float32)
    if schedule == "one_minus_t_squared":
        if sigma is None:
            raise ValueError("the one_minus_t_squared beta schedule needs each pair's sigma")
        return beta * (1 - sigma.float()) ** 2
    raise ValueError(f"unknown beta schedule {schedule!r}; use constant or one_minus_t_squared")


def flow_dpo_loss(
    policy_error_chosen: torch.Tensor,
    policy_error_rejected: torch.Tensor,
    reference_error_chosen: torch.Tensor,
    reference_error_rejected: torch.Tensor,
    *,
    beta: float,
    loss_type: DPOLossType = "sigmoid",
    beta_schedule: BetaSchedule = "constant",
    sigma: torch.Tensor | None = None,
) -> FlowDPOOutput:
    """Flow-DPO (VideoAlign, arXiv 2501.13918, eq. 9): Diffusion-DPO in velocity space.

    With per-pair velocity errors ``e`` (:func:`flow_matching_error`) of the policy and the reference on the
    chosen (w) and rejected (l) sample, computed at the same noise and noise level for both samples:

    - ``d = (e_policy_w - e_ref_w) - (e_policy_l - e_ref_l)`` and the margin ``m = -d / 2``;
    - ``sigmoid`` (the paper): ``-log sigmoid(beta_t * m)``, i.e. ``-log sigmoid(-(beta_t / 2) d)`` as in
      Flow-GRPO's ``train_sd3_dpo.py`` (beta 100 with mean errors). diffusers' Diffusion-DPO writes
      ``-log sigmoid(beta' * (-d))`` without the 1/2, so ``beta' = beta / 2``;
    - ``hinge`` (SLiC): ``relu(1 - beta_t * m)``;
    - ``ipo`` (Azar et al. 2023): ``(m - 1 / (2 beta_t))^2``.

    ``beta_t`` comes from :func:`flow_dpo_beta`; implicit rewards are ``-beta_t / 2 * (e_policy - e_ref)``.
    """
    d = (policy_error_chosen - reference_error_chosen) - (policy_error_rejected - reference_error_rejected)
    margin = -0.5 * d
    beta_t = flow_dpo_beta(beta, sigma, beta_schedule).to(margin.device)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta_t * margin)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta_t * margin)
    elif loss_type == "ipo":
        losses = (margin - 1 / (2 * beta_t)) ** 2
    else:
        raise ValueError(f"unknown Flow-DPO loss type {loss_type!r}; use sigmoid, hinge or ipo")
    chosen = -0.5 * beta_t * (policy_error_chosen - reference_error_chosen).detach()
    rejected = -0.5 * beta_t * (policy_error_rejected - reference_error_rejected).detach()
    return FlowDPOOutput(
        loss=losses.mean(),
        losses=losses,
        margin=margin.detach(),
        chosen_reward=chosen,
        rejected_reward=rejected,
        beta=beta_t.expand_as(margin),
    )


def rwr_weights(rewards: torch.Tensor, temperature: float) -> torch.Tensor:
    """Self-normalised reward-weighted-regression weights ``w_i = N * softmax(r / temperature)_i`` (mean 1).

    Flow-RWR weights each sample's flow-matching loss by ``exp(r / temperature)``; normalising over the ``N``
    samples (one online round) keeps the loss on the scale of plain flow matching, so the learning rate does
    not depend on the reward's offset. Small temperatures approach training on the best sample only, large
    ones plain fine-tuning on all samples.
    """
    if temperature <= 0:
        raise ValueError(f"RWR temperature must be > 0, got {temperature}")
    rewards = rewards.float()
    return rewards.numel() * torch.softmax(rewards / temperature, dim=0)


def flow_rwr_loss(policy_error: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Flow-RWR (VideoAlign, arXiv 2501.13918): ``mean_i w_i * e_i`` for per-sample flow-matching errors ``e_i``
    and weights from :func:`rwr_weights`."""
    return (weights.to(policy_error.device).float() * policy_error).mean()

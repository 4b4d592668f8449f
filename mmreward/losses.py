"""Pure loss math on tensors (no models, no I/O), each function checked against hand-derived values in tests.

- Generator alignment: flow-matching errors, Flow-DPO and Flow-RWR (VideoAlign, arXiv 2501.13918); the clipped
  policy-gradient objective and step KL of Flow-GRPO (arXiv 2505.05470) and Pref-GRPO (arXiv 2508.20751).
- Reward-model training: Bradley-Terry, Bradley-Terry with ties (Rao-Kupper) and margin losses on reward gaps, and
  HPSv3's uncertainty-aware loss on Gaussian rewards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from mmreward.errors import ConfigError

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


# ------------------------------------------------------------------------- policy gradient (Flow-GRPO, Pref-GRPO)


@dataclass
class GRPOLossOutput:
    """Per-sample clipped surrogate and its diagnostics, all ``(B,)``; only ``losses`` carries gradients."""

    losses: torch.Tensor
    ratio: torch.Tensor  # exp(logp - logp_old)
    clipped: torch.Tensor  # bool, |ratio - 1| > clip_range (the clip is active or would be for the other sign)
    approx_kl: torch.Tensor  # (logp - logp_old)^2 / 2, the estimator Flow-GRPO logs


def grpo_clip_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> GRPOLossOutput:
    """PPO's clipped surrogate on one denoising step (Flow-GRPO, arXiv 2505.05470, eq. 4; Pref-GRPO the same).

    With ``rho = exp(logp - logp_old)`` (log-probabilities of the stored next latents under the current policy and
    under the policy that sampled them) and the sample's advantage ``A``:
    ``loss = max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps))``, the negative of PPO's pessimistic objective.
    Log-probabilities are per-element means (:func:`mmreward.flow.sde.gaussian_log_prob`), so ``rho`` stays close
    to 1 and the clip ranges of the released configs are small (1e-4; 1e-5 for Flow-GRPO-Fast).
    """
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    log_ratio = log_prob.float() - old_log_prob.float()
    ratio = torch.exp(log_ratio)
    advantages = advantages.float()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return GRPOLossOutput(
        losses=torch.maximum(unclipped, clipped),
        ratio=ratio.detach(),
        clipped=(ratio.detach() - 1.0).abs() > clip_range,
        approx_kl=0.5 * log_ratio.detach() ** 2,
    )


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(B,)`` KL(N(mean, std^2) || N(ref_mean, std^2)) per element, averaged over the non-batch elements:
    ``mean_elems (mean - ref_mean)^2 / (2 std^2)`` (equal variances: the log-variance and trace terms cancel)."""
    per_element = (mean.float() - ref_mean.float()) ** 2 / (2 * std.float() ** 2)
    return per_element.mean(dim=tuple(range(1, per_element.ndim)))


def step_kl(
    mean: torch.Tensor,
    ref_mean: torch.Tensor,
    std: torch.Tensor,
    dt: torch.Tensor | float,
    *,
    sde_type: str,
    includes_dt: bool = True,
) -> torch.Tensor:
    """``(B,)`` KL of one stochastic step between the policy and the reference, in either public convention.

    Both policies share the step's noise, so the KL compares their means. For the ``flow`` and ``dance`` SDEs the
    full standard deviation is ``std = s_t * sqrt(-dt)``:

    - ``includes_dt=True``: the true Gaussian KL, ``mean (mu - mu_ref)^2 / (2 s_t^2 (-dt))`` (Pref-GRPO's
      ``fastvideo/grpo/kl.py::compute_kl_loss``);
    - ``includes_dt=False``: Flow-GRPO's ``scripts/train_sd3.py``, which divides by ``2 s_t^2`` only, i.e.
      ``(-dt) * KL`` (flow_grpo issue #78): the same penalty re-weighted by the step size, so its ``beta`` is
      larger for the same strength.

    CPS steps (``sde_type="cps"``) have no ``sqrt(-dt)`` in their standard deviation; both conventions are the
    true KL there. ``dt`` (``sigma_next - sigma < 0``) is a float or one value per sample.
    """
    kl = gaussian_kl(mean, ref_mean, std)
    if includes_dt or sde_type == "cps":
        return kl
    if sde_type not in ("flow", "dance"):
        raise ValueError(f"step KL is defined for the flow, dance and cps SDEs, not {sde_type!r}")
    dt = torch.as_tensor(dt, dtype=torch.float32, device=kl.device)
    if bool((dt >= 0).any()):
        raise ValueError("dt = sigma_next - sigma must be negative (sampling runs from noise to data)")
    return kl * (-dt)


# ------------------------------------------------------------------------------------- reward-model training losses
#
# ``d`` is always ``r(chosen) - r(rejected)`` (or ``r(A) - r(B)``).
# - Bradley-Terry (Bradley & Terry 1952): P(chosen wins) = sigmoid(d); loss -log sigmoid(d).
# - Bradley-Terry with ties (Rao & Kupper 1967; VideoAlign's ``btt``, theta = 5 by default):
#   P(A wins) = sigmoid(d - ln theta), P(B wins) = sigmoid(-d - ln theta),
#   P(tie) = (theta^2 - 1) sigmoid(d - ln theta) sigmoid(-d - ln theta); the three add up to 1 for every d, and the
#   loss is the negative log-probability of the observed outcome.
# - Margin (VideoAlign ``margin`` / ``constant_margin``): -log sigmoid(d - m); the chosen side must win by m (a MOS
#   gap, or a constant such as 0.57).
# - Uncertainty (HPSv3, Ma et al. 2025, arXiv 2508.03789, Sec. 3.2): each side's reward is N(mu, sigma^2) with
#   sigma = exp(the head's second output), so d ~ N(mu_c - mu_r, sigma_c^2 + sigma_r^2); the loss is
#   E_d[-log sigmoid(d)], the expected Bradley-Terry loss.
# :func:`preference_loss` applies them to per-dimension labels in VideoAlign's encoding (+1 A better, -1 B better,
# 0 tie, anything else invalid) and averages over the valid entries (``reduction="valid"``) or, as VideoAlign
# does, over all B x D entries with the unused ones counting as zero (``reduction="all"``).

LossKind = Literal["bt", "btt", "margin", "uncertainty"]
LossReduction = Literal["valid", "all"]
# Gauss-Hermite rule for E[f(m + s eps)], eps ~ N(0, 1): sum_i w_i f(m + sqrt(2) s x_i) / sqrt(pi).
_HERMITE_NODES = 64


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


def uncertainty_loss(mean_diff: torch.Tensor, log_sigma_a: torch.Tensor, log_sigma_b: torch.Tensor):
    """``E[-log sigmoid(d)]`` for ``d ~ N(mean_diff, exp(log_sigma_a)^2 + exp(log_sigma_b)^2)``, elementwise
    (symmetric in the two sides' sigmas).

    HPSv3 estimates this expectation with 1000 Monte Carlo samples per pair (drawn in float16); here it is computed
    with a 64-node Gauss-Hermite rule, deterministic and accurate to about 1e-4 for ``sigma_d`` up to 10 (the
    integrand is smooth). As ``sigma_d -> 0`` it becomes the Bradley-Terry loss ``-log sigmoid(mean_diff)``.
    """
    import numpy as np

    nodes, weights = np.polynomial.hermite.hermgauss(_HERMITE_NODES)
    x = torch.as_tensor(nodes, dtype=mean_diff.dtype, device=mean_diff.device)
    w = torch.as_tensor(weights / math.sqrt(math.pi), dtype=mean_diff.dtype, device=mean_diff.device)
    sigma = torch.sqrt(torch.exp(2 * log_sigma_a) + torch.exp(2 * log_sigma_b))
    samples = mean_diff.unsqueeze(-1) + math.sqrt(2.0) * sigma.unsqueeze(-1) * x  # (..., nodes)
    return (F.softplus(-samples) * w).sum(-1)


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
    reduction: LossReduction = "valid",
) -> tuple[torch.Tensor, int]:
    """Mean loss over valid (pair, dimension) entries and the number of entries it averaged.

    Args:
        reward_a, reward_b: ``(B, D)`` rewards of the two sides; ``(B, D, 2)`` ``(mu, log sigma)`` for
            ``kind="uncertainty"``.
        labels: ``(B, D)`` +1 (A better), -1 (B better), 0 (tie); other values are ignored.
        kind: ``bt`` (ties ignored), ``btt`` (ties modelled), ``margin`` or ``uncertainty`` (ties ignored).
        margin: ``(B, D)`` or a constant, for ``kind="margin"``.
        reduction: ``valid`` averages over the used entries; ``all`` over all ``B x D`` entries, the unused ones
            counting as zero (VideoAlign's ``(loss * mask).mean()``), and the count is ``B x D``.

    With no usable entry the loss is a zero that still depends on the rewards (so every process in a
    distributed step runs the same backward), and the count is 0.
    """
    expected = (*labels.shape, 2) if kind == "uncertainty" else tuple(labels.shape)
    if reward_a.shape != reward_b.shape or tuple(reward_a.shape) != expected:
        raise ValueError(
            f"shapes differ: rewards {tuple(reward_a.shape)}, {tuple(reward_b.shape)}, labels {tuple(labels.shape)}"
            + (" (uncertainty wants rewards (B, D, 2): mu and log sigma)" if kind == "uncertainty" else "")
        )
    if reduction not in ("valid", "all"):
        raise ConfigError(f"reduction must be 'valid' or 'all', got {reduction!r}")
    decided = (labels == 1) | (labels == -1)
    sign = torch.where(labels == -1, -1.0, 1.0).to(reward_a.dtype)
    if kind == "uncertainty":
        # d = mu_chosen - mu_rejected; its variance sigma_A^2 + sigma_B^2 does not depend on which side won.
        mean_diff = sign * (reward_a[..., 0] - reward_b[..., 0])
        losses = uncertainty_loss(mean_diff, reward_a[..., 1], reward_b[..., 1])
        return _reduce(losses, decided, reduction, reward_a - reward_b)
    diff = sign * (reward_a - reward_b)  # r_chosen - r_rejected for decided pairs; r_A - r_B for ties
    if kind == "bt":
        losses, used = bradley_terry_loss(diff), decided
    elif kind == "btt":
        losses, used = bt_with_ties_loss(diff, labels == 0, theta), decided | (labels == 0)
    elif kind == "margin":
        losses, used = margin_loss(diff, margin), decided
    else:
        raise ConfigError(f"loss must be 'bt', 'btt', 'margin' or 'uncertainty', got {kind!r}")
    return _reduce(losses, used, reduction, diff)


def _reduce(
    losses: torch.Tensor, used: torch.Tensor, reduction: LossReduction, gap: torch.Tensor
) -> tuple[torch.Tensor, int]:
    count = int(used.sum())
    if count == 0:
        return gap.sum() * 0.0, 0
    if reduction == "all":
        return torch.where(used, losses, torch.zeros_like(losses)).sum() / used.numel(), used.numel()
    return losses[used].mean(), count

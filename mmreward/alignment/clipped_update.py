"""The GRPO policy update: PPO-clipped steps on the stored denoising steps of a rollout, with the optional KL to the
reference (the model without its LoRA adapter) and the "ratio == 1" on-policy check.

Flow-GRPO (arXiv 2505.05470) re-evaluates each stored SDE step under the current weights, forms the per-step
ratio ``rho = exp(logp - logp_old)`` and minimizes ``max(-A rho, -A clip(rho, 1 - eps, 1 + eps))``
(:func:`mmreward.losses.grpo_clip_loss`). With ``loss.ratio_norm`` the ratio is GRPO-Guard's normalized one and each
step's policy loss is reweighted by ``1 / (sigma - sigma_next)`` (:mod:`mmreward.alignment.grpo_guard`). Which rows
and steps go into which micro-batch and optimizer step is decided up front by
:func:`mmreward.alignment.update_schedule.update_schedule`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from mmreward.alignment.advantages import Advantages, step_advantages
from mmreward.alignment.group_rewards import IterationRewards
from mmreward.alignment.group_rollout import GroupBatch
from mmreward.alignment.grpo_guard import ratio_norm_log_ratio, step_reweight
from mmreward.alignment.layout import GroupLayout
from mmreward.alignment.off_policy import diagnose_off_policy
from mmreward.alignment.update_schedule import GRPOLossConfig, training_guidance, update_schedule
from mmreward.errors import ConfigError, MMRewardError
from mmreward.flow.models import FlowModel
from mmreward.flow.rollout import policy_step
from mmreward.losses import grpo_clip_loss, step_kl
from mmreward.train.policy import LoraPolicy, PolicyOptimizer

# The command-line flag of the GRPO programs that turns the on-policy check on (see mmreward.train.config).
ON_POLICY_SWITCHES = {
    "--check-on-policy": (
        "check_on_policy",
        "stop if the first inner step's importance ratio is not 1 (within train.on_policy_tolerance) and say which "
        "setting breaks it; with --train.max_steps 1 a self-test of the setup",
    )
}


class OffPolicyError(MMRewardError, RuntimeError):
    """The first inner step's importance ratio is not 1: the update does not evaluate the policy that sampled."""


def grpo_update(
    model: FlowModel,
    batch: GroupBatch,
    advantages: torch.Tensor,
    keep: torch.Tensor,
    *,
    transformer: nn.Module,
    reference: Any,
    optimizer: PolicyOptimizer,
    loss: GRPOLossConfig,
    micro_batch_size: int,
    updates: int = 1,
    inner_epochs: int = 1,
    accelerator: Any,
    seed: tuple = (0,),
    on_policy_tolerance: float | None = None,
    mixed_precision: str = "no",
) -> dict[str, float]:
    """Clipped policy-gradient steps on the stored SDE steps of ``batch`` (this process's samples).

    The trained samples (``keep``, ``(N,)``) go through the micro-batches of :func:`update_schedule`; each
    micro-batch runs one forward and backward per trained step, so activations of one step are alive at a time.
    The objective of an optimizer step is the mean over its samples (on all processes) and trained steps of
    ``grpo_clip_loss + kl_beta * step_kl`` (with ``loss.ratio_norm``: RatioNorm's ratio in the clip, and the clip
    term of step ``i`` times ``1 / (sigma_i - sigma_i+1)`` unless ``loss.ratio_norm_reweight`` is off; the rollout
    must hold its step means, ``rollout_groups(record_means=True)``; the ``update/ratio``, ``clipfrac`` and
    ``approx_kl`` metrics then describe the normalized ratio, the on-policy check the policy's own).

    ``on_policy_tolerance``: before the first optimizer step the policy *is* the sampling policy, so
    ``exp(logp - logp_old)`` must be 1; if the first micro-batch deviates by more than this, the update stops with
    :class:`OffPolicyError` naming the setting that breaks it (see :func:`diagnose_off_policy`). The deviation
    is always returned as ``ratio/first_dev``. Returns the update's metrics (means over processes).
    """
    rollout = batch.rollout
    device = accelerator.device
    stored = rollout.log_probs.shape[1]
    if stored == 0:
        raise ConfigError("the rollout stored no SDE steps (sde_type 'ode' or an empty window); nothing to train")
    if loss.ratio_norm and rollout.means is None:
        raise ConfigError(
            "loss.ratio_norm compares each step's mean with the rollout's, but this rollout did not record its means; "
            "sample it with rollout_groups(..., record_means=True)"
        )
    guidance = training_guidance(model, rollout, loss)
    advantages = advantages.to(device).float()
    old_log_probs = rollout.log_probs.to(device)
    kept = keep.nonzero().flatten()
    kept_per_process = accelerator.gather(torch.tensor([len(kept)], device=device)).cpu().tolist()
    schedule = update_schedule(
        kept,
        kept_per_process,
        stored_steps=stored,
        loss=loss,
        micro_batch_size=micro_batch_size,
        updates=updates,
        inner_epochs=inner_epochs,
        seed=seed,
    )
    sums: dict[str, float] = {}
    count = 0.0
    grad_norms, first_dev, applied_steps = [], None, 0

    def add(name: str, values: torch.Tensor, weights: torch.Tensor) -> None:
        sums[name] = sums.get(name, 0.0) + float((values.detach().float() * weights).sum())

    for micro_batches in schedule:
        for micro in micro_batches:
            rows = torch.tensor(micro.rows, dtype=torch.long)
            weights = torch.full((len(rows),), micro.weight, device=device)
            deviations = []
            for n, j in enumerate(micro.steps):
                last = micro.last and n == len(micro.steps) - 1
                with accelerator.no_sync(transformer) if not last else nullcontext():
                    ref_mean = None
                    if loss.kl_beta > 0 or loss.kl_adaptive:  # adaptive: measured even while its weight is 0
                        with reference.active(), accelerator.autocast():
                            ref_mean = policy_step(model, rollout, j, rows=rows, guidance_scale=guidance).mean
                    with accelerator.autocast():
                        step = policy_step(
                            model,
                            rollout,
                            j,
                            rows=rows,
                            transformer=transformer,
                            guidance_scale=guidance,
                            cfg_grad=loss.cfg_grad,
                        )
                    i = int(rollout.sde_steps[j])
                    raw_ratio = torch.exp(step.log_prob.detach() - old_log_probs[rows, j])
                    if loss.ratio_norm:
                        log_ratio = ratio_norm_log_ratio(
                            step.mean,
                            rollout.means[rows, j],
                            rollout.next_latents[rows, j],
                            step.std,
                            shift=loss.ratio_norm_shift,
                        )
                        out = grpo_clip_loss(log_ratio, torch.zeros_like(log_ratio), advantages[rows], loss.clip_range)
                    else:
                        out = grpo_clip_loss(step.log_prob, old_log_probs[rows, j], advantages[rows], loss.clip_range)
                    per_sample = out.losses
                    if loss.ratio_norm and loss.ratio_norm_reweight:
                        per_sample = per_sample * step_reweight(rollout.sigmas[i], rollout.sigmas[i + 1]).to(device)
                    if ref_mean is not None:
                        dt = rollout.sigmas[i + 1] - rollout.sigmas[i]
                        kl = step_kl(
                            step.mean,
                            ref_mean,
                            step.std,
                            dt,
                            sde_type=rollout.sde_type,
                            includes_dt=loss.kl_includes_dt,
                        )
                        per_sample = per_sample + loss.kl_beta * kl
                        add("kl", kl, weights)
                    accelerator.backward((weights * per_sample).sum() * micro.scale)
                add("policy_loss", out.losses, weights)
                add("ratio", out.ratio, weights)
                add("clipfrac", out.clipped.float(), weights)
                add("approx_kl", out.approx_kl, weights)
                add("loss", per_sample, weights)
                count += float(weights.sum())
                deviations.append((raw_ratio - 1).abs().max())  # the policy's own ratio, whatever the clip sees
            if first_dev is None:
                first_dev = global_max(torch.stack(deviations).max(), accelerator)
                if on_policy_tolerance is not None and first_dev > on_policy_tolerance:
                    optimizer.optimizer.zero_grad(set_to_none=True)
                    reason = diagnose_off_policy(
                        model,
                        batch,
                        rows,
                        micro.steps[0],
                        loss=loss,
                        accelerator=accelerator,
                        tolerance=on_policy_tolerance,
                        mixed_precision=mixed_precision,
                    )
                    raise OffPolicyError(
                        f"on-policy check failed: the first inner step's importance ratio deviates from 1 by "
                        f"{first_dev:.3g} (tolerance {on_policy_tolerance:g}). {reason}"
                    )
        applied, grad_norm = optimizer.step(accelerator)
        applied_steps += int(applied)
        grad_norms.append(grad_norm)
    totals = torch.tensor([count, *sums.values()], device=device, dtype=torch.float64)
    totals = accelerator.reduce(totals, "sum").cpu()
    metrics = {
        f"update/{name}": float(totals[1 + n] / totals[0]) if totals[0] else math.nan for n, name in enumerate(sums)
    }
    metrics["update/optimizer_steps"] = float(applied_steps)
    metrics["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else math.nan
    metrics["ratio/first_dev"] = first_dev if first_dev is not None else math.nan
    return metrics


def global_max(value: torch.Tensor, accelerator: Any) -> float:
    """The largest ``value`` over all processes."""
    return float(accelerator.gather(value.detach().float().reshape(1).to(accelerator.device)).max())


def update_policy(
    cfg: Any,
    policy: LoraPolicy,
    batch: GroupBatch,
    rewards: IterationRewards,
    layout: GroupLayout,
    *,
    step: int,
    accelerator: Any,
    check: bool = False,
    kl_beta: float | None = None,
) -> tuple[Advantages, dict[str, float]]:
    """Group advantages of ``rewards`` (``cfg.advantage``) and the clipped policy update on ``batch``
    (``cfg.loss``, ``cfg.train``); ``check`` runs the on-policy check; ``kl_beta``: this step's KL weight (None:
    ``cfg.loss.kl_beta``; the adaptive KL passes its current one). Returns the advantages and the update's
    metrics."""
    groups = torch.arange(layout.prompts).repeat_interleave(layout.group_size)  # (P G,) group of each sample
    adv = step_advantages(rewards.scores, rewards.dims, rewards.weights, groups, cfg.advantage)
    train = cfg.train
    metrics = grpo_update(
        policy.model,
        batch,
        adv.values[batch.index],
        adv.keep[batch.index],
        transformer=policy.transformer,
        reference=policy.reference,
        optimizer=policy.optimizer,
        loss=cfg.loss if kl_beta is None else replace(cfg.loss, kl_beta=kl_beta),
        micro_batch_size=train.micro_batch_size,
        updates=train.updates_per_step,
        inner_epochs=train.inner_epochs,
        accelerator=accelerator,
        seed=(train.seed, "update", step),
        on_policy_tolerance=train.on_policy_tolerance if check else None,
        mixed_precision=accelerator.mixed_precision,
    )
    return adv, metrics

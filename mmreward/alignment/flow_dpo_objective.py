"""The Flow-DPO and Flow-RWR objectives on a batch (VideoAlign, arXiv 2501.13918): Diffusion-DPO written for
velocity prediction, with one shared noise and noise level per pair and the model without its adapter as the
reference, and reward-weighted flow matching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from mmreward.alignment.preference_sets import TrainingSet
from mmreward.flow.models import FlowModel, PromptEmbeds
from mmreward.flow.noising import logit_normal, noisy_latents, per_sample_noise, velocity_target
from mmreward.losses import flow_dpo_loss, flow_matching_error, flow_rwr_loss


@dataclass
class DPOLossConfig:
    type: Literal["sigmoid", "hinge", "ipo", "rwr"] = "sigmoid"
    beta: float = 100.0  # for the chosen reduction: beta_sum = beta_mean / (elements per sample)
    beta_schedule: Literal["constant", "one_minus_t_squared"] = "constant"
    reduction: Literal["mean", "sum"] = "mean"
    logit_mean: float = 0.0  # noise levels: u = sigmoid(N(logit_mean, logit_std^2)) -> shifted grid
    logit_std: float = 1.0
    rwr_temperature: float = 1.0
    # FLUX.1-dev's guidance embedding in the training forward (it is part of the conditioning the model is deployed
    # with); None: online.sampling.guidance_scale. Batch-CFG families (SD3, Wan) train the conditional velocity.
    guidance_scale: float | None = None


def training_guidance(cfg: Any, model: FlowModel) -> float:
    """The guidance of the DPO/RWR training forward: 1 (conditional velocity, no CFG batch, as Flow-GRPO's
    train_sd3_dpo.py) for batch-CFG families; for a guidance-distilled model the guidance embedding it samples and
    is deployed with (``loss.guidance_scale``, else ``online.sampling.guidance_scale``), not the embedding's 1.0."""
    if model.batch_cfg:
        return 1.0
    configured = cfg.loss.guidance_scale
    return float(cfg.online.sampling.guidance_scale if configured is None else configured)


def draw_noise(cfg: Any, model: FlowModel, shape: torch.Size, generators: list[torch.Generator]):
    """Per sample, from its own generator: a noise level (logit-normal on the shifted grid) and a Gaussian noise
    tensor of the latent's shape (``shape`` is the batch's), see :func:`per_sample_noise`."""
    loss = cfg.loss
    u, noise = per_sample_noise(
        generators, shape[1:], lambda g: logit_normal(1, mean=loss.logit_mean, std=loss.logit_std, generator=g)
    )
    return model.training_sigmas(u), noise[0]


def dpo_loss(cfg, model, transformer, reference, batch: TrainingSet, generators, accelerator):
    """Flow-DPO on a batch of pairs: one shared noise and noise level per pair, reference first (no graph kept)."""
    size = len(batch)
    sigma, noise = draw_noise(cfg, model, batch.chosen.shape, generators)
    x0 = torch.cat([batch.chosen, batch.rejected]).to(accelerator.device)  # (2B, *latent): chosen, then rejected
    noise2, sigma2 = torch.cat([noise, noise]).to(accelerator.device), torch.cat([sigma, sigma]).to(accelerator.device)
    x_t, target = noisy_latents(x0, noise2, sigma2), velocity_target(x0, noise2)
    cond = batch.conditioning(
        model, cfg.model.sample_size()
    )  # editing, image-to-video: with each pair's source latents
    cond2 = PromptEmbeds.cat([cond, cond])
    guidance = training_guidance(cfg, model)
    with reference.active(), accelerator.autocast():
        ref_velocity = model.velocity(x_t, sigma2, cond2, guidance_scale=guidance)
        ref_error = flow_matching_error(ref_velocity, target, cfg.loss.reduction)
    with accelerator.autocast():
        policy_error = flow_matching_error(
            model.velocity(x_t, sigma2, cond2, guidance_scale=guidance, transformer=transformer),
            target,
            cfg.loss.reduction,
        )
    out = flow_dpo_loss(
        policy_error[:size],
        policy_error[size:],
        ref_error[:size],
        ref_error[size:],
        beta=cfg.loss.beta,
        loss_type=cfg.loss.type,
        beta_schedule=cfg.loss.beta_schedule,
        sigma=sigma.to(accelerator.device),
    )
    metrics = {
        "implicit_acc": out.accuracy,
        "reward_chosen": out.chosen_reward.mean(),
        "reward_rejected": out.rejected_reward.mean(),
        "reward_margin": out.reward_margin.mean(),
        "margin": out.margin.mean(),
        "beta_t": out.beta.mean(),
        "sigma": sigma.mean(),
    }
    return out.loss, metrics


def rwr_loss(cfg, model, transformer, reference, batch: TrainingSet, generators, accelerator):
    """Flow-RWR: reward-weighted flow matching on generated samples (no reference pass)."""
    sigma, noise = draw_noise(cfg, model, batch.chosen.shape, generators)
    x0, noise, sigma = batch.chosen.to(accelerator.device), noise.to(accelerator.device), sigma.to(accelerator.device)
    with accelerator.autocast():
        prediction = model.velocity(
            noisy_latents(x0, noise, sigma),
            sigma,
            batch.conditioning(model, cfg.model.sample_size()),
            guidance_scale=training_guidance(cfg, model),
            transformer=transformer,
        )
    error = flow_matching_error(prediction, velocity_target(x0, noise), cfg.loss.reduction)
    return flow_rwr_loss(error, batch.weights), {"weight_max": batch.weights.max(), "sigma": sigma.mean()}

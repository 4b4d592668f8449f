"""Gradient guidance as a diffusers step callback, for the pipelines of :data:`PIPELINE_FAMILIES`
(``StableDiffusion3Pipeline``, ``FluxPipeline``, ``WanPipeline``, ``QwenImagePipeline``, ``ZImagePipeline``,
``QwenImage21Pipeline``):

    from mmreward.guidance.callback import RewardGuidanceCallback, use_euler_scheduler
    callback = RewardGuidanceCallback(pipe, objective, method="nrg", prompts=prompt, height=512, width=512)
    image = pipe(prompt, height=512, width=512, callback_on_step_end=callback).images[0]

diffusers calls ``callback_on_step_end`` after each scheduler step with the new latents ``x_{i+1}``. The callback
keeps the latents of the previous call, ``x_i``, so it recovers the step's velocity exactly from the Euler update,
``v = (x_{i+1} - x_i) / dt``, computes the reward gradient at ``(x_i, t_i)`` (with ``x0_hat = x_i - t_i v`` for
pixel rewards) and returns ``x_{i+1} + dt * shift``: the same step as ``v~ = v - lambda g(t) grad`` in
:func:`mmreward.guidance.sampling.generate`. The first step has no previous latents unless the initial noise is
given (``latents=``, the tensor also passed to the pipeline); without it step 0 (pure noise) is left unguided.

The velocity is recovered from an Euler step, so the pipeline must use ``FlowMatchEulerDiscreteScheduler``
(SD3 and FLUX do; Wan checkpoints ship UniPC: call :func:`use_euler_scheduler` first). Not available as a
callback: ``through_model`` pixel guidance (it needs the transformer's graph, which the pipeline does not keep),
best-of-N (it compares whole runs) and search (it changes the batch mid-run); use
:func:`mmreward.guidance.sampling.generate` for those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from mmreward.errors import ConfigError
from mmreward.flow.models import ADAPTERS, FlowModel
from mmreward.guidance.objective import EvaluationCount, GuidanceObjective
from mmreward.guidance.sampling import (
    GuidanceSettings,
    check_gradient_method,
    reward_gradient,
    schedule_weight,
    velocity_shift,
)

PIPELINE_FAMILIES = {
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
    "WanPipeline": "wan",
    "QwenImagePipeline": "qwenimage",
    "ZImagePipeline": "zimage",
    "QwenImage21Pipeline": "qwenimage21",
}


def pipeline_family(pipeline: Any) -> str:
    """``sd3``, ``flux`` or ``wan`` for a supported pipeline (or a subclass of one)."""
    for cls in type(pipeline).__mro__:
        if cls.__name__ in PIPELINE_FAMILIES:
            return PIPELINE_FAMILIES[cls.__name__]
    raise ConfigError(
        f"{type(pipeline).__name__} is not supported; reward guidance callbacks work with "
        f"{', '.join(PIPELINE_FAMILIES)}"
    )


def use_euler_scheduler(pipeline: Any) -> None:
    """Replace the pipeline's scheduler by the Euler flow-matching one with the same shift (Wan ships UniPC)."""
    family = pipeline_family(pipeline)
    pipeline.scheduler = ADAPTERS[family](pipeline, device=pipeline.device)._flow_scheduler()


class RewardGuidanceCallback:
    """``callback_on_step_end`` doing Flow-NRG (``method="nrg"``) or pixel gradient guidance (``"pixel"``).

    Args:
        pipeline: the pipeline it will be passed to.
        objective: the rewards (latent rewards for nrg, differentiable pixel rewards for pixel).
        prompts: the prompt, or one per generated sample (the batch includes ``num_images_per_prompt``).
        guidance: scale, schedule and normalization (:class:`~mmreward.guidance.sampling.GuidanceSettings`).
        height, width, num_frames: the size passed to the pipeline (FLUX latents are packed; all families need it
            to check the rewards against the latent shape before sampling).
        latents: the initial noise passed to the pipeline, in the pipeline's layout, to guide step 0 as well.
    """

    tensor_inputs = ["latents"]

    def __init__(
        self,
        pipeline: Any,
        objective: GuidanceObjective,
        *,
        method: str,
        prompts: str | Sequence[str],
        height: int,
        width: int,
        num_frames: int | None = None,
        guidance: GuidanceSettings | None = None,
        latents: torch.Tensor | None = None,
    ) -> None:
        self.guidance = guidance or GuidanceSettings()
        if method not in ("nrg", "pixel"):
            raise ConfigError(
                f"method {method!r} cannot run as a step callback: best-of-N compares whole runs and search changes "
                "the batch mid-run; use mmreward.guidance.sampling.generate (or mmreward generate)"
            )
        if self.guidance.through_model:
            raise ConfigError(
                "through_model pixel guidance needs the transformer's graph, which a pipeline callback does not "
                "have; use mmreward.guidance.sampling.generate, or through_model=False here"
            )
        check_gradient_method(objective, method, self.guidance)
        scheduler = pipeline.scheduler
        if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler) or scheduler.config.get("stochastic_sampling"):
            raise ConfigError(
                f"the pipeline's scheduler is {type(scheduler).__name__}; reward guidance recovers the velocity from "
                "a deterministic Euler step: call mmreward.guidance.callback.use_euler_scheduler(pipe) first"
            )
        family = pipeline_family(pipeline)
        self.model: FlowModel = ADAPTERS[family](pipeline, device=pipeline.device)
        self.height, self.width = height, width
        self.objective = objective
        objective.check(self.model, self.model.latent_shape(1, height, width, num_frames)[1:])
        self.prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        self.initial = None if latents is None else self._unpack(latents)
        self.previous: torch.Tensor | None = None
        self.count = EvaluationCount()

    def _unpack(self, latents: torch.Tensor) -> torch.Tensor:
        """Pipeline layout -> the adapters' unpacked float32 latents (FLUX: (B, h/2 * w/2, 4C) -> (B, C, h, w))."""
        return self.model.from_pipeline_latents(latents, self.height, self.width).float()

    def _pack(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.to_pipeline_latents(latents)

    def __call__(self, pipeline: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        latents = callback_kwargs["latents"]
        x_next = self._unpack(latents)
        if step == 0:
            self.previous = None if self.initial is None else self.initial.to(x_next.device)
        scheduler = pipeline.scheduler
        # step_index was advanced by the step just taken: the step went from sigmas[index - 1] to sigmas[index].
        index = scheduler.step_index
        sigma, sigma_next = float(scheduler.sigmas[index - 1]), float(scheduler.sigmas[index])
        weight = self.guidance.scale * schedule_weight(sigma, self.guidance)
        if self.previous is not None and weight != 0:
            x, dt = self.previous, sigma_next - sigma
            velocity = (x_next - x) / dt  # the Euler update x' = x + dt v, inverted
            prompts = self.prompts * x.shape[0] if len(self.prompts) == 1 else self.prompts
            if len(prompts) != x.shape[0]:
                raise ConfigError(f"{len(self.prompts)} prompts for a batch of {x.shape[0]} samples")
            shifts = []
            chunk = self.guidance.grad_batch_size
            for s in range(0, x.shape[0], chunk):
                grad = reward_gradient(
                    self.model,
                    self.objective,
                    x[s : s + chunk],
                    sigma,
                    velocity[s : s + chunk],
                    prompts[s : s + chunk],
                    self.count,
                )
                shifts.append(velocity_shift(grad, sigma, self.guidance))
            x_next = x_next + dt * torch.cat(shifts)
        self.previous = x_next
        return {"latents": self._pack(x_next).to(latents.dtype)}

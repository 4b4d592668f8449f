"""Reward-guided sampling of rectified-flow generators, without training: gradient guidance, best-of-N, search.

Convention (diffusers / SD3): ``x_t = (1 - t) x0 + t eps``, the model predicts ``v ~ eps - x0``, Euler steps walk
the sigma grid from 1 down to 0 with ``dt < 0``: ``x <- x + dt v``. The predicted clean sample is
``x0_hat = x_t - t v``.

Methods
-------
``nrg`` (Flow-NRG, VideoAlign arXiv 2501.13918) and ``pixel`` shift the velocity at every step by the reward
gradient, ``v~ = v - lambda g(t) grad``, so the Euler step (``dt < 0``) moves *up* the reward:

- ``nrg``: ``grad = d/dx_t sum_k w_k r_k(x_t, t)`` of a latent, time-conditioned reward trained on noised latents
  (:mod:`mmreward.guidance.latent_reward`); no decode, no transformer backward.
- ``pixel``: ``grad = d/dx_t R(decode(x0_hat))`` for any differentiable reward ``R`` (``score_pixels``). By default
  the velocity is held fixed (``d x0_hat / d x_t = I``: one VAE decode + reward backward per step); with
  ``through_model`` the gradient also flows through ``v`` (one transformer backward per step, with gradient
  checkpointing to bound memory). Samples are decoded ``grad_batch_size`` at a time, each chunk's graph freed
  before the next, and the VAE checkpoints its blocks where diffusers supports it (SD3 / FLUX ``AutoencoderKL``).
- ``g(t)``: ``constant`` (default; the paper's schedule is not public), ``sigma`` (``t``: strong early),
  ``one_minus_sigma`` (strong late) or ``classifier`` (``t / (1 - t)``, clipped at ``max_weight``: the weight
  that makes the shift exact classifier guidance, since ``v = -(x_t + t grad log p_t(x_t)) / (1 - t)``).
- ``normalize`` (default on) rescales each sample's gradient to unit RMS before the shift, so ``lambda`` is in
  velocity units whatever the reward's scale; off, the shift is the paper's formula with the raw gradient.

``best-of-n`` draws ``N`` candidates from different seeds and keeps the one the objective scores highest on the
final sample (any reward, differentiable or not). ``search`` is successive halving on the trajectory: it starts
more candidates than best-of-N affords, and at the pruning steps (fractions ``prune_at`` of the schedule) scores
every candidate's predicted clean sample ``x0_hat`` (latent rewards score ``(x_t, t)`` directly) and keeps the
best ``keep`` fraction; the survivors run to the end and the best final sample wins.

The budget
----------
``budget`` counts **velocity evaluations per output**: one transformer forward pass on one sample (CFG's
negative and positive halves run as one batched pass and count once). ``K`` denoising steps cost ``K``. So
best-of-N uses ``N = budget // K`` candidates; search the largest starting population whose pruned trajectory
fits the budget (:func:`search_plan`); the gradient methods run ``budget // K`` guided candidates and keep the
best (one candidate when ``budget = K``). Transformer backward passes, VAE decodes and reward calls are counted
separately in :class:`~mmreward.guidance.objective.EvaluationCount`.

Editing families (``model.conditional``) edit one source image per output: the prompt and the negative prompt are
encoded with it (as :func:`mmreward.flow.rollout.sample` does), and rewards that declare ``uses_source`` score
every candidate against it.

Candidate ``c`` of an output with seed ``s`` starts from the noise of ``torch.Generator().manual_seed(s)`` for
``c = 0`` (the noise plain sampling with seed ``s`` draws) and of a generator seeded from ``(s, c)`` otherwise,
so the candidates of a smaller budget are a prefix of those of a larger one: more budget never lowers best-of-N.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from mmreward.errors import ConfigError
from mmreward.flow.models import FlowModel, PromptEmbeds
from mmreward.flow.rollout import decode_latents
from mmreward.guidance.objective import EvaluationCount, GuidanceObjective, Scores

Method = Literal["nrg", "pixel", "best-of-n", "search"]
METHODS = ("nrg", "pixel", "best-of-n", "search")  # also in mmreward.guidance.generate (kept import-light)
Schedule = Literal["constant", "sigma", "one_minus_sigma", "classifier"]
SCHEDULES = ("constant", "sigma", "one_minus_sigma", "classifier")


@dataclass
class SamplingSettings:
    """How every candidate is drawn (Euler ODE on the pipeline's own sigma grid)."""

    num_steps: int
    height: int
    width: int
    num_frames: int | None = None
    guidance_scale: float = 1.0  # classifier-free guidance (not reward guidance)
    negative_prompt: str = ""
    batch_size: int = 8  # candidates per transformer call


@dataclass
class GuidanceSettings:
    """The velocity shift ``v~ = v - scale * g(t) * grad`` of the gradient methods."""

    scale: float = 1.0
    schedule: Schedule = "constant"
    max_weight: float = 10.0  # clip of g(t) = t / (1 - t) for the classifier schedule
    normalize: bool = True  # unit-RMS gradient per sample before the shift
    through_model: bool = False  # pixel: backpropagate through the velocity too (one transformer backward a step)
    grad_batch_size: int = 4  # samples per decode + reward backward (bounds activation memory)
    gradient_checkpointing: bool = True  # recompute VAE (and, through_model, transformer) blocks in backward

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown guidance schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.grad_batch_size < 1 or self.max_weight <= 0:
            raise ConfigError(
                f"grad_batch_size must be >= 1 and max_weight > 0; got {self.grad_batch_size}, {self.max_weight}"
            )


@dataclass
class SearchSettings:
    prune_at: tuple[float, ...] = (0.25, 0.5)  # fractions of the steps at which candidates are pruned
    keep: float = 0.5  # fraction of candidates kept at each pruning step

    def __post_init__(self) -> None:
        if not 0 < self.keep < 1 or not self.prune_at or not all(0 <= f < 1 for f in self.prune_at):
            raise ConfigError(
                f"search needs 0 < keep < 1 and prune_at fractions in [0, 1); got keep={self.keep}, "
                f"prune_at={self.prune_at}"
            )


@dataclass
class Generation:
    """The chosen sample of one output and how it was found."""

    latents: torch.Tensor  # (1, *latent) final latents
    media: torch.Tensor  # (1, 3, H, W) or (1, T, 3, H, W), canonical, on the CPU
    scores: Scores  # the objective on the chosen sample (final, t = 0)
    candidate: int  # index of the chosen candidate
    started: int  # candidates started (search prunes some before the end)
    candidate_totals: list[float]  # objective totals of every finished candidate (NaN: failed)
    count: EvaluationCount = field(default_factory=EvaluationCount)


# ---------------------------------------------------------------------------------------------------- guidance


def schedule_weight(sigma: float, settings: GuidanceSettings) -> float:
    """``g(t)`` at noise level ``sigma`` (see the module docstring)."""
    if settings.schedule == "constant":
        return 1.0
    if settings.schedule == "sigma":
        return float(sigma)
    if settings.schedule == "one_minus_sigma":
        return 1.0 - float(sigma)
    return min(settings.max_weight, float(sigma) / max(1.0 - float(sigma), 1e-12))


def velocity_shift(grad: torch.Tensor, sigma: float, settings: GuidanceSettings) -> torch.Tensor:
    """``-scale * g(t) * grad`` (``grad`` rescaled to unit RMS per sample when ``normalize``): add it to ``v``."""
    grad = grad.float()
    if settings.normalize:
        rms = grad.pow(2).mean(dim=tuple(range(1, grad.ndim)), keepdim=True).sqrt()  # (B, 1, ...)
        grad = grad / (rms + 1e-12)
    return -settings.scale * schedule_weight(sigma, settings) * grad


def reward_gradient(
    model: FlowModel,
    objective: GuidanceObjective,
    latents: torch.Tensor,
    sigma: float,
    velocity: torch.Tensor,
    prompts: Sequence[str],
    count: EvaluationCount,
) -> torch.Tensor:
    """``d objective / d x_t`` with the velocity held fixed (``x0_hat = x_t - t v``, ``d x0_hat / d x_t = I``)."""
    with torch.enable_grad():
        x = latents.detach().float().requires_grad_(True)
        value = objective.value(model, x, sigma, x - sigma * velocity.detach().float(), prompts, count)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return grad


# ---------------------------------------------------------------------------------------------------- sampling


def candidate_noise(model: FlowModel, settings: SamplingSettings, seed: int, candidates: Sequence[int]):
    """``(len(candidates), *latent)`` float32 initial noise on the CPU (see the module docstring for seeding)."""
    shape = model.latent_shape(1, settings.height, settings.width, settings.num_frames)[1:]
    parts = []
    for c in candidates:
        if c == 0:
            generator = torch.Generator().manual_seed(seed)
        else:
            digest = hashlib.sha256(f"{seed}/{c}".encode()).hexdigest()
            generator = torch.Generator().manual_seed(int(digest[:15], 16))
        parts.append(torch.randn(shape, generator=generator, dtype=torch.float32))
    return torch.stack(parts)


class _Conditioning:
    """Prompt (and negative) embeddings for ``n`` samples of one prompt (and its source image, when editing)."""

    def __init__(
        self, model: FlowModel, prompt: str, settings: SamplingSettings, source: torch.Tensor | None = None
    ) -> None:
        # image-to-video conditions at the output size; the other families do not read it
        at = {
            "sources": None if source is None else [source],
            "size": (settings.height, settings.width, settings.num_frames),
        }
        self.cond = model.encode_prompts([prompt], **at)
        use_cfg = settings.guidance_scale > 1.0 and model.batch_cfg
        self.negative = model.encode_prompts([settings.negative_prompt], **at) if use_cfg else None

    def repeat(self, n: int) -> tuple[PromptEmbeds, PromptEmbeds | None]:
        negative = None if self.negative is None else self.negative.repeat_interleave(n)
        return self.cond.repeat_interleave(n), negative


def guided_velocity(
    model: FlowModel,
    latents: torch.Tensor,
    sigma: float,
    prompt: str,
    conditioning: _Conditioning,
    sampling: SamplingSettings,
    count: EvaluationCount,
    objective: GuidanceObjective,
    guidance: GuidanceSettings | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v, v~)`` for a batch of one prompt's candidates: the model's velocity and the guided one (equal when
    no gradient guidance is asked, or ``g(t) = 0``). Velocities run ``sampling.batch_size`` samples per
    transformer call, gradients ``guidance.grad_batch_size`` per decode + backward (both, through the model)."""
    weight = 0.0 if guidance is None else guidance.scale * schedule_weight(sigma, guidance)
    through_model = weight != 0 and guidance.through_model
    chunk = min(sampling.batch_size, guidance.grad_batch_size) if through_model else sampling.batch_size
    velocities, grads = [], []
    for start in range(0, latents.shape[0], chunk):
        x = latents[start : start + chunk]
        cond, negative = conditioning.repeat(x.shape[0])
        count.forward += x.shape[0]
        with torch.enable_grad() if through_model else torch.no_grad():
            x_in = x.detach().float().requires_grad_(through_model)
            v = model.velocity(x_in, sigma, cond, guidance_scale=sampling.guidance_scale, negative=negative).float()
            if through_model:
                value = objective.value(model, x_in, sigma, x_in - sigma * v, [prompt] * x.shape[0], count)
                grads.append(torch.autograd.grad(value.sum(), x_in)[0])
                count.backward += x.shape[0]
        velocities.append(v.detach())
    v = torch.cat(velocities)
    if weight == 0:
        return v, v
    if not through_model:
        step = guidance.grad_batch_size
        grads = [
            reward_gradient(
                model,
                objective,
                latents[s : s + step],
                sigma,
                v[s : s + step],
                [prompt] * latents[s : s + step].shape[0],
                count,
            )
            for s in range(0, latents.shape[0], step)
        ]
    return v, v + velocity_shift(torch.cat(grads), sigma, guidance)


def prepare_checkpointing(model: FlowModel, guidance: GuidanceSettings | None) -> None:
    """Gradient checkpointing where gradients will flow: the VAE decoder (when diffusers supports it for this VAE)
    and, for ``through_model``, the transformer. Plain (no-grad) calls are unaffected."""
    if guidance is None or not guidance.gradient_checkpointing:
        return
    if getattr(model.vae, "_supports_gradient_checkpointing", False):
        model.vae.enable_gradient_checkpointing()
    if guidance.through_model:
        model.transformer.enable_gradient_checkpointing()


def _select_best(totals: torch.Tensor) -> int:
    """Index of the highest total; failed (NaN) candidates never win unless all failed (then the first)."""
    finite = torch.where(torch.isnan(totals), torch.full_like(totals, -math.inf), totals)
    return int(finite.argmax())


def _trajectory(
    model: FlowModel,
    prompt: str,
    noise: torch.Tensor,
    sampling: SamplingSettings,
    count: EvaluationCount,
    objective: GuidanceObjective,
    *,
    guidance: GuidanceSettings | None = None,
    prune: dict[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
    source: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run candidates from ``noise`` to ``t = 0``; returns ``(final latents, indices of the survivors)``.

    ``prune[i] = n``: at step ``i`` score every candidate's ``x0_hat`` (from the velocity just computed) and keep
    the best ``n`` before stepping.
    """
    sigmas = model.sampling_sigmas(sampling.num_steps, (1, *noise.shape[1:]))
    conditioning = _Conditioning(model, prompt, sampling, source)

    def finish(latents: torch.Tensor) -> torch.Tensor:
        """Latents as the pipeline decodes them (Wan2.2 TI2V-5B with an image: its latents in the first frame)."""
        return model.final_latents(latents, conditioning.cond.repeat_interleave(latents.shape[0]))

    x = noise.to(model.device)
    alive = torch.arange(noise.shape[0])
    for i in range(sampling.num_steps):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        v, v_guided = guided_velocity(
            model, x, sigma, prompt, conditioning, sampling, count, objective, guidance=guidance
        )
        if progress is not None:
            progress(x.shape[0])
        if prune and i in prune and prune[i] < x.shape[0]:
            scores = _score_in_chunks(
                model, objective, x, sigma, v, prompt, sampling.batch_size, count, source=source, finish=finish
            )
            finite = torch.where(scores.failed, torch.full_like(scores.total, -math.inf), scores.total)
            keep = torch.argsort(finite, descending=True, stable=True)[: prune[i]].sort().values
            x, v_guided, alive = x[keep.to(x.device)], v_guided[keep.to(x.device)], alive[keep]
        x = x + (sigma_next - sigma) * v_guided
    return finish(x), alive


def _score_in_chunks(
    model: FlowModel,
    objective: GuidanceObjective,
    latents: torch.Tensor,
    sigma: float,
    velocity: torch.Tensor,
    prompt: str,
    chunk: int,
    count: EvaluationCount,
    media: torch.Tensor | None = None,
    source: torch.Tensor | None = None,
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Scores:
    """Scores of ``x0_hat = x - sigma v`` in chunks (``finish``: what the sampler does to final latents)."""
    parts = []
    for s in range(0, latents.shape[0], chunk):
        x, v = latents[s : s + chunk], velocity[s : s + chunk]
        decoded = None if media is None else media[s : s + chunk]
        clean = x - sigma * v
        if finish is not None:
            clean = finish(clean)
        parts.append(
            objective.score(model, x, sigma, clean, [prompt] * x.shape[0], count, media=decoded, source=source)
        )
    failed = torch.cat([p.failed for p in parts])
    names = parts[0].parts.keys()
    return Scores(
        torch.cat([p.total for p in parts]),
        {k: torch.cat([p.parts[k] for p in parts]) for k in names},
        failed,
        [e for p in parts for e in p.errors],
    )


def search_plan(budget: int, num_steps: int, search: SearchSettings) -> tuple[int, dict[int, int]]:
    """The largest starting population whose pruned trajectory costs at most ``budget`` velocity evaluations,
    and the pruning schedule ``{step: survivors}``.

    Pruning at step ``c`` happens after the velocities of step ``c`` are computed (they give ``x0_hat``), so
    with pruning steps ``c_1 < ... < c_m`` and populations ``n_0 > n_1 > ...`` the cost is
    ``n_0 (c_1 + 1) + n_1 (c_2 - c_1) + ... + n_m (K - 1 - c_m)``, with ``n_j = max(1, ceil(keep n_{j-1}))``.
    """
    if budget < num_steps:
        raise ConfigError(f"budget {budget} is below one trajectory ({num_steps} velocity evaluations)")
    checkpoints = sorted({min(num_steps - 1, round(f * num_steps)) for f in search.prune_at})

    def plan(n: int) -> tuple[int, dict[int, int]]:
        cost, previous, population, schedule = 0, -1, n, {}
        for c in checkpoints:
            cost += population * (c - previous)
            population = max(1, math.ceil(search.keep * population))
            schedule[c], previous = population, c
        return cost + population * (num_steps - 1 - previous), schedule

    n = 1
    while plan(n + 1)[0] <= budget:
        n += 1
    return n, plan(n)[1]


def generate(
    model: FlowModel,
    prompt: str,
    objective: GuidanceObjective,
    method: Method,
    *,
    budget: int,
    seed: int,
    sampling: SamplingSettings,
    guidance: GuidanceSettings | None = None,
    search: SearchSettings | None = None,
    progress: Callable[[int], None] | None = None,
    source: torch.Tensor | None = None,
) -> Generation:
    """One output for ``prompt`` with ``method`` under ``budget`` velocity evaluations (module docstring).

    ``progress(n)`` is called after every step with the number of velocity evaluations it spent. ``source``: the
    canonical image ``(3, H, W)`` an editing family edits (required for those, refused for the others).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    steps = sampling.num_steps
    if budget < steps:
        raise ConfigError(f"budget {budget} is below one trajectory of {steps} steps ({steps} velocity evaluations)")
    model.check_sources(1, None if source is None else [source])
    count = EvaluationCount()
    shape = model.latent_shape(1, sampling.height, sampling.width, sampling.num_frames)[1:]
    objective.check(model, shape)
    gradient_method = method in ("nrg", "pixel")
    if gradient_method:
        guidance = guidance or GuidanceSettings()
        check_gradient_method(objective, method, guidance)
        prepare_checkpointing(model, guidance)
    prune: dict[int, int] = {}
    if method == "search":
        population, prune = search_plan(budget, steps, search or SearchSettings())
    else:
        population = budget // steps
    noise = candidate_noise(model, sampling, seed, range(population))
    final, alive = _trajectory(
        model,
        prompt,
        noise,
        sampling,
        count,
        objective,
        guidance=guidance if gradient_method else None,
        prune=prune,
        progress=progress,
        source=source,
    )
    media = decode_latents(model, final, sampling.batch_size).cpu()
    count.decode += final.shape[0]
    zero = torch.zeros_like(final)  # at t = 0 the predicted clean sample is the sample
    scores = _score_in_chunks(
        model, objective, final, 0.0, zero, prompt, sampling.batch_size, count, media=media, source=source
    )
    best = _select_best(scores.total)
    return Generation(
        latents=final[best : best + 1].cpu(),
        media=media[best : best + 1],
        scores=scores.select(torch.tensor([best])),
        candidate=int(alive[best]),
        started=population,
        candidate_totals=scores.total.tolist(),
        count=count,
    )


def check_gradient_method(objective: GuidanceObjective, method: str, guidance: GuidanceSettings) -> None:
    """The rewards a gradient method needs: latent rewards only for ``nrg``, differentiable pixel rewards only
    for ``pixel`` (``through_model`` is a pixel option)."""
    if method == "nrg":
        if objective.pixel_terms:
            raise ConfigError(
                f"method nrg guides with latent rewards (align/train_latent_reward.py); "
                f"{[t.name for t in objective.pixel_terms]} are pixel rewards: use --method pixel for "
                "differentiable ones, or best-of-n / search for any reward"
            )
        if guidance.through_model:
            raise ConfigError("through_model is a pixel-guidance option (nrg never calls the transformer backward)")
    elif method == "pixel":
        if objective.latent_terms:
            raise ConfigError(
                f"method pixel guides with pixel rewards; {[t.name for t in objective.latent_terms]} are latent "
                "rewards: use --method nrg"
            )
        with_source = [t.name for t in objective.pixel_terms if t.reward.uses_source]
        if with_source:
            raise ConfigError(
                f"reward(s) {with_source} compare an edit with its source, which gradient guidance cannot pass "
                "(score_pixels sees the edit alone); use --method best-of-n or search with them"
            )
        not_differentiable = [t.name for t in objective.pixel_terms if not t.differentiable]
        if not_differentiable:
            raise ConfigError(
                f"reward(s) {not_differentiable} are not differentiable (no score_pixels), so they cannot give "
                "gradient guidance; use --method best-of-n or search with them, or a differentiable reward "
                "(mmreward list shows which are)"
            )

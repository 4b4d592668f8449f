"""Sampling rectified-flow generators with per-step log-probabilities: the rollout that DPO, RWR and GRPO share.

``sample(model, prompts, group_size=G, ...)`` draws ``G`` images or videos per prompt. Steps inside the SDE window
are stochastic (``sde_type`` ``flow``/``dance``/``cps`` with ``noise_level``) and record the latents before and
after the step and the step's log-probability under the sampling policy; steps outside are plain Euler. A full
window is Flow-GRPO; a short one (1-3 steps early in the schedule) is Flow-GRPO-Fast (:func:`random_sde_window`, a
new place every iteration) or MixGRPO (:func:`sliding_sde_window`, a window that slides over the schedule as training
goes on); ``sde_type="ode"`` (or :func:`sample_ode`) is deterministic sampling for evaluation.

The :class:`Rollout` holds everything a policy-gradient update needs: prompts and their group index, the prompt
and negative embeddings used, the sigma grid and which steps were stochastic, per-step latents, next latents and
log-probabilities, the final latents and (optionally) the decoded media. :func:`policy_step` recomputes one
stored step under the current weights; with unchanged weights its log-probability equals the stored one, which
is the "ratio == 1" check of on-policy training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmreward.errors import ConfigError
from mmreward.flow.models import CFGGrad, FlowModel, PromptEmbeds
from mmreward.flow.sde import LOG_PROB_KINDS, SDE_TYPES, LogProbKind, SDEStep, SDEType, sde_step


@dataclass
class Rollout:
    """Samples of ``B = P * G`` items (prompt-major: all samples of prompt 0, then prompt 1, ...).

    Attributes:
        prompts: ``B`` prompts, one per sample.
        group: ``(B,)`` long, the index of each sample's prompt (samples with equal index form a group).
        cond, negative: prompt embeddings ``(B, ...)`` used, and negative ones when CFG was on (else None).
        guidance_scale, sde_type, noise_level: how the samples were drawn.
        log_prob_kind: what ``log_probs`` hold (``"gaussian"`` or the CPS ``"surrogate"``, see
            :mod:`mmreward.flow.sde`); :func:`policy_step` recomputes the same kind.
        sigmas: ``(K + 1,)`` float32 grid, 1 down to 0.
        sde_steps: ``(S,)`` long, indices ``i`` of the stochastic steps (sigma ``sigmas[i] -> sigmas[i + 1]``).
        latents: ``(B, S, *latent)`` float32, the latents at the start of each stochastic step.
        next_latents: ``(B, S, *latent)`` float32, the latents each stochastic step produced.
        log_probs: ``(B, S)`` float32, their log-probabilities under the sampling policy.
        final: ``(B, *latent)`` float32, the clean latents ``x0``.
        media: decoded ``final`` (canonical media on the model's device) or None.
        means: ``(B, S, *latent)`` float32, the mean of each stochastic step under the sampling policy (recorded on
            request: GRPO-Guard's RatioNorm compares the current policy's mean with it), or None.
        sources: editing families: ``B`` canonical source images ``(3, H, W)``, one per sample (what rewards that
            compare the edit with its source are given); None for text-to-media families. The transformer's view of
            them (VAE latents) travels in ``cond.image_latents``.
    """

    prompts: list[str]
    group: torch.Tensor
    cond: PromptEmbeds
    negative: PromptEmbeds | None
    guidance_scale: float
    sde_type: str
    noise_level: float
    sigmas: torch.Tensor
    sde_steps: torch.Tensor
    latents: torch.Tensor
    next_latents: torch.Tensor
    log_probs: torch.Tensor
    final: torch.Tensor
    media: torch.Tensor | None = None
    log_prob_kind: LogProbKind = "gaussian"
    means: torch.Tensor | None = None
    sources: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def step_sigmas(self) -> torch.Tensor:
        """``(S,)`` noise level at the start of each stochastic step."""
        return self.sigmas[self.sde_steps]

    @property
    def step_sigmas_next(self) -> torch.Tensor:
        """``(S,)`` noise level at the end of each stochastic step."""
        return self.sigmas[self.sde_steps + 1]


def seeded(*parts: object) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (seed, rank, step, sample index, ...): randomness that a resumed run,
    or the same run on another number of processes, reproduces."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return torch.Generator().manual_seed(int(digest[:15], 16))


def default_sde_window(num_steps: int, sde_type: str) -> tuple[int, int]:
    """All steps, except the last one for CPS (its noise is ``sigma_next * sin(.) = 0`` there: no density)."""
    if sde_type == "ode":
        return (0, 0)
    return (0, num_steps - 1) if sde_type == "cps" else (0, num_steps)


def random_sde_window(
    num_steps: int, size: int, within: tuple[int, int], generator: torch.Generator | None = None
) -> tuple[int, int]:
    """A random contiguous window of ``size`` steps inside ``[within[0], within[1])`` (Flow-GRPO-Fast uses
    ``size`` 1-3 within the first half of the schedule)."""
    low, high = within
    if not 0 <= low < high <= num_steps or not 1 <= size <= high - low:
        raise ConfigError(
            f"cannot place an SDE window of {size} steps inside [{low}, {high}) of {num_steps} steps; need "
            "0 <= low < high <= num_steps and 1 <= size <= high - low"
        )
    start = low + int(torch.randint(0, high - low - size + 1, (1,), generator=generator))
    return (start, start + size)


def sliding_sde_window(
    iteration: int, size: int, within: tuple[int, int], *, shift_every: int, stride: int, roll_back: bool = True
) -> tuple[int, int]:
    """MixGRPO's sliding SDE window (arXiv 2507.21802; Tencent-Hunyuan/MixGRPO ``GRPOTrainingStates``, strategy
    ``progressive``): the window of iteration ``iteration`` (0-based) inside ``within = [low, high)``.

    The window starts at ``low`` and moves ``stride`` steps later every ``shift_every`` iterations (MixGRPO's
    ``iters_per_group``; ``stride`` is ``prog_overlap_step``, or ``size`` for its non-overlapping mode), so iteration
    ``k`` has made ``m = k // shift_every`` moves. Its start is ``low + m' stride`` and its end
    ``min(start + size, high)`` (it shrinks at the end of the range, as MixGRPO's). The possible starts are those
    below ``high``: ``M = ceil((high - low) / stride)`` of them; past the last, ``roll_back`` starts again at ``low``
    (``m' = m mod M``, MixGRPO's ``--roll_back``), otherwise the window stays at the last start (``m' = min(m, M-1)``).

    E.g. size 4, every 25 iterations, stride 1, within [0, 23) (MixGRPO's FLUX script, 25 steps): iterations 0-24
    use (0, 4), 25-49 (1, 5), ..., 500-524 (20, 23), 550-574 (22, 23), then (0, 4) again.

    Deliberate difference: MixGRPO's state machine also visits the start ``high`` itself, an empty window that trains
    nothing for ``shift_every`` iterations (stride 1 always reaches it; with ``roll_back`` off it stays there); the
    window here always holds at least one step.
    """
    low, high = within
    if not 0 <= low < high or size < 1 or shift_every < 1 or stride < 1 or iteration < 0:
        raise ConfigError(
            f"a sliding SDE window needs 0 <= low < high (got [{low}, {high})), size >= 1 (got {size}), "
            f"shift_every >= 1 (got {shift_every}), stride >= 1 (got {stride}) and iteration >= 0 (got {iteration})"
        )
    starts = -(-(high - low) // stride)  # ceil: the starts low, low + stride, ... below high
    moves = iteration // shift_every
    move = moves % starts if roll_back else min(moves, starts - 1)
    start = low + move * stride
    return (start, min(start + size, high))


def check_sde_window(window: tuple[int, int], num_steps: int, sde_type: str) -> None:
    start, end = window
    if sde_type not in SDE_TYPES:
        raise ConfigError(f"unknown sde_type {sde_type!r}; use one of {', '.join(SDE_TYPES)}")
    if not 0 <= start <= end <= num_steps:
        raise ConfigError(f"SDE window {window} must satisfy 0 <= start <= end <= num_steps ({num_steps})")
    if sde_type == "cps" and end == num_steps:
        raise ConfigError(
            f"SDE window {window} includes the last step, where CPS noise is zero (sigma_next = 0) and a step has "
            f"no log-probability; end the window at {num_steps - 1} at most"
        )


@torch.no_grad()
def sample(
    model: FlowModel,
    prompts: Sequence[str],
    *,
    group_size: int = 1,
    num_steps: int,
    height: int,
    width: int,
    num_frames: int | None = None,
    guidance_scale: float = 1.0,
    negative_prompt: str = "",
    sde_type: SDEType = "flow",
    noise_level: float = 0.7,
    sde_window: tuple[int, int] | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    decode: bool = True,
    batch_size: int | None = None,
    transformer: torch.nn.Module | None = None,
    cps_log_prob: LogProbKind = "surrogate",
    initial_noise: torch.Tensor | None = None,
    record_means: bool = False,
    sources: Sequence[torch.Tensor] | None = None,
) -> Rollout:
    """Draw ``group_size`` samples for each prompt; see the module docstring.

    Args:
        sde_window: ``(start, end)`` step indices that are stochastic (default: :func:`default_sde_window`).
        generator: source of the initial noise and of the SDE noise (a CPU generator gives the same samples on
            any device); a list gives one generator per sample (``len(prompts) * group_size``), so that a sample
            does not depend on which other samples share its batch or process.
        batch_size: samples per transformer call (default: all at once).
        transformer: the module to call (e.g. the accelerate-wrapped one); default ``model.transformer``.
        cps_log_prob: the log-probability a CPS rollout records: ``"surrogate"`` ``-mean((x' - mean)^2)`` (Flow-GRPO's
            and Adv-GRPO's CPS recipes) or ``"gaussian"`` (the log-density); other SDEs record the log-density.
        initial_noise: ``(len(prompts) * group_size, *latent)`` starting latents at sigma 1 (e.g. one noise shared
            by a group); default drawn from ``generator``.
        record_means: also keep each stochastic step's mean (``Rollout.means``; the memory of ``latents`` again).
        sources: editing and image-to-video families: one canonical source image ``(3, H, W)`` per prompt (shared
            by its group); the prompt and the negative prompt are encoded with it (:meth:`FlowModel.encode_prompts`).
    Mixed precision is the caller's: wrap the call in ``accelerator.autocast()``; the SDE math is float32.
    """
    if group_size < 1:
        raise ConfigError(f"group_size must be >= 1, got {group_size}")
    if cps_log_prob not in LOG_PROB_KINDS:
        raise ConfigError(f"cps_log_prob must be one of {', '.join(LOG_PROB_KINDS)}, got {cps_log_prob!r}")
    log_prob_kind = cps_log_prob if sde_type == "cps" else "gaussian"
    window = default_sde_window(num_steps, sde_type) if sde_window is None else tuple(sde_window)
    check_sde_window(window, num_steps, sde_type)
    model.check_sources(len(prompts), sources)
    prompt_list = [p for p in prompts for _ in range(group_size)]
    source_list = None if sources is None else [s for s in sources for _ in range(group_size)]
    total = len(prompt_list)
    shape = model.latent_shape(total, height, width, num_frames)
    sigmas = model.sampling_sigmas(num_steps, shape)
    size = (height, width, num_frames)  # image-to-video conditions on its source at the output size
    cond = model.encode_prompts(prompt_list, sources=source_list, size=size)
    use_cfg = guidance_scale > 1.0 and model.batch_cfg
    negative = model.encode_prompts([negative_prompt] * total, sources=source_list, size=size) if use_cfg else None
    per_sample = isinstance(generator, (list, tuple))
    if per_sample and len(generator) != total:
        raise ValueError(f"got {len(generator)} generators for {total} samples; pass one per sample or a single one")
    # Initial noise drawn on the CPU from the generator(s), so samples do not depend on the device.
    if initial_noise is not None:
        if tuple(initial_noise.shape) != tuple(shape):
            raise ValueError(f"initial_noise {tuple(initial_noise.shape)} must have the latent shape {tuple(shape)}")
        latents = initial_noise.float()
    elif per_sample:
        latents = torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float32) for g in generator])
    else:
        latents = torch.randn(shape, generator=generator, dtype=torch.float32)
    latents = latents.to(model.device)
    sde_steps = torch.arange(window[0], window[1])
    chunk = batch_size or total
    stored, stored_next, stored_logp, stored_means = [], [], [], []
    for i in range(num_steps):
        stochastic = window[0] <= i < window[1]
        step_type = sde_type if stochastic else "ode"
        parts: list[SDEStep] = []
        for start in range(0, total, chunk):
            rows = slice(start, start + chunk)
            index = torch.arange(total)[rows]
            velocity = model.velocity(
                latents[rows],
                sigmas[i],
                cond.select(index),
                guidance_scale=guidance_scale,
                negative=negative.select(index) if negative is not None else None,
                transformer=transformer,
            )
            noise_gen = (list(generator[rows]) if per_sample else generator) if stochastic else None
            parts.append(
                sde_step(
                    velocity,
                    latents[rows],
                    sigmas[i],
                    sigmas[i + 1],
                    noise_level=noise_level,
                    sde_type=step_type,
                    generator=noise_gen,
                    log_prob_kind=log_prob_kind,
                )
            )
        next_latents = torch.cat([p.prev_sample for p in parts])
        if stochastic:
            stored.append(latents)
            stored_next.append(next_latents)
            stored_logp.append(torch.cat([p.log_prob for p in parts]))
            if record_means:
                stored_means.append(torch.cat([p.mean for p in parts]))
        latents = next_latents
    latents = model.final_latents(latents, cond)
    empty = torch.zeros(total, 0, *shape[1:], device=model.device)
    return Rollout(
        prompts=prompt_list,
        group=torch.arange(len(prompts)).repeat_interleave(group_size),
        cond=cond,
        negative=negative,
        guidance_scale=guidance_scale,
        sde_type=sde_type,
        noise_level=noise_level,
        sigmas=sigmas,
        sde_steps=sde_steps,
        latents=torch.stack(stored, dim=1) if stored else empty,  # (B, S, *latent)
        next_latents=torch.stack(stored_next, dim=1) if stored else empty,
        log_probs=torch.stack(stored_logp, dim=1) if stored else torch.zeros(total, 0, device=model.device),
        final=latents,
        media=decode_latents(model, latents, chunk) if decode else None,
        log_prob_kind=log_prob_kind,
        means=(torch.stack(stored_means, dim=1) if stored else empty) if record_means else None,
        sources=source_list,
    )


def decode_latents(model: FlowModel, latents: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Canonical media of ``latents``, ``batch_size`` items per VAE call, in the VAE's own precision (a caller's
    autocast does not apply: rewards see what the released pipeline would produce)."""
    with torch.autocast(latents.device.type, enabled=False):
        parts = [model.decode_latents(latents[i : i + batch_size]) for i in range(0, len(latents), batch_size)]
    return torch.cat(parts)


def sample_ode(model: FlowModel, prompts: Sequence[str], **kwargs) -> Rollout:
    """Deterministic Euler sampling (evaluation); same arguments as :func:`sample` without the SDE ones."""
    return sample(model, prompts, sde_type="ode", **kwargs)


def policy_step(
    model: FlowModel,
    rollout: Rollout,
    j: int,
    *,
    rows: torch.Tensor | Sequence[int] | None = None,
    transformer: torch.nn.Module | None = None,
    guidance_scale: float | None = None,
    cfg_grad: CFGGrad = "both",
) -> SDEStep:
    """Re-evaluate stored stochastic step ``j`` (of ``rollout.sde_steps``) under the current weights.

    Returns the :class:`SDEStep` whose ``log_prob`` is ``log pi_theta(next_latents[:, j] | latents[:, j])`` and
    whose ``mean`` carries gradients (call it with grad enabled). ``rows`` selects samples (default: all).
    ``guidance_scale`` overrides the rollout's (e.g. 1.0 for a CFG-free training forward; the log-probability is
    then that of the conditional policy, which equals the sampling policy only if the rollout had no CFG either).
    ``cfg_grad``: where the gradient of a CFG forward flows (:meth:`FlowModel.velocity`); values do not change.
    """
    index = torch.arange(len(rollout)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    i = int(rollout.sde_steps[j])
    sigma, sigma_next = rollout.sigmas[i], rollout.sigmas[i + 1]
    latents = rollout.latents[index.to(rollout.latents.device), j]
    scale = rollout.guidance_scale if guidance_scale is None else guidance_scale
    use_negative = rollout.negative is not None and scale > 1.0
    velocity = model.velocity(
        latents,
        sigma,
        rollout.cond.select(index),
        guidance_scale=scale,
        negative=rollout.negative.select(index) if use_negative else None,
        transformer=transformer,
        cfg_grad=cfg_grad,
    )
    return sde_step(
        velocity,
        latents,
        sigma,
        sigma_next,
        noise_level=rollout.noise_level,
        sde_type=rollout.sde_type,
        prev_sample=rollout.next_latents[index.to(rollout.next_latents.device), j],
        log_prob_kind=rollout.log_prob_kind,
    )

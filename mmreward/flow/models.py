"""Rectified-flow generators on diffusers pipelines: one small adapter per family (``sd3``, ``flux``, ``wan``,
``qwenimage``, ``zimage``, ``flux2klein``).

An adapter hides what differs between families behind one interface used by rollouts and losses:

- ``encode_prompts(prompts) -> PromptEmbeds`` with an embedding cache (text encoders can then be offloaded);
- ``latent_shape(batch, height, width, num_frames)``: latents are always kept *unpacked*, ``(B, C, h, w)`` for
  images and ``(B, C, t, h, w)`` for Wan videos; FLUX packs its 2x2 patches inside :meth:`FlowModel.velocity`
  (packing is a reshape, so per-element means and SDE log-probabilities do not change);
- ``velocity(latents, sigma, cond, guidance_scale=, negative=)``: one transformer call, classifier-free guidance as
  one batch ``[negative; positive]`` (FLUX.1-dev is guidance-distilled: its scale goes into the guidance embedding;
  Qwen-Image rescales the guided velocity to the conditional one's norm, :meth:`FlowModel.guide`);
  ``guidance_scale`` is always ``w`` of ``v_neg + w (v_pos - v_neg)`` (1: no guidance), whatever the pipeline calls
  it (:meth:`FlowModel.pipeline_guidance_kwargs` translates);
- ``to_pipeline_latents`` / ``from_pipeline_latents``: the adapter's unpacked latents to and from the layout the
  pipeline samples in (its ``latents=`` argument and the latents its step callbacks see; FLUX and Qwen-Image pack
  2x2 patches, FLUX.2 packs its patchified latents);
- ``encode_media`` / ``decode_latents``: VAE, to and from canonical media (float [0, 1], images ``(B, 3, H, W)``,
  videos ``(B, T, 3, H, W)``);
- ``sampling_sigmas(num_steps, latent_shape)`` (the pipeline's own schedule, FLUX's resolution shift included) and
  ``training_sigmas(u)`` (the 1000-step training grid indexed by ``u`` in [0, 1)).

``load_flow_model(family, path)`` loads a hub id or local directory with the diffusers pipeline class;
``path="tiny"`` builds the tiny random pipeline of :func:`mmreward.tiny_models.tiny_pipeline` for CPU runs.
"""

from __future__ import annotations

import importlib.util
import json
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from mmreward.devices import resolve_dtype
from mmreward.errors import ConfigError, WeightsNotFoundError

Family = Literal["sd3", "flux", "wan", "qwenimage", "zimage", "flux2klein"]
FAMILIES = ("sd3", "flux", "wan", "qwenimage", "zimage", "flux2klein")
VIDEO_FAMILIES = ("wan",)
Attention = Literal["auto", "sdpa", "xformers"]
CFGGrad = Literal["detach_uncond", "both"]
CFG_GRADS = ("detach_uncond", "both")

# Attention projections of the joint (MM-DiT) and cross/self attention blocks: the LoRA targets Flow-GRPO and
# the diffusers LoRA scripts use. Names absent from a family (Wan has no add_*_proj) are simply not matched.
DEFAULT_LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
)


@dataclass
class PromptEmbeds:
    """Text conditioning of a batch: ``embeds (B, L, D)``, for SD3 and FLUX ``pooled (B, P)``, and for families
    whose prompts have their own lengths (Qwen-Image, Z-Image) ``mask (B, L)`` bool, True at real tokens (None:
    every token is real). Padded positions hold zeros."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptEmbeds:
        pooled = None if self.pooled is None else self.pooled.to(device, dtype)
        mask = None if self.mask is None else self.mask.to(device)
        return PromptEmbeds(self.embeds.to(device, dtype), pooled, mask)

    def select(self, index: torch.Tensor | Sequence[int]) -> PromptEmbeds:
        index = torch.as_tensor(index, dtype=torch.long, device=self.embeds.device)
        pooled = None if self.pooled is None else self.pooled.index_select(0, index.to(self.pooled.device))
        mask = None if self.mask is None else self.mask.index_select(0, index.to(self.mask.device))
        return PromptEmbeds(self.embeds.index_select(0, index), pooled, mask)

    def repeat_interleave(self, repeats: int) -> PromptEmbeds:
        pooled = None if self.pooled is None else self.pooled.repeat_interleave(repeats, 0)
        mask = None if self.mask is None else self.mask.repeat_interleave(repeats, 0)
        return PromptEmbeds(self.embeds.repeat_interleave(repeats, 0), pooled, mask)

    def trimmed(self) -> PromptEmbeds:
        """One prompt (``B = 1``) cut to its real tokens, mask dropped: what the prompt cache keeps, so a cached
        embedding does not depend on which prompts shared its encoder batch."""
        if len(self) != 1:
            raise ValueError(f"trimmed() takes one prompt, got {len(self)}")
        if self.mask is None:
            return self
        length = int(self.mask[0].sum())
        return PromptEmbeds(self.embeds[:, :length], self.pooled)

    def token_list(self) -> list[torch.Tensor]:
        """The real tokens of each prompt, ``B`` tensors ``(L_i, D)`` (Z-Image's transformer takes them so)."""
        if self.mask is None:
            return list(self.embeds.unbind(0))
        return [e[m] for e, m in zip(self.embeds, self.mask.bool(), strict=True)]

    @staticmethod
    def cat(parts: Sequence[PromptEmbeds]) -> PromptEmbeds:
        """Concatenate along the batch; prompts of different lengths are right-padded with zeros and masked."""
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        length = max(p.embeds.shape[1] for p in parts)
        if all(p.mask is None and p.embeds.shape[1] == length for p in parts):
            return PromptEmbeds(torch.cat([p.embeds for p in parts]), pooled)
        embeds, masks = [], []
        for p in parts:
            pad = length - p.embeds.shape[1]
            mask = p.mask if p.mask is not None else torch.ones(p.embeds.shape[:2], dtype=torch.bool)
            embeds.append(torch.nn.functional.pad(p.embeds, (0, 0, 0, pad)))  # (B_p, length, D)
            masks.append(torch.nn.functional.pad(mask.bool().to(p.embeds.device), (0, pad)))  # (B_p, length)
        return PromptEmbeds(torch.cat(embeds), pooled, torch.cat(masks))


class FlowModel(ABC):
    """Base adapter: what all families share. Subclasses set ``family`` and implement the abstract methods."""

    family: ClassVar[str]
    media_kind: ClassVar[Literal["image", "video"]] = "image"
    #: Text tokens per prompt unless ``max_sequence_length`` is set (the Qwen-encoder families: their pipelines' 512;
    #: FLUX.2 attends to its padding, so another length changes its samples).
    default_max_sequence_length: ClassVar[int] = 256

    def __init__(
        self,
        pipeline: Any,
        *,
        device: str | torch.device = "cpu",
        prompt_cache_size: int = 1024,
        prompt_cache_device: str = "cpu",
    ) -> None:
        self.pipeline = pipeline
        self.device = torch.device(device)
        # Least-recently-used cache of per-prompt embeddings. Bounded: a T5 embedding of SD3 (333 x 4096) or Wan
        # (512 x 4096) takes 3-8 MB, so tens of thousands of training prompts cannot all stay in memory.
        self.prompt_cache_size = prompt_cache_size
        self.prompt_cache_device = torch.device(prompt_cache_device)
        self._prompt_cache: OrderedDict[tuple[str, int], PromptEmbeds] = OrderedDict()
        self.max_sequence_length = self.default_max_sequence_length
        self.train_sigmas = self._flow_scheduler().sigmas.float()  # (1000,) from sigma = 1 down
        # None: the pipeline's own inference schedule; a number: a fixed shift (see :func:`fixed_shift_sigmas`)
        self.sampling_shift: float | None = None
        # True: the transformer sees floor(1000 sigma) as its timestep (see :meth:`timestep`)
        self.integer_timesteps = False

    # -- components -----------------------------------------------------------------------------------------------

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipeline.transformer

    @transformer.setter
    def transformer(self, module: torch.nn.Module) -> None:
        self.pipeline.transformer = module

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipeline.vae

    @property
    def pipeline_class(self) -> type:
        return type(self.pipeline)

    def text_encoders(self) -> list[torch.nn.Module]:
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        return [m for m in (getattr(self.pipeline, n, None) for n in names) if m is not None]

    def _flow_scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        """A fresh Euler flow-matching scheduler with the pipeline's schedule settings."""
        scheduler = self.pipeline.scheduler
        if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
            return FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
        # Wan checkpoints ship UniPC with flow sigmas; the SDE sampler needs the Euler grid with the same shift.
        shift = scheduler.config.get("flow_shift")
        if shift is None:
            raise ConfigError(
                f"{type(scheduler).__name__} is not a flow-matching scheduler; the {self.family} pipeline must use "
                "FlowMatchEulerDiscreteScheduler (or UniPC with flow_shift)"
            )
        return FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=scheduler.config.num_train_timesteps)

    @property
    def batch_cfg(self) -> bool:
        """True: CFG runs negative and positive prompts as one batch; False: the scale goes into a guidance
        embedding (guidance-distilled FLUX.1-dev)."""
        return True

    @property
    def num_train_timesteps(self) -> int:
        return int(self.pipeline.scheduler.config.num_train_timesteps)

    # -- prompts ----------------------------------------------------------------------------------------------------

    def encode_prompts(self, prompts: Sequence[str], *, batch_size: int = 32) -> PromptEmbeds:
        """Text embeddings of ``prompts`` on ``self.device``. Cached prompts are not encoded again; new ones are
        encoded ``batch_size`` at a time and enter the cache (the least recently used leave it when full)."""
        key_len = self.max_sequence_length
        found: dict[str, PromptEmbeds] = {}
        missing = []
        for prompt in dict.fromkeys(prompts):  # unique, in order
            key = (prompt, key_len)
            if key in self._prompt_cache:
                self._prompt_cache.move_to_end(key)
                found[prompt] = self._prompt_cache[key]
            else:
                missing.append(prompt)
        if missing:
            encoders = self.text_encoders()
            if encoders and any(p.device.type == "meta" for e in encoders for p in e.parameters()):
                raise ConfigError(f"text encoders were released; prompts {missing[:3]} were not encoded beforehand")
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                with torch.no_grad():
                    encoded = self._encode(chunk)
                for i, prompt in enumerate(chunk):
                    found[prompt] = encoded.select([i]).trimmed().to(self.prompt_cache_device)
                    self._prompt_cache[(prompt, key_len)] = found[prompt]
            while len(self._prompt_cache) > self.prompt_cache_size:
                self._prompt_cache.popitem(last=False)
        return PromptEmbeds.cat([found[p] for p in prompts]).to(self.device)

    def release_text_encoders(self) -> None:
        """Free the text encoders' memory once every prompt a run needs is in the cache."""
        for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            if getattr(self.pipeline, name, None) is not None:
                getattr(self.pipeline, name).to("meta")

    @abstractmethod
    def _encode(self, prompts: list[str]) -> PromptEmbeds:
        """Run the pipeline's text encoders on ``prompts`` (no cache)."""

    # -- shapes -----------------------------------------------------------------------------------------------------

    @abstractmethod
    def latent_shape(self, batch: int, height: int, width: int, num_frames: int | None = None) -> tuple[int, ...]:
        """Shape of unpacked latents for media of this size (checked with :meth:`check_size`)."""

    def check_size(self, height: int, width: int, num_frames: int | None = None) -> None:
        """Raise a ConfigError naming the value and the nearest valid one when a size does not fit the model."""
        multiple = self.spatial_multiple
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % multiple:
                raise ConfigError(
                    f"{name}={value} does not fit {self.family}: it must be a positive multiple of {multiple} "
                    f"(e.g. {max(multiple, round(value / multiple) * multiple)})"
                )

    @property
    @abstractmethod
    def spatial_multiple(self) -> int:
        """Heights and widths must be multiples of this (VAE factor x patch size)."""

    # -- the transformer call ------------------------------------------------------------------------------------

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The transformer's timestep input for noise level ``sigma`` (SD3 and Wan take ``1000 * sigma``).

        With ``integer_timesteps`` the input is ``floor(1000 sigma)`` (computed in float32), as Pref-GRPO's FLUX and
        Wan trainers feed it (``int(sigma * 1000)`` in sampling and training); the SDE step keeps the exact sigma.
        """
        steps = sigma * self.num_train_timesteps
        return torch.floor(steps) if self.integer_timesteps else steps

    def velocity(
        self,
        latents: torch.Tensor,
        sigma: float | torch.Tensor,
        cond: PromptEmbeds,
        *,
        guidance_scale: float = 1.0,
        negative: PromptEmbeds | None = None,
        transformer: torch.nn.Module | None = None,
        cfg_grad: CFGGrad = "both",
    ) -> torch.Tensor:
        """Velocity at ``(latents, sigma)`` for ``cond``; shaped like ``latents``, in the transformer's dtype.

        With ``guidance_scale > 1`` on a batch-CFG family, ``negative`` embeddings are required and the negative
        and positive halves run as one batch: ``v = v_neg + w (v_pos - v_neg)``. ``transformer`` overrides the
        module called (the accelerate-wrapped one during training).

        ``cfg_grad`` decides where a training forward's gradient flows (the value is the same either way):
        ``"both"`` through both halves, ``d v = (1 - w) d v_neg + w d v_pos``; ``"detach_uncond"`` treats
        ``v_neg`` as a constant, so ``d v = w d v_pos`` (Flow-GRPO's ``compute_log_prob`` in train_sd3.py detaches
        the unconditional prediction).
        """
        module = transformer if transformer is not None else self.transformer
        batch = latents.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device).reshape(-1).expand(batch)
        if len(cond) != batch:
            raise ValueError(f"{len(cond)} prompt embeddings for {batch} latents")
        if cfg_grad not in CFG_GRADS:
            raise ValueError(f"cfg_grad must be one of {', '.join(CFG_GRADS)}, got {cfg_grad!r}")
        if guidance_scale > 1.0 and self.batch_cfg:
            if negative is None:
                raise ValueError("guidance_scale > 1 needs negative prompt embeddings (encode the negative prompt)")
            both = self._forward(
                module,
                torch.cat([latents, latents]),
                torch.cat([sigma, sigma]),
                PromptEmbeds.cat([negative, cond]),
                guidance_scale,
            )
            v_neg, v_pos = both.chunk(2)  # (B, ...) each
            if cfg_grad == "detach_uncond":
                v_neg = v_neg.detach()
            return self.guide(v_neg, v_pos, guidance_scale)
        return self._forward(module, latents, sigma, cond, guidance_scale)

    def guide(self, v_neg: torch.Tensor, v_pos: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Classifier-free guidance from the two velocities (Ho & Salimans 2022): ``v_neg + w (v_pos - v_neg)``."""
        return v_neg + guidance_scale * (v_pos - v_neg)

    def pipeline_guidance_kwargs(self, guidance_scale: float, negative_prompt: str = "") -> dict[str, Any]:
        """The keyword arguments that make the diffusers pipeline guide as :meth:`velocity` does with
        ``guidance_scale`` (SD3, FLUX, Wan: ``guidance_scale``, the negative prompt where CFG is batched)."""
        if self.batch_cfg:
            return {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt}
        return {"guidance_scale": guidance_scale}

    # -- latent layout ----------------------------------------------------------------------------------------------

    def to_pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Unpacked latents -> the pipeline's sampling layout (its ``latents=`` argument; identity unless packed)."""
        return latents

    def from_pipeline_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The pipeline's sampling layout (what its step callbacks see) -> unpacked latents for media
        ``height x width``; the inverse of :meth:`to_pipeline_latents`."""
        return latents

    def pipeline_initial_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Unpacked initial noise -> the pipeline's ``latents=`` argument (its sampling layout, except for
        pipelines that pack the argument themselves, as FLUX.2's)."""
        return self.to_pipeline_latents(latents)

    @abstractmethod
    def _forward(
        self, module: torch.nn.Module, latents: torch.Tensor, sigma: torch.Tensor, cond: PromptEmbeds, guidance: float
    ) -> torch.Tensor:
        """One transformer call on unpacked latents with per-sample ``sigma (B,)``."""

    # -- schedules --------------------------------------------------------------------------------------------------

    def sampling_sigmas(self, num_steps: int, latent_shape: Sequence[int]) -> torch.Tensor:
        """``(num_steps + 1,)`` float32 noise levels from 1 down to 0 (the pipeline's inference schedule, or the
        fixed-shift one of :func:`fixed_shift_sigmas` when ``sampling_shift`` is set)."""
        if num_steps < 1:
            raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
        if self.sampling_shift is not None:
            return fixed_shift_sigmas(num_steps, self.sampling_shift)
        scheduler = self._flow_scheduler()
        scheduler.set_timesteps(num_steps)
        return scheduler.sigmas.float().cpu()

    def training_sigmas(self, u: torch.Tensor) -> torch.Tensor:
        """Noise levels for training draws ``u`` in [0, 1): index ``floor(1000 u)`` of the (shifted) training grid.

        This is Flow-GRPO's Flow-DPO recipe (``scheduler.timesteps[floor(u * 1000)]``); ``u`` near 0 is pure noise.
        """
        index = (u * len(self.train_sigmas)).long().clamp(0, len(self.train_sigmas) - 1)
        return self.train_sigmas.to(u.device)[index.to(u.device)]

    # -- VAE --------------------------------------------------------------------------------------------------------

    @abstractmethod
    def encode_media(self, media: torch.Tensor) -> torch.Tensor:
        """Canonical media (float [0, 1]) -> normalized latents (posterior mean, so caching is deterministic)."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents -> canonical media, float32 in [0, 1] on the latents' device."""

    def _vae_param(self) -> torch.Tensor:
        return next(self.vae.parameters())


class SD3Model(FlowModel):
    """Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``)."""

    family = "sd3"

    @property
    def spatial_multiple(self) -> int:
        return self.pipeline.vae_scale_factor * self.transformer.config.patch_size

    def _encode(self, prompts: list[str]) -> PromptEmbeds:
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return PromptEmbeds(embeds, pooled)

    def latent_shape(self, batch, height, width, num_frames=None):
        self.check_size(height, width)
        factor = self.pipeline.vae_scale_factor
        return (batch, self.transformer.config.in_channels, height // factor, width // factor)

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = _module_dtype(module)
        return module(
            hidden_states=latents.to(dtype),
            timestep=self.timestep(sigma),
            encoder_hidden_states=cond.embeds.to(dtype),
            pooled_projections=cond.pooled.to(dtype),
            return_dict=False,
        )[0]

    def encode_media(self, media):
        param = self._vae_param()
        pixels = media.to(param.device, param.dtype) * 2 - 1  # (B, 3, H, W) in [-1, 1]
        latents = self.vae.encode(pixels).latent_dist.mean
        shift = self.vae.config.shift_factor or 0.0
        return ((latents - shift) * self.vae.config.scaling_factor).float()

    def decode_latents(self, latents):
        param = self._vae_param()
        shift = self.vae.config.shift_factor or 0.0
        z = latents.to(param.device, param.dtype) / self.vae.config.scaling_factor + shift
        pixels = self.vae.decode(z, return_dict=False)[0]
        return (pixels.float() / 2 + 0.5).clamp(0, 1).to(latents.device)


class FluxModel(SD3Model):
    """FLUX.1 (``FluxPipeline``): packed 2x2 latent patches, resolution-dependent schedule shift, guidance
    embedding for the guidance-distilled dev model (true CFG as one batch for models without it)."""

    family = "flux"

    @property
    def batch_cfg(self) -> bool:
        return not self.transformer.config.guidance_embeds

    @property
    def spatial_multiple(self) -> int:
        return self.pipeline.vae_scale_factor * 2

    def _encode(self, prompts):
        embeds, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return PromptEmbeds(embeds, pooled)

    def latent_shape(self, batch, height, width, num_frames=None):
        self.check_size(height, width)
        factor = self.pipeline.vae_scale_factor
        return (batch, self.transformer.config.in_channels // 4, height // factor, width // factor)

    def timestep(self, sigma):
        # FluxTransformer2DModel multiplies by 1000 itself
        return super().timestep(sigma) / self.num_train_timesteps if self.integer_timesteps else sigma

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = _module_dtype(module)
        batch, channels, height, width = latents.shape
        rows = torch.arange(height // 2, device=latents.device)
        cols = torch.arange(width // 2, device=latents.device)
        img_ids = torch.stack(
            [torch.zeros(height // 2, width // 2, device=latents.device), *torch.meshgrid(rows, cols, indexing="ij")],
            dim=-1,
        ).reshape(-1, 3)  # (h/2 * w/2, 3): (0, row, col)
        txt_ids = torch.zeros(cond.embeds.shape[1], 3, device=latents.device)
        guidance_input = None
        if _module_config(module).guidance_embeds:
            guidance_input = torch.full((batch,), float(guidance), device=latents.device, dtype=torch.float32)
        out = module(
            hidden_states=pack_patches(latents).to(dtype),
            timestep=self.timestep(sigma),
            guidance=guidance_input,
            pooled_projections=cond.pooled.to(dtype),
            encoder_hidden_states=cond.embeds.to(dtype),
            txt_ids=txt_ids.to(dtype),
            img_ids=img_ids.to(dtype),
            return_dict=False,
        )[0]
        return unpack_patches(out, height, width)

    def to_pipeline_latents(self, latents):
        return pack_patches(latents)

    def from_pipeline_latents(self, latents, height, width):
        factor = self.pipeline.vae_scale_factor
        return unpack_patches(latents, height // factor, width // factor)

    def sampling_sigmas(self, num_steps, latent_shape):
        """FluxPipeline's schedule: ``linspace(1, 1/N, N)`` shifted by ``mu``, which grows linearly with the number
        of image tokens (diffusers ``calculate_shift``); with ``sampling_shift`` set, :func:`fixed_shift_sigmas`."""
        return token_shift_sigmas(self, num_steps, latent_shape)


def pack_patches(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w) -> (B, h/2 * w/2, 4C)``: the 2x2-patch token layout of FLUX and Qwen-Image (a reshape, so
    per-element means and SDE log-probabilities are unchanged)."""
    batch, channels, height, width = latents.shape
    packed = latents.reshape(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return packed.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack_patches(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, h/2 * w/2, 4C) -> (B, C, h, w)`` for latents ``h x w``; the inverse of :func:`pack_patches`."""
    batch, tokens, features = packed.shape
    if tokens != (height // 2) * (width // 2) or features % 4:
        raise ValueError(f"packed latents {tuple(packed.shape)} do not hold {height} x {width} latents in 2x2 patches")
    channels = features // 4
    out = packed.reshape(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(batch, channels, height, width)


def token_shift_sigmas(model: FlowModel, num_steps: int, latent_shape: Sequence[int]) -> torch.Tensor:
    """The schedule of FluxPipeline, QwenImagePipeline and ZImagePipeline: ``linspace(1, 1/N, N)`` through the
    scheduler with ``mu`` growing linearly in the number of 2x2 image tokens (diffusers ``calculate_shift``; the
    scheduler applies ``mu`` only with ``use_dynamic_shifting``, its fixed ``shift`` otherwise); with the model's
    ``sampling_shift`` set, :func:`fixed_shift_sigmas`."""
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    if model.sampling_shift is not None:
        return fixed_shift_sigmas(num_steps, model.sampling_shift)
    config = model.pipeline.scheduler.config
    tokens = (latent_shape[-2] // 2) * (latent_shape[-1] // 2)
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    mu = base_shift + (max_shift - base_shift) / (max_len - base_len) * (tokens - base_len)
    kwargs = {"mu": mu} if config.get("use_dynamic_shifting", False) else {}
    scheduler = model._flow_scheduler()
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps).tolist(), **kwargs)
    return scheduler.sigmas.float().cpu()


class WanModel(FlowModel):
    """Wan 2.1 text-to-video (``WanPipeline``): 5-D latents ``(B, C, t, h, w)`` with ``t = (T - 1) / 4 + 1``."""

    family = "wan"
    media_kind = "video"

    @property
    def spatial_multiple(self) -> int:
        return self.pipeline.vae_scale_factor_spatial * self.transformer.config.patch_size[1]

    def check_size(self, height, width, num_frames=None):
        super().check_size(height, width)
        step = self.pipeline.vae_scale_factor_temporal
        if num_frames is None or num_frames < 1 or (num_frames - 1) % step:
            suggestion = max(1, round(((num_frames or 1) - 1) / step)) * step + 1
            raise ConfigError(f"num_frames={num_frames} does not fit wan: it must be {step}k + 1 (e.g. {suggestion})")

    def _encode(self, prompts):
        embeds, _ = self.pipeline.encode_prompt(
            prompt=prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=self.device,
        )
        return PromptEmbeds(embeds)

    def latent_shape(self, batch, height, width, num_frames=None):
        self.check_size(height, width, num_frames)
        spatial = self.pipeline.vae_scale_factor_spatial
        frames = (num_frames - 1) // self.pipeline.vae_scale_factor_temporal + 1
        channels = self.transformer.config.in_channels
        return (batch, channels, frames, height // spatial, width // spatial)

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = _module_dtype(module)
        return module(
            hidden_states=latents.to(dtype),
            timestep=self.timestep(sigma),
            encoder_hidden_states=cond.embeds.to(dtype),
            return_dict=False,
        )[0]

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(config.latents_std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    def encode_media(self, media):
        param = self._vae_param()
        # (B, T, 3, H, W) in [0, 1] -> (B, 3, T, H, W) in [-1, 1]
        pixels = media.to(param.device, param.dtype).permute(0, 2, 1, 3, 4) * 2 - 1
        latents = self.vae.encode(pixels).latent_dist.mean
        mean, std = self._stats(latents)
        return ((latents - mean) / std).float()

    def decode_latents(self, latents):
        param = self._vae_param()
        z = latents.to(param.device, param.dtype)
        mean, std = self._stats(z)
        video = self.vae.decode(z * std + mean, return_dict=False)[0]  # (B, 3, T, H, W) in [-1, 1]
        return (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4).to(latents.device)


class QwenImageModel(FlowModel):
    """Qwen-Image (``QwenImagePipeline``): an MM-DiT on 2x2-packed latents of a Wan-style VAE with one frame,
    conditioned on the last hidden states of Qwen2.5-VL (prompts keep their own lengths: a mask), the FLUX-style
    token-dependent schedule shift, and true CFG whose guided velocity is rescaled to the conditional velocity's
    norm per packed token (:meth:`guide`). The pipeline calls the scale ``true_cfg_scale``."""

    family = "qwenimage"
    default_max_sequence_length = 512

    def __init__(self, pipeline: Any, **kwargs: Any) -> None:
        super().__init__(pipeline, **kwargs)
        if self.transformer.config.guidance_embeds:
            raise ConfigError(
                "this Qwen-Image transformer is guidance-distilled (guidance_embeds=True); the qwenimage adapter "
                "implements the released models' true CFG only: use a checkpoint with guidance_embeds=False"
            )

    @property
    def spatial_multiple(self) -> int:
        return self.pipeline.vae_scale_factor * 2

    def _encode(self, prompts):
        # (B, L, D) right-padded with zeros, and the mask; None when no prompt is padded
        embeds, mask = self.pipeline.encode_prompt(
            prompt=list(prompts), device=self.device, max_sequence_length=self.max_sequence_length
        )
        return PromptEmbeds(embeds, mask=None if mask is None else mask.bool())

    def latent_shape(self, batch, height, width, num_frames=None):
        self.check_size(height, width)
        factor = self.pipeline.vae_scale_factor
        return (batch, self.transformer.config.in_channels // 4, height // factor, width // factor)

    def timestep(self, sigma):
        return sigma  # the pipeline passes timestep / 1000

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = _module_dtype(module)
        batch, _, height, width = latents.shape
        mask = cond.mask
        out = module(
            hidden_states=pack_patches(latents).to(dtype),
            timestep=self.timestep(sigma).to(dtype),
            encoder_hidden_states=cond.embeds.to(dtype),
            encoder_hidden_states_mask=None if mask is None or bool(mask.all()) else mask,
            img_shapes=[[(1, height // 2, width // 2)]] * batch,
            return_dict=False,
        )[0]
        return unpack_patches(out, height, width)

    def guide(self, v_neg, v_pos, guidance_scale):
        """True CFG, then each packed token's guided velocity (its ``4C`` values: ``C`` channels of a 2x2 patch)
        rescaled to the norm of the conditional one, as QwenImagePipeline does:
        ``v = c * |v_pos| / |c|`` with ``c = v_neg + w (v_pos - v_neg)``."""
        combined = v_neg + guidance_scale * (v_pos - v_neg)
        batch, channels, height, width = combined.shape
        patches = (batch, channels, height // 2, 2, width // 2, 2)
        dims = (1, 3, 5)  # the packed token's features
        norm = torch.linalg.vector_norm
        scale = norm(v_pos.reshape(patches), dim=dims, keepdim=True) / norm(
            combined.reshape(patches), dim=dims, keepdim=True
        )  # (B, 1, h/2, 1, w/2, 1)
        return (combined.reshape(patches) * scale).reshape(batch, channels, height, width)

    def pipeline_guidance_kwargs(self, guidance_scale, negative_prompt=""):
        return {"true_cfg_scale": guidance_scale, "negative_prompt": negative_prompt if guidance_scale > 1 else None}

    def to_pipeline_latents(self, latents):
        return pack_patches(latents)

    def from_pipeline_latents(self, latents, height, width):
        factor = self.pipeline.vae_scale_factor
        return unpack_patches(latents, height // factor, width // factor)

    def sampling_sigmas(self, num_steps, latent_shape):
        return token_shift_sigmas(self, num_steps, latent_shape)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(config.latents_std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    def encode_media(self, media):
        param = self._vae_param()
        pixels = media.to(param.device, param.dtype).unsqueeze(2) * 2 - 1  # (B, 3, 1, H, W) in [-1, 1]
        latents = self.vae.encode(pixels).latent_dist.mean  # (B, C, 1, h, w)
        mean, std = self._stats(latents)
        return ((latents - mean) / std).squeeze(2).float()

    def decode_latents(self, latents):
        param = self._vae_param()
        z = latents.to(param.device, param.dtype).unsqueeze(2)  # (B, C, 1, h, w)
        mean, std = self._stats(z)
        pixels = self.vae.decode(z * std + mean, return_dict=False)[0][:, :, 0]  # (B, 3, H, W) in [-1, 1]
        return (pixels.float() / 2 + 0.5).clamp(0, 1).to(latents.device)


class ZImageModel(SD3Model):
    """Z-Image (``ZImagePipeline``): a single-stream DiT on ``(C, 1, h, w)`` latents of a FLUX-style VAE,
    conditioned on the second-to-last hidden states of a Qwen3 text model (each prompt's real tokens only).

    Two sign conventions differ from the other families: the transformer takes ``t = 1 - sigma`` and predicts
    ``x0 - eps``, so the velocity is its negated output. The pipeline's ``guidance_scale`` ``g`` guides as
    ``v_pos + g (v_pos - v_neg)``, which is this adapter's ``guidance_scale = g + 1`` (Z-Image-Turbo's ``g = 0``
    is 1 here: no CFG). The pipeline's ``cfg_normalization`` and ``cfg_truncation`` stay at their defaults (off).
    """

    family = "zimage"
    default_max_sequence_length = 512

    @property
    def spatial_multiple(self) -> int:
        return self.pipeline.vae_scale_factor * 2

    def _encode(self, prompts):
        # The pipeline writes the chat-templated prompt into the list it is given: pass a copy.
        tokens, _ = self.pipeline.encode_prompt(
            prompt=list(prompts),
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return PromptEmbeds.cat([PromptEmbeds(t[None]) for t in tokens])  # (B, L_max, D), masked

    def latent_shape(self, batch, height, width, num_frames=None):
        self.check_size(height, width)
        factor = self.pipeline.vae_scale_factor
        return (batch, self.transformer.config.in_channels, height // factor, width // factor)

    def timestep(self, sigma):
        return 1 - sigma

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = _module_dtype(module)
        frames = list(latents.to(dtype).unsqueeze(2).unbind(0))  # B x (C, 1, h, w)
        captions = [t.to(dtype) for t in cond.token_list()]  # B x (L_i, D)
        out = module(frames, self.timestep(sigma), captions, return_dict=False)[0]
        return -torch.stack(out).squeeze(2)  # (B, C, h, w)

    def pipeline_guidance_kwargs(self, guidance_scale, negative_prompt=""):
        # None: the pipeline's own empty negative per prompt (a single string fails for a list of prompts)
        return {"guidance_scale": guidance_scale - 1, "negative_prompt": negative_prompt or None}

    def sampling_sigmas(self, num_steps, latent_shape):
        return token_shift_sigmas(self, num_steps, latent_shape)


class Flux2KleinModel(FlowModel):
    """FLUX.2 [klein] (``Flux2KleinPipeline``): an MM-DiT on patchified VAE latents. The VAE's ``(C, 2h, 2w)``
    latents are cut into 2x2 patches, ``(4C, h, w)``, and normalized by the VAE's batch-norm statistics: these are
    the adapter's (unpacked) latents, packed to ``(h w, 4C)`` tokens with 4-D positions ``(0, row, col, 0)``. Text:
    hidden states of three layers of a Qwen3 model, concatenated per token, padded to ``max_sequence_length`` (the
    pipeline attends to the padding: no mask). The schedule shift ``mu`` is the pipeline's empirical function of the
    token count and the number of steps. The base models guide with true CFG against the empty prompt (the
    pipeline takes no other negative prompt); step-distilled ones (``is_distilled``) ignore guidance."""

    family = "flux2klein"
    default_max_sequence_length = 512

    #: Qwen3 layers whose hidden states form a token's text feature (the pipeline's ``text_encoder_out_layers``).
    text_encoder_out_layers = (9, 18, 27)

    @property
    def batch_cfg(self) -> bool:
        return not self.pipeline.config.is_distilled

    @property
    def spatial_multiple(self) -> int:
        return self.pipeline.vae_scale_factor * 2

    def _encode(self, prompts):
        embeds, _ = self.pipeline.encode_prompt(
            prompt=list(prompts),
            device=self.device,
            max_sequence_length=self.max_sequence_length,
            text_encoder_out_layers=self.text_encoder_out_layers,
        )
        return PromptEmbeds(embeds)  # (B, max_sequence_length, 3 D)

    def latent_shape(self, batch, height, width, num_frames=None):
        self.check_size(height, width)
        factor = self.spatial_multiple
        return (batch, self.transformer.config.in_channels, height // factor, width // factor)

    def timestep(self, sigma):
        return sigma  # the pipeline passes timestep / 1000

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = _module_dtype(module)
        batch, channels, height, width = latents.shape
        device = latents.device
        rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
        zero = torch.zeros(1, dtype=torch.long, device=device)
        img_ids = torch.cartesian_prod(zero, rows, cols, zero).expand(batch, -1, -1)  # (B, h w, 4)
        length = cond.embeds.shape[1]
        txt_ids = torch.cartesian_prod(zero, zero, zero, torch.arange(length, device=device)).expand(batch, -1, -1)
        out = module(
            hidden_states=self.to_pipeline_latents(latents).to(dtype),
            timestep=self.timestep(sigma).to(dtype),
            guidance=None,
            encoder_hidden_states=cond.embeds.to(dtype),
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return self.from_pipeline_latents(out, height * self.spatial_multiple, width * self.spatial_multiple)

    def pipeline_guidance_kwargs(self, guidance_scale, negative_prompt=""):
        if negative_prompt:
            raise ConfigError(
                f"Flux2KleinPipeline guides against the empty prompt only; negative prompt {negative_prompt!r} "
                "cannot be reproduced by the pipeline (use negative_prompt='')"
            )
        return {"guidance_scale": guidance_scale}

    def to_pipeline_latents(self, latents):
        batch, channels, height, width = latents.shape
        return latents.reshape(batch, channels, height * width).permute(0, 2, 1)  # (B, h w, 4C)

    def pipeline_initial_latents(self, latents):
        return latents  # Flux2KleinPipeline packs its latents= argument itself

    def from_pipeline_latents(self, latents, height, width):
        factor = self.spatial_multiple
        batch, tokens, channels = latents.shape
        if tokens != (height // factor) * (width // factor):
            raise ValueError(f"packed latents {tuple(latents.shape)} do not hold a {height} x {width} image")
        return latents.permute(0, 2, 1).reshape(batch, channels, height // factor, width // factor)

    def sampling_sigmas(self, num_steps, latent_shape):
        """Flux2KleinPipeline's schedule: ``linspace(1, 1/N, N)`` shifted by its empirical ``mu`` (a function of
        the image token count and of ``N``); with ``sampling_shift`` set, :func:`fixed_shift_sigmas`."""
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

        if num_steps < 1:
            raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
        if self.sampling_shift is not None:
            return fixed_shift_sigmas(num_steps, self.sampling_shift)
        mu = compute_empirical_mu(image_seq_len=latent_shape[-2] * latent_shape[-1], num_steps=num_steps)
        kwargs = {"mu": mu} if self.pipeline.scheduler.config.get("use_dynamic_shifting", False) else {}
        scheduler = self._flow_scheduler()
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps).tolist(), **kwargs)
        return scheduler.sigmas.float().cpu()

    def _bn_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    def encode_media(self, media):
        param = self._vae_param()
        pixels = media.to(param.device, param.dtype) * 2 - 1  # (B, 3, H, W) in [-1, 1]
        latents = self.vae.encode(pixels).latent_dist.mean  # (B, C, 2h, 2w)
        batch, channels, height, width = latents.shape
        patches = latents.reshape(batch, channels, height // 2, 2, width // 2, 2).permute(0, 1, 3, 5, 2, 4)
        patches = patches.reshape(batch, channels * 4, height // 2, width // 2)  # (B, 4C, h, w)
        mean, std = self._bn_stats(patches)
        return ((patches - mean) / std).float()

    def decode_latents(self, latents):
        param = self._vae_param()
        z = latents.to(param.device, param.dtype)
        mean, std = self._bn_stats(z)
        z = z * std + mean
        batch, channels, height, width = z.shape  # (B, 4C, h, w) -> (B, C, 2h, 2w)
        z = z.reshape(batch, channels // 4, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
        z = z.reshape(batch, channels // 4, height * 2, width * 2)
        pixels = self.vae.decode(z, return_dict=False)[0]
        return (pixels.float() / 2 + 0.5).clamp(0, 1).to(latents.device)


def fixed_shift_sigmas(num_steps: int, shift: float) -> torch.Tensor:
    """``(num_steps + 1,)`` float32: ``t = linspace(1, 0, num_steps + 1)`` shifted by ``shift``,
    ``sigma = shift t / (1 + (shift - 1) t)`` (SD3's time shift). Pref-GRPO samples FLUX and Wan on this grid with
    ``shift = 3`` (its ``sd3_time_shift``); FLUX's own pipeline instead shifts by a resolution-dependent ``mu``."""
    if shift <= 0:
        raise ConfigError(f"sampling shift must be > 0, got {shift}")
    # In float32, as sd3_time_shift computes it: the grid is then bit-identical to Pref-GRPO's, which matters with
    # integer_timesteps (float64 rounds 0.6 of a 6-step grid up, where Pref-GRPO's 0.59999996 truncates to 599).
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float32)
    return shift * t / (1 + (shift - 1) * t)


ADAPTERS: dict[str, type[FlowModel]] = {
    "sd3": SD3Model,
    "flux": FluxModel,
    "wan": WanModel,
    "qwenimage": QwenImageModel,
    "zimage": ZImageModel,
    "flux2klein": Flux2KleinModel,
}
PIPELINE_CLASSES = {
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "wan": "WanPipeline",
    "qwenimage": "QwenImagePipeline",
    "zimage": "ZImagePipeline",
    "flux2klein": "Flux2KleinPipeline",
}


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    inner = getattr(module, "module", module)  # DDP / accelerate wrappers
    return inner.dtype if hasattr(inner, "dtype") else next(inner.parameters()).dtype


def _module_config(module: torch.nn.Module) -> Any:
    return getattr(module, "module", module).config


def load_pipeline(family: str, path: str, *, dtype: torch.dtype = torch.float32) -> Any:
    """The diffusers pipeline for ``family`` from a hub id or local directory in ``dtype`` (``"tiny"``: the tiny
    random one, in float32)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}")
    if path == "tiny":
        from mmreward.tiny_models import tiny_pipeline

        return tiny_pipeline(family)  # float32; load_flow_model casts each component to its dtype
    import diffusers

    pipeline_class = getattr(diffusers, PIPELINE_CLASSES[family])
    local = Path(path).expanduser()
    if not local.is_dir() and (path.count("/") != 1 or path.startswith((".", "/", "~"))):
        raise WeightsNotFoundError(
            f"{family} pipeline {path!r} is neither a local directory nor a hub id like 'org/name'; pass the "
            "directory that holds model_index.json, or 'tiny' for the tiny random pipeline"
        )
    if local.is_dir() and (local / "model_index.json").is_file():
        refuse_two_experts(family, path, json.loads((local / "model_index.json").read_text(encoding="utf-8")))
    try:
        pipeline = pipeline_class.from_pretrained(str(local) if local.is_dir() else path, dtype=dtype)
    except (OSError, ValueError) as err:
        raise WeightsNotFoundError(
            f"cannot load the {family} pipeline {path!r} ({type(err).__name__}: {str(err).splitlines()[0]}). "
            f"Download it once where the hub is reachable (`hf download {path}`) and copy the cache (HF_HOME), "
            "or pass the local directory holding model_index.json as model.path"
        ) from err
    refuse_two_experts(family, path, {"transformer_2": getattr(pipeline, "transformer_2", None)})
    return pipeline


def refuse_two_experts(family: str, path: str, components: dict[str, Any]) -> None:
    """Refuse a two-expert pipeline (Wan2.2 A14B: ``transformer`` for high noise, ``transformer_2`` for low noise,
    switched at ``boundary_ratio``). The adapters call one transformer at every noise level, so such a model would
    silently run and train its high-noise expert alone. ``components``: the pipeline's ``model_index.json`` or its
    loaded components (a null entry is an absent component)."""
    if components.get("transformer_2") in (None, [None, None]):
        return
    raise ConfigError(
        f"{family} model {path!r} has two transformer experts (transformer and transformer_2, as Wan2.2 A14B); "
        "Wan2.2 two-expert support is not implemented: the high-noise expert alone would be sampled and trained. "
        "Use a single-transformer Wan2.1 checkpoint (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers)"
    )


def load_flow_model(
    family: str,
    path: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    vae_dtype: str | torch.dtype = "float32",
    text_dtype: str | torch.dtype | None = None,
    attention: Attention = "auto",
    max_sequence_length: int | None = None,
    prompt_cache_size: int = 1024,
    sampling_shift: float | None = None,
    integer_timesteps: bool = False,
) -> FlowModel:
    """Load a pipeline and wrap it in its family's adapter; all weights frozen, on ``device``.

    ``dtype`` is the transformer's weight dtype, ``vae_dtype`` the VAE's (float32 by default, as Flow-GRPO),
    ``text_dtype`` the text encoders' (defaults to ``dtype``). ``attention``: ``auto``/``sdpa`` use PyTorch's
    scaled-dot-product attention (which itself picks flash or memory-efficient kernels on GPUs); ``xformers``
    needs the xformers package and a CUDA device. ``sampling_shift``: sample on :func:`fixed_shift_sigmas` with this
    shift instead of the pipeline's schedule. ``integer_timesteps``: the transformer sees ``floor(1000 sigma)``
    (see :meth:`FlowModel.timestep`).
    """

    device = torch.device(device)
    check_attention(attention, device)
    weight_dtype = resolve_dtype(dtype)
    pipeline = load_pipeline(family, path, dtype=weight_dtype)
    pipeline.set_progress_bar_config(disable=True)
    text_dtype = resolve_dtype(text_dtype) if text_dtype is not None else weight_dtype
    for module, module_dtype in [
        (pipeline.transformer, weight_dtype),
        (pipeline.vae, resolve_dtype(vae_dtype)),
        *[(m, text_dtype) for m in _text_modules(pipeline)],
    ]:
        module.requires_grad_(False).eval()
        # Cast only when needed: from_pretrained(torch_dtype=) already keeps the modules a model wants in fp32.
        if next(module.parameters()).dtype != module_dtype:
            module.to(dtype=module_dtype)
        module.to(device)
    if attention == "xformers":
        pipeline.transformer.set_attention_backend("xformers")
    model = ADAPTERS[family](pipeline, device=device, prompt_cache_size=prompt_cache_size)
    if max_sequence_length is not None:
        model.max_sequence_length = max_sequence_length
    if sampling_shift is not None:
        fixed_shift_sigmas(1, sampling_shift)  # validates the value before a run starts
        model.sampling_shift = sampling_shift
    model.integer_timesteps = integer_timesteps
    return model


def _text_modules(pipeline: Any) -> list[torch.nn.Module]:
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    return [m for m in (getattr(pipeline, n, None) for n in names) if m is not None]


def check_attention(attention: str, device: torch.device | str) -> None:
    """Validate the attention choice before any model loads."""
    if attention not in ("auto", "sdpa", "xformers"):
        raise ConfigError(f"unknown attention {attention!r}; use auto, sdpa or xformers")
    if attention != "xformers":
        return
    if importlib.util.find_spec("xformers") is None:
        raise ConfigError(
            "attention: xformers needs the xformers package (pip install 'mmreward[gpu]'); use attention: sdpa, "
            "which is as fast on recent PyTorch"
        )
    if torch.device(device).type != "cuda":
        raise ConfigError(
            f"attention: xformers runs only on CUDA devices, not {torch.device(device).type}; use attention: sdpa"
        )

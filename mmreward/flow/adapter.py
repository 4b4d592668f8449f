"""The adapter interface every generator family implements (:class:`FlowModel`), its prompt conditioning
(:class:`PromptEmbeds`) and the schedule and latent-layout helpers families share. The families live in
:mod:`mmreward.flow.families`, one module each; :mod:`mmreward.flow.models` loads them."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from mmreward.errors import ConfigError

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
    """Conditioning of a batch: ``embeds (B, L, D)``, for SD3 and FLUX ``pooled (B, P)``, and for families
    whose prompts have their own lengths (Qwen-Image, Z-Image) ``mask (B, L)`` bool, True at real tokens (None:
    every token is real). Padded positions hold zeros.

    Conditional (editing) families also carry ``image_latents (B, C, h', w')``: each row's source image as
    normalized, unpacked VAE latents, which the transformer sees as extra tokens after the noisy ones. They travel
    with the text embeddings (selected, repeated and concatenated with them), so rollouts, stored steps and losses
    pass a source image through unchanged. The rows of one batch must share the source latent size (sources of one
    aspect ratio, or a fixed ``source_area`` that resizes them alike). Image-to-video families keep their first-frame
    conditioning there, at the output size: ``(B, 4 + C, t, h, w)`` (Wan I2V: mask and latents, concatenated along
    channels) or ``(B, C, 1, h, w)`` (Wan2.2 TI2V-5B: the first frame's latents).

    ``secondary``: a second token stream of the same prompts with its own lengths and width (HunyuanVideo 1.5's ByT5
    glyph embeddings), batched, cached and trimmed along."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    image_latents: torch.Tensor | None = None
    secondary: PromptEmbeds | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptEmbeds:
        pooled = None if self.pooled is None else self.pooled.to(device, dtype)
        mask = None if self.mask is None else self.mask.to(device)
        image = None if self.image_latents is None else self.image_latents.to(device)  # float32 as encoded
        secondary = None if self.secondary is None else self.secondary.to(device, dtype)
        return PromptEmbeds(self.embeds.to(device, dtype), pooled, mask, image, secondary)

    def select(self, index: torch.Tensor | Sequence[int]) -> PromptEmbeds:
        index = torch.as_tensor(index, dtype=torch.long, device=self.embeds.device)

        def pick(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.index_select(0, index.to(tensor.device))

        secondary = None if self.secondary is None else self.secondary.select(index)
        return PromptEmbeds(
            self.embeds.index_select(0, index), pick(self.pooled), pick(self.mask), pick(self.image_latents), secondary
        )

    def repeat_interleave(self, repeats: int) -> PromptEmbeds:
        def rep(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.repeat_interleave(repeats, 0)

        secondary = None if self.secondary is None else self.secondary.repeat_interleave(repeats)
        return PromptEmbeds(rep(self.embeds), rep(self.pooled), rep(self.mask), rep(self.image_latents), secondary)

    def trimmed(self) -> PromptEmbeds:
        """One prompt (``B = 1``) cut to its real tokens, mask dropped: what the prompt cache keeps, so a cached
        embedding does not depend on which prompts shared its encoder batch."""
        if len(self) != 1:
            raise ValueError(f"trimmed() takes one prompt, got {len(self)}")
        secondary = None if self.secondary is None else self.secondary.trimmed()
        length = self.embeds.shape[1] if self.mask is None else int(self.mask[0].sum())
        return PromptEmbeds(self.embeds[:, :length], self.pooled, None, self.image_latents, secondary)

    def token_list(self) -> list[torch.Tensor]:
        """The real tokens of each prompt, ``B`` tensors ``(L_i, D)`` (Z-Image's transformer takes them so)."""
        if self.mask is None:
            return list(self.embeds.unbind(0))
        return [e[m] for e, m in zip(self.embeds, self.mask.bool(), strict=True)]

    @staticmethod
    def cat(parts: Sequence[PromptEmbeds]) -> PromptEmbeds:
        """Concatenate along the batch; prompts of different lengths are right-padded with zeros and masked."""
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        image = None if parts[0].image_latents is None else cat_source_latents([p.image_latents for p in parts])
        secondary = None if parts[0].secondary is None else PromptEmbeds.cat([p.secondary for p in parts])
        length = max(p.embeds.shape[1] for p in parts)
        if all(p.mask is None and p.embeds.shape[1] == length for p in parts):
            return PromptEmbeds(torch.cat([p.embeds for p in parts]), pooled, None, image, secondary)
        embeds, masks = [], []
        for p in parts:
            pad = length - p.embeds.shape[1]
            mask = p.mask if p.mask is not None else torch.ones(p.embeds.shape[:2], dtype=torch.bool)
            embeds.append(torch.nn.functional.pad(p.embeds, (0, 0, 0, pad)))  # (B_p, length, D)
            masks.append(torch.nn.functional.pad(mask.bool().to(p.embeds.device), (0, pad)))  # (B_p, length)
        return PromptEmbeds(torch.cat(embeds), pooled, torch.cat(masks), image, secondary)


class FlowModel(ABC):
    """Base adapter: what all families share. Subclasses set ``family`` and implement the abstract methods."""

    family: ClassVar[str]
    media_kind: ClassVar[Literal["image", "video"]] = "image"
    #: Text tokens per prompt unless ``max_sequence_length`` is set (the Qwen-encoder families: their pipelines' 512;
    #: FLUX.2 attends to its padding, so another length changes its samples).
    default_max_sequence_length: ClassVar[int] = 256
    #: True for editing and image-to-video families: every prompt comes with a source image
    #: (``encode_prompts(..., sources=)``).
    conditional: ClassVar[bool] = False
    #: True where a source's conditioning depends on the size generated (image-to-video: the source becomes the first
    #: frame at the output's size): ``encode_prompts`` then needs ``size``.
    sources_need_size: ClassVar[bool] = False
    #: True for text-to-media families that also take a source image per prompt when given one (Wan2.2 TI2V-5B's
    #: first frame); programs treat them as text families.
    optional_sources: ClassVar[bool] = False

    @property
    def leaves_parameters_unused(self) -> bool:
        """True when a backward can leave a LoRA or fine-tuned parameter of :attr:`transformer` out of the graph
        (a layer whose output the model discards, an expert a batch did not visit). DDP must then be told
        (``find_unused_parameters``), or it waits for that gradient and the run fails; FSDP2 does not care."""
        return False

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

    def encode_prompts(
        self,
        prompts: Sequence[str],
        *,
        sources: Sequence[torch.Tensor] | None = None,
        size: tuple[int, int, int | None] | None = None,
        batch_size: int = 32,
    ) -> PromptEmbeds:
        """Conditioning of ``prompts`` on ``self.device``. Cached prompts are not encoded again; new ones are
        encoded ``batch_size`` at a time and enter the cache (the least recently used leave it when full).

        ``sources``: for conditional (editing, image-to-video) families, one canonical source image ``(3, H, W)``
        float [0, 1] per prompt; the cache key is then the prompt and the source's content, so one instruction on
        many images is encoded once per image. ``size``: ``(height, width, num_frames)`` of the media to generate,
        needed (and part of the key) where :attr:`sources_need_size`; the other families do not read it."""
        self.check_sources(len(prompts), sources)
        sized = self.sources_need_size and sources is not None
        if sized:
            if size is None:
                raise ValueError(f"{self.family} conditions on its sources at the output size: pass size=")
            self.check_size(*size)
        keys = [
            (
                prompt,
                self.max_sequence_length,
                None if sources is None else source_digest(sources[i]),
                tuple(size) if sized else None,
            )
            for i, prompt in enumerate(prompts)
        ]
        found: dict[tuple, PromptEmbeds] = {}
        missing: dict[tuple, int] = {}  # key -> the first row that has it
        for row, key in enumerate(keys):
            if key in found or key in missing:
                continue
            if key in self._prompt_cache:
                self._prompt_cache.move_to_end(key)
                found[key] = self._prompt_cache[key]
            else:
                missing[key] = row
        if missing:
            encoders = self.text_encoders()
            if encoders and any(p.device.type == "meta" for e in encoders for p in e.parameters()):
                names = [key[0] for key in list(missing)[:3]]
                raise ConfigError(f"text encoders were released; prompts {names} were not encoded beforehand")
            todo = list(missing.items())
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                chunk_prompts = [key[0] for key, _ in chunk]
                with torch.no_grad():
                    if sources is None:
                        encoded = self._encode(chunk_prompts)
                    else:
                        chunk_sources = [sources[row] for _, row in chunk]
                        at_size = {"size": tuple(size)} if sized else {}
                        encoded = self._encode_with_sources(chunk_prompts, chunk_sources, **at_size)
                for i, (key, _) in enumerate(chunk):
                    found[key] = encoded.select([i]).trimmed().to(self.prompt_cache_device)
                    self._prompt_cache[key] = found[key]
            while len(self._prompt_cache) > self.prompt_cache_size:
                self._prompt_cache.popitem(last=False)
        return PromptEmbeds.cat([found[key] for key in keys]).to(self.device)

    def check_sources(self, count: int, sources: Sequence[torch.Tensor] | None) -> None:
        """A source image per prompt for conditional families, one per prompt or none for families with
        :attr:`optional_sources`, none for the others; canonical images only."""
        if not self.conditional:
            if sources is not None and not self.optional_sources:
                raise ConfigError(
                    f"{self.family} generates from text alone and takes no source images; use an editing family "
                    "(qwenimage-edit, flux-kontext), image-to-video (wan-i2v), or drop the image column"
                )
            if sources is None:
                return
        elif sources is None:
            raise ConfigError(
                f"{self.family} is conditioned on a source image: give one per prompt (a prompt file with an image "
                "column)"
            )
        if len(sources) != count:
            raise ValueError(f"{len(sources)} source images for {count} prompts; give one per prompt")
        for i, source in enumerate(sources):
            if not isinstance(source, torch.Tensor) or source.ndim != 3 or source.shape[0] != 3:
                shape = tuple(source.shape) if isinstance(source, torch.Tensor) else type(source).__name__
                raise ValueError(f"source image {i} is {shape}; give canonical images (3, H, W) float in [0, 1]")

    def _encode_with_sources(self, prompts: list[str], sources: list[torch.Tensor], **size: Any) -> PromptEmbeds:
        """Encode ``prompts`` with their source images (no cache), ``image_latents`` set: the hook conditional and
        optional-source families implement (:meth:`check_sources` keeps the others from reaching it). Families with
        :attr:`sources_need_size` get the keyword ``size``, ``(height, width, num_frames)``."""
        raise NotImplementedError(f"{type(self).__name__} sets conditional but does not encode source images")

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
        """Raise a ConfigError naming the value and the nearest valid one when a size does not fit the model: heights
        and widths a multiple of :attr:`spatial_multiple`; for video families ``num_frames`` of the VAE's temporal
        factor times k plus one (Wan's and HunyuanVideo 1.5's VAEs keep the first frame and compress the rest)."""
        multiple = self.spatial_multiple
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % multiple:
                raise ConfigError(
                    f"{name}={value} does not fit {self.family}: it must be a positive multiple of {multiple} "
                    f"(e.g. {max(multiple, round(value / multiple) * multiple)})"
                )
        if self.media_kind != "video":
            return
        step = self.pipeline.vae_scale_factor_temporal
        if num_frames is None or num_frames < 1 or (num_frames - 1) % step:
            suggestion = max(1, round(((num_frames or 1) - 1) / step)) * step + 1
            raise ConfigError(
                f"num_frames={num_frames} does not fit {self.family}: it must be {step}k + 1 (e.g. {suggestion})"
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

    def unit_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The timestep input of transformers that take it in [0, 1] (FLUX, Qwen-Image, FLUX.2 klein; Z-Image takes
        ``1 -`` it): ``sigma``, or with ``integer_timesteps`` ``floor(1000 sigma) / 1000``, as Pref-GRPO's FLUX and
        Qwen-Image trainers feed it (``int(sigma * 1000)`` divided by 1000 at the call)."""
        return FlowModel.timestep(self, sigma) / self.num_train_timesteps if self.integer_timesteps else sigma

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
            return self.guided(v_neg, v_pos, sigma, guidance_scale)
        return self._forward(module, latents, sigma, cond, guidance_scale)

    def guided(
        self, v_neg: torch.Tensor, v_pos: torch.Tensor, sigma: torch.Tensor, guidance_scale: float
    ) -> torch.Tensor:
        """The guided velocity of samples at noise levels ``sigma (B,)``: :meth:`guide` at every level, except for
        families whose pipeline changes the scale with the noise level (Wan2.2's low-noise expert)."""
        return self.guide(v_neg, v_pos, guidance_scale)

    def guide(self, v_neg: torch.Tensor, v_pos: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Classifier-free guidance from the two velocities (Ho & Salimans 2022): ``v_neg + w (v_pos - v_neg)``."""
        return v_neg + guidance_scale * (v_pos - v_neg)

    def pipeline_guidance_kwargs(self, guidance_scale: float, negative_prompt: str = "") -> dict[str, Any]:
        """The keyword arguments that make the diffusers pipeline guide as :meth:`velocity` does with
        ``guidance_scale`` (SD3, FLUX, Wan: ``guidance_scale``, the negative prompt where CFG is batched)."""
        if self.batch_cfg:
            return {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt}
        return {"guidance_scale": guidance_scale}

    def final_latents(self, latents: torch.Tensor, cond: PromptEmbeds) -> torch.Tensor:
        """The sampled latents as the pipeline decodes them (identity; Wan2.2 TI2V-5B with a source image puts the
        source's latents back in the first frame, which the sampler does not move)."""
        return latents

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

    def media_from_pipeline(self, pixels: torch.Tensor) -> torch.Tensor:
        """The pipeline's decoded output (``output_type="pt"``, float [0, 1]) as canonical media: the same,
        except for pipelines whose VAE decodes more channels than RGB (Qwen-Image 2.1's RGBA)."""
        return pixels

    def _vae_param(self) -> torch.Tensor:
        return next(self.vae.parameters())


def cat_source_latents(latents: Sequence[torch.Tensor]) -> torch.Tensor:
    """Source-image latents ``(B_i, C, h', w')`` of the rows of one batch, concatenated: they must share ``h' x w'``
    (the transformer's source tokens form one tensor), else a ConfigError names the sizes and the fixes."""
    shapes = {tuple(part.shape[1:]) for part in latents}
    if len(shapes) > 1:
        raise ConfigError(
            f"source images of one batch give latents of different sizes {sorted(shapes)}: give sources one aspect "
            "ratio, or set model.source_area so that they are resized alike"
        )
    return torch.cat(list(latents))


def source_digest(image: torch.Tensor) -> str:
    """A content key of a source image (its prompt-cache key: equal images share their encoding)."""
    data = image.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha1(repr(tuple(data.shape)).encode() + data.numpy().tobytes()).hexdigest()


def source_pil(image: torch.Tensor) -> Any:
    """A canonical image ``(3, H, W)`` float [0, 1] as the 8-bit PIL image the editing pipelines take (what a
    source file holds; the pipelines' own resize and normalization then run on it, as in their ``__call__``)."""
    from PIL import Image

    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)  # (3, H, W)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())


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


def token_shift_sigmas(
    model: FlowModel,
    num_steps: int,
    latent_shape: Sequence[int],
    *,
    tokens: int | None = None,
    grid: Sequence[float] | None = None,
) -> torch.Tensor:
    """The schedule of FluxPipeline, QwenImagePipeline and ZImagePipeline: ``linspace(1, 1/N, N)`` (or a
    checkpoint's own ``N`` values, ``grid``) through the scheduler with ``mu`` growing linearly in the number of
    image tokens (diffusers ``calculate_shift``; the scheduler applies ``mu`` only with ``use_dynamic_shifting``, its
    fixed ``shift`` otherwise); with the model's ``sampling_shift`` set, :func:`fixed_shift_sigmas`. ``tokens``: the
    transformer's image tokens, 2x2 patches of ``latent_shape`` unless given (Qwen-Image 2.1 is unpatched)."""
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    if model.sampling_shift is not None:
        return fixed_shift_sigmas(num_steps, model.sampling_shift)
    config = model.pipeline.scheduler.config
    if tokens is None:
        tokens = (latent_shape[-2] // 2) * (latent_shape[-1] // 2)
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    mu = base_shift + (max_shift - base_shift) / (max_len - base_len) * (tokens - base_len)
    kwargs = {"mu": mu} if config.get("use_dynamic_shifting", False) else {}
    scheduler = model._flow_scheduler()
    if grid is None:
        grid = np.linspace(1.0, 1 / num_steps, num_steps).tolist()
    scheduler.set_timesteps(sigmas=list(grid), **kwargs)
    return scheduler.sigmas.float().cpu()


def wan_vae_stats(vae: torch.nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel ``latents_mean`` and ``latents_std`` of a Wan-style VAE (Wan, Qwen-Image), each
    ``(1, C, 1, 1, 1)`` on ``like``'s device and dtype: latents are normalized as ``(z - mean) / std``."""
    config = vae.config
    shape = (1, config.z_dim, 1, 1, 1)
    mean = torch.tensor(config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
    std = torch.tensor(config.latents_std, device=like.device, dtype=like.dtype).view(shape)
    return mean, std


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


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    inner = getattr(module, "module", module)  # DDP / accelerate wrappers
    return inner.dtype if hasattr(inner, "dtype") else next(inner.parameters()).dtype


def module_config(module: torch.nn.Module) -> Any:
    return getattr(module, "module", module).config

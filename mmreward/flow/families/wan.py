"""The Wan text-to-video (``WanPipeline``) adapter: Wan2.1, Wan2.2 A14B with its two experts, Wan2.2 TI2V-5B.

What differs between the three is read from the checkpoint, as ``WanPipeline`` reads it:

- ``transformer_2`` and ``boundary_ratio`` (Wan2.2 A14B): a high-noise expert (``transformer``) and a low-noise
  one (``transformer_2``). The pipeline calls ``transformer`` while its timestep ``t >= boundary_ratio *
  num_train_timesteps`` and ``transformer_2`` below, guiding the low-noise one with ``guidance_scale_2`` (default
  ``guidance_scale``). The adapter holds both as one module, :class:`WanExperts`, which routes each sample of a batch
  by its own timestep, so training batches that mix noise levels (Flow-DPO) reach the right expert.
- ``expand_timesteps`` (Wan2.2 TI2V-5B, with the 48-channel, patchified Wan2.2 VAE): the transformer takes one
  timestep per latent token, ``(B, t * ceil(h/2) * ceil(w/2))``, all equal to the step's timestep in text-to-video.

The families ``wan22`` and ``wan22ti2v`` are this adapter with the layout checked on load (a wrong checkpoint is
refused naming the family that fits it).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from mmreward.errors import ConfigError
from mmreward.flow.adapter import (
    FlowModel,
    PromptEmbeds,
    cat_source_latents,
    module_dtype,
    source_pil,
    wan_vae_stats,
)

LoraExperts = Literal["both", "high", "low"]
LORA_EXPERTS = ("both", "high", "low")
EXPERT_NAMES = ("transformer", "transformer_2")  # high noise, low noise: the pipeline's component names


class WanExperts(nn.Module):
    """Wan2.2's two experts as one module with the transformer's call signature: ``transformer`` (high noise) for
    samples whose timestep is ``>= boundary_timestep``, ``transformer_2`` (low noise) for the others, as
    ``WanPipeline`` switches. Training code sees one module: its trainable parameters (``transformer.*`` and
    ``transformer_2.*``) go to the optimizer, the EMA, the LoRA reference and the checkpoint together, and FSDP2
    shards the blocks of both (``_no_split_modules``).

    ``lora_experts``: the experts :meth:`add_adapter` puts a LoRA on (``both``, ``high``: ``transformer``, ``low``:
    ``transformer_2``).

    ``lockstep`` (set when FSDP2 shards the experts over several processes, :func:`mmreward.train.policy.load_policy`):
    every process calls every expert that any process needs in this forward (an all-reduce of two flags). FSDP2
    gathers an expert's parameters collectively, so processes whose batches hold different noise levels (Flow-DPO)
    would otherwise pair one expert's gathers with the other's. A process with no sample for such an expert runs it
    on its first sample and adds the result times zero (a zero gradient). Off, as for DDP (whose forward has no
    per-module collectives) and for processes that sample independently (``eval/gen_bench.py`` shares).
    """

    def __init__(self, transformer: nn.Module, transformer_2: nn.Module, boundary_timestep: float) -> None:
        super().__init__()
        self.transformer = transformer
        self.transformer_2 = transformer_2
        self.boundary_timestep = float(boundary_timestep)
        self.lora_experts: LoraExperts = "both"
        self.lockstep = False
        self._no_split_modules = list(getattr(transformer, "_no_split_modules", None) or [])

    # -- what callers read from a diffusers transformer -------------------------------------------------------------

    @property
    def config(self) -> Any:
        return self.transformer.config

    @property
    def dtype(self) -> torch.dtype:
        return module_dtype(self.transformer)

    def experts(self) -> dict[str, nn.Module]:
        return {"transformer": self.transformer, "transformer_2": self.transformer_2}

    def adapted_experts(self) -> dict[str, nn.Module]:
        """The experts that carry (or get) the LoRA adapter."""
        names = {"both": EXPERT_NAMES, "high": EXPERT_NAMES[:1], "low": EXPERT_NAMES[1:]}[self.lora_experts]
        return {name: getattr(self, name) for name in names}

    def add_adapter(self, config: Any) -> None:
        for expert in self.adapted_experts().values():
            expert.add_adapter(config)

    def disable_adapters(self) -> None:
        for expert in self.adapted_experts().values():
            expert.disable_adapters()

    def enable_adapters(self) -> None:
        for expert in self.adapted_experts().values():
            expert.enable_adapters()

    @property
    def peft_config(self) -> dict[str, Any]:
        return next(iter(self.adapted_experts().values())).peft_config

    def enable_gradient_checkpointing(self) -> None:
        for expert in self.experts().values():
            expert.enable_gradient_checkpointing()

    def set_attention_backend(self, backend: str) -> None:
        for expert in self.experts().values():
            expert.set_attention_backend(backend)

    # -- routing ----------------------------------------------------------------------------------------------------

    def is_high_noise(self, timestep: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool from the transformer's timestep input, ``(B,)`` or per token ``(B, L)`` (equal within a
        sample in text-to-video): True where ``transformer`` runs."""
        per_sample = timestep if timestep.ndim == 1 else timestep[:, 0]
        return per_sample >= self.boundary_timestep

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        return_dict: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor]:
        high = self.is_high_noise(timestep)
        groups = [torch.nonzero(high).flatten(), torch.nonzero(~high).flatten()]  # sample indices per expert
        needed = torch.tensor([len(g) > 0 for g in groups], dtype=torch.int32, device=hidden_states.device)
        if self.lockstep:
            torch.distributed.all_reduce(needed, op=torch.distributed.ReduceOp.MAX)  # the same experts everywhere
        outputs, order, idle = [], [], []
        for expert, index, wanted in zip(self.experts().values(), groups, needed.tolist(), strict=True):
            if not wanted:
                continue
            run = index if len(index) else torch.zeros(1, dtype=torch.long, device=hidden_states.device)
            out = expert(
                hidden_states=hidden_states.index_select(0, run),
                timestep=timestep.index_select(0, run),
                encoder_hidden_states=encoder_hidden_states.index_select(0, run),
                return_dict=False,
                **kwargs,
            )[0]
            if len(index):
                outputs.append(out)
                order.append(index)
            else:
                idle.append(out)
        # (B_high + B_low, C, t, h, w) in expert order -> back to the batch order
        merged = torch.cat(outputs).index_select(0, torch.argsort(torch.cat(order)))
        for out in idle:
            merged = merged + 0.0 * out.sum()
        return (merged,)


class WanModel(FlowModel):
    """Wan text-to-video (``WanPipeline``): 5-D latents ``(B, C, t, h, w)`` with ``t = (T - 1) / 4 + 1``; one
    transformer (Wan2.1, Wan2.2 TI2V-5B) or Wan2.2's two experts (:class:`WanExperts`), per-token timesteps where the
    pipeline has ``expand_timesteps``."""

    family = "wan"
    media_kind = "video"

    def __init__(self, pipeline: Any, **kwargs: Any) -> None:
        self._experts: WanExperts | None = None
        if getattr(pipeline, "transformer_2", None) is not None:
            ratio = pipeline.config.get("boundary_ratio")
            if ratio is None:
                raise ConfigError(
                    f"{self.family} pipeline has a transformer_2 but no boundary_ratio: WanPipeline would never call "
                    "it; set boundary_ratio in model_index.json (Wan2.2 T2V-A14B: 0.875)"
                )
            steps = pipeline.scheduler.config.num_train_timesteps
            self._experts = WanExperts(pipeline.transformer, pipeline.transformer_2, ratio * steps)
        super().__init__(pipeline, **kwargs)
        #: CFG scale of the low-noise expert (the pipeline's ``guidance_scale_2``); None: ``guidance_scale``
        self.guidance_scale_2: float | None = None

    # -- components -------------------------------------------------------------------------------------------------

    @property
    def two_experts(self) -> bool:
        return self._experts is not None

    @property
    def leaves_parameters_unused(self) -> bool:
        # A backward through high-noise steps alone leaves the low-noise expert without gradients (and the reverse):
        # GRPO trains one step at a time.
        return self.two_experts

    @property
    def expand_timesteps(self) -> bool:
        return bool(self.pipeline.config.get("expand_timesteps", False))

    @property
    def transformer(self) -> nn.Module:
        return self._experts if self._experts is not None else self.pipeline.transformer

    @transformer.setter
    def transformer(self, module: nn.Module) -> None:
        if self._experts is None:
            self.pipeline.transformer = module
            return
        if not isinstance(module, WanExperts):
            raise TypeError(f"a two-expert Wan model takes a WanExperts module, got {type(module).__name__}")
        self._experts = module
        self.pipeline.transformer, self.pipeline.transformer_2 = module.transformer, module.transformer_2

    def set_lora_experts(self, experts: str) -> None:
        """Which experts a LoRA goes on (``model.lora_experts``): ``both``, ``high`` or ``low``; one-transformer
        checkpoints take ``both`` only."""
        if experts not in LORA_EXPERTS:
            raise ConfigError(f"model.lora_experts must be one of {', '.join(LORA_EXPERTS)}, got {experts!r}")
        if self._experts is None:
            if experts != "both":
                raise ConfigError(
                    f"model.lora_experts={experts} needs a two-expert checkpoint (Wan2.2 A14B); this {self.family} "
                    "model has one transformer: remove model.lora_experts"
                )
            return
        self._experts.lora_experts = experts

    def set_guidance_scale_2(self, scale: float | None) -> None:
        """The low-noise expert's CFG scale (``model.guidance_scale_2``; None: the sampling ``guidance_scale``)."""
        if scale is not None and self._experts is None:
            raise ConfigError(
                f"model.guidance_scale_2={scale} guides a low-noise expert; this {self.family} model has one "
                "transformer: remove model.guidance_scale_2"
            )
        if scale is not None and scale < 1:
            raise ConfigError(f"model.guidance_scale_2 must be >= 1 (1: no guidance), got {scale}")
        self.guidance_scale_2 = scale

    # -- shapes -----------------------------------------------------------------------------------------------------

    @property
    def spatial_multiple(self) -> int:
        return self.pipeline.vae_scale_factor_spatial * self.transformer.config.patch_size[1]

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

    # -- the transformer call ---------------------------------------------------------------------------------------

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
        timestep = self.timestep(sigma)  # (B,)
        if self.expand_timesteps:
            # WanPipeline: (mask[0][0][:, ::2, ::2] * t).flatten(), one value per 2x2 token of every latent frame:
            # (B,) -> (B, t * ceil(h/2) * ceil(w/2))
            tokens = torch.ones_like(latents[:, 0, :, ::2, ::2], dtype=torch.float32).flatten(1)
            timestep = tokens * timestep[:, None]
        return module(
            hidden_states=latents.to(dtype),
            timestep=timestep,
            encoder_hidden_states=cond.embeds.to(dtype),
            return_dict=False,
        )[0]

    def guided(self, v_neg, v_pos, sigma, guidance_scale):
        """The pipeline's per-stage scale: ``guidance_scale`` where the high-noise expert runs, ``guidance_scale_2``
        where the low-noise one does (each sample by its own ``sigma (B,)``)."""
        if self._experts is None or self.guidance_scale_2 is None:
            return self.guide(v_neg, v_pos, guidance_scale)
        high = self._experts.is_high_noise(self.timestep(sigma)).view(-1, *[1] * (v_pos.ndim - 1))  # (B, 1, 1, 1, 1)
        return torch.where(
            high, self.guide(v_neg, v_pos, guidance_scale), self.guide(v_neg, v_pos, self.guidance_scale_2)
        )

    def pipeline_guidance_kwargs(self, guidance_scale, negative_prompt=""):
        kwargs = super().pipeline_guidance_kwargs(guidance_scale, negative_prompt)
        if self.guidance_scale_2 is not None:
            kwargs["guidance_scale_2"] = self.guidance_scale_2
        return kwargs

    # -- VAE --------------------------------------------------------------------------------------------------------

    def encode_media(self, media):
        param = self._vae_param()
        # (B, T, 3, H, W) in [0, 1] -> (B, 3, T, H, W) in [-1, 1]
        pixels = media.to(param.device, param.dtype).permute(0, 2, 1, 3, 4) * 2 - 1
        latents = self.vae.encode(pixels).latent_dist.mean
        mean, std = wan_vae_stats(self.vae, latents)
        return ((latents - mean) / std).float()

    def decode_latents(self, latents):
        param = self._vae_param()
        z = latents.to(param.device, param.dtype)
        mean, std = wan_vae_stats(self.vae, z)
        video = self.vae.decode(z * std + mean, return_dict=False)[0]  # (B, 3, T, H, W) in [-1, 1]
        return (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4).to(latents.device)


class Wan22Model(WanModel):
    """Wan2.2 T2V-A14B: the two-expert checkpoint (``transformer``, ``transformer_2``, ``boundary_ratio``)."""

    family = "wan22"

    def __init__(self, pipeline: Any, **kwargs: Any) -> None:
        super().__init__(pipeline, **kwargs)
        if not self.two_experts:
            raise ConfigError(
                "model.family=wan22 is Wan2.2 A14B with two experts, but this checkpoint has one transformer; use "
                "family wan22ti2v for Wan2.2 TI2V-5B or wan for Wan2.1"
            )


class Wan22TI2VModel(WanModel):
    """Wan2.2 TI2V-5B: one transformer with per-token timesteps (``expand_timesteps``) on the 48-channel Wan2.2 VAE
    (16x spatial: patchified 2x2 then 8x); text-to-video, or image-to-video when prompts come with source images.

    With a source, as diffusers' ``WanImageToVideoPipeline`` runs this checkpoint (``expand_timesteps``): the source,
    resized to the output's ``height x width``, is VAE-encoded as one frame (posterior mode, normalized), and at every
    transformer call it replaces the first latent frame, whose tokens get timestep 0 (the per-token timestep mask);
    the decoded video starts from it. The sampler never moves that frame: its velocity is 0 here (the pipeline steps
    it with the transformer's output and overwrites it before each call and before decoding, so the rest of the
    trajectory and the video are the same), which keeps the transformer's output for tokens it holds fixed out of the
    policy's log-probabilities and their gradients.
    """

    family = "wan22ti2v"
    optional_sources = True
    sources_need_size = True  # the source is resized to the output size

    def __init__(self, pipeline: Any, **kwargs: Any) -> None:
        super().__init__(pipeline, **kwargs)
        if not self.expand_timesteps or self.two_experts:
            raise ConfigError(
                "model.family=wan22ti2v is Wan2.2 TI2V-5B (one transformer, expand_timesteps: true in "
                "model_index.json); this checkpoint is not: use wan22 for the A14B experts or wan for Wan2.1"
            )

    def _encode_with_sources(self, prompts, sources, *, size):
        height, width, _ = size
        text = self._encode(prompts)
        param = self._vae_param()
        firsts = []
        for source in sources:
            pixels = self.pipeline.video_processor.preprocess(source_pil(source), height=height, width=width)
            frame = pixels.unsqueeze(2).to(param.device, param.dtype)  # (1, 3, 1, H, W) in [-1, 1]
            latents = self.vae.encode(frame).latent_dist.mode()  # (1, C, 1, h, w)
            mean, std = wan_vae_stats(self.vae, latents)
            firsts.append(((latents - mean) / std).float())
        return PromptEmbeds(text.embeds, image_latents=cat_source_latents(firsts))

    def _forward(self, module, latents, sigma, cond, guidance):
        first = cond.image_latents
        if first is None:
            return super()._forward(module, latents, sigma, cond, guidance)
        first = first.to(latents.device, latents.dtype)  # (B, C, 1, h, w)
        if first.shape[-2:] != latents.shape[-2:]:
            raise ValueError(
                f"the source latents are {tuple(first.shape[-2:])}, the latents {tuple(latents.shape[-2:])}: encode "
                "the prompts at the size generated (encode_prompts(size=))"
            )
        dtype = module_dtype(module)
        held = torch.cat([first, latents[:, :, 1:]], dim=2)  # (B, C, t, h, w), the first frame the source's
        # one timestep per 2x2 token of every latent frame, 0 on the first frame's: (B, t * ceil(h/2) * ceil(w/2))
        tokens = torch.ones_like(latents[:, 0, :, ::2, ::2], dtype=torch.float32)
        tokens[:, 0] = 0
        timestep = tokens.flatten(1) * self.timestep(sigma)[:, None]
        out = module(
            hidden_states=held.to(dtype),
            timestep=timestep,
            encoder_hidden_states=cond.embeds.to(dtype),
            return_dict=False,
        )[0]
        return torch.cat([torch.zeros_like(out[:, :, :1]), out[:, :, 1:]], dim=2)  # the held frame does not move

    def final_latents(self, latents, cond):
        if cond.image_latents is None:
            return latents
        first = cond.image_latents.to(latents.device, latents.dtype)  # (B, C, 1, h, w)
        return torch.cat([first, latents[:, :, 1:]], dim=2)

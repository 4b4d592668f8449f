"""The FLUX.2 klein (``Flux2KleinPipeline``) adapter."""

from __future__ import annotations

import numpy as np
import torch

from mmreward.errors import ConfigError
from mmreward.flow.adapter import FlowModel, PromptEmbeds, fixed_shift_sigmas, module_dtype


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
        return self.unit_timestep(sigma)  # the pipeline passes timestep / 1000

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
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
            guidance=self._guidance_input(guidance, batch, device),
            encoder_hidden_states=cond.embeds.to(dtype),
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return self.from_pipeline_latents(out, height * self.spatial_multiple, width * self.spatial_multiple)

    def _guidance_input(self, guidance: float, batch: int, device: torch.device) -> torch.Tensor | None:
        """The transformer's ``guidance`` input: none for klein (no guidance embedding)."""
        return None

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
        """Flux2KleinPipeline's (and Flux2Pipeline's) schedule: ``linspace(1, 1/N, N)`` shifted by the empirical
        ``mu`` of FLUX.2 (a function of the image token count and of ``N``); with ``sampling_shift`` set,
        :func:`fixed_shift_sigmas`."""
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu  # klein's module has a copy

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

"""The FLUX.1 (``FluxPipeline``) adapter."""

from __future__ import annotations

import torch

from mmreward.flow.adapter import (
    PromptEmbeds,
    module_config,
    module_dtype,
    pack_patches,
    token_shift_sigmas,
    unpack_patches,
)
from mmreward.flow.families.sd3 import SD3Model


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
        return self.unit_timestep(sigma)  # FluxTransformer2DModel multiplies by 1000 itself

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
        batch, channels, height, width = latents.shape
        rows = torch.arange(height // 2, device=latents.device)
        cols = torch.arange(width // 2, device=latents.device)
        img_ids = torch.stack(
            [torch.zeros(height // 2, width // 2, device=latents.device), *torch.meshgrid(rows, cols, indexing="ij")],
            dim=-1,
        ).reshape(-1, 3)  # (h/2 * w/2, 3): (0, row, col)
        txt_ids = torch.zeros(cond.embeds.shape[1], 3, device=latents.device)
        guidance_input = None
        if module_config(module).guidance_embeds:
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

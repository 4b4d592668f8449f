"""The Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``) adapter."""

from __future__ import annotations

from mmreward.flow.adapter import FlowModel, PromptEmbeds, module_dtype


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
        dtype = module_dtype(module)
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

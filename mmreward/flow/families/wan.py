"""The Wan2.1 text-to-video (``WanPipeline``) adapter."""

from __future__ import annotations

import torch

from mmreward.errors import ConfigError
from mmreward.flow.adapter import FlowModel, PromptEmbeds, module_dtype


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
        dtype = module_dtype(module)
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

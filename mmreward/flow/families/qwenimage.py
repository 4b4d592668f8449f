"""The Qwen-Image (``QwenImagePipeline``) adapter."""

from __future__ import annotations

from typing import Any

import torch

from mmreward.errors import ConfigError
from mmreward.flow.adapter import (
    FlowModel,
    PromptEmbeds,
    module_dtype,
    pack_patches,
    token_shift_sigmas,
    unpack_patches,
    wan_vae_stats,
)


class QwenImageModel(FlowModel):
    """Qwen-Image (``QwenImagePipeline``): an MM-DiT on 2x2-packed latents of a Wan-style VAE with one frame,
    conditioned on the last hidden states of Qwen2.5-VL (prompts keep their own lengths: a mask), the FLUX-style
    token-dependent schedule shift, and true CFG whose guided velocity is rescaled to the conditional velocity's
    norm per packed token (:meth:`guide`). The pipeline calls the scale ``true_cfg_scale``."""

    family = "qwenimage"
    default_max_sequence_length = 512

    def __init__(self, pipeline: Any, **kwargs: Any) -> None:
        super().__init__(pipeline, **kwargs)
        if self.transformer.config.get("guidance_embeds", False):
            raise ConfigError(
                "this Qwen-Image transformer is guidance-distilled (guidance_embeds=True); the qwenimage adapter "
                "implements the released models' true CFG only: use a checkpoint with guidance_embeds=False"
            )

    @property
    def spatial_multiple(self) -> int:
        return self.pipeline.vae_scale_factor * 2

    @property
    def leaves_parameters_unused(self) -> bool:
        # The last dual-stream block's text output is discarded (only the image stream reaches norm_out), so its
        # text-side output projection (``to_add_out``, a default LoRA target) never gets a gradient.
        return True

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
        return self.unit_timestep(sigma)  # the pipeline passes timestep / 1000

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
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

    def encode_media(self, media):
        param = self._vae_param()
        pixels = media.to(param.device, param.dtype).unsqueeze(2) * 2 - 1  # (B, 3, 1, H, W) in [-1, 1]
        latents = self.vae.encode(pixels).latent_dist.mean  # (B, C, 1, h, w)
        mean, std = wan_vae_stats(self.vae, latents)
        return ((latents - mean) / std).squeeze(2).float()

    def decode_latents(self, latents):
        param = self._vae_param()
        z = latents.to(param.device, param.dtype).unsqueeze(2)  # (B, C, 1, h, w)
        mean, std = wan_vae_stats(self.vae, z)
        pixels = self.vae.decode(z * std + mean, return_dict=False)[0][:, :, 0]  # (B, 3, H, W) in [-1, 1]
        return (pixels.float() / 2 + 0.5).clamp(0, 1).to(latents.device)

"""The Z-Image (``ZImagePipeline``) adapter."""

from __future__ import annotations

import torch

from mmreward.flow.adapter import PromptEmbeds, module_dtype, token_shift_sigmas
from mmreward.flow.families.sd3 import SD3Model


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
        return 1 - self.unit_timestep(sigma)

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
        frames = list(latents.to(dtype).unsqueeze(2).unbind(0))  # B x (C, 1, h, w)
        captions = [t.to(dtype) for t in cond.token_list()]  # B x (L_i, D)
        out = module(frames, self.timestep(sigma), captions, return_dict=False)[0]
        return -torch.stack(out).squeeze(2)  # (B, C, h, w)

    def pipeline_guidance_kwargs(self, guidance_scale, negative_prompt=""):
        # None: the pipeline's own empty negative per prompt (a single string fails for a list of prompts)
        return {"guidance_scale": guidance_scale - 1, "negative_prompt": negative_prompt or None}

    def sampling_sigmas(self, num_steps, latent_shape):
        return token_shift_sigmas(self, num_steps, latent_shape)

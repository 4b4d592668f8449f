"""The Wan image-to-video (``WanImageToVideoPipeline``) adapter: Wan2.1 I2V-14B and Wan2.2 I2V-A14B.

The source image of each prompt becomes the video's first frame. As the pipeline's ``prepare_latents`` does, it is
resized to the output's ``height x width``, followed by ``num_frames - 1`` black frames, and the VAE encodes that
video (posterior mode, normalized by the VAE's latent statistics). A 4-channel mask marks the first latent frame
(one channel per frame of the VAE's 4x temporal compression: 1 on the source's frame, 0 elsewhere). Mask and latents,
``(B, 4 + C, t, h, w)``, are concatenated to the noisy latents along channels at every transformer call, so the
transformer takes ``2C + 4`` channels and returns the ``C``-channel velocity. That conditioning is
``PromptEmbeds.image_latents``: it travels with the prompt through rollouts, stored steps and losses, and is encoded
once per (prompt, source, output size).

What differs between the two checkpoints is read from them, as the pipeline reads it:

- Wan2.1 I2V (``transformer.config.image_dim`` set): the transformer also cross-attends to CLIP ViT-H image features
  (the image encoder's second-to-last hidden states of the source as the pipeline passes it, size-independent), kept
  in ``PromptEmbeds.secondary``. The transformer's attention takes every context token before the last 512 as an
  image token (diffusers' ``WanAttnProcessor`` hard-codes the text length 512), so the text embeddings are zero-
  padded to 512 tokens at each call, as the pipeline pads them; ``max_sequence_length`` may only be shorter.
- Wan2.2 I2V-A14B (``transformer_2`` and ``boundary_ratio``, no image encoder): the two experts routed per sample by
  timestep, as the ``wan22`` family (:class:`mmreward.flow.families.wan.WanExperts`).

Wan2.2 TI2V-5B's image-conditioned mode (``expand_timesteps``: the first frame's latents replaced, not
concatenated) is a different layout and is refused here.
"""

from __future__ import annotations

from typing import Any

import torch

from mmreward.errors import ConfigError
from mmreward.flow.adapter import PromptEmbeds, cat_source_latents, module_dtype, source_pil
from mmreward.flow.families.wan import WanModel

# diffusers' WanAttnProcessor splits the context at its last 512 tokens (text) when the transformer has image
# cross-attention; the pipeline pads the T5 embeddings to its max_sequence_length (default 512) with zeros.
TEXT_CONTEXT = 512


class WanI2VModel(WanModel):
    """Wan image-to-video (``WanImageToVideoPipeline``): a conditioning image per prompt; see the module docstring."""

    family = "wan-i2v"
    conditional = True
    sources_need_size = True
    default_max_sequence_length = TEXT_CONTEXT  # the pipeline's max_sequence_length

    def __init__(self, pipeline: Any, **kwargs: Any) -> None:
        if pipeline.config.get("expand_timesteps", False):
            raise ConfigError(
                "model.family=wan-i2v takes Wan2.1 I2V / Wan2.2 I2V-A14B checkpoints; this one has expand_timesteps "
                "(Wan2.2 TI2V-5B): use family wan22ti2v"
            )
        super().__init__(pipeline, **kwargs)
        vae_channels = self.vae.config.z_dim
        expected = 2 * vae_channels + pipeline.vae_scale_factor_temporal
        if self.transformer.config.in_channels != expected:
            raise ConfigError(
                f"model.family=wan-i2v needs a transformer taking latents, mask and conditioning ({expected} channels "
                f"for this VAE); this one takes {self.transformer.config.in_channels}: a text-to-video checkpoint "
                "(use family wan)"
            )
        if self.image_features and getattr(pipeline, "image_encoder", None) is None:
            raise ConfigError(
                "this wan-i2v transformer cross-attends to CLIP image features (image_dim is set) but the pipeline "
                "has no image_encoder: load the full Wan2.1 I2V checkpoint (image_encoder and image_processor)"
            )

    @property
    def image_features(self) -> bool:
        """True for Wan2.1 I2V: the transformer cross-attends to the source's CLIP features."""
        return self.pipeline.transformer.config.image_dim is not None

    def latent_shape(self, batch, height, width, num_frames=None):
        shape = super().latent_shape(batch, height, width, num_frames)  # its channels are the transformer input's
        return (batch, self.vae.config.z_dim, *shape[2:])  # (B, C, t, h, w): the noisy latents alone

    def _encode_with_sources(self, prompts, sources, *, size):
        if self.image_features and self.max_sequence_length > TEXT_CONTEXT:
            raise ConfigError(
                f"max_sequence_length={self.max_sequence_length}: Wan2.1 I2V's transformer reads exactly "
                f"{TEXT_CONTEXT} text tokens; use {TEXT_CONTEXT} or fewer"
            )
        height, width, num_frames = size
        text = self._encode(prompts)
        images = [source_pil(source) for source in sources]  # the 8-bit images the pipeline takes
        conditions = []
        for image in images:
            pixels = self.pipeline.video_processor.preprocess(image, height=height, width=width)  # (1, 3, H, W)
            noise = torch.zeros(self.latent_shape(1, height, width, num_frames), device=self.device)
            # the pipeline's own step: (1, 4 + C, t, h, w), the first-frame mask then the normalized latents of
            # [source, black frames] (the zero noise only fills the latents it also returns)
            _, condition = self.pipeline.prepare_latents(
                pixels.to(self.device, torch.float32),
                1,
                self.vae.config.z_dim,
                height,
                width,
                num_frames,
                torch.float32,
                self.device,
                None,
                noise,
            )
            conditions.append(condition.float())
        features = None
        if self.image_features:
            # (B, 257, 1280) for ViT-H/14: the second-to-last hidden states, as the pipeline's encode_image
            features = PromptEmbeds(self.pipeline.encode_image(images, self.device).float())
        return PromptEmbeds(text.embeds, image_latents=cat_source_latents(conditions), secondary=features)

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
        condition = cond.image_latents.to(latents.device)  # (B, 4 + C, t, h, w)
        if condition.shape[2:] != latents.shape[2:]:
            raise ValueError(
                f"the source conditioning has latent size {tuple(condition.shape[2:])}, the latents "
                f"{tuple(latents.shape[2:])}: encode the prompts at the size generated (encode_prompts(size=))"
            )
        hidden = torch.cat([latents, condition.to(latents.dtype)], dim=1)  # (B, 2C + 4, t, h, w), the pipeline's order
        text = cond.embeds
        image = {}
        if cond.secondary is not None:
            text = torch.nn.functional.pad(text, (0, 0, 0, TEXT_CONTEXT - text.shape[1]))  # (B, 512, D)
            image["encoder_hidden_states_image"] = cond.secondary.embeds.to(dtype)
        return module(
            hidden_states=hidden.to(dtype),
            timestep=self.timestep(sigma),
            encoder_hidden_states=text.to(dtype),
            return_dict=False,
            **image,
        )[0]

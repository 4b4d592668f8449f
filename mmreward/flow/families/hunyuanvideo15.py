"""The HunyuanVideo 1.5 text-to-video (``HunyuanVideo15Pipeline``) adapter."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmreward.errors import ConfigError
from mmreward.flow.adapter import FlowModel, PromptEmbeds, module_config, module_dtype


class HunyuanVideo15Model(FlowModel):
    """HunyuanVideo 1.5 text-to-video (``HunyuanVideo15Pipeline``): a DiT on 5-D latents ``(B, C, t, h, w)`` of a
    causal 3-D VAE (``t = (T - 1) / 4 + 1``; 16x spatial in the released VAE), normalized by its
    ``scaling_factor`` alone.

    - Text, two streams with their own lengths (a mask each): the hidden states two layers below the top of
      Qwen2.5-VL's language model on the pipeline's system-message chat, its 108-token prefix cropped, and the ByT5
      embeddings of the quoted text in the prompt (glyphs; no quoted text: no tokens), kept in
      ``PromptEmbeds.secondary``. The transformer puts the real tokens first and masks the rest, so the padding a
      batch adds does not change the velocities.
    - The transformer takes the noisy latents concatenated with the image-to-video conditioning channels (zero
      latents and a zero mask for text-to-video) and 729 zero SigLIP image tokens (masked for text-to-video); its
      timestep is ``1000 sigma``; it predicts the flow velocity ``eps - x0``.
    - Schedule: ``linspace(1, 0, N + 1)[:-1]`` through the fixed shift of the checkpoint's scheduler config.
    - Guidance: true CFG against the negative prompt (empty by default), run by the pipeline's
      ``ClassifierFreeGuidance`` guider component, whose scale is not a call argument (see
      :meth:`pipeline_guidance_kwargs`).
    """

    family = "hunyuanvideo15"
    media_kind = "video"
    #: The pipeline's ``tokenizer_max_length`` (prompt tokens after the chat prefix); not a call argument there.
    default_max_sequence_length = 1000

    def __init__(self, pipeline: Any, **kwargs: Any) -> None:
        super().__init__(pipeline, **kwargs)
        guider = pipeline.guider
        unsupported = {
            "guidance_rescale": (guider.config.get("guidance_rescale", 0.0), 0.0),
            "start": (guider.config.get("start", 0.0), 0.0),
            "stop": (guider.config.get("stop", 1.0), 1.0),
        }
        for name, (value, plain) in unsupported.items():
            if value != plain:
                raise ConfigError(
                    f"the pipeline's guider has {name}={value}; the hunyuanvideo15 adapter guides with plain CFG at "
                    f"every step ({name}={plain}): set pipeline.guider = pipeline.guider.new({name}={plain})"
                )

    @property
    def spatial_multiple(self) -> int:
        return self.pipeline.vae_scale_factor_spatial * self.transformer.config.patch_size

    @property
    def leaves_parameters_unused(self) -> bool:
        # The last double-stream block's text output is discarded (only the video tokens reach norm_out), so its
        # text-side output projection (``to_add_out``, a default LoRA target) never gets a gradient.
        return True

    def _encode(self, prompts):
        # The pipeline's own two encoders. encode_prompt reads the prompt length from the pipeline object, so its
        # two steps are called with this adapter's max_sequence_length instead.
        pipe = self.pipeline
        embeds, mask = pipe._get_mllm_prompt_embeds(
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            prompt=list(prompts),
            device=self.device,
            tokenizer_max_length=self.max_sequence_length,
            system_message=pipe.system_message,
            crop_start=pipe.prompt_template_encode_start_idx,
        )  # (B, max_sequence_length, D), (B, max_sequence_length)
        glyphs, glyph_mask = pipe._get_byt5_prompt_embeds(
            tokenizer=pipe.tokenizer_2,
            text_encoder=pipe.text_encoder_2,
            prompt=list(prompts),
            device=self.device,
            tokenizer_max_length=pipe.tokenizer_2_max_length,
        )  # (B, 256, D2), (B, 256); all masked for a prompt without quoted text
        return PromptEmbeds(embeds, mask=mask.bool(), secondary=PromptEmbeds(glyphs, mask=glyph_mask.bool()))

    def latent_shape(self, batch, height, width, num_frames=None):
        self.check_size(height, width, num_frames)
        spatial = self.pipeline.vae_scale_factor_spatial
        frames = (num_frames - 1) // self.pipeline.vae_scale_factor_temporal + 1
        return (batch, self.vae.config.latent_channels, frames, height // spatial, width // spatial)

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
        batch, channels, frames, height, width = latents.shape
        device = latents.device
        # text-to-video: zero conditioning latents (B, C, t, h, w) and a zero mask (B, 1, t, h, w)
        condition = torch.zeros(batch, channels + 1, frames, height, width, device=device, dtype=dtype)
        config = module_config(module)
        image_embeds = torch.zeros(
            batch, self.pipeline.vision_num_semantic_tokens, config.image_embed_dim, device=device, dtype=dtype
        )
        glyphs = cond.secondary
        if glyphs is None:
            raise ValueError(
                "hunyuanvideo15 conditioning needs its ByT5 stream (PromptEmbeds.secondary): encode the prompts with "
                "encode_prompts"
            )
        return module(
            hidden_states=torch.cat([latents.to(dtype), condition], dim=1),  # (B, 2C + 1, t, h, w)
            image_embeds=image_embeds,
            timestep=self.timestep(sigma).to(dtype),
            encoder_hidden_states=cond.embeds.to(dtype),
            encoder_attention_mask=_mask(cond, dtype),
            encoder_hidden_states_2=glyphs.embeds.to(dtype),
            encoder_attention_mask_2=_mask(glyphs, dtype),
            return_dict=False,
        )[0]

    def pipeline_guidance_kwargs(self, guidance_scale, negative_prompt=""):
        """HunyuanVideo15Pipeline takes its CFG scale from its ``guider`` component, not from a call argument: this
        sets ``pipeline.guider`` to a copy with ``guidance_scale`` (and the ``v_neg + w (v_pos - v_neg)``
        formulation) and returns the negative prompt."""
        guider = self.pipeline.guider
        if guider.guidance_scale != guidance_scale or guider.use_original_formulation:
            self.pipeline.guider = guider.new(guidance_scale=guidance_scale, use_original_formulation=False)
        return {"negative_prompt": negative_prompt}

    def sampling_sigmas(self, num_steps, latent_shape):
        """HunyuanVideo15Pipeline's schedule: ``linspace(1, 0, N + 1)[:-1]`` through the scheduler's shift; with
        ``sampling_shift`` set, :func:`~mmreward.flow.adapter.fixed_shift_sigmas`."""
        if num_steps < 1:
            raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
        if self.sampling_shift is not None:
            return super().sampling_sigmas(num_steps, latent_shape)
        scheduler = self._flow_scheduler()
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, num_steps + 1)[:-1])
        return scheduler.sigmas.float().cpu()

    # AutoencoderKLHunyuanVideo15's mid-block attention builds a (B, S, S) causal mask that SDPA broadcasts over
    # heads, not batches: batches over one fail (diffusers 0.42), so samples go through the VAE one at a time.

    def encode_media(self, media):
        param = self._vae_param()
        # (B, T, 3, H, W) in [0, 1] -> (B, 3, T, H, W) in [-1, 1]
        pixels = media.to(param.device, param.dtype).permute(0, 2, 1, 3, 4) * 2 - 1
        latents = torch.cat([self.vae.encode(p.unsqueeze(0)).latent_dist.mean for p in pixels])
        return (latents * self.vae.config.scaling_factor).float()

    def decode_latents(self, latents):
        param = self._vae_param()
        z = latents.to(param.device, param.dtype) / self.vae.config.scaling_factor
        video = torch.cat([self.vae.decode(one.unsqueeze(0), return_dict=False)[0] for one in z])  # (B, 3, T, H, W)
        return (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4).to(latents.device)


def _mask(embeds: PromptEmbeds, dtype: torch.dtype) -> torch.Tensor:
    """``(B, L)`` in ``dtype`` as the pipeline passes it (1 at real tokens); all ones where every token is real."""
    if embeds.mask is None:
        return torch.ones(embeds.embeds.shape[:2], device=embeds.embeds.device, dtype=dtype)
    return embeds.mask.to(dtype)

"""The Qwen-Image 2.1 (``QwenImage21Pipeline``) adapter: text-to-image."""

from __future__ import annotations

import torch

from mmreward.flow.adapter import FlowModel, PromptEmbeds, module_dtype, token_shift_sigmas
from mmreward.flow.families.qwenimage import QwenImageModel


class QwenImage21Model(QwenImageModel):
    """Qwen-Image 2.1 (``QwenImage21Pipeline``; the Turbo checkpoint through the same pipeline class). What it
    shares with Qwen-Image: a Wan-style VAE with one frame and per-channel latent statistics, the transformer's
    timestep ``sigma`` (the pipeline's ``t / 1000``), true CFG called ``true_cfg_scale`` with a negative prompt,
    sizes in multiples of the VAE factor times 2. What differs, each as the pipeline does it:

    - prompts: the last decoder layer of Qwen3-VL *before* its final norm (the pipeline hooks the norm away), the
      system turn dropped; prompts keep their own lengths, whole (the pipeline does not truncate, so
      ``max_sequence_length`` does not apply);
    - one single-stream, block-causal transformer over ``[text tokens; image tokens]``: latents unpatched (64
      channels, one token per latent pixel, 16x VAE), the image block appended after the text. The image's rotary
      frame position is the text length, so a prompt padded to another's length would be another input: each group
      of prompts of one length gets its own call (CFG's negative and positive halves included), which is what the
      pipeline computes for one prompt per call, the way it calls the negative prompt; in a distributed run each
      row gets its own call, so that every process makes as many calls (:func:`_call_groups`);
    - true CFG without Qwen-Image's norm rescale, off by default (``true_cfg_scale`` 1: 2.1 is sampled without
      guidance);
    - the schedule's ``mu`` counts unpatched tokens (``h * w``), and a checkpoint's ``sample_sigmas`` (the Turbo
      grid) is used when the step count equals its length (the pipeline then ignores ``num_inference_steps``; other
      step counts take the pipeline's ``linspace`` grid, which it uses when called with ``sigmas=``);
    - an RGBA VAE: media enter opaque (alpha 1) and leave composited over white, as the pipeline flattens RGBA
      images for its vision encoder.

    The pipeline caches the text tokens' keys and values after its first step (``use_kv_cache``): the same numbers
    in float32; rollouts here recompute them, which training forwards need anyway.
    """

    family = "qwenimage21"

    @property
    def leaves_parameters_unused(self) -> bool:
        # one stream: every block's projections act on the image tokens that reach proj_out
        return False

    def _encode(self, prompts):
        # (B, L, D) right-padded with zeros; the mask None when no prompt is padded; text only, so no image slots
        embeds, mask, _ = self.pipeline.encode_prompt(prompt=list(prompts), device=self.device)
        return PromptEmbeds(embeds, mask=None if mask is None else mask.bool())

    def latent_shape(self, batch, height, width, num_frames=None):
        self.check_size(height, width)
        factor = self.pipeline.vae_scale_factor
        return (batch, self.transformer.config.in_channels, height // factor, width // factor)

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
        batch, channels, height, width = latents.shape
        tokens = height * width
        full = cond.embeds.shape[1]
        lengths = [full] * batch if cond.mask is None else cond.mask.sum(1).tolist()
        packed = self.to_pipeline_latents(latents)  # (B, h*w, C)
        parts, order = [], []
        for rows in _call_groups(lengths):
            length = lengths[rows[0]]
            index = torch.tensor(rows, device=latents.device)
            # the image-slot mask over [text; image]: one slot per 2x2 latent tokens, as the pipeline appends them
            slots = torch.arange(length + tokens // 4, device=latents.device) >= length
            out = module(
                hidden_states=packed.index_select(0, index).to(dtype),
                encoder_hidden_states=cond.embeds.index_select(0, index)[:, :length].to(dtype),
                timestep=self.timestep(sigma.index_select(0, index)).to(dtype),
                img_shapes=[[(1, height, width)]] * len(rows),
                img_mask=slots.expand(len(rows), -1),
                return_dict=False,
            )[0]  # (b, length + h*w, C): the joint sequence, image tokens last
            parts.append(out[:, -tokens:])
            order.extend(rows)
        velocity = torch.cat(parts).index_select(0, torch.argsort(torch.tensor(order, device=latents.device)))
        return velocity.transpose(1, 2).reshape(batch, channels, height, width)

    def guide(self, v_neg, v_pos, guidance_scale):
        return FlowModel.guide(self, v_neg, v_pos, guidance_scale)  # the pipeline's plain true CFG

    def to_pipeline_latents(self, latents):
        return latents.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C), the pipeline's _pack_latents

    def from_pipeline_latents(self, latents, height, width):
        factor = self.pipeline.vae_scale_factor
        batch, _, channels = latents.shape
        return latents.transpose(1, 2).reshape(batch, channels, height // factor, width // factor)

    def sampling_sigmas(self, num_steps, latent_shape):
        grid = self.pipeline.config.get("sample_sigmas")
        grid = grid if grid is not None and len(grid) == num_steps else None
        return token_shift_sigmas(self, num_steps, latent_shape, tokens=latent_shape[-2] * latent_shape[-1], grid=grid)

    def encode_media(self, media):
        if self.vae.config.in_channels == 4:  # the released VAE reads RGBA, as the pipeline converts its images
            alpha = media.new_ones(media.shape[0], 1, *media.shape[2:])
            media = torch.cat([media, alpha], dim=1)  # (B, 4, H, W): opaque
        return super().encode_media(media)

    def decode_latents(self, latents):
        return self.media_from_pipeline(super().decode_latents(latents))

    def media_from_pipeline(self, pixels):
        if pixels.shape[1] == 3:
            return pixels
        rgb, alpha = pixels[:, :3], pixels[:, 3:4]  # (B, 3, H, W), (B, 1, H, W) in [0, 1]
        return rgb * alpha + (1 - alpha)


def _call_groups(lengths: list[int]) -> list[list[int]]:
    """The rows of each transformer call: one call per prompt length, or, in a distributed run, one per row. Each
    process must then call the module as many times as the others (DDP broadcasts the transformer's buffers and
    FSDP2 gathers its parameters at every call, so one process calling it more often than another would wait
    forever), and the batch size, unlike the number of prompt lengths, is the same on every process."""
    if (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    ):
        return [[row] for row in range(len(lengths))]
    return [[row for row, value in enumerate(lengths) if value == length] for length in sorted(set(lengths))]

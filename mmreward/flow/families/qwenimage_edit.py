"""The Qwen-Image-Edit (``QwenImageEditPlusPipeline``) adapter: instruction-based image editing."""

from __future__ import annotations

from typing import Any

import torch

from mmreward.flow.adapter import (
    PromptEmbeds,
    cat_source_latents,
    module_dtype,
    pack_patches,
    source_pil,
    unpack_patches,
)
from mmreward.flow.families.qwenimage import QwenImageModel


class QwenImageEditModel(QwenImageModel):
    """Qwen-Image-Edit Plus (``QwenImageEditPlusPipeline``, the Qwen-Image-Edit-2509 / 2511 checkpoints): Qwen-Image
    whose transformer also sees the source image's packed VAE latents as extra tokens after the noisy ones (RoPE
    places them as a second image of ``img_shapes``), and whose prompt is encoded by Qwen2.5-VL *with* the source
    image: the processor inserts the image's vision tokens after "Picture 1: " in the edit system template. The
    negative prompt is encoded with the same image, and true CFG keeps Qwen-Image's per-token norm rescale.

    Resolutions, as the pipeline: the vision encoder sees the source resized to ``CONDITION_IMAGE_SIZE`` pixels
    (384 x 384) at its aspect ratio, the VAE sees it at ``VAE_IMAGE_SIZE`` (1024 x 1024) pixels, or at
    ``source_area`` pixels when set (a smaller source costs fewer transformer tokens; the released model was trained
    at the pipeline's), sides rounded to multiples of 32. The pipeline's own image processors do the resizing.
    Prompts are encoded one at a time, as the pipeline (which takes one prompt per call) does, and whole:
    ``max_sequence_length`` does not apply (the pipeline accepts the argument but does not truncate).
    """

    family = "qwenimage-edit"
    conditional = True

    def __init__(self, pipeline: Any, **kwargs: Any) -> None:
        super().__init__(pipeline, **kwargs)
        self.source_area: int | None = None

    def _encode(self, prompts):
        raise NotImplementedError("qwenimage-edit encodes prompts with their source images only")

    def _encode_with_sources(self, prompts, sources):
        from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as reference

        processor = self.pipeline.image_processor
        parts, latents = [], []
        for prompt, source in zip(prompts, sources, strict=True):
            image = source_pil(source)
            ratio = image.width / image.height
            # read at call time, as the pipeline reads its module constants
            cond_width, cond_height = reference.calculate_dimensions(reference.CONDITION_IMAGE_SIZE, ratio)
            area = reference.VAE_IMAGE_SIZE if self.source_area is None else self.source_area
            vae_width, vae_height = reference.calculate_dimensions(area, ratio)
            embeds, mask = self.pipeline.encode_prompt(
                prompt=[prompt], image=[processor.resize(image, cond_height, cond_width)], device=self.device
            )  # (1, L, D), the mask None when every token is real
            parts.append(PromptEmbeds(embeds, mask=None if mask is None else mask.bool()))
            pixels = processor.preprocess(image, vae_height, vae_width).unsqueeze(2)  # (1, 3, 1, H', W') in [-1, 1]
            param = self._vae_param()
            # the pipeline's own VAE step: the posterior's mode, normalized by the VAE's latent statistics
            encoded = self.pipeline._encode_vae_image(pixels.to(param.device, param.dtype), generator=None)
            latents.append(encoded[:, :, 0].float())  # (1, C, h', w')
        text = PromptEmbeds.cat(parts)
        return PromptEmbeds(text.embeds, mask=text.mask, image_latents=cat_source_latents(latents))

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
        batch, _, height, width = latents.shape
        source = cond.image_latents  # (B, C, h', w')
        mask = cond.mask
        tokens = (height // 2) * (width // 2)
        out = module(
            hidden_states=torch.cat([pack_patches(latents), pack_patches(source.to(latents.device))], dim=1).to(dtype),
            timestep=self.timestep(sigma).to(dtype),
            encoder_hidden_states=cond.embeds.to(dtype),
            encoder_hidden_states_mask=None if mask is None or bool(mask.all()) else mask,
            img_shapes=[[(1, height // 2, width // 2), (1, source.shape[-2] // 2, source.shape[-1] // 2)]] * batch,
            return_dict=False,
        )[0]
        return unpack_patches(out[:, :tokens], height, width)  # the noisy tokens' velocity

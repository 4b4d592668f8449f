"""The FLUX.1 Kontext (``FluxKontextPipeline``) adapter: instruction-based image editing."""

from __future__ import annotations

import math
from typing import Any

import torch

from mmreward.flow.adapter import (
    PromptEmbeds,
    cat_source_latents,
    module_config,
    module_dtype,
    pack_patches,
    source_pil,
    unpack_patches,
)
from mmreward.flow.families.flux import FluxModel


class FluxKontextModel(FluxModel):
    """FLUX.1 Kontext (``FluxKontextPipeline``): FLUX.1 whose transformer also sees the source image's packed VAE
    latents as extra image tokens after the noisy ones, told apart by position id ``(1, row, col)`` (the noisy
    tokens have ``(0, row, col)``); only the noisy tokens' output is the velocity. Text encoding is FLUX.1's (CLIP
    pooled + T5), independent of the image; guidance is FLUX.1-dev's embedded scale (Kontext [dev] is
    guidance-distilled) or true CFG for a transformer without a guidance embedding.

    Source resolution: with ``source_area`` None, the pipeline's default (``_auto_resize``): the source is resized to
    the preferred Kontext resolution (about 1 megapixel) nearest its aspect ratio; with ``source_area`` set, to that
    many pixels at its aspect ratio, each side rounded to a multiple of :attr:`spatial_multiple` (what the pipeline
    does with ``_auto_resize=False`` for a source already of that size). Resizing and normalization are the
    pipeline's own image processor's, on the 8-bit source image. The output has the requested ``height x width``;
    the pipeline rescales a requested size to its ``max_area`` (1024 x 1024) pixels, so call it with
    ``max_area=height * width`` to compare.
    """

    family = "flux-kontext"
    conditional = True

    def __init__(self, pipeline: Any, **kwargs: Any) -> None:
        super().__init__(pipeline, **kwargs)
        self.source_area: int | None = None

    def source_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` the transformer sees a ``height x width`` source at."""
        multiple = self.spatial_multiple
        ratio = width / height
        if self.source_area is None:
            from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

            _, width, height = min((abs(ratio - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
        else:
            width = round(math.sqrt(self.source_area * ratio) / multiple) * multiple
            height = round(math.sqrt(self.source_area / ratio) / multiple) * multiple
        return max(multiple, height // multiple * multiple), max(multiple, width // multiple * multiple)

    def _encode_with_sources(self, prompts, sources):
        text = self._encode(prompts)
        processor = self.pipeline.image_processor
        latents = []
        for source in sources:
            height, width = self.source_size(*source.shape[-2:])
            image = processor.resize(source_pil(source), height, width)
            pixels = processor.preprocess(image, height, width)  # (1, 3, H', W') in [-1, 1]
            param = self._vae_param()
            # the pipeline's own VAE step: the posterior's mode, shifted and scaled
            latents.append(self.pipeline._encode_vae_image(pixels.to(param.device, param.dtype), generator=None))
        return PromptEmbeds(
            text.embeds, text.pooled, image_latents=cat_source_latents(latents).float()
        )  # (B, C, h', w')

    def _forward(self, module, latents, sigma, cond, guidance):
        dtype = module_dtype(module)
        batch, channels, height, width = latents.shape
        source = cond.image_latents  # (B, C, h', w')
        device = latents.device

        def ids(first: float, rows: int, cols: int) -> torch.Tensor:  # (rows * cols, 3): (first, row, col)
            grid = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
            return torch.stack([torch.full((rows, cols), first, device=device), *grid], dim=-1).reshape(-1, 3)

        img_ids = torch.cat([ids(0, height // 2, width // 2), ids(1, source.shape[-2] // 2, source.shape[-1] // 2)])
        tokens = (height // 2) * (width // 2)
        guidance_input = None
        if module_config(module).guidance_embeds:
            guidance_input = torch.full((batch,), float(guidance), device=device, dtype=torch.float32)
        out = module(
            hidden_states=torch.cat([pack_patches(latents), pack_patches(source.to(device))], dim=1).to(dtype),
            timestep=self.timestep(sigma),
            guidance=guidance_input,
            pooled_projections=cond.pooled.to(dtype),
            encoder_hidden_states=cond.embeds.to(dtype),
            txt_ids=torch.zeros(cond.embeds.shape[1], 3, device=device).to(dtype),
            img_ids=img_ids.to(dtype),
            return_dict=False,
        )[0]
        return unpack_patches(out[:, :tokens], height, width)  # the noisy tokens' velocity

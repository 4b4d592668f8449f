"""The FLUX.2 [dev] (``Flux2Pipeline``) adapter."""

from __future__ import annotations

import torch

from mmreward.errors import ConfigError
from mmreward.flow.families.flux2klein import Flux2KleinModel


class Flux2Model(Flux2KleinModel):
    """FLUX.2 [dev] (``Flux2Pipeline``): the FLUX.2 transformer, VAE, latent layout and schedule of
    :class:`Flux2KleinModel`, with two differences the pipeline makes. Text: hidden states of layers 10, 20 and 30
    of Mistral Small 3 (``Mistral3ForConditionalGeneration`` behind a ``PixtralProcessor`` chat template with
    FLUX.2's system message), concatenated per token, padded to ``max_sequence_length`` (attended to: no mask).
    Guidance: the model is guidance-distilled, so the scale goes into the transformer's guidance embedding
    (``guidance = w``, scaled by 1000 inside the transformer) and one forward per sample runs; the pipeline has no
    negative prompt."""

    family = "flux2"

    #: Mistral layers whose hidden states form a token's text feature (the pipeline's ``text_encoder_out_layers``).
    text_encoder_out_layers = (10, 20, 30)

    def __init__(self, pipeline, **kwargs) -> None:
        super().__init__(pipeline, **kwargs)
        if not self.transformer.config.guidance_embeds:
            raise ConfigError(
                "this FLUX.2 transformer has no guidance embedding (guidance_embeds=False): Flux2Pipeline would "
                "ignore the guidance scale; FLUX.2 [klein] base models guide with true CFG: use --family flux2klein"
            )

    @property
    def batch_cfg(self) -> bool:
        return False

    def _guidance_input(self, guidance, batch, device):
        return torch.full((batch,), float(guidance), device=device, dtype=torch.float32)

    def pipeline_guidance_kwargs(self, guidance_scale, negative_prompt=""):
        if negative_prompt:
            raise ConfigError(
                f"Flux2Pipeline is guidance-distilled and takes no negative prompt; {negative_prompt!r} cannot be "
                "used (use negative_prompt='')"
            )
        return {"guidance_scale": guidance_scale}

"""What the conformance suite does not reach for FLUX.2 [dev] and HunyuanVideo 1.5: HunyuanVideo's second text stream
(ByT5 glyph tokens) and its padding, its guider, and the checks both adapters make on their pipelines."""

from __future__ import annotations

import pytest
import torch

from mmreward.errors import ConfigError
from mmreward.evaluation import generation
from mmreward.family_names import EDITING_FAMILIES, OPTIONAL_IMAGE_FAMILIES
from mmreward.flow.models import ADAPTERS, FAMILIES, VIDEO_FAMILIES, PromptEmbeds
from mmreward.tiny_models import tiny_pipeline


@pytest.fixture(scope="module")
def hunyuan():
    model = ADAPTERS["hunyuanvideo15"](tiny_pipeline("hunyuanvideo15"))
    model.max_sequence_length = 32
    return model


def test_glyph_tokens_ride_along_and_padding_does_not_change_the_velocity(hunyuan):
    """The cache keeps each prompt's real tokens of both streams; the pipeline's own embeddings, padded to 1000
    Qwen and 256 ByT5 tokens, give the same velocity, and the quoted text's ByT5 tokens change it."""
    prompts = ['a sign that says "open"', "a cat"]
    cond = hunyuan.encode_prompts(prompts)
    glyphs = cond.secondary
    assert glyphs is not None and glyphs.mask is not None
    assert glyphs.mask[0].sum() == len('Text "open". ') + 1 and not glyphs.mask[1].any()  # bytes + </s>; none
    assert (glyphs.embeds[1] == 0).all()
    pipe = hunyuan.pipeline
    embeds, mask, embeds_2, mask_2 = pipe.encode_prompt(prompts, device="cpu", batch_size=2)
    assert embeds.shape[1] == 1000 and embeds_2.shape[1] == 256 and cond.embeds.shape[1] == int(mask.sum(1).max())
    padded = PromptEmbeds(embeds, mask=mask.bool(), secondary=PromptEmbeds(embeds_2, mask=mask_2.bool()))
    latents = torch.randn(hunyuan.latent_shape(2, 32, 32, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = hunyuan.velocity(latents, 0.6, cond)
        theirs = hunyuan.velocity(latents, 0.6, padded)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
        without = PromptEmbeds(cond.embeds[:1], mask=cond.mask[:1], secondary=PromptEmbeds(glyphs.embeds[:1, :0]))
        assert not torch.allclose(hunyuan.velocity(latents[:1], 0.6, without), ours[:1], atol=1e-4)


def test_the_guider_is_set_to_the_scale_and_unsupported_guider_settings_are_refused(hunyuan):
    assert hunyuan.pipeline_guidance_kwargs(3.0, "blurry") == {"negative_prompt": "blurry"}
    guider = hunyuan.pipeline.guider
    assert guider.guidance_scale == 3.0 and not guider.use_original_formulation
    pipe = tiny_pipeline("hunyuanvideo15")
    pipe.guider = pipe.guider.new(guidance_rescale=0.7)
    with pytest.raises(ConfigError, match=r"guidance_rescale=0.7.*guider.new\(guidance_rescale=0.0\)"):
        ADAPTERS["hunyuanvideo15"](pipe)


def test_flux2_needs_a_guidance_embedding_and_no_negative_prompt():
    with pytest.raises(ConfigError, match="guidance_embeds=False.*--family flux2klein"):
        ADAPTERS["flux2"](tiny_pipeline("flux2klein"))
    model = ADAPTERS["flux2"](tiny_pipeline("flux2"))
    assert model.pipeline_guidance_kwargs(2.5) == {"guidance_scale": 2.5}
    with pytest.raises(ConfigError, match="no negative prompt"):
        model.pipeline_guidance_kwargs(2.5, "blurry")


def test_the_diffusers_free_family_lists_agree_and_video_sizes_are_checked():
    # generation has defaults and sizes for every family (editing and image-to-video included)
    assert set(generation.EVAL_DEFAULTS) == set(generation.TINY_SIZES) == set(FAMILIES)
    assert set(generation.SPATIAL_MULTIPLE) == set(generation.TINY_SPATIAL_MULTIPLE) == set(FAMILIES)
    assert EDITING_FAMILIES == tuple(f for f in FAMILIES if ADAPTERS[f].conditional)
    assert OPTIONAL_IMAGE_FAMILIES == tuple(f for f in FAMILIES if ADAPTERS[f].optional_sources)
    assert generation.VIDEO_FAMILIES == VIDEO_FAMILIES
    assert VIDEO_FAMILIES == tuple(f for f in FAMILIES if ADAPTERS[f].media_kind == "video")
    generation.check_size("hunyuanvideo15", "tiny", 32, 32, 5)
    with pytest.raises(ConfigError, match=r"--num-frames 6 does not fit hunyuanvideo15: use 4k \+ 1 frames \(e.g. 5"):
        generation.check_size("hunyuanvideo15", "tiny", 32, 32, 6)
    with pytest.raises(
        ConfigError,
        match="video families \\(wan, wan22, wan22ti2v, hunyuanvideo15, wan-i2v\\); flux2 generates images",
    ):
        generation.check_size("flux2", "tiny", 32, 32, 5)

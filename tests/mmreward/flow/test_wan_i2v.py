"""Wan image-to-video beyond the conformance suite (which runs the Wan2.1 I2V layout): Wan2.2 I2V-A14B's two experts
switch where ``WanImageToVideoPipeline`` switches; the conditioning follows the source and the output size; wrong
checkpoints and settings are refused naming the fix."""

from __future__ import annotations

import pytest
import torch

from mmreward.errors import ConfigError
from mmreward.flow.adapter import source_pil
from mmreward.flow.families.wan import WanExperts
from mmreward.flow.models import ADAPTERS, load_flow_model
from mmreward.flow.rollout import policy_step, sample, sample_ode
from mmreward.tiny_models import tiny_pipeline, tiny_wan22_i2v_pipeline

SIZE = {"height": 32, "width": 32, "num_frames": 5}


def _source(seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(seed)) / 255


def _record_calls(pipeline, calls: list[str]):
    return [
        getattr(pipeline, name).register_forward_hook(lambda *args, n=name: calls.append(n))
        for name in ("transformer", "transformer_2")
    ]


def test_wan22_i2v_a14b_switches_experts_and_guidance_as_the_pipeline():
    """3 Euler steps at timesteps 1000, 750, ... with boundary 900: the pipeline runs the high-noise expert for the
    first step and the low-noise one (guided by guidance_scale_2) after; the rollout calls the same experts and
    reproduces the video. No image encoder: the conditioning is the concatenated first-frame latents alone."""
    model = ADAPTERS["wan-i2v"](tiny_wan22_i2v_pipeline())
    model.max_sequence_length = 16
    model.set_guidance_scale_2(1.5)
    pipe = model.pipeline
    assert isinstance(model.transformer, WanExperts) and not model.image_features
    source = _source(0)
    noise = torch.randn(model.latent_shape(1, **SIZE), generator=torch.Generator().manual_seed(0))
    theirs: list[str] = []
    handles = _record_calls(pipe, theirs)
    original, pipe.scheduler = pipe.scheduler, model._flow_scheduler()
    try:
        video = pipe(
            prompt="a cat",
            image=source_pil(source),
            num_inference_steps=3,
            max_sequence_length=16,
            latents=noise,
            output_type="pt",
            **SIZE,
            **model.pipeline_guidance_kwargs(4.0),
        ).frames
        timesteps = pipe.scheduler.timesteps
    finally:
        pipe.scheduler = original
        for handle in handles:
            handle.remove()
    assert timesteps[0] >= 900 > timesteps[1]
    assert theirs == ["transformer"] * 2 + ["transformer_2"] * 4  # cond + uncond per step
    ours: list[str] = []
    handles = _record_calls(pipe, ours)
    kwargs = {"group_size": 1, "num_steps": 3, "guidance_scale": 4.0, **SIZE}
    try:
        rollout = sample_ode(model, ["a cat"], generator=torch.Generator().manual_seed(0), sources=[source], **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    assert ours == ["transformer", "transformer_2", "transformer_2"]  # CFG batched: one call per step
    assert rollout.cond.secondary is None
    torch.testing.assert_close(rollout.media, video.float(), rtol=1e-4, atol=1e-4)
    other = sample_ode(model, ["a cat"], generator=torch.Generator().manual_seed(0), sources=[_source(1)], **kwargs)
    # the source conditions the video (weakly in a tiny random model; the rollout reproduces itself to ~1e-7)
    assert (other.final - rollout.final).abs().max() > 1e-4


def test_the_conditioning_is_encoded_at_the_output_size_and_checked_against_the_latents():
    model = ADAPTERS["wan-i2v"](tiny_pipeline("wan-i2v"))
    model.max_sequence_length = 16
    source = [_source(2)]
    with pytest.raises(ValueError, match="wan-i2v conditions on its sources at the output size: pass size="):
        model.encode_prompts(["a cat"], sources=source)
    with pytest.raises(ConfigError, match="num_frames=4 does not fit wan-i2v"):
        model.encode_prompts(["a cat"], sources=source, size=(32, 32, 4))
    small = model.encode_prompts(["a cat"], sources=source, size=(32, 32, 5))
    large = model.encode_prompts(["a cat"], sources=source, size=(32, 48, 9))
    # (B, 4 mask + 4 latent channels, t, h, w); the mask marks the first latent frame only
    assert small.image_latents.shape == (1, 8, 2, 4, 4) and large.image_latents.shape == (1, 8, 3, 4, 6)
    mask = large.image_latents[:, :4]
    assert (mask[:, :, 0] == 1).all() and (mask[:, :, 1:] == 0).all()
    torch.testing.assert_close(small.secondary.embeds, large.secondary.embeds)  # CLIP sees the source as given
    latents = torch.randn(model.latent_shape(1, 32, 48, 9))
    with pytest.raises(ValueError, match=r"latent size \(2, 4, 4\), the latents \(3, 4, 6\)"):
        model.velocity(latents, 0.5, small)
    assert model.velocity(latents, 0.5, large).shape == latents.shape
    model.max_sequence_length = 513
    with pytest.raises(ConfigError, match="reads exactly 512 text tokens"):
        model.encode_prompts(["a dog"], sources=source, size=(32, 32, 5))


def test_checkpoints_of_other_layouts_and_editing_settings_are_refused():
    with pytest.raises(ConfigError, match="expand_timesteps .*use family wan22ti2v"):
        ADAPTERS["wan-i2v"](tiny_pipeline("wan22ti2v"))
    with pytest.raises(ConfigError, match="takes 4: a text-to-video checkpoint \\(use family wan\\)"):
        ADAPTERS["wan-i2v"](tiny_pipeline("wan"))
    pipeline = tiny_pipeline("wan-i2v")
    pipeline.image_encoder = None
    with pytest.raises(ConfigError, match="has no image_encoder"):
        ADAPTERS["wan-i2v"](pipeline)
    with pytest.raises(ConfigError, match="source_area is for editing families; wan-i2v does not resize"):
        load_flow_model("wan-i2v", "tiny", source_area=1024)
    half = load_flow_model("wan-i2v", "tiny", dtype="bfloat16")  # the image encoder stays float32, with the VAE
    encoder = half.pipeline.image_encoder
    assert encoder.dtype == torch.float32 and not any(p.requires_grad for p in encoder.parameters())
    assert half.transformer.dtype == torch.bfloat16
    assert half.encode_prompts(["a cat"], sources=[_source(4)], size=(32, 32, 5)).secondary is not None
    with pytest.raises(ConfigError, match="wan-i2v is conditioned on a source image: give one per prompt"):
        sample_ode(half, ["a cat"], group_size=1, num_steps=1, **SIZE)


# ------------------------------------------------------------------------- Wan2.2 TI2V-5B with a conditioning image


def test_ti2v_with_a_source_image_is_the_image_to_video_pipelines_expand_timesteps_path():
    """diffusers runs TI2V-5B's image conditioning in WanImageToVideoPipeline (expand_timesteps): the same tiny
    components there, the same source, noise and CFG give the rollout's video and, beyond the held first frame, its
    latents; the rollout keeps the source's latents in the first frame, and SDE log-probabilities are recomputed
    (ratio 1). Without sources the family stays text-to-video (the conformance suite)."""
    from diffusers import WanImageToVideoPipeline

    model = ADAPTERS["wan22ti2v"](tiny_pipeline("wan22ti2v"))
    model.max_sequence_length = 16
    base = model.pipeline
    pipe = WanImageToVideoPipeline(
        tokenizer=base.tokenizer,
        text_encoder=base.text_encoder,
        vae=base.vae,
        scheduler=model._flow_scheduler(),  # the rollout steps with Euler (the checkpoint ships UniPC)
        transformer=base.transformer,
        expand_timesteps=True,
    )
    pipe.set_progress_bar_config(disable=True)
    source = _source(3)
    noise = torch.randn(model.latent_shape(2, **SIZE), generator=torch.Generator().manual_seed(0))
    steps = []

    def record(pipeline, step, timestep, callback_kwargs):
        steps.append(callback_kwargs["latents"].clone())
        return {}

    video = pipe(
        prompt="a cat",
        image=source_pil(source),
        num_inference_steps=3,
        num_videos_per_prompt=2,
        max_sequence_length=16,
        latents=noise,
        output_type="pt",
        callback_on_step_end=record,
        **SIZE,
        **model.pipeline_guidance_kwargs(4.0),
    ).frames
    kwargs = {"group_size": 2, "num_steps": 3, "guidance_scale": 4.0, "sources": [source], **SIZE}
    ours = sample_ode(model, ["a cat"], generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(ours.media, video.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.final[:, :, 1:], steps[-1][:, :, 1:], rtol=1e-4, atol=1e-4)
    first = model.encode_prompts(["a cat"], sources=[source], size=(32, 32, 5)).image_latents  # (1, 48, 1, 2, 2)
    torch.testing.assert_close(ours.final[:, :, :1], first.expand(2, -1, -1, -1, -1))
    text = sample_ode(model, ["a cat"], generator=torch.Generator().manual_seed(0), **{**kwargs, "sources": None})
    assert not torch.allclose(text.media, ours.media, atol=1e-3)
    rollout = sample(model, ["a cat"], generator=torch.Generator().manual_seed(1), decode=False, **kwargs)
    with torch.no_grad():
        for j in range(len(rollout.sde_steps)):
            ratio = torch.exp(policy_step(model, rollout, j).log_prob - rollout.log_probs[:, j])
            torch.testing.assert_close(ratio, torch.ones(2), rtol=0, atol=2e-5)
    with pytest.raises(ConfigError, match="wan generates from text alone"):  # Wan2.1 takes no image
        load_flow_model("wan", "tiny").encode_prompts(["a cat"], sources=[source], size=(32, 32, 5))

"""What the Qwen-Image 2.1 adapter does beyond the conformance suite: a sample does not depend on the other prompts
of its batch (the transformer places the image after the text, so padding would move it), and a checkpoint's own
sigma grid (``sample_sigmas``, as the Turbo checkpoint ships one) is the pipeline's schedule."""

from __future__ import annotations

import pytest
import torch
from diffusers.configuration_utils import FrozenDict

from mmreward.flow.families.qwenimage21 import QwenImage21Model
from mmreward.flow.rollout import sample_ode
from mmreward.tiny_models import tiny_pipeline


@pytest.fixture(scope="module")
def model() -> QwenImage21Model:
    return QwenImage21Model(tiny_pipeline("qwenimage21"))


def test_a_sample_does_not_depend_on_the_other_prompts_of_its_batch(model):
    latents = torch.randn(model.latent_shape(2, 64, 32), generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.8, 0.3])
    both = model.encode_prompts(["a cat", "a dog running on the beach"])
    assert both.mask is not None and int(both.mask[0].sum()) < both.mask.shape[1]  # "a cat" is padded here
    with torch.no_grad():
        together = model.velocity(latents, sigma, both)
        alone = model.velocity(latents[:1], sigma[:1], model.encode_prompts(["a cat"]))
        # the transformer itself, given the padded batch with its mask: the image sits after the padding
        padded = model.transformer(
            hidden_states=model.to_pipeline_latents(latents),
            encoder_hidden_states=both.embeds,
            encoder_hidden_states_mask=both.mask,
            timestep=sigma,
            img_shapes=[[(1, 4, 2)]] * 2,
            img_mask=(torch.arange(both.embeds.shape[1] + 2) >= both.embeds.shape[1]).expand(2, -1),
            return_dict=False,
        )[0][:, -8:]
    torch.testing.assert_close(together[:1], alone, rtol=1e-5, atol=1e-6)
    moved = model.from_pipeline_latents(padded, 64, 32)[:1]
    assert not torch.allclose(moved, alone, atol=1e-4)  # what batching with padding would have computed


def test_the_checkpoints_sigma_grid_is_the_pipelines_schedule(model, monkeypatch):
    grid = [1.0, 0.8, 0.45]
    config = FrozenDict({**model.pipeline.config, "sample_sigmas": grid})  # as a checkpoint's model_index.json
    monkeypatch.setattr(model.pipeline, "_internal_dict", config)
    shape = model.latent_shape(1, 64, 32)
    ours = sample_ode(
        model, ["a cat"], group_size=1, num_steps=3, generator=torch.Generator().manual_seed(0), height=64, width=32
    )
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    steps = []
    model.pipeline(
        prompt="a cat",
        height=64,
        width=32,
        num_inference_steps=40,  # ignored by the pipeline: its configured grid sets the steps
        latents=model.to_pipeline_latents(noise),
        output_type="latent",
        callback_on_step_end=lambda pipe, i, t, kwargs: steps.append(kwargs["latents"]) or {},
    )
    assert len(steps) == 3
    torch.testing.assert_close(ours.final, model.from_pipeline_latents(steps[-1], 64, 32), rtol=1e-4, atol=1e-4)
    scheduler = model.pipeline.scheduler
    torch.testing.assert_close(model.sampling_sigmas(3, shape), scheduler.sigmas.float())
    # another step count: the pipeline's linspace grid (what it samples with when given sigmas=)
    other = model.sampling_sigmas(4, shape)
    model.pipeline(prompt="a cat", height=64, width=32, sigmas=[1.0, 0.75, 0.5, 0.25], output_type="latent")
    torch.testing.assert_close(other, scheduler.sigmas.float())


def test_in_a_distributed_run_every_row_gets_its_own_call(model, monkeypatch):
    """DDP broadcasts the transformer's buffer and FSDP2 gathers its parameters at every call, so processes must
    call it equally often: once per row (the batch size, not the number of prompt lengths, is the same on every
    process). Checked by hand with two gloo processes holding one and two prompt lengths: the DDP gradients equal
    the mean of the processes' own; with a call per length the second process waited forever."""
    latents = torch.randn(model.latent_shape(3, 64, 32), generator=torch.Generator().manual_seed(2))
    cond = model.encode_prompts(["a cat", "a dog running on the beach", "a cat"])
    calls = []
    handle = model.transformer.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        with torch.no_grad():
            grouped = model.velocity(latents, 0.5, cond)
            assert len(calls) == 2  # two prompt lengths
            monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
            monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
            rows = model.velocity(latents, 0.5, cond)
    finally:
        handle.remove()
    assert len(calls) == 2 + 3
    torch.testing.assert_close(rows, grouped, rtol=1e-5, atol=1e-6)


def test_media_are_opaque_rgba_for_the_rgba_vae_and_plain_rgb_otherwise(model):
    from diffusers import AutoencoderKLQwenImage21

    media = torch.rand(2, 3, 64, 32, generator=torch.Generator().manual_seed(3))
    pixels = torch.rand(2, 4, 64, 32, generator=torch.Generator().manual_seed(4))
    pixels[0, 3] = 0.0  # transparent: white
    composited = model.media_from_pipeline(pixels)
    assert composited.shape == (2, 3, 64, 32) and bool((composited[0] == 1).all())
    torch.testing.assert_close(composited[1], pixels[1, :3] * pixels[1, 3] + 1 - pixels[1, 3])
    seen = []
    handle = model.vae.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    try:
        model.encode_media(media)
    finally:
        handle.remove()
    assert seen[0].shape[1] == 4 and bool((seen[0][:, 3] == 1).all())  # alpha 1 in the VAE's [-1, 1]
    rgb = QwenImage21Model(tiny_pipeline("qwenimage21"))
    rgb.pipeline.vae = AutoencoderKLQwenImage21.from_config({**model.vae.config, "in_channels": 3, "out_channels": 3})
    latents = rgb.encode_media(media)
    assert latents.shape == model.latent_shape(2, 64, 32)
    assert rgb.decode_latents(latents).shape == (2, 3, 64, 32) and rgb.media_from_pipeline(media) is media

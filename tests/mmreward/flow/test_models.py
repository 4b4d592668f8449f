"""Generator adapters (sd3, flux, wan) on tiny pipelines saved and loaded like released checkpoints; LoRA."""

from __future__ import annotations

import pytest
import torch

from mmreward.errors import ConfigError, WeightsNotFoundError
from mmreward.flow.models import (
    DEFAULT_LORA_TARGETS,
    check_attention,
    fixed_shift_sigmas,
    load_flow_model,
)
from mmreward.tiny_models import tiny_pipeline, tiny_pipeline_dir
from mmreward.train.lora import LoraReference, add_lora, save_lora, trainable_parameters

SIZES = {"sd3": (32, 32, None), "flux": (32, 32, None), "wan": (32, 48, 5)}
LATENTS = {"sd3": (2, 4, 16, 16), "flux": (2, 4, 16, 16), "wan": (2, 4, 2, 4, 6)}


@pytest.fixture(scope="module", params=["sd3", "flux", "wan"])
def model(request, tmp_path_factory):
    path = tiny_pipeline_dir(request.param, tmp_path_factory.mktemp("pipelines"))
    return load_flow_model(request.param, str(path), max_sequence_length=16)


def test_shapes_and_media_round_trip(model):
    height, width, frames = SIZES[model.family]
    shape = model.latent_shape(2, height, width, frames)
    assert shape == LATENTS[model.family]
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    cond = model.encode_prompts(["a cat", "a dog"])
    velocity = model.velocity(latents, torch.tensor([1.0, 0.3]), cond)
    assert velocity.shape == shape and torch.isfinite(velocity).all()
    media = model.decode_latents(latents)
    expected = (2, 3, height, width) if frames is None else (2, frames, 3, height, width)
    assert media.shape == expected and media.dtype == torch.float32 and 0 <= media.min() and media.max() <= 1
    assert model.encode_media(media).shape == shape
    sigmas = model.sampling_sigmas(4, shape)
    assert sigmas.shape == (5,) and sigmas[0] == 1 and sigmas[-1] == 0 and torch.all(sigmas[1:] < sigmas[:-1])


def test_classifier_free_guidance_is_one_batch_of_negative_and_positive(model):
    height, width, frames = SIZES[model.family]
    latents = torch.randn(model.latent_shape(2, height, width, frames), generator=torch.Generator().manual_seed(1))
    cond, negative = model.encode_prompts(["a cat", "a dog"]), model.encode_prompts(["", ""])
    guided = model.velocity(latents, 0.6, cond, guidance_scale=4.0, negative=negative)
    if model.batch_cfg:
        v_pos, v_neg = model.velocity(latents, 0.6, cond), model.velocity(latents, 0.6, negative)
        torch.testing.assert_close(guided, v_neg + 4.0 * (v_pos - v_neg), rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="negative prompt embeddings"):
            model.velocity(latents, 0.6, cond, guidance_scale=4.0)
    else:  # FLUX.1-dev style: guidance goes into the guidance embedding
        assert model.family == "flux"
        assert not torch.allclose(guided, model.velocity(latents, 0.6, cond, guidance_scale=1.0))


def test_prompt_cache_encodes_each_prompt_once(model):
    calls = []
    encoder = model.text_encoders()[0]
    handle = encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        first = model.encode_prompts(["a new prompt", "another one"])
        again = model.encode_prompts(["another one", "a new prompt", "another one"])
    finally:
        handle.remove()
    assert len(calls) == 1  # one batched call for the two new prompts, none for cached ones
    torch.testing.assert_close(again.embeds[1], first.embeds[0])


def test_size_errors_name_the_value_and_the_fix(model):
    with pytest.raises(ConfigError, match=r"height=30 .* multiple of"):
        model.latent_shape(1, 30, 32, 5)
    if model.family == "wan":
        with pytest.raises(ConfigError, match=r"num_frames=6 .* 4k \+ 1"):
            model.latent_shape(1, 32, 32, 6)


def test_lora_saved_in_diffusers_format_loads_with_load_lora_weights(model, tmp_path):
    """rank 4, alpha 8: without the saved metadata diffusers would load alpha = rank and halve the update."""
    height, width, frames = SIZES[model.family]
    pipeline = tiny_pipeline(model.family)
    from mmreward.flow.models import ADAPTERS

    trained = ADAPTERS[model.family](pipeline)
    trained.max_sequence_length = 16
    add_lora(trained.transformer, rank=4, alpha=8, target_modules=DEFAULT_LORA_TARGETS)
    params = trainable_parameters(trained.transformer)
    assert params and all(p.dtype == torch.float32 for p in params.values())
    with torch.no_grad():
        for p in params.values():
            p.add_(0.2 * torch.randn_like(p))
    latents = torch.randn(trained.latent_shape(1, height, width, frames), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = trained.velocity(latents, 0.5, trained.encode_prompts(["a cat"]))
        reference = LoraReference(trained.transformer)
        with reference.active():
            base = trained.velocity(latents, 0.5, trained.encode_prompts(["a cat"]))
    save_lora(trained.pipeline_class, trained.transformer, tmp_path)
    fresh = tiny_pipeline(model.family)
    fresh.load_lora_weights(tmp_path)
    loaded = ADAPTERS[model.family](fresh)
    loaded.max_sequence_length = 16
    plain = ADAPTERS[model.family](tiny_pipeline(model.family))
    plain.max_sequence_length = 16
    with torch.no_grad():
        torch.testing.assert_close(loaded.velocity(latents, 0.5, loaded.encode_prompts(["a cat"])), expected)
        torch.testing.assert_close(plain.velocity(latents, 0.5, plain.encode_prompts(["a cat"])), base)
    assert not torch.allclose(expected, base)


def test_reference_refresh_swaps_a_snapshot_and_restores_the_live_weights():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    model[0].requires_grad_(False)
    model.add_module("head", torch.nn.Linear(4, 1))
    reference = LoraReference(model)
    reference.refresh()
    snapshot = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    live = model.head.weight.detach().clone()
    with reference.active():
        torch.testing.assert_close(model.head.weight, snapshot)
    torch.testing.assert_close(model.head.weight, live)
    restored = LoraReference(model)
    restored.load_state_dict(reference.state_dict())
    torch.testing.assert_close(restored.snapshot["head.weight"], snapshot)


def test_released_text_encoders_refuse_new_prompts():
    model = load_flow_model("sd3", "tiny", max_sequence_length=16)
    model.encode_prompts(["cached"])
    model.release_text_encoders()
    assert model.encode_prompts(["cached"]).embeds.shape[0] == 1
    with pytest.raises(ConfigError, match="were released"):
        model.encode_prompts(["not cached"])


def test_loading_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="unknown model family 'sdxl'"):
        load_flow_model("sdxl", "tiny")
    with pytest.raises(WeightsNotFoundError, match="neither a local directory nor a hub id"):
        load_flow_model("sd3", str(tmp_path / "missing"))
    with pytest.raises(WeightsNotFoundError, match="hf download nobody/no-such-model"):
        load_flow_model("sd3", "nobody/no-such-model")
    with pytest.raises(ConfigError, match="LoRA target modules"):
        add_lora(tiny_pipeline("sd3").transformer, rank=2, alpha=2, target_modules=["no_such_layer"])


def test_attention_choices_are_checked_before_loading():
    check_attention("sdpa", "cpu")
    with pytest.raises(ConfigError, match="unknown attention"):
        check_attention("flash", "cpu")
    with pytest.raises(ConfigError, match="xformers"):  # not installed here, or not CUDA
        check_attention("xformers", "cpu")


def test_gradient_checkpointing_and_bf16_autocast_keep_the_lora_gradients():
    """Checkpointing recomputes activations in backward: the LoRA gradients must be the same; bf16 autocast must
    stay close to float32 (the SDE and loss math downstream is float32 either way)."""
    model = load_flow_model("sd3", "tiny", max_sequence_length=16)
    add_lora(model.transformer, rank=4, alpha=4, target_modules=DEFAULT_LORA_TARGETS)
    params = trainable_parameters(model.transformer)
    with torch.no_grad():
        for p in params.values():
            p.add_(0.1 * torch.randn_like(p))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = model.encode_prompts(["a cat", "a dog"])

    def gradients(autocast: bool = False) -> dict[str, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            velocity = model.velocity(latents, torch.tensor([0.7, 0.3]), cond)
        velocity.float().pow(2).mean().backward()
        grads = {name: p.grad.clone() for name, p in params.items()}
        for p in params.values():
            p.grad = None
        return grads

    plain = gradients()
    model.transformer.enable_gradient_checkpointing()
    checkpointed = gradients()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7)
    low = gradients(autocast=True)
    cosine = torch.nn.functional.cosine_similarity(
        torch.cat([g.flatten() for g in low.values()]), torch.cat([g.flatten() for g in plain.values()]), dim=0
    )
    assert cosine > 0.99


def test_prompt_cache_is_bounded_and_least_recently_used_leaves():
    model = load_flow_model("sd3", "tiny", max_sequence_length=16, prompt_cache_size=2)
    first = model.encode_prompts(["one", "two"])
    model.encode_prompts(["one"])  # "one" is now the most recently used
    model.encode_prompts(["three"])  # evicts "two"
    assert [key[0] for key in model._prompt_cache] == ["one", "three"]
    batch = model.encode_prompts(["two", "one", "three", "two"])  # a batch larger than the cache still works
    torch.testing.assert_close(batch.embeds[0], first.embeds[1])
    torch.testing.assert_close(batch.embeds[3], first.embeds[1])


def test_cfg_gradient_detaches_the_unconditional_branch_on_request():
    """Flow-GRPO's training forward detaches v_neg: the gradient of ``v = v_neg + g (v_pos - v_neg)`` is then
    ``g`` times the gradient through the conditional branch alone; with both branches it is
    ``(1 - g) d v_neg + g d v_pos``. The values are the same either way."""
    torch.manual_seed(0)
    model = load_flow_model("sd3", "tiny", max_sequence_length=16)
    add_lora(model.transformer, rank=4, alpha=4, target_modules=DEFAULT_LORA_TARGETS)
    params = trainable_parameters(model.transformer)
    with torch.no_grad():
        for p in params.values():
            p.add_(0.1 * torch.randn_like(p))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, negative = model.encode_prompts(["a cat", "a dog"]), model.encode_prompts(["", ""])
    weights = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    g = 4.5

    def gradient(**kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        velocity = model.velocity(latents, 0.6, **kwargs)
        (velocity * weights).sum().backward()
        grad = torch.cat([p.grad.flatten() for p in params.values()])
        for p in params.values():
            p.grad = None
        return velocity.detach(), grad

    guided_detached, detached = gradient(cond=cond, guidance_scale=g, negative=negative, cfg_grad="detach_uncond")
    guided_both, both = gradient(cond=cond, guidance_scale=g, negative=negative, cfg_grad="both")
    _, conditional = gradient(cond=cond)
    _, unconditional = gradient(cond=negative)
    torch.testing.assert_close(guided_detached, guided_both)
    torch.testing.assert_close(detached, g * conditional, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(both, (1 - g) * unconditional + g * conditional, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(detached, both, rtol=1e-2)
    with pytest.raises(ValueError, match="cfg_grad must be one of"):
        model.velocity(latents, 0.6, cond, guidance_scale=g, negative=negative, cfg_grad="none")


def test_fixed_shift_schedule_replaces_the_pipelines_own():
    """Pref-GRPO samples on sd3_time_shift(3, linspace(1, 0, N + 1)): for N = 4, t = 1, .75, .5, .25, 0 gives
    sigma = 3t / (1 + 2t) = 1, 0.9, 0.75, 0.5, 0 -- not FLUX's resolution-dependent shift."""
    torch.testing.assert_close(fixed_shift_sigmas(4, 3.0), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))
    flux = load_flow_model("flux", "tiny", max_sequence_length=16)
    shape = flux.latent_shape(1, 32, 32)
    dynamic = flux.sampling_sigmas(4, shape)
    shifted = load_flow_model("flux", "tiny", max_sequence_length=16, sampling_shift=3.0)
    torch.testing.assert_close(shifted.sampling_sigmas(4, shape), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))
    assert not torch.allclose(dynamic, shifted.sampling_sigmas(4, shape))
    with pytest.raises(ConfigError, match="sampling shift must be > 0"):
        load_flow_model("sd3", "tiny", sampling_shift=0.0)


def test_fixed_shift_schedule_is_computed_in_float32_as_pref_grpo():
    """sd3_time_shift runs on float32 linspace: for N = 6, t = 0.4 gives 1.2 / 1.8, which float32 rounds to
    0.59999996, and Pref-GRPO's int(1000 sigma) is then 599 (a float64 grid rounds to 0.6000000238 and gives 600)."""
    sigma = fixed_shift_sigmas(6, 3.0)[4]
    assert sigma.dtype == torch.float32 and float(sigma) < 0.6
    assert int(sigma * 1000) == 599


@pytest.mark.parametrize("family", ["sd3", "flux", "qwenimage", "flux2klein", "zimage", "qwenimage21"])
def test_integer_timesteps_feed_the_transformer_floor_of_1000_sigma(family):
    """Pref-GRPO's trainers call the transformer with int(1000 sigma) (divided by 1000 for the transformers that take
    [0, 1]): with integer_timesteps the velocity at sigma 0.9379 is the plain model's velocity at 0.937, and the
    plain model's differs."""
    plain = load_flow_model(family, "tiny", max_sequence_length=16)
    integer = load_flow_model(family, "tiny", max_sequence_length=16, integer_timesteps=True)
    assert not plain.integer_timesteps and integer.integer_timesteps
    shape = LATENTS.get(family) or plain.latent_shape(2, 64 if family == "qwenimage21" else 32, 32)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    cond = plain.encode_prompts(["a cat", "a dog"])
    sigma = torch.tensor([0.9379, 0.5])
    with torch.no_grad():
        got = integer.velocity(latents, sigma, cond)
        truncated = plain.velocity(latents, torch.tensor([0.937, 0.5]), cond)
        exact = plain.velocity(latents, sigma, cond)
    torch.testing.assert_close(got, truncated, rtol=0, atol=0)
    assert not torch.allclose(got[0], exact[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], exact[1], rtol=0, atol=0)  # 1000 x 0.5 is an integer already


# --------------------------------------------------------------------------------------- editing (source images)


def test_editing_families_need_one_canonical_source_per_prompt_and_text_families_refuse_them():
    edit = load_flow_model("flux-kontext", "tiny")
    assert edit.conditional and edit.source_area == 32 * 32  # the tiny pipelines' sources are 32 x 32
    with pytest.raises(ConfigError, match="is conditioned on a source image: give one per prompt"):
        edit.encode_prompts(["make it brighter"])
    with pytest.raises(ValueError, match="1 source images for 2 prompts"):
        edit.encode_prompts(["a", "b"], sources=[torch.rand(3, 32, 32)])
    with pytest.raises(ValueError, match="source image 0 is \\(32, 32\\); give canonical images"):
        edit.encode_prompts(["a"], sources=[torch.rand(32, 32)])
    text = load_flow_model("sd3", "tiny")
    with pytest.raises(ConfigError, match="takes no source images"):
        text.encode_prompts(["a"], sources=[torch.rand(3, 32, 32)])
    with pytest.raises(ConfigError, match="source_area is for editing families"):
        load_flow_model("sd3", "tiny", source_area=1024)


def test_sources_of_one_batch_must_give_one_latent_size():
    """Sources of two aspect ratios cannot share a transformer batch (their token counts differ): the error names
    the sizes and both fixes; a fixed source_area resizes a square and a wide source to latents of their own shapes."""
    edit = load_flow_model("flux-kontext", "tiny")
    square, wide = torch.rand(3, 32, 32), torch.rand(3, 16, 64)
    assert edit.source_size(32, 32) == (32, 32) and edit.source_size(16, 64) == (16, 64)
    with pytest.raises(ConfigError, match="different sizes .*one aspect ratio, or set model.source_area"):
        edit.encode_prompts(["a", "b"], sources=[square, wide])
    one = edit.encode_prompts(["a", "b"], sources=[square, square.clone()])
    assert one.image_latents.shape == (2, 4, 16, 16)  # (B, C, h', w'): 2x VAE, 4 channels
    torch.testing.assert_close(one.select([1]).image_latents, one.image_latents[:1])
    assert one.repeat_interleave(3).image_latents.shape == (6, 4, 16, 16)

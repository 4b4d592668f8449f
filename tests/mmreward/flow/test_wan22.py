"""Wan2.2: the two experts switch where ``WanPipeline`` switches, per sample in a batch, with the low-noise expert's
own guidance scale; LoRAs on one or both experts; TI2V-5B's per-token timesteps. (Everything else about the
``wan22`` and ``wan22ti2v`` families is the conformance suite's.)"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from mmreward.errors import ConfigError
from mmreward.flow.families.wan import WanExperts
from mmreward.flow.models import ADAPTERS, DEFAULT_LORA_TARGETS, load_flow_model
from mmreward.flow.rollout import sample_ode
from mmreward.tiny_models import tiny_pipeline, tiny_pipeline_dir
from mmreward.train.lora import (
    LORA_WEIGHTS_NAME,
    LORA_WEIGHTS_NAME_2,
    add_lora,
    load_lora,
    save_lora,
    trainable_parameters,
)


def _model(family: str = "wan22"):
    model = ADAPTERS[family](tiny_pipeline(family))
    model.max_sequence_length = 16
    return model


def _record_calls(pipeline, calls: list[str]):
    return [
        getattr(pipeline, name).register_forward_hook(
            lambda module, args, kwargs, out, n=name: calls.append(n), with_kwargs=True
        )
        for name in ("transformer", "transformer_2")
    ]


def test_the_expert_switch_and_its_guidance_scale_are_the_pipelines():
    """3 Euler steps at timesteps 1000, 750, 3 with boundary 875: WanPipeline calls the high-noise expert once
    (twice: cond and uncond) and the low-noise one twice, guiding it with guidance_scale_2; the ODE rollout calls
    the same experts in the same order and reproduces the pipeline's video. The experts differ, so a wrong switch
    changes the result."""
    model = _model()
    model.set_guidance_scale_2(1.5)
    pipe = model.pipeline
    assert not torch.allclose(pipe.transformer.proj_out.weight, pipe.transformer_2.proj_out.weight)
    noise = torch.randn(model.latent_shape(1, 32, 32, 5), generator=torch.Generator().manual_seed(0))
    theirs: list[str] = []
    handles = _record_calls(pipe, theirs)
    original, pipe.scheduler = pipe.scheduler, model._flow_scheduler()
    try:
        video = pipe(
            prompt="a cat",
            num_inference_steps=3,
            height=32,
            width=32,
            num_frames=5,
            max_sequence_length=16,
            latents=noise,
            output_type="pt",
            **model.pipeline_guidance_kwargs(4.0),
        ).frames
        timesteps = pipe.scheduler.timesteps
    finally:
        pipe.scheduler = original
    assert timesteps[0] >= 875 > timesteps[1]  # the boundary lies inside the schedule
    assert theirs == ["transformer"] * 2 + ["transformer_2"] * 4  # cond + uncond per step
    for handle in handles:
        handle.remove()
    ours: list[str] = []
    handles = _record_calls(pipe, ours)
    size = {"height": 32, "width": 32, "num_frames": 5}
    rollout = sample_ode(
        model,
        ["a cat"],
        group_size=1,
        num_steps=3,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(0),
        **size,
    )
    for handle in handles:
        handle.remove()
    assert ours == ["transformer", "transformer_2", "transformer_2"]  # CFG batched: one call per step
    torch.testing.assert_close(rollout.media, video.float(), rtol=1e-4, atol=1e-4)
    model.set_guidance_scale_2(None)  # the low-noise expert guided at 4.0 instead: another video
    other = sample_ode(
        model,
        ["a cat"],
        group_size=1,
        num_steps=3,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(0),
        **size,
    )
    assert not torch.allclose(other.media, rollout.media, atol=1e-3)


def test_a_batch_of_mixed_noise_levels_reaches_each_samples_expert():
    """Samples at sigma 0.5, 0.95, 0.2 (timesteps 500, 950, 200; boundary 875): each velocity is its own expert's,
    in batch order, guided with its expert's scale."""
    model = _model()
    model.set_guidance_scale_2(2.0)
    latents = torch.randn(model.latent_shape(3, 32, 32, 5), generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.5, 0.95, 0.2])
    cond = model.encode_prompts(["a cat", "a red car", "a dog"])
    negative = model.encode_prompts(["", "", ""])
    pipe = model.pipeline

    def direct(expert, i, embeds):
        return expert(
            hidden_states=latents[i : i + 1],
            timestep=sigma[i : i + 1] * 1000,
            encoder_hidden_states=embeds.embeds[i : i + 1],
            return_dict=False,
        )[0][0]

    with torch.no_grad():
        mixed = model.velocity(latents, sigma, cond)
        guided = model.velocity(latents, sigma, cond, guidance_scale=3.0, negative=negative)
        for i, (expert, scale) in enumerate(
            [(pipe.transformer_2, 2.0), (pipe.transformer, 3.0), (pipe.transformer_2, 2.0)]
        ):
            v_pos, v_neg = direct(expert, i, cond), direct(expert, i, negative)
            torch.testing.assert_close(mixed[i], v_pos, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(guided[i], v_neg + scale * (v_pos - v_neg), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(mixed[1], direct(pipe.transformer_2, 1, cond), atol=1e-4)


@pytest.mark.parametrize("experts", ["high", "low"])
def test_a_lora_on_one_expert_trains_saves_and_loads_that_expert(experts, tmp_path):
    model = _model()
    model.set_lora_experts(experts)
    add_lora(model.transformer, rank=2, alpha=4, target_modules=DEFAULT_LORA_TARGETS)
    trained = "transformer_2" if experts == "low" else "transformer"
    names = trainable_parameters(model.transformer)
    assert names and all(n.startswith(f"{trained}.") for n in names)
    with torch.no_grad():
        for param in names.values():
            param.add_(0.05)
    save_lora(model.pipeline_class, model.transformer, tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {LORA_WEIGHTS_NAME if experts == "high" else LORA_WEIGHTS_NAME_2}
    fresh = tiny_pipeline("wan22")
    load_lora(fresh, tmp_path)
    loaded = ADAPTERS["wan22"](fresh)
    loaded.max_sequence_length = 16
    latents = torch.randn(model.latent_shape(2, 32, 32, 5), generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.95, 0.5])
    with torch.no_grad():
        ours = model.velocity(latents, sigma, model.encode_prompts(["a cat", "a cat"]))
        theirs = loaded.velocity(latents, sigma, loaded.encode_prompts(["a cat", "a cat"]))
        base = _model().velocity(latents, sigma, model.encode_prompts(["a cat", "a cat"]))
    torch.testing.assert_close(theirs, ours)
    changed = 0 if experts == "high" else 1  # only the adapted expert's sample moves
    assert not torch.allclose(ours[changed], base[changed], atol=1e-5)
    torch.testing.assert_close(ours[1 - changed], base[1 - changed])
    if experts == "low":  # a low-noise expert's LoRA has nowhere to go in a one-transformer pipeline
        with pytest.raises(ConfigError, match="has no transformer_2: it was trained on a two-expert Wan2.2 model"):
            load_lora(tiny_pipeline("wan"), tmp_path)


def test_expert_settings_are_validated():
    with pytest.raises(ConfigError, match="lora_experts must be one of both, high, low, got 'all'"):
        _model().set_lora_experts("all")
    with pytest.raises(ConfigError, match="lora_experts=high needs a two-expert checkpoint"):
        load_flow_model("wan", "tiny", lora_experts="high")
    with pytest.raises(ConfigError, match="guidance_scale_2=3.0 guides a low-noise expert"):
        load_flow_model("wan22ti2v", "tiny", guidance_scale_2=3.0)
    with pytest.raises(ConfigError, match="flux has one transformer"):
        load_flow_model("flux", "tiny", lora_experts="low")
    with pytest.raises(ConfigError, match="family=wan22 is Wan2.2 A14B with two experts"):
        ADAPTERS["wan22"](tiny_pipeline("wan"))
    with pytest.raises(ConfigError, match="family=wan22ti2v is Wan2.2 TI2V-5B"):
        ADAPTERS["wan22ti2v"](tiny_pipeline("wan22"))


def test_a_wan22_checkpoint_under_family_wan_runs_both_experts(tmp_path):
    """Two experts are read from the checkpoint, as WanPipeline reads them: a Wan2.1 directory given a
    transformer_2 and a boundary loads with family wan as the two-expert model (formerly refused)."""
    path = tiny_pipeline_dir("wan", tmp_path)
    index = json.loads((path / "model_index.json").read_text())
    shutil.copytree(path / "transformer", path / "transformer_2")
    (path / "model_index.json").write_text(
        json.dumps({**index, "transformer_2": index["transformer"], "boundary_ratio": 0.5})
    )
    model = load_flow_model("wan", str(path), max_sequence_length=16, lora_experts="low")
    assert isinstance(model.transformer, WanExperts) and model.transformer.boundary_timestep == 500.0
    assert not any(p.requires_grad for p in model.pipeline.transformer_2.parameters())


def test_ti2v_feeds_one_timestep_per_token_as_the_pipeline():
    """TI2V-5B's transformer takes ``(B, t * h/2 * w/2)`` timesteps (expand_timesteps), all the sample's own."""
    model = _model("wan22ti2v")
    seen = []
    model.pipeline.transformer.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs["timestep"]), with_kwargs=True
    )
    latents = torch.randn(model.latent_shape(2, 32, 32, 5), generator=torch.Generator().manual_seed(3))
    assert latents.shape == (2, 48, 2, 2, 2)
    with torch.no_grad():
        model.velocity(latents, torch.tensor([0.9, 0.3]), model.encode_prompts(["a cat", "a dog"]))
    (timestep,) = seen
    assert timestep.shape == (2, 2 * 1 * 1)
    torch.testing.assert_close(timestep, torch.tensor([[900.0] * 2, [300.0] * 2]))
    assert isinstance(model._flow_scheduler(), FlowMatchEulerDiscreteScheduler)


@pytest.mark.parametrize(
    ("entries", "family"),
    [
        ({"transformer_2": ["diffusers", "WanTransformer3DModel"], "boundary_ratio": 0.875}, "wan22"),
        ({"transformer_2": [None, None], "expand_timesteps": True}, "wan22ti2v"),
        ({"transformer_2": [None, None], "expand_timesteps": False}, "wan"),
    ],
)
def test_generate_tells_the_wan_layout_from_model_index(tmp_path, entries, family):
    from mmreward.guidance.generate import infer_family

    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", **entries}))
    assert infer_family(str(tmp_path), None) == family

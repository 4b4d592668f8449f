"""The family conformance suite: what every generator adapter (``mmreward.flow.models.ADAPTERS``) must pass on its
tiny random pipeline (``mmreward.tiny_models.tiny_pipeline``). A new family is added to ``FAMILIES`` and to
:data:`SIZES` and must pass every test here (CONTRIBUTING.md, "Adding a model family").

- the ODE rollout reproduces the diffusers pipeline's latents and pixels from the same noise and guidance;
- an SDE rollout's stored log-probabilities are recomputed exactly by the policy step (ratio 1), guided or not;
- guidance the family's way (batched true CFG, with Qwen-Image's norm rescale, or FLUX.1-dev's guidance
  embedding) is the same in sampling and in a training forward;
- a LoRA trained for one step saves in the diffusers format and ``pipeline.load_lora_weights`` reproduces the
  trained velocities;
- the prompt-embedding cache encodes each prompt once and does not depend on batch composition;
- packing to the pipeline's latent layout and back is exact; VAE round trip shapes;
- a pipeline saved like a released checkpoint loads to the same model; ``mmreward generate --family F`` and
  ``eval/gen_bench.py --family F`` run.

Conditional (editing) families get a source image per prompt everywhere: the pipeline is called with the same
source, and the prompt cache must tell one instruction on two sources apart.
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as qwen_edit_reference

from eval import gen_bench
from mmreward import cli
from mmreward.errors import ConfigError
from mmreward.flow.adapter import source_pil
from mmreward.flow.models import ADAPTERS, DEFAULT_LORA_TARGETS, FAMILIES, VIDEO_FAMILIES, FlowModel, load_flow_model
from mmreward.flow.rollout import policy_step, sample, sample_ode
from mmreward.tiny_models import tiny_pipeline, tiny_pipeline_dir
from mmreward.train.lora import LoraReference, add_lora, load_lora, save_lora, trainable_parameters

# Media size per family on the tiny pipelines (height, width, frames).
SIZES = {
    "sd3": (32, 32, None),
    "flux": (32, 32, None),
    "wan": (32, 32, 5),
    "qwenimage": (32, 32, None),
    "zimage": (32, 32, None),
    "flux2klein": (32, 32, None),
    "wan22": (32, 32, 5),
    "wan22ti2v": (32, 32, 5),
    "qwenimage-edit": (32, 32, None),
    "flux-kontext": (32, 32, None),
    "flux2": (32, 32, None),
    "hunyuanvideo15": (32, 32, 5),
    "wan-i2v": (32, 32, 5),
    "qwenimage21": (64, 32, None),  # its pipeline's fixed 16x VAE: a 4 x 2 latent grid
}
# How each family guides: "cfg" (negative and positive as one batch), "cfg-rescaled" (Qwen-Image: true CFG with
# the guided velocity rescaled to the conditional one's norm per token) or "embedded" (guidance-distilled).
GUIDANCE_KIND = {
    "sd3": "cfg",
    "flux": "embedded",
    "wan": "cfg",
    "qwenimage": "cfg-rescaled",
    "zimage": "cfg",
    "flux2klein": "cfg",
    "wan22": "cfg",
    "wan22ti2v": "cfg",
    "qwenimage-edit": "cfg-rescaled",
    "flux-kontext": "embedded",
    "flux2": "embedded",
    "hunyuanvideo15": "cfg",
    "wan-i2v": "cfg",
    "qwenimage21": "cfg",
}
# Editing families see their sources at 32 x 32 pixels here (the released pipelines' ~1 megapixel would be
# thousands of tokens): the adapters' source_area, and the Qwen-Image-Edit pipeline's module constant alike.
SOURCE_AREA = 32 * 32
# Pipelines called once per sample in the ODE comparison: HunyuanVideo15Pipeline (diffusers 0.42) sizes its image
# tokens by prompts, not videos (num_videos_per_prompt > 1 fails), and its VAE decodes one video at a time;
# WanImageToVideoPipeline repeats its CLIP image features per prompt, not per video (the same failure).
ONE_SAMPLE_PER_CALL = {"hunyuanvideo15", "wan-i2v"}
# The pipeline's text length where the transformer fixes it: Wan2.1 I2V's attention reads the last 512 context tokens
# as text (the adapter pads its shorter embeddings with zeros to 512, as the pipeline pads).
PIPELINE_TEXT_LENGTH = {"wan-i2v": 512}
BRIGHTNESS = "mmreward.rewards.brightness:DifferentiableBrightnessReward"


def test_every_family_is_covered():
    assert set(SIZES) == set(FAMILIES) == set(ADAPTERS) == set(GUIDANCE_KIND)


@pytest.mark.parametrize("family", ["sd3", "qwenimage", "zimage", "flux2klein", "flux2"])
def test_the_default_prompt_length_is_the_pipelines(family):
    """FLUX.2 attends to its padded text tokens, so its samples depend on the length; the older FLUX.1 and Wan
    adapters keep 256 tokens (their configs set the length)."""
    import diffusers

    from mmreward.flow.models import PIPELINE_CLASSES

    call = inspect.signature(getattr(diffusers, PIPELINE_CLASSES[family]).__call__)
    assert ADAPTERS[family].default_max_sequence_length == call.parameters["max_sequence_length"].default


@pytest.fixture(scope="module", params=FAMILIES)
def model(request) -> FlowModel:
    return _fresh(request.param)


def _fresh(family: str) -> FlowModel:
    model = ADAPTERS[family](tiny_pipeline(family))
    model.max_sequence_length = 16
    if model.conditional and not model.sources_need_size:
        model.source_area = SOURCE_AREA
    return model


def _sources(model: FlowModel, count: int, seed: int = 11) -> dict:
    """``{"sources": [...]}``: ``count`` random 8-bit source images (as a file would give) for editing families, the
    keyword to pass to sampling and encoding; ``{}`` for text-to-media families."""
    if not model.conditional:
        return {}
    height, width, _ = SIZES[model.family]
    generator = torch.Generator().manual_seed(seed)
    return {"sources": [torch.randint(0, 256, (3, height, width), generator=generator) / 255 for _ in range(count)]}


def _at_size(model: FlowModel) -> dict:
    """``{"size": ...}`` for families whose source conditioning depends on the output size (image-to-video), the
    keyword to pass to encoding; ``{}`` for the others."""
    return {"size": SIZES[model.family]} if model.sources_need_size else {}


def _size(model: FlowModel) -> dict:
    height, width, frames = SIZES[model.family]
    return {"height": height, "width": width, "num_frames": frames}


def _latents(model: FlowModel, batch: int, seed: int) -> torch.Tensor:
    height, width, frames = SIZES[model.family]
    return torch.randn(model.latent_shape(batch, height, width, frames), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- sampling and training


def test_ode_rollout_equals_the_diffusers_pipeline(model, monkeypatch):
    """Same noise, steps and guidance: the rollout reproduces the pipeline's latents and decoded pixels. This checks
    prompt encoding, the sigma -> timestep map, the schedule (shifts included), guidance, packing and the VAE."""
    size = _size(model)
    scale = 3.0
    source = _sources(model, 1)
    ours = sample_ode(
        model,
        ["a cat"],
        group_size=2,
        num_steps=3,
        guidance_scale=scale,
        generator=torch.Generator().manual_seed(0),
        **size,
        **source,
    )
    noise = _latents(model, 2, 0)
    pipe = model.pipeline
    call = inspect.signature(pipe.__call__).parameters
    kwargs = {
        "num_inference_steps": 3,
        "height": size["height"],
        "width": size["width"],
        **model.pipeline_guidance_kwargs(scale),
    }
    if "max_sequence_length" in call:  # HunyuanVideo 1.5 pads to its tokenizer_max_length; masked, so no matter
        kwargs["max_sequence_length"] = PIPELINE_TEXT_LENGTH.get(model.family, 16)
    if size["num_frames"] is not None:
        kwargs["num_frames"] = size["num_frames"]
    per_prompt = "num_videos_per_prompt" if model.family in VIDEO_FAMILIES else "num_images_per_prompt"
    if model.conditional:  # the pipeline takes the 8-bit image and resizes it itself
        kwargs["image"] = source_pil(source["sources"][0])
        if model.family == "flux-kontext":
            kwargs["_auto_resize"] = False  # keep the source's 32 x 32 (our source_area) instead of ~1 megapixel
            kwargs["max_area"] = size["height"] * size["width"]  # it rescales height x width to max_area pixels
        elif model.family == "qwenimage-edit":
            monkeypatch.setattr(qwen_edit_reference, "VAE_IMAGE_SIZE", SOURCE_AREA)
    calls = [noise[:1], noise[1:]] if model.family in ONE_SAMPLE_PER_CALL else [noise]
    original = pipe.scheduler
    if not isinstance(original, FlowMatchEulerDiscreteScheduler):  # Wan ships UniPC; rollouts step with Euler
        pipe.scheduler = model._flow_scheduler()
    steps = []  # the latents after each step of a call, in the pipeline's sampling layout

    def record(pipeline, step, timestep, callback_kwargs):
        steps.append(callback_kwargs["latents"].clone())
        return {}

    finals, outputs = [], []
    try:
        for initial in calls:
            steps.clear()
            call_kwargs = {**kwargs, "latents": model.pipeline_initial_latents(initial), per_prompt: len(initial)}
            if "callback_on_step_end" in call:
                call_kwargs["callback_on_step_end"] = record
            else:  # no step callbacks (HunyuanVideo15Pipeline): the scheduler's steps give the same latents
                stepper = pipe.scheduler.step
                pipe.scheduler.step = lambda *a, _step=stepper, **k: _record_step(_step(*a, **k), steps)
            try:
                outputs.append(pipe(prompt="a cat", output_type="pt", **call_kwargs)[0])
            finally:
                pipe.scheduler.__dict__.pop("step", None)
            assert len(steps) == 3
            finals.append(model.from_pipeline_latents(steps[-1], size["height"], size["width"]))
    finally:
        pipe.scheduler = original
    latents, pixels = torch.cat(finals), model.media_from_pipeline(torch.cat(outputs))
    torch.testing.assert_close(ours.final, latents.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.media, pixels.float(), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours.final[0], noise[0], atol=1e-2)  # the sampler moved


@pytest.mark.parametrize("guidance_scale", [1.0, 2.5])
def test_sde_log_probs_are_recomputed_by_the_policy_step(model, guidance_scale):
    """On-policy ratio 1: re-evaluating every stored SDE step under the same weights gives the stored
    log-probability, with and without guidance; and the stored next latents differ from the ODE's (noise)."""
    rollout = sample(
        model,
        ["a cat", "a red car"],
        group_size=2,
        num_steps=3,
        guidance_scale=guidance_scale,
        sde_type="flow",
        noise_level=0.7,
        generator=torch.Generator().manual_seed(1),
        decode=False,
        batch_size=3,
        **_size(model),
        **_sources(model, 2),
    )
    assert rollout.log_probs.shape == (4, 3) and torch.isfinite(rollout.log_probs).all()
    assert (rollout.negative is not None) == (guidance_scale > 1 and model.batch_cfg)
    errors = []
    with torch.no_grad():
        for j in range(3):
            step = policy_step(model, rollout, j)
            ratio = torch.exp(step.log_prob - rollout.log_probs[:, j])
            torch.testing.assert_close(ratio, torch.ones(4), rtol=0, atol=2e-5)
            errors.append(float((step.log_prob - rollout.log_probs[:, j]).abs().max()))
    if rollout.negative is not None or not model.batch_cfg:
        # a training forward with another guidance is another policy, told apart from the sampling one by far more
        # than the recomputation error (the tiny random models respond weakly to their prompts)
        with torch.no_grad():
            other = policy_step(model, rollout, 1, guidance_scale=guidance_scale + 2.0)
        assert (other.log_prob - rollout.log_probs[:, 1]).abs().max() > max(10 * errors[1], 1e-6)


def test_guidance_is_the_familys_in_sampling_and_training(model):
    latents = _latents(model, 2, 3)
    source = _sources(model, 2)
    at = _at_size(model)
    cond, negative = (
        model.encode_prompts(["a cat", "a red car"], **source, **at),
        model.encode_prompts(["", ""], **source, **at),
    )
    scale = 4.0
    with torch.no_grad():
        guided = model.velocity(latents, 0.6, cond, guidance_scale=scale, negative=negative)
        v_pos, v_neg = model.velocity(latents, 0.6, cond), model.velocity(latents, 0.6, negative)
    kind = GUIDANCE_KIND[model.family]
    assert model.batch_cfg == (kind != "embedded")
    if kind == "embedded":
        assert "negative_prompt" not in model.pipeline_guidance_kwargs(scale)
        assert not torch.allclose(guided, v_pos, atol=1e-4)  # the scale reaches the guidance embedding
        return
    combined = v_neg + scale * (v_pos - v_neg)
    if kind == "cfg":
        torch.testing.assert_close(guided, combined, rtol=1e-4, atol=1e-5)
    else:  # per 2x2 patch (one packed token), the guided velocity keeps the conditional velocity's norm
        batch, channels, h, w = guided.shape

        def patch_norms(v: torch.Tensor) -> torch.Tensor:  # (B, h/2, w/2)
            return v.reshape(batch, channels, h // 2, 2, w // 2, 2).pow(2).sum((1, 3, 5)).sqrt()

        torch.testing.assert_close(patch_norms(guided), patch_norms(v_pos), rtol=1e-4, atol=1e-5)
        cosine = torch.nn.functional.cosine_similarity(guided.flatten(1), combined.flatten(1))
        assert not torch.allclose(guided, combined, atol=1e-3) and (cosine > 0.9).all()
    with pytest.raises(ValueError, match="negative prompt embeddings"):
        model.velocity(latents, 0.6, cond, guidance_scale=scale)


def _record_step(output, steps: list) -> object:
    """Keep the latents a scheduler step returns (its ``prev_sample``: tuple or output object)."""
    steps.append((output[0] if isinstance(output, tuple) else output.prev_sample).clone())
    return output


# ---------------------------------------------------------------------------------------------------------- LoRA


def test_a_lora_trained_one_step_loads_with_load_lora_weights(model, tmp_path):
    """One AdamW step on an SDE policy-gradient surrogate over both steps (the first at high noise, the second at
    low noise: Wan2.2 trains each expert), saved with alpha != rank (the saved metadata keeps the scale);
    ``load_lora_weights`` into a fresh pipeline (:func:`load_lora`: Wan2.2's second expert takes
    ``load_into_transformer_2``) reproduces the trained velocities at both noise levels, the base ones without."""
    family = model.family
    trained = _fresh(family)
    add_lora(trained.transformer, rank=4, alpha=8, target_modules=DEFAULT_LORA_TARGETS)
    params = list(trainable_parameters(trained.transformer).values())
    optimizer = torch.optim.AdamW(params, lr=0.05)
    rollout = sample(
        trained,
        ["a cat"],
        group_size=2,
        num_steps=2,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(4),
        decode=False,
        **_size(trained),
        **_sources(trained, 1),
    )
    for j in range(2):
        step = policy_step(trained, rollout, j)
        (-(step.log_prob * torch.tensor([1.0, -1.0])).mean()).backward()
    optimizer.step()
    latents = _latents(trained, 2, 5)
    sigma = torch.tensor([0.95, 0.5])  # one sample per Wan2.2 expert (boundary 0.875)
    source = _sources(trained, 2)
    with torch.no_grad():
        cond = trained.encode_prompts(["a cat", "a cat"], **source, **_at_size(trained))
        expected = trained.velocity(latents, sigma, cond)
        with LoraReference(trained.transformer).active():
            base = trained.velocity(latents, sigma, cond)
    for i in range(2):
        assert not torch.allclose(expected[i], base[i], atol=1e-5)
    save_lora(trained.pipeline_class, trained.transformer, tmp_path)
    fresh = tiny_pipeline(family)
    load_lora(fresh, tmp_path)
    assert hasattr(fresh, "load_lora_weights") == (family != "hunyuanvideo15")  # no LoRA loader in diffusers 0.42
    loaded = ADAPTERS[family](fresh)
    loaded.max_sequence_length = 16
    if loaded.conditional and not loaded.sources_need_size:
        loaded.source_area = SOURCE_AREA
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.velocity(latents, sigma, loaded.encode_prompts(["a cat", "a cat"], **source, **_at_size(loaded))),
            expected,
        )
        torch.testing.assert_close(
            model.velocity(latents, sigma, model.encode_prompts(["a cat", "a cat"], **source, **_at_size(model))), base
        )


def test_ddp_is_told_exactly_when_a_trained_parameter_misses_the_graph(model):
    """``leaves_parameters_unused`` (which switches on DDP's ``find_unused_parameters``) is true exactly when a
    backward through one high-noise velocity leaves a default LoRA parameter without a gradient: a wrong False fails
    2-process runs, a wrong True slows every DDP step."""
    trained = _fresh(model.family)
    add_lora(trained.transformer, rank=2, alpha=2, target_modules=DEFAULT_LORA_TARGETS)
    params = trainable_parameters(trained.transformer)
    cond = trained.encode_prompts(["a cat"], **_sources(trained, 1), **_at_size(trained))
    trained.velocity(_latents(trained, 1, 3), torch.tensor([0.95]), cond).square().mean().backward()
    unused = [name for name, p in params.items() if p.grad is None]
    assert bool(unused) == trained.leaves_parameters_unused, unused


# -------------------------------------------------------------------------------------------- prompts and latents


def test_prompt_cache_encodes_once_and_ignores_batch_composition(model):
    calls = []
    handle = model.text_encoders()[0].register_forward_hook(lambda *args: calls.append(1))
    dog, car = _sources(model, 2, seed=23).get("sources", [None, None])  # sources no other test encoded
    two = {"sources": [dog, car], **_at_size(model)} if model.conditional else {}
    three = {"sources": [car, dog, car], **_at_size(model)} if model.conditional else {}
    try:
        together = model.encode_prompts(["a dog running on the beach", "a red car"], **two)
        first = len(calls)
        again = model.encode_prompts(["a red car", "a dog running on the beach", "a red car"], **three)
    finally:
        handle.remove()
    # one encoder batch (Qwen-Image-Edit encodes one prompt per call, as its pipeline), none for cached prompts
    assert first == (2 if model.family == "qwenimage-edit" else 1) and len(calls) == first
    torch.testing.assert_close(again.embeds[1], together.embeds[0])
    alone = _fresh(model.family).encode_prompts(
        ["a red car"], **({"sources": [car], **_at_size(model)} if model.conditional else {})
    )
    length = alone.embeds.shape[1]
    torch.testing.assert_close(together.embeds[1, :length], alone.embeds[0], rtol=1e-5, atol=1e-6)
    if together.mask is not None:  # prompts keep their own lengths: the shorter one is padded and masked
        assert together.mask[1].sum() == length and not together.mask[1, length:].any()
        assert (together.embeds[1, length:] == 0).all()
    assert not torch.allclose(together.embeds[0, :length], alone.embeds[0], atol=1e-3)  # prompts differ
    if model.conditional:  # the source is part of the key: one instruction on two images is two conditionings
        torch.testing.assert_close(again.image_latents[1], together.image_latents[0])
        torch.testing.assert_close(again.image_latents[0], alone.image_latents[0])
        swapped = model.encode_prompts(["a red car"], sources=[dog], **_at_size(model))
        assert not torch.allclose(swapped.image_latents, alone.image_latents, atol=1e-3)
        if model.family == "qwenimage-edit":  # the text encoder sees the image too
            assert swapped.embeds.shape != alone.embeds.shape or not torch.allclose(swapped.embeds, alone.embeds)


def test_sizes_that_do_not_fit_are_refused_with_the_nearest_that_does(model):
    height, width, frames = SIZES[model.family]
    model.check_size(height, width, frames)
    with pytest.raises(ConfigError, match=f"height={height + 1} does not fit {model.family}"):
        model.check_size(height + 1, width, frames)
    if model.media_kind != "video":
        return
    # 4x temporal VAEs (Wan, HunyuanVideo 1.5): 6 frames -> the nearest 4k + 1 is 5
    assert model.pipeline.vae_scale_factor_temporal == 4 and frames == 5
    with pytest.raises(
        ConfigError, match=rf"num_frames=6 does not fit {model.family}: it must be 4k \+ 1 \(e\.g\. 5\)"
    ):
        model.check_size(height, width, 6)
    with pytest.raises(ConfigError, match="num_frames=None does not fit"):
        model.check_size(height, width, None)


def test_latent_layout_round_trips_and_media_decode(model):
    height, width, frames = SIZES[model.family]
    latents = _latents(model, 2, 6)
    packed = model.to_pipeline_latents(latents)
    torch.testing.assert_close(model.from_pipeline_latents(packed, height, width), latents, rtol=0, atol=0)
    if hasattr(model.pipeline, "_pack_latents") and packed.ndim == 3:  # the pipeline's own packing agrees
        batch, channels, h, w = latents.shape
        if "num_channels_latents" in inspect.signature(model.pipeline._pack_latents).parameters:
            torch.testing.assert_close(packed, model.pipeline._pack_latents(latents, batch, channels, h, w))
    media = model.decode_latents(latents)
    expected = (2, 3, height, width) if frames is None else (2, frames, 3, height, width)
    assert media.shape == expected and media.dtype == torch.float32 and 0 <= media.min() and media.max() <= 1
    assert model.encode_media(media).shape == latents.shape
    sigmas = model.sampling_sigmas(4, latents.shape)
    assert sigmas.shape == (5,) and sigmas[0] == 1 and sigmas[-1] == 0 and torch.all(sigmas[1:] < sigmas[:-1])


def test_a_saved_pipeline_loads_like_a_released_checkpoint(model, tmp_path):
    """Saved with save_pretrained and loaded by model.path (tokenizer files included): the same velocities."""
    directory = tiny_pipeline_dir(model.family, tmp_path)
    assert json.loads((directory / "model_index.json").read_text())["_class_name"] == type(model.pipeline).__name__
    area = {"source_area": SOURCE_AREA} if model.conditional and not model.sources_need_size else {}
    loaded = load_flow_model(model.family, str(directory), max_sequence_length=16, **area)
    latents = _latents(model, 2, 7)
    source = _sources(model, 2)
    with torch.no_grad():
        ours = model.velocity(latents, 0.4, model.encode_prompts(["a cat", "a red car"], **source, **_at_size(model)))
        theirs = loaded.velocity(
            latents, 0.4, loaded.encode_prompts(["a cat", "a red car"], **source, **_at_size(loaded))
        )
    torch.testing.assert_close(theirs, ours)


def _edit_prompt_file(model: FlowModel, root) -> str:
    """An editing prompt file of one line whose source is a random 8-bit image (editing families' benchmark input)."""
    from mmreward import media

    media.save_media(_sources(model, 1)["sources"][0], root / "source.png")
    (root / "edits.jsonl").write_text(json.dumps({"prompt": "make it brighter", "image": "source.png"}) + "\n")
    return str(root / "edits.jsonl")


def test_generate_runs_on_the_tiny_family(model, tmp_path):
    height, width, _ = SIZES[model.family]
    # editing families edit the source of an editing prompt file's line
    prompts = ["--prompts", _edit_prompt_file(model, tmp_path)] if model.conditional else ["--prompt", "a cat"]
    code = cli.main(
        [
            "generate",
            *f"--model tiny --family {model.family}".split(),
            *prompts,
            "--guide",
            BRIGHTNESS,
            *f"--steps 2 --budget 2 --height {height} --width {width} --cfg 2 --no-progress --out".split(),
            str(tmp_path),
        ]
    )
    assert code == 0
    (row,) = [json.loads(line) for line in (tmp_path / "rewards.jsonl").read_text().splitlines()]
    assert not row["failed"] and row["evaluations"]["forward"] == 2


def test_gen_bench_runs_on_the_tiny_family(model, tmp_path):
    if model.conditional:
        prompts = _edit_prompt_file(model, tmp_path)
    else:
        prompts = "ta-hard" if model.family in VIDEO_FAMILIES else "unigenbench"
    args = [
        *f"--model tiny --family {model.family} --prompts {prompts} --limit 1 --images-per-prompt 2".split(),
        *"--steps 2 --reward mmreward.rewards.brightness:BrightnessReward --diversity-features none --out".split(),
        str(tmp_path / "run"),
        "--no-progress",
    ]
    assert gen_bench.main(args) == 0
    run = json.loads((tmp_path / "run" / "results.json").read_text())
    scores = run["rewards"]["BrightnessReward"]["scores"]
    first = "1" if model.conditional else "0"  # an editing set's ids are line numbers
    assert len(scores) == 2 and all(0 < value < 1 for value in scores.values())
    assert scores[f"{first}_0"] != scores[f"{first}_1"]  # two seeds, two samples

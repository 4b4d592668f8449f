"""Speed and memory of one Flow-GRPO / Pref-GRPO step, split into rollout, reward and update, against the bare model
calls it has to make; and the log-prob rollout against a plain diffusers pipeline call.

    python benchmarks/bench_grpo.py            # CPU; SD3 MM-DiT 2 layers, 4 heads x 64, 32x32 latents
    python benchmarks/bench_grpo.py --device cuda --dtype bfloat16 --latent-size 64 --steps 10
    python benchmarks/bench_grpo.py --smoke    # 1 layer, 8x8 latents, 1 prompt x 2, 2 steps, once: checks it runs

A step is what align/pref_grpo.py runs, with the same functions (``rollout_groups``, ``compute_rewards``,
``group_advantages``, ``grpo_update``, one process): P prompts x G samples with CFG, K SDE steps, the first T
trained with a KL to the reference (LoRA r32 on the attention projections), in two reward modes: pointwise (a
CLIP-score reward, tiny random open_clip) and pairwise (win rates under a tiny random Qwen2-VL judge, every pair
of a group in both orders). The baseline is the calls no implementation can avoid, timed alone on prepared inputs
in the same process, interleaved with the steps: K transformer forwards without gradients and a VAE decode
(rollout), the reward's own ``score`` or the judge's ``judge_pairs`` on the same media (reward), and T reference
forwards plus T forward-backward passes (update). Everything else is overhead: SDE steps and log-probs, storing
latents, uint8 conversion, gathering, win-rate bookkeeping, advantages, the clipped loss and KL, clipping, AdamW and
EMA. Times are the best of ``--repeats``: wall times on a GPU, CPU time of the process on a CPU (one thread by
default), so that other jobs on a shared machine do not count. The last line is
``overhead: NN%``, the larger of the two modes' step / baseline - 1.

The rollout alone is also compared with ``StableDiffusion3Pipeline.__call__`` on the same transformer, steps,
batch, guidance, prompt embeddings and initial noise (Euler ODE, decoded to tensors): the cost of the SDE steps'
log-probability bookkeeping. ``--families`` adds one such row per other family (default FLUX.1, Qwen-Image,
Z-Image, FLUX.2 klein, Wan2.2 A14B and TI2V-5B, FLUX.2 dev, HunyuanVideo 1.5, Qwen-Image 2.1; also ``wan-i2v``):
the family's tiny pipeline with a transformer of ``--layers`` x ``--heads`` x 64 and as many image tokens (per
latent frame; HunyuanVideo and Wan I2V: 5 frames, 2 latent frames), the rollout (prompts encoded, CFG the family's
way, decoded) against the pipeline called with the same prompts, noise, steps and guidance
(``pipeline_guidance_kwargs``). HunyuanVideo 1.5: both sides get the adapter's prompt embeddings (see
``hunyuan_embeds``). The editing families (Qwen-Image-Edit Plus, FLUX.1 Kontext) get a random 8-bit source per
prompt at the output's size, kept at that size on both sides (as many source tokens as noisy ones); the pipeline
takes one source per call, so it runs once per prompt with G samples, and the rollout then runs as many rows per
transformer call (``edit_calls``).

Measured on the shared 2-core CPU machine (CPU time, one thread, best of 3), 2 prompts x 4 samples, 6 SDE steps,
3 trained with KL:
- default (2 layers, 32x32 latents): step 5.28 s vs bare calls 5.18 s (pointwise, +1.9%), 5.24 vs 5.27 s
  (pairwise, -0.5%); rollout 2.09 s vs the pipeline's 2.05 s (+2.2%); ``overhead: 2%``.
- ``--layers 4 --latent-size 48``: step 23.11 vs 23.02 s (+0.4%), 23.41 vs 23.37 s (+0.2%); rollout 8.76 s vs
  8.81 s (-0.5%); ``overhead: 0%``.
- family rows at the default sizes (2 layers x 4 heads x 64, 256 image tokens, 2 prompts x 4 samples, 6 steps, CFG
  4 the family's way, best of 3; two runs): FLUX.1 1.92 s vs FluxPipeline 1.91 s (+0.4%), Qwen-Image 2.16 vs
  2.13 s (+1.7%; its pipeline encodes each prompt once per sample), Z-Image 2.77 vs 2.74 s (+1.1%), FLUX.2 klein
  3.27 vs 3.25 s (+0.6%); SD3 in the same runs +2.2% and +2.5%.
- Wan2.2 rows (same sizes, one-frame videos, 256 tokens): A14B with both experts (the 6-step grid crosses the
  boundary) 3.01 s vs WanPipeline 2.70 s (+11.7%), TI2V-5B 3.85 vs 3.50 s (+10.1%). WanPipeline runs the two CFG
  halves as two calls of 8 and the rollout as one of 16, which on one CPU thread is itself 14% slower per forward
  (0.325 vs 0.285 s, timed alone): 6 steps x 0.04 s of A14B's 0.31 s; the rest, +2.6%, is the SDE bookkeeping.
- the same, FLUX.2 dev (guidance embedding) and HunyuanVideo 1.5 (CFG 4, 5 frames): FLUX.2 dev 1.74 vs
  Flux2Pipeline 1.75 s (-0.6%; FLUX.2 klein +2.4%, SD3 +0.9% in that run); HunyuanVideo 1.5 14.74 vs
  HunyuanVideo15Pipeline 12.86 s (+14.6%; SD3 -2.0% in that run), 13.87 vs 13.05 s (+6.3%) when repeated. That is
  mostly not bookkeeping: the rollout runs CFG as one batch of 2B while the pipeline's guider runs two batches of
  B, and on this CPU one transformer call on 16 samples costs 2.04 s where two on 8 cost 1.87 s (+9%); with the
  rollout's batch_size at 4 (CFG batches of 8, as the guider's) the row reads 13.66 vs 13.58 s (+0.6%).
- Wan2.1 I2V (``--families wan-i2v``; same sizes, 5 frames: 2 latent frames of 256 tokens, 512 text + 17 CLIP image
  tokens, one 256 x 256 source): 9.16 s vs WanImageToVideoPipeline 8.46 s (+8.3%; in that run SD3 -2.9%, Wan2.2
  A14B -2.5%). The gap is the conditioning's encoding, not the SDE bookkeeping: the rollout VAE-encodes the 5-frame
  source video and runs CLIP once per (prompt, source) key, for the 2 prompts and the negative prompt, where the
  pipeline, given one image per call, encodes it once; timed alone that is 2.04 vs 1.21 s (text encoding included),
  more than the whole difference. In training each (prompt, source) is encoded once and then cached.
- editing rows (same sizes: 256 noisy + 256 source tokens, G = 4 rows per transformer call on both sides, best of 3
  or 5, four runs on the loaded machine): FLUX.1 Kontext 3.89 vs FluxKontextPipeline 3.83 s (+1.6%), -3.4%, +2.0%,
  +0.8%; Qwen-Image-Edit Plus 4.33 vs QwenImageEditPlusPipeline 4.19 s (+3.4%), +6.3%, +8.9%, +13.5%. Without CFG
  (scale 1 on both sides) Qwen-Image-Edit reads -1.0% and 0.0%: the SDE bookkeeping costs nothing measurable, and
  the excess is the CFG path. The rollout runs a prompt's two halves as one batch padded to the longer text (30 vs
  17 tokens here), which on this CPU is 2.6% slower per call than the pipeline's two unpadded calls (timed alone),
  and encodes the source with the VAE for the negative prompt as well as the prompt; the run-to-run spread (SD3's
  row read +0.4% and -3.4% in the first two runs) is the rest.
- Qwen-Image 2.1 (same sizes, CFG 4 with the empty negative prompt; the pipeline's text key/value cache off, see
  ``family_rollout_row``): 1.86 s vs QwenImage21Pipeline 1.86 s (-0.3%; SD3 +1.6% in that run), 1.82 vs 1.81 s
  (+0.2%; SD3 +1.7%) when repeated. With the cache on
  (the pipeline's default) 1.98 vs 1.90 s (+4.1%): the pipeline skips the text tokens' work after its first step
  (about 12 of 270 tokens here), which training forwards need and rollouts therefore recompute.
The tiny reward models cost milliseconds here; with a real judge the reward phase is the judge's own time plus the
gather of a group's media to its owner (none when every process holds whole groups).
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402

from mmreward import testing, tiny_models  # noqa: E402
from mmreward.alignment.advantages import group_advantages  # noqa: E402
from mmreward.alignment.clipped_update import grpo_update  # noqa: E402
from mmreward.alignment.group_rewards import PointwiseGroupReward, WinRateGroupReward, compute_rewards  # noqa: E402
from mmreward.alignment.group_rollout import RolloutConfig, rollout_groups  # noqa: E402
from mmreward.alignment.layout import GroupLayout  # noqa: E402
from mmreward.alignment.update_schedule import GRPOLossConfig  # noqa: E402
from mmreward.flow.adapter import source_pil  # noqa: E402
from mmreward.flow.models import ADAPTERS, DEFAULT_LORA_TARGETS, VIDEO_FAMILIES, FlowModel, SD3Model  # noqa: E402
from mmreward.flow.rollout import sample, seeded  # noqa: E402
from mmreward.rewards.mix import RewardMix  # noqa: E402
from mmreward.train.ema import EMA  # noqa: E402
from mmreward.train.guards import NonFiniteGuard  # noqa: E402
from mmreward.train.lora import LoraReference, adapters_disabled, add_lora  # noqa: E402
from mmreward.train.policy import PolicyOptimizer  # noqa: E402


def build(args, device: torch.device) -> SD3Model:
    from diffusers import SD3Transformer2DModel

    # Tiny text encoders and VAE; the transformer below is the benchmarked one.
    pipeline = tiny_models.tiny_pipeline("sd3")
    torch.manual_seed(0)
    pipeline.transformer = SD3Transformer2DModel(
        sample_size=args.latent_size,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=args.layers,
        attention_head_dim=64,
        num_attention_heads=args.heads,
        joint_attention_dim=32,
        caption_projection_dim=64 * args.heads,
        pooled_projection_dim=64,
        pos_embed_max_size=args.latent_size,
    )
    pipeline.transformer.requires_grad_(False).eval().to(device, getattr(torch, args.dtype))
    pipeline.vae.requires_grad_(False).eval().to(device)
    model = SD3Model(pipeline, device=device)
    model.max_sequence_length = 77
    add_lora(model.transformer, rank=32, alpha=64, target_modules=DEFAULT_LORA_TARGETS)
    return model


def family_transformer(family: str, args) -> torch.nn.Module:
    """The benchmarked transformer of ``family``: ``--layers`` blocks of ``--heads`` x 64, the tiny pipeline's text
    width and latent channels (so its text encoder and VAE still fit)."""
    from diffusers import (
        Flux2Transformer2DModel,
        FluxTransformer2DModel,
        HunyuanVideo15Transformer3DModel,
        QwenImage21Transformer2DModel,
        QwenImageTransformer2DModel,
        WanTransformer3DModel,
        ZImageTransformer2DModel,
    )

    torch.manual_seed(0)
    if family in ("flux", "flux-kontext"):  # Kontext's transformer is FLUX.1's class (source tokens appended)
        return FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=args.layers,
            num_single_layers=args.layers,
            attention_head_dim=64,
            num_attention_heads=args.heads,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(16, 24, 24),
        )
    if family in ("qwenimage", "qwenimage-edit"):  # Qwen-Image-Edit's is Qwen-Image's (source tokens appended)
        return QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=args.layers,
            attention_head_dim=64,
            num_attention_heads=args.heads,
            joint_attention_dim=32,
            axes_dims_rope=(16, 24, 24),
        )
    if family == "zimage":
        transformer = ZImageTransformer2DModel(
            in_channels=16,
            dim=64 * args.heads,
            n_layers=args.layers,
            n_refiner_layers=1,
            n_heads=args.heads,
            n_kv_heads=args.heads,
            cap_feat_dim=16,
            axes_dims=[16, 24, 24],
            axes_lens=[256, 128, 128],
        )
        with torch.no_grad():  # created with torch.empty
            transformer.x_pad_token.fill_(1.0)
            transformer.cap_pad_token.fill_(1.0)
        return transformer
    if family in ("flux2klein", "flux2"):
        return Flux2Transformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=args.layers,
            num_single_layers=args.layers,
            attention_head_dim=64,
            num_attention_heads=args.heads,
            joint_attention_dim=48,
            timestep_guidance_channels=64,
            axes_dims_rope=(16, 16, 16, 16),
            guidance_embeds=family == "flux2",  # FLUX.2 [dev] is guidance-distilled
        )
    if family in ("wan22", "wan22ti2v"):  # 16 latent channels as Wan2.2 A14B's VAE, 48 as TI2V-5B's
        channels = 48 if family == "wan22ti2v" else 4
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=args.heads,
            attention_head_dim=64,
            in_channels=channels,
            out_channels=channels,
            text_dim=32,
            freq_dim=64,
            ffn_dim=4 * 64 * args.heads,
            num_layers=args.layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
        )
    if family == "wan-i2v":  # Wan2.1 I2V: latents + first-frame mask + conditioning in, CLIP image cross-attention
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=args.heads,
            attention_head_dim=64,
            in_channels=12,  # 4 latent + 4 mask + 4 conditioning channels of the tiny VAE
            out_channels=4,
            text_dim=32,
            image_dim=16,  # the tiny CLIP vision encoder's width
            added_kv_proj_dim=64 * args.heads,
            freq_dim=64,
            ffn_dim=4 * 64 * args.heads,
            num_layers=args.layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
        )
    if family == "hunyuanvideo15":
        return HunyuanVideo15Transformer3DModel(
            in_channels=9,  # latents + text-to-video conditioning channels of the tiny VAE (4 + 4 + 1)
            out_channels=4,
            num_attention_heads=args.heads,
            attention_head_dim=64,
            num_layers=args.layers,
            num_refiner_layers=1,
            text_embed_dim=16,
            text_embed_2_dim=16,
            image_embed_dim=8,
            rope_axes_dim=(16, 24, 24),
            target_size=32,
            task_type="t2v",
        )
    if family == "qwenimage21":
        return QwenImage21Transformer2DModel(
            in_channels=8,  # the tiny VAE's latent channels (unpatched: one token per latent pixel)
            out_channels=8,
            num_layers=args.layers,
            attention_head_dim=64,
            num_attention_heads=args.heads,
            context_in_dim=32,
            axes_dims_rope=(16, 24, 24),
        )
    raise ValueError(
        "--families takes flux, qwenimage, zimage, flux2klein, wan22, wan22ti2v, flux2, hunyuanvideo15, qwenimage21, "
        f"wan-i2v, qwenimage-edit and flux-kontext, not {family!r}"
    )


def family_rollout_row(family: str, args, device: torch.device, accelerator: Accelerator) -> str:
    """One line: the family's rollout with log-probs against its pipeline's own call, best of ``--repeats``."""
    pipeline = tiny_models.tiny_pipeline(family)
    # Wan2.2 A14B: both experts benchmarked (the rollout switches at the pipeline's boundary as the pipeline does)
    experts = [name for name in ("transformer", "transformer_2") if getattr(pipeline, name, None) is not None]
    for name in experts:
        setattr(pipeline, name, family_transformer(family, args))
    for module in pipeline.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval().to(device)
    if args.dtype != "float32":
        for name in experts:
            getattr(pipeline, name).to(dtype=getattr(torch, args.dtype))
    pipeline.set_progress_bar_config(disable=True)
    video = family in VIDEO_FAMILIES
    if not isinstance(pipeline.scheduler, FlowMatchEulerDiscreteScheduler):
        # Wan ships UniPC; the rollout steps with Euler on the same shifted grid, so the pipeline does too
        pipeline.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            {"shift": pipeline.scheduler.config.flow_shift, "num_train_timesteps": 1000}
        )
    model: FlowModel = ADAPTERS[family](pipeline, device=device)
    takes_length = "max_sequence_length" in inspect.signature(pipeline.__call__).parameters
    # HunyuanVideo 1.5 pads to its own 1000 tokens: both sides then encode that many; Wan2.1 I2V's transformer reads
    # exactly 512 text tokens, which both sides then encode
    text_length = 512 if family == "wan-i2v" else 32
    if takes_length:
        model.max_sequence_length = text_length
    add_lora(model.transformer, rank=32, alpha=64, target_modules=DEFAULT_LORA_TARGETS)
    prompts = [f"a photo of object number {i}" for i in range(args.prompts)]
    # (latent_size / 2)^2 image tokens (per latent frame) in every family: 2x2 patches of a latent_size grid, or for
    # Qwen-Image 2.1 (unpatched) one token per pixel of a latent_size / 2 grid
    factor = model.pipeline.vae_scale_factor // 2 if family == "qwenimage21" else model.spatial_multiple // 2
    size = {"height": factor * args.latent_size, "width": factor * args.latent_size}
    if video:  # Wan2.2: one frame (one latent frame); HunyuanVideo 1.5 and image-to-video: 5 frames (2 latent frames)
        size["num_frames"] = 5 if family in ("hunyuanvideo15", "wan-i2v") else 1
    samples = args.prompts * args.group
    noise = torch.randn(model.latent_shape(samples, **size), generator=torch.Generator().manual_seed(0))
    # Editing families: one random 8-bit source per prompt at the output's size, seen at that size on both sides
    # (the adapter's source_area; the pipelines' own resizing told to keep it), so the transformer sees as many
    # source tokens as noisy ones. The editing pipelines take one source per call, so they are called once per
    # prompt with G samples; the rollout then runs G rows per transformer call as they do (with batched CFG, G / 2
    # samples' two halves), so the row measures bookkeeping, not CPU batch sizes. Image-to-video: one source image
    # (the first frame) for every prompt, at the output size.
    editing = model.conditional and not video
    sources, batch_size = None, samples
    if editing:
        model.source_area = size["height"] * size["width"]
        generator = torch.Generator().manual_seed(1)
        shape = (3, size["height"], size["width"])
        sources = [torch.randint(0, 256, shape, generator=generator) / 255 for _ in prompts]
        batch_size = args.group // 2 if model.batch_cfg else args.group
    elif model.conditional:
        sources = [torch.rand(3, size["height"], size["width"], generator=torch.Generator().manual_seed(1))]
        sources *= args.prompts

    # HunyuanVideo15Pipeline pads its text to 1000 Qwen + 256 ByT5 tokens that its transformer carries (masked)
    # through every block, where the adapter keeps the real tokens: that difference is not bookkeeping, so both sides
    # get the adapter's embeddings, encoded before the timing.
    given_embeds = family == "hunyuanvideo15"

    def ours() -> None:
        if not given_embeds:
            model._prompt_cache.clear()  # the pipeline encodes its prompts on every call: so does this rollout
        with accelerator.autocast():
            sample(
                model,
                prompts,
                group_size=args.group,
                num_steps=args.steps,
                guidance_scale=4.0,
                sde_type="flow",
                noise_level=0.7,
                generator=[seeded(0, i) for i in range(samples)],
                batch_size=batch_size,
                initial_noise=noise,
                sources=sources,
                **size,
            )

    # QwenImagePipeline sizes its image-shape list by prompts, not images: with several prompts it fails for
    # num_images_per_prompt > 1, so it gets each prompt once per sample (its text encoder then runs G times as long).
    # HunyuanVideo15Pipeline fails for num_videos_per_prompt > 1 and its VAE for batches over one: it gets one
    # embedding row per sample, returns latents, and its VAE decodes them one by one (as the adapter does).
    # WanImageToVideoPipeline repeats its CLIP image features per prompt, not per video: the same (it takes one image,
    # VAE-encoded once per call; the rollout encodes it with each of its prompts).
    repeat = family in ("qwenimage", "wan-i2v")
    call_prompts = [p for p in prompts for _ in range(args.group)] if repeat else prompts
    per_prompt = "num_videos_per_prompt" if video else "num_images_per_prompt"
    length = {"max_sequence_length": text_length} if takes_length else {}
    image = {"image": source_pil(sources[0])} if model.conditional and not editing else {}
    # QwenImage21Pipeline caches the text tokens' keys and values after its first step, which the rollout (whose
    # training forwards need every token) does not: that is less work, not less bookkeeping, so it is switched off
    # here (with it, see the measurements in the module docstring)
    cache = {"use_kv_cache": False} if family == "qwenimage21" else {}
    guidance = model.pipeline_guidance_kwargs(4.0)
    if family == "qwenimage21":  # it repeats one negative prompt per image of one prompt only: give it one per prompt
        guidance["negative_prompt"] = [guidance["negative_prompt"]] * len(call_prompts)

    def plain() -> None:
        with accelerator.autocast():
            if editing:
                edit_calls(pipeline, model, prompts, sources, noise.to(device), args, size)
                return
            if given_embeds:
                latents = pipeline(
                    num_inference_steps=args.steps,
                    latents=model.pipeline_initial_latents(noise.to(device)),
                    output_type="latent",
                    **hunyuan_embeds(model, prompts, args.group),
                    **size,
                    **{k: v for k, v in model.pipeline_guidance_kwargs(4.0).items() if k != "negative_prompt"},
                )[0]
                for one in latents:
                    pipeline.vae.decode(one[None] / pipeline.vae.config.scaling_factor, return_dict=False)
                return
            pipeline(
                prompt=call_prompts,
                num_inference_steps=args.steps,
                latents=model.pipeline_initial_latents(noise.to(device)),
                output_type="pt",
                **{per_prompt: 1 if repeat else args.group},
                **length,
                **image,
                **cache,
                **size,
                **guidance,
            )

    ours(), plain()
    rollout_times, pipeline_times = [], []
    for _ in range(args.repeats):
        start = sync(device)
        plain()
        pipeline_times.append(sync(device) - start)
        start = sync(device)
        ours()
        rollout_times.append(sync(device) - start)
    rollout, plain_time = min(rollout_times), min(pipeline_times)
    return (
        f"{family} rollout with log-probs {rollout:.4f} s vs {type(pipeline).__name__} {plain_time:.4f} s: "
        f"bookkeeping {rollout / plain_time - 1:.1%}"
    )


def edit_calls(pipeline, model: FlowModel, prompts, sources, noise, args, size: dict[str, int]) -> None:
    """The editing pipeline on each prompt with its source, ``--group`` samples per call, from the rollout's noise;
    its source resizing kept at the source's own size (``model.source_area``), as the adapter's."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus

    from mmreward.flow.adapter import source_pil

    if model.family == "flux-kontext":
        keep = {"_auto_resize": False, "max_area": size["height"] * size["width"]}
    else:  # QwenImageEditPlusPipeline reads its VAE resolution from a module constant at call time
        keep = {}
        pipeline_qwenimage_edit_plus.VAE_IMAGE_SIZE = model.source_area
    for p, (prompt, source) in enumerate(zip(prompts, sources, strict=True)):
        pipeline(
            prompt=prompt,
            image=source_pil(source),
            num_inference_steps=args.steps,
            latents=model.pipeline_initial_latents(noise[p * args.group : (p + 1) * args.group]),
            output_type="pt",
            num_images_per_prompt=args.group,
            max_sequence_length=model.max_sequence_length,
            **keep,
            **size,
            **model.pipeline_guidance_kwargs(4.0),
        )


def hunyuan_embeds(model: FlowModel, prompts: list[str], group: int) -> dict[str, torch.Tensor]:
    """HunyuanVideo15Pipeline's embedding arguments from the adapter's (cached) embeddings, one row per sample."""
    out = {}
    for prefix, texts in (("", prompts), ("negative_", [""] * len(prompts))):
        cond = model.encode_prompts(texts).repeat_interleave(group)
        for suffix, part in (("", cond), ("_2", cond.secondary)):
            embeds = part.embeds  # (B, L, D)
            mask = torch.ones(embeds.shape[:2]) if part.mask is None else part.mask
            if embeds.shape[1] == 0:  # no quoted text: the pipeline cannot reshape an empty stream; 1 masked token
                embeds, mask = embeds.new_zeros(embeds.shape[0], 1, embeds.shape[2]), torch.zeros(embeds.shape[0], 1)
            out[f"{prefix}prompt_embeds{suffix}"] = embeds
            out[f"{prefix}prompt_embeds_mask{suffix}"] = mask.to(embeds)
    return out


def sync(device: torch.device) -> float:
    """GPU: wall time after the queued work. CPU: this process's CPU time, which other jobs on a shared machine do
    not inflate (wall times there swung 2-4x between identical calls)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


# ``--smoke``: every phase and both reward modes at the smallest sizes that still form a group and train a step.
SMOKE = {"layers": 1, "heads": 1, "latent_size": 8, "prompts": 1, "group": 2, "steps": 2, "trained": 1, "repeats": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--latent-size", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="SDE steps of a rollout")
    parser.add_argument("--trained", type=int, default=3, help="trained steps per sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: CPU time = work done)")
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat (the test suite's run)")
    parser.add_argument(
        "--families",
        nargs="*",
        default=[
            "flux",
            "qwenimage",
            "zimage",
            "flux2klein",
            "wan22",
            "wan22ti2v",
            "flux2",
            "hunyuanvideo15",
            "qwenimage21",
            "qwenimage-edit",
            "flux-kontext",
        ],
        help="rollout-vs-pipeline rows (Wan2.2 with one-frame videos, HunyuanVideo 1.5 with 5 frames, the editing "
        "families with a source image per prompt)",
    )
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    accelerator = Accelerator(
        cpu=device.type == "cpu", mixed_precision={"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[args.dtype]
    )
    model = build(args, device)
    root = tiny_models.scratch_dir()
    rewards = {
        "pointwise": PointwiseGroupReward(
            RewardMix({str(testing.tiny_reward_preset("clip-score", root)): 1.0}, device=device)
        ),
        "pairwise": WinRateGroupReward(testing.tiny_judge("pairwise", root=root, device=device), orders="both"),
    }
    prompts = [f"a photo of object number {i}" for i in range(args.prompts)]
    model.encode_prompts([*prompts, ""])
    layout = GroupLayout(args.prompts, args.group)
    samples = layout.total
    rollout_cfg = RolloutConfig(
        prompts_per_step=args.prompts,
        group_size=args.group,
        num_steps=args.steps,
        guidance_scale=4.5,
        batch_size=samples,
    )
    loss_cfg = GRPOLossConfig(kl_beta=0.01, timestep_fraction=args.trained / args.steps)
    size = {"height": 2 * args.latent_size, "width": 2 * args.latent_size}  # the tiny VAE compresses 2x
    transformer = model.transformer
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    policy_optimizer = PolicyOptimizer(params, optimizer, scheduler, 1.0, NonFiniteGuard(), EMA(transformer, 0.9, 1))
    reference = LoraReference(transformer)

    def program_step(mode: str, iteration: int, phases: dict[str, float]) -> None:
        """One step of align/pref_grpo.py (one process), its phases timed."""
        start = sync(device)
        batch = rollout_groups(
            model, prompts, layout, rollout_cfg, **size, iteration=iteration, seed=0, accelerator=accelerator
        )
        rolled = sync(device)
        out = compute_rewards(rewards[mode], batch, layout, accelerator)
        rewarded = sync(device)
        groups = torch.arange(layout.prompts).repeat_interleave(layout.group_size)
        adv = group_advantages(out.scores, groups)
        grpo_update(
            model,
            batch,
            adv.values,
            torch.ones(samples, dtype=torch.bool),
            transformer=transformer,
            reference=reference,
            optimizer=policy_optimizer,
            loss=loss_cfg,
            micro_batch_size=samples,
            accelerator=accelerator,
            seed=(0, iteration),
        )
        done = sync(device)
        for name, value in (("rollout", rolled - start), ("reward", rewarded - rolled), ("update", done - rewarded)):
            phases[name] = min(phases.get(name, float("inf")), value)
        phases["step"] = min(phases.get("step", float("inf")), done - start)

    # Baseline inputs: what the transformer, the VAE and the rewards see in a step, prepared once.
    dtype_in = next(transformer.parameters()).dtype
    shape = model.latent_shape(samples, **size)
    cond = model.encode_prompts([p for p in prompts for _ in range(args.group)])
    negative = model.encode_prompts([""] * samples)
    both = {
        "hidden_states": torch.randn(2 * samples, *shape[1:], device=device, dtype=dtype_in),
        "timestep": torch.full((2 * samples,), 500.0, device=device),
        "encoder_hidden_states": torch.cat([negative.embeds, cond.embeds]).to(dtype_in),
        "pooled_projections": torch.cat([negative.pooled, cond.pooled]).to(dtype_in),
        "return_dict": False,
    }
    reference_batch = rollout_groups(
        model, prompts, layout, rollout_cfg, **size, iteration=0, seed=0, accelerator=accelerator
    )
    items = list(reference_batch.media)
    pairs = [
        (i, i, j)
        for g in range(args.prompts)
        for i, j in itertools.combinations(range(g * args.group, (g + 1) * args.group), 2)
    ]
    step_prompts = reference_batch.rollout.prompts

    def bare(mode: str, phases: dict[str, float]) -> None:
        start = sync(device)
        with torch.no_grad(), accelerator.autocast():
            for _ in range(args.steps):
                transformer(**both)
            model.decode_latents(torch.randn(shape, device=device))
        rolled = sync(device)
        if mode == "pointwise":
            rewards[mode].mix.models[next(iter(rewards[mode].mix.models))].score(step_prompts, reference_batch.media)
        else:
            rewards[mode].judge.judge_pairs(step_prompts, items, pairs, "both")
        rewarded = sync(device)
        for _ in range(args.trained):
            with torch.no_grad(), adapters_disabled(transformer), accelerator.autocast():
                transformer(**both)
            with accelerator.autocast():
                out = transformer(**both)[0]
            out.float().pow(2).mean().backward()
        optimizer.zero_grad(set_to_none=True)
        done = sync(device)
        for name, value in (("rollout", rolled - start), ("reward", rewarded - rolled), ("update", done - rewarded)):
            phases[name] = min(phases.get(name, float("inf")), value)
        phases["step"] = min(phases.get("step", float("inf")), done - start)

    step_phases = {mode: {} for mode in rewards}
    bare_phases = {mode: {} for mode in rewards}
    for mode in rewards:
        program_step(mode, 0, {}), bare(mode, {})  # warm-up (allocator, kernels, caches)
    peaks = {}
    for r in range(args.repeats):  # interleaved, so load changes on a shared machine hit every measurement alike
        for mode in rewards:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            bare(mode, bare_phases[mode])
            program_step(mode, r + 1, step_phases[mode])
            if device.type == "cuda":
                peaks[mode] = max(peaks.get(mode, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)

    # The rollout alone against the diffusers pipeline (same transformer with its LoRA, steps, batch, guidance).
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    pipeline = model.pipeline
    pipeline.set_progress_bar_config(disable=True)

    def ours() -> None:
        with accelerator.autocast():
            sample(
                model,
                prompts,
                group_size=args.group,
                num_steps=args.steps,
                **size,
                guidance_scale=4.5,
                sde_type="flow",
                noise_level=0.7,
                generator=[seeded(0, i) for i in range(samples)],
                batch_size=samples,
            )

    def plain() -> None:
        with accelerator.autocast():
            pipeline(
                prompt_embeds=cond.embeds,
                pooled_prompt_embeds=cond.pooled,
                negative_prompt_embeds=negative.embeds,
                negative_pooled_prompt_embeds=negative.pooled,
                num_inference_steps=args.steps,
                guidance_scale=4.5,
                latents=noise.clone(),
                output_type="pt",
                **size,
            )

    ours(), plain()
    rollout_times, pipeline_times = [], []
    for _ in range(args.repeats):
        start = sync(device)
        plain()
        pipeline_times.append(sync(device) - start)
        start = sync(device)
        ours()
        rollout_times.append(sync(device) - start)

    tokens = (args.latent_size // 2) ** 2
    print(
        f"GRPO step on {args.device} ({args.dtype}): SD3 MM-DiT {args.layers} layers x {args.heads} heads x 64, "
        f"{args.latent_size}x{args.latent_size} latents ({tokens} image tokens), {args.prompts} prompts x "
        f"{args.group} samples, CFG 4.5, {args.steps} SDE steps, {args.trained} trained + KL, LoRA r32, "
        f"best of {args.repeats}"
    )
    print(f"{'mode':<10}{'phase':<10}{'program s':>11}{'bare calls s':>14}{'overhead':>10}")
    overheads = {}
    for mode in rewards:
        program, calls = step_phases[mode], bare_phases[mode]
        for phase in ("rollout", "reward", "update", "step"):
            ratio = program[phase] / calls[phase] - 1
            print(f"{mode:<10}{phase:<10}{program[phase]:>11.4f}{calls[phase]:>14.4f}{ratio:>10.1%}")
        overheads[mode] = program["step"] / calls["step"] - 1
        if mode in peaks:
            print(f"{mode:<10}peak GPU memory: {peaks[mode]:.2f} GiB")
    if device.type != "cuda":
        print(f"peak RSS (whole process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    rollout, plain_time = min(rollout_times), min(pipeline_times)
    print(
        f"rollout with log-probs {rollout:.4f} s vs StableDiffusion3Pipeline {plain_time:.4f} s: "
        f"bookkeeping {rollout / plain_time - 1:.1%}"
    )
    for family in args.families:
        print(family_rollout_row(family, args, device, accelerator))
    worst = max(overheads, key=overheads.get)
    print(f"overhead: {100 * overheads[worst]:.0f}%")


if __name__ == "__main__":
    main()

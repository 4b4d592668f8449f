"""Regenerate the golden Flow-DPO training step with the reference training code (yifan123/flow_grpo).

Run in the Flow-GRPO reference virtualenv (see tests/golden/README.md), pointing at a checkout::

    FLOW_GRPO_DIR=/path/to/flow_grpo /path/to/flowgrpo-ref/bin/python tests/golden/flow_dpo_step/make_golden.py

It uses the tiny pipeline and the initial LoRA of ../flow_grpo_step (run that generator first). What runs as
published (imported from the checkout, files pinned by sha256): the recipe ``config/dpo.py::pickscore_sd3`` at a
tiny size, ``pipeline_with_logprob`` (the reference's sampling), ``PerPromptStatTracker.update(type='dpo')`` (best
and worst sample of each prompt), and ``get_sigmas`` of ``scripts/train_sd3_dpo.py`` (compiled from the script's
source). Re-expressed from the script's ``main``: the two adapters ``learner`` and ``ref`` (lines 409-419), the
optimizer (438-448), the accelerator with gradient accumulation over the trained timesteps (314-333), the sampling
with the ``ref`` adapter (599-654), the pairing of best and worst latents (712-806) and the training loop
(808-983: per trained timestep a fresh noise shared by the pair and a logit-normal timestep, the learner's and the
ref's velocity errors, ``-logsigmoid(-beta / 2 * (w_diff - l_diff))``, backward, gradient clipping, optimizer
step). Differences, none in the numbers: fixed prompt embeddings (no text encoders), the reward stand-in (mean
brightness), ``gradient_accumulation_steps`` 1 (the recipe's ``num_batches_per_epoch // 2`` is 0 at one batch per
epoch; the geneval recipe sets 1), and the learner adapter starts from ../flow_grpo_step/lora_init (random A and B)
while the ref adapter keeps peft's Gaussian initialization (B = 0: the base model, mmreward's reference). The noise
and timestep draws of each step are saved with the rollout; gradients are read before the clip, weights after the
optimizer step.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
GRPO_STEP = HERE.parent / "flow_grpo_step"
COMMIT = "ac4c86e8cae021841f1fde853d340e0db67690dd"
SHA256 = {
    "flow_grpo/diffusers_patch/sd3_sde_with_logprob.py": (
        "9392d8978073ea26ad7726806412bd39cc284f16857eb027e8fe991cf0be470e"
    ),
    "flow_grpo/diffusers_patch/sd3_pipeline_with_logprob.py": (
        "c4a4ae4e5680572df30e8adc905ee3e76d4eaa2e52f68e4ee75617be05941be8"
    ),
    "flow_grpo/stat_tracking.py": "1708c9a4da6f948ed5ccac9ec844705f470cd551acc99958b1f7736b01b10d27",
    "scripts/train_sd3_dpo.py": "f338ffd9369da2d0b4234e4b8bd9bb7c470214516b8b2f0840fb4c8ef04e9de7",
    "config/dpo.py": "7ded848cc4f58e36f9d058c3dab2b5328ccf2da76d5739a7b42c8aa22b3bf0fb",
    "config/base.py": "3257b19922fb505110399790916a3c2a182b7d91999bde35970f699f5555d53b",
}
RECIPE = "pickscore_sd3"
# 2 prompts x 4 samples in one sampling batch (the recipe: one batch per epoch), 4 sampling steps, so
# int(4 * 0.99) = 3 noise draws accumulated into the one optimizer step.
TINY = {
    "resolution": 32,
    "sample.num_steps": 4,
    "sample.train_batch_size": 8,
    "sample.num_image_per_prompt": 4,
    "sample.num_batches_per_epoch": 1,
    "train.batch_size": 8,
    "train.gradient_accumulation_steps": 1,
    "mixed_precision": "no",
}
SAMPLE_PROMPTS = (0, 1, 1, 0, 0, 1, 0, 1)  # prompt of each sample of the batch, as the repeat sampler shuffles them


def grpo_generator():
    """../flow_grpo_step/make_golden.py as a module: its pipeline loader, LoRA names and embeddings' sizes."""
    spec = importlib.util.spec_from_file_location("flow_grpo_step_make_golden", GRPO_STEP / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkout() -> Path:
    root = Path(os.environ.get("FLOW_GRPO_DIR", "")).expanduser()
    for path, expected in SHA256.items():
        source = root / path
        if not source.is_file():
            sys.exit(f"set FLOW_GRPO_DIR to a checkout of https://github.com/yifan123/flow_grpo at {COMMIT}")
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if digest != expected:
            sys.exit(f"{source} has sha256 {digest}, not the pinned {expected}: check out commit {COMMIT}")
    sys.path.insert(0, str(root))
    return root


def load_recipe(root: Path):
    spec = importlib.util.spec_from_file_location("flow_grpo_config_dpo", root / "config" / "dpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = getattr(module, RECIPE)()
    for key, value in TINY.items():
        section, _, name = key.rpartition(".")
        setattr(config[section] if section else config, name, value)
    return config


def main() -> None:
    root = checkout()
    grpo = grpo_generator()
    import accelerate
    import diffusers
    import peft
    from accelerate import Accelerator
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.training_utils import compute_density_for_timestep_sampling
    from flow_grpo.diffusers_patch.sd3_pipeline_with_logprob import pipeline_with_logprob
    from flow_grpo.stat_tracking import PerPromptStatTracker
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    config = load_recipe(root)
    get_sigmas = grpo.script_function(root, "get_sigmas", {"torch": torch}, script="train_sd3_dpo.py")

    # ---- scripts/train_sd3_dpo.py main(), lines 314-448
    num_train_timesteps = int(config.sample.num_steps * config.train.timestep_fraction)
    accelerator = Accelerator(
        cpu=True,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.train.gradient_accumulation_steps * num_train_timesteps,
    )
    accelerate.utils.set_seed(config.seed, device_specific=True)
    pipeline = grpo.load_pipeline(GRPO_STEP / "pipeline")
    pipeline.vae.requires_grad_(False)
    pipeline.transformer.requires_grad_(not config.use_lora)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.vae.to(accelerator.device, dtype=torch.float32)
    pipeline.transformer.to(accelerator.device)
    target_modules = [
        "attn.add_k_proj",
        "attn.add_q_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "attn.to_k",
        "attn.to_out.0",
        "attn.to_q",
        "attn.to_v",
    ]
    transformer_lora_config = LoraConfig(
        r=32, lora_alpha=64, init_lora_weights="gaussian", target_modules=target_modules
    )
    pipeline.transformer = get_peft_model(pipeline.transformer, transformer_lora_config, adapter_name="learner")
    pipeline.transformer = get_peft_model(pipeline.transformer, transformer_lora_config, adapter_name="ref")
    transformer = pipeline.transformer
    # The learner starts from ../flow_grpo_step/lora_init; the ref adapter keeps B = 0 (the base model).
    initial = {
        name.removeprefix("base_model.model."): tensor
        for name, tensor in load_file(GRPO_STEP / "lora_init" / "adapter_model.safetensors").items()
    }
    learner = learner_names(transformer)
    assert set(learner) == set(initial)
    with torch.no_grad():
        for name, param in learner.items():
            param.copy_(initial[name])
    transformer_trainable_parameters = []
    for name, param in transformer.named_parameters():
        if "learner" in name:
            assert param.requires_grad
            transformer_trainable_parameters.append(param)
    optimizer = torch.optim.AdamW(
        transformer_trainable_parameters,
        lr=config.train.learning_rate,
        betas=(config.train.adam_beta1, config.train.adam_beta2),
        weight_decay=config.train.adam_weight_decay,
        eps=config.train.adam_epsilon,
    )
    embed_generator = torch.Generator().manual_seed(3)
    prompt_embeds_all = torch.randn(2, grpo.TEXT_TOKENS, 32, generator=embed_generator)
    pooled_all = torch.randn(2, 64, generator=embed_generator)
    neg_prompt_embed = torch.randn(1, grpo.TEXT_TOKENS, 32, generator=embed_generator)
    neg_pooled_prompt_embed = torch.randn(1, 64, generator=embed_generator)
    sample_neg_prompt_embeds = neg_prompt_embed.repeat(config.sample.train_batch_size, 1, 1)
    sample_neg_pooled_prompt_embeds = neg_pooled_prompt_embed.repeat(config.sample.train_batch_size, 1)
    stat_tracker = PerPromptStatTracker(config.sample.global_std)
    autocast = contextlib.nullcontext if config.use_lora else accelerator.autocast
    transformer, optimizer = accelerator.prepare(transformer, optimizer)
    noise_scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(GRPO_STEP / "pipeline", subfolder="scheduler")

    # ---- sampling with the ref adapter, lines 590-712
    pipeline.transformer.eval()
    index = list(SAMPLE_PROMPTS)
    prompt_embeds, pooled_prompt_embeds = prompt_embeds_all[index], pooled_all[index]
    prompt_ids = torch.tensor(index).unsqueeze(1)  # stands for the tokenized prompts
    with autocast():
        with torch.no_grad():
            pipeline.transformer.set_adapter("ref")
            images, latents, _ = pipeline_with_logprob(
                pipeline,
                prompt_embeds=prompt_embeds,
                pooled_prompt_embeds=pooled_prompt_embeds,
                negative_prompt_embeds=sample_neg_prompt_embeds,
                negative_pooled_prompt_embeds=sample_neg_pooled_prompt_embeds,
                num_inference_steps=config.sample.num_steps,
                guidance_scale=config.sample.guidance_scale,
                output_type="pt",
                height=config.resolution,
                width=config.resolution,
                noise_level=config.sample.noise_level,
            )
    samples = {
        "prompt_ids": prompt_ids,
        "prompt_embeds": prompt_embeds,
        "pooled_prompt_embeds": pooled_prompt_embeds,
        "latents": latents[-1],
        "rewards": {"avg": images.float().mean(dim=(1, 2, 3))},  # the reward stand-in: mean brightness
    }
    samples["rewards"]["ori_avg"] = samples["rewards"]["avg"]
    samples["rewards"]["avg"] = samples["rewards"]["avg"].unsqueeze(-1)
    gathered_rewards = {key: value.cpu().numpy() for key, value in samples["rewards"].items()}
    prompts = [str(k) for k in index]
    advantages = stat_tracker.update(prompts, gathered_rewards["avg"], type=config.train.algorithm)
    stat_tracker.clear()

    # ---- pairs: lines 760-806 (one process: gather is the identity)
    prompt_ids = samples["prompt_ids"].cpu().numpy()
    latents = samples["latents"].cpu().numpy()
    prompt_embeds = samples["prompt_embeds"].cpu().numpy()
    pooled_prompt_embeds = samples["pooled_prompt_embeds"].cpu().numpy()
    non_zero_indices = np.where(advantages != 0)[0]
    filtered_advantages = advantages[non_zero_indices]
    filtered_latents = latents[non_zero_indices]
    filtered_prompt_ids = prompt_ids[non_zero_indices]
    filtered_prompt_embeds = prompt_embeds[non_zero_indices]
    filtered_pooled_prompt_embeds = pooled_prompt_embeds[non_zero_indices]
    unique_prompt_ids = np.unique(filtered_prompt_ids, axis=0)
    concat = defaultdict(list)
    for prompt_id in unique_prompt_ids:
        matches = np.where(np.all(filtered_prompt_ids == prompt_id, axis=1))[0]
        concat["advantages"].append(filtered_advantages[matches])
        concat["latents"].append(filtered_latents[matches])
        concat["prompt_embeds"].append(filtered_prompt_embeds[matches])
        concat["pooled_prompt_embeds"].append(filtered_pooled_prompt_embeds[matches])
    concat = {k: torch.as_tensor(np.stack(v, axis=0)) for k, v in concat.items()}
    advantages = concat["advantages"].squeeze(-1)
    latents = concat["latents"]
    for i in range(advantages.shape[0]):
        if advantages[i, 0] == -1:
            temp = latents[i, 0].clone()
            latents[i, 0] = latents[i, 1].clone()
            latents[i, 1] = temp
    samples = {
        "latents": latents.permute(1, 0, 2, 3, 4).reshape(-1, *latents.shape[2:]),
        "prompt_embeds": concat["prompt_embeds"].permute(1, 0, 2, 3).reshape(-1, *concat["prompt_embeds"].shape[2:]),
        "pooled_prompt_embeds": concat["pooled_prompt_embeds"]
        .permute(1, 0, 2)
        .reshape(-1, *concat["pooled_prompt_embeds"].shape[2:]),
    }
    pair_prompts = [int(p[0]) for p in unique_prompt_ids]
    total_batch_size = len(samples["latents"])

    # ---- training, lines 808-983
    pipeline.transformer.set_adapter("learner")
    draws = {"noise": [], "u": []}
    steps = []
    samples_batched = {
        k: v.reshape(-1, total_batch_size // config.sample.num_batches_per_epoch, *v.shape[1:])
        for k, v in samples.items()
    }
    samples_batched = [dict(zip(samples_batched, x, strict=True)) for x in zip(*samples_batched.values(), strict=True)]
    pipeline.transformer.train()
    info = defaultdict(list)
    for _, sample in list(enumerate(samples_batched)):
        embeds = sample["prompt_embeds"]
        pooled_embeds = sample["pooled_prompt_embeds"]
        for _j in range(num_train_timesteps):
            with accelerator.accumulate(transformer):
                model_input = sample["latents"]
                bsz = model_input.shape[0] // 2
                noise = torch.randn_like(model_input)
                noise = torch.cat([noise[:bsz], noise[:bsz]], dim=0)
                u = compute_density_for_timestep_sampling(
                    weighting_scheme="logit_normal", batch_size=bsz, logit_mean=0, logit_std=1, mode_scale=1.29
                )
                draws["noise"].append(noise[:bsz].clone())
                draws["u"].append(u.clone())
                indices = (u * noise_scheduler.config.num_train_timesteps).long()
                timesteps = noise_scheduler.timesteps[indices].to(device=model_input.device)
                timesteps = torch.cat([timesteps, timesteps], dim=0)
                sigmas = get_sigmas(
                    noise_scheduler, timesteps, accelerator, n_dim=model_input.ndim, dtype=model_input.dtype
                )
                noisy_model_input = (1.0 - sigmas) * model_input + sigmas * noise
                with autocast():
                    pipeline.transformer.set_adapter("learner")
                    model_pred = transformer(
                        hidden_states=noisy_model_input,
                        timestep=timesteps,
                        encoder_hidden_states=embeds,
                        pooled_projections=pooled_embeds,
                        return_dict=False,
                    )[0]
                    with torch.no_grad():
                        pipeline.transformer.set_adapter("ref")
                        model_pred_ref = transformer(
                            hidden_states=noisy_model_input,
                            timestep=timesteps,
                            encoder_hidden_states=embeds,
                            pooled_projections=pooled_embeds,
                            return_dict=False,
                        )[0]
                        model_pred_ref = model_pred_ref.detach()
                        pipeline.transformer.set_adapter("learner")
                target = noise - model_input
                theta_mse = ((model_pred.float() - target.float()) ** 2).reshape(target.shape[0], -1).mean(dim=1)
                ref_mse = ((model_pred_ref.float() - target.float()) ** 2).reshape(target.shape[0], -1).mean(dim=1)
                w_diff = theta_mse[:bsz] - ref_mse[:bsz]
                l_diff = theta_mse[bsz:] - ref_mse[bsz:]
                inside_term = -0.5 * config.train.beta * (w_diff - l_diff)
                loss = torch.mean(-F.logsigmoid(inside_term))
                info["loss"].append(loss.detach())
                info["implicit_acc"].append((inside_term > 0).sum().float() / inside_term.size(0))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grads = {name: p.grad.detach().clone() for name, p in learner_names(transformer).items()}
                    grad_norm = accelerator.clip_grad_norm_(transformer.parameters(), config.train.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                steps.append(
                    {
                        **{k: float(torch.mean(torch.stack(v))) for k, v in info.items()},
                        "grad_norm": float(grad_norm),
                        "grads": grads,
                        "weights": {n: p.detach().clone() for n, p in learner_names(transformer).items()},
                    }
                )
                info = defaultdict(list)
    assert len(steps) == 1, "one optimizer step after the trained timesteps"

    tensors = {}
    for s, step in enumerate(steps):
        for kind in ("grads", "weights"):
            for name, value in step.pop(kind).items():
                tensors[f"step{s}.{kind}.{name}"] = value.float().contiguous()
    save_file(tensors, str(HERE / "step.safetensors"))
    pairs = {
        "chosen": samples["latents"][: total_batch_size // 2],
        "rejected": samples["latents"][total_batch_size // 2 :],
        "prompt_embeds": prompt_embeds_all,
        "pooled_prompt_embeds": pooled_all,
        "pair_prompts": torch.tensor(pair_prompts),
        "noise": torch.stack(draws["noise"]),  # (draws, pairs, 4, 16, 16)
        "u": torch.stack(draws["u"]),  # (draws, pairs)
    }
    save_file({k: v.float().contiguous() for k, v in pairs.items()}, str(HERE / "pairs.safetensors"))
    golden = {
        "reference": f"yifan123/flow_grpo@{COMMIT}: scripts/train_sd3_dpo.py one epoch (CPU, float32)",
        "recipe": f"config/dpo.py::{RECIPE}",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "peft": peft.__version__,
            "accelerate": accelerate.__version__,
        },
        "settings": {
            "num_train_timesteps": num_train_timesteps,
            "beta": config.train.beta,
            "learning_rate": config.train.learning_rate,
            "adam_beta1": config.train.adam_beta1,
            "adam_beta2": config.train.adam_beta2,
            "adam_weight_decay": config.train.adam_weight_decay,
            "adam_epsilon": config.train.adam_epsilon,
            "max_grad_norm": config.train.max_grad_norm,
            "guidance_scale": config.sample.guidance_scale,
            "noise_level": config.sample.noise_level,
        },
        "steps": steps,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


def learner_names(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The learner weights by the names of ../flow_grpo_step: ``transformer_blocks.0.attn.to_q.lora_A.weight``
    (get_peft_model applied twice nests the model: ``base_model.model.base_model.model.<module>.lora_A.learner``)."""
    names = {}
    for name, param in model.named_parameters():
        if ".learner." in name:
            names[name.replace("base_model.model.", "").replace(".learner.", ".")] = param
    return names


if __name__ == "__main__":
    main()

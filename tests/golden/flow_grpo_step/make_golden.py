"""Regenerate the golden Flow-GRPO GRPO step with the reference training code (yifan123/flow_grpo).

Run in a virtualenv with the reference's pinned libraries (see tests/golden/README.md), pointing at a checkout::

    FLOW_GRPO_DIR=/path/to/flow_grpo /path/to/flowgrpo-ref/bin/python tests/golden/flow_grpo_step/make_golden.py

What runs as published (imported from the checkout, files pinned by sha256):

- the recipe: ``config/grpo.py::pickscore_sd3`` (learning rate, AdamW settings, clip range, KL beta, CFG scale,
  noise level, timestep fraction, advantage clip, global std); only the sizes are made tiny (``TINY`` below);
- ``flow_grpo/diffusers_patch/sd3_pipeline_with_logprob.py::pipeline_with_logprob`` (the rollout, with its
  ``sde_step_with_logprob``), ``flow_grpo/stat_tracking.py::PerPromptStatTracker`` (the advantages);
- ``compute_log_prob`` of ``scripts/train_sd3.py`` (the training forward with CFG, the detached unconditional
  prediction and the step's log-probability), compiled from the script's own source.

What is re-expressed, because ``scripts/train_sd3.py`` is a script: the control flow of its ``main`` that builds
the LoRA from ``train.lora_path`` (lines 435-443), the optimizer (465-471), the accelerator with gradient
accumulation over samples x trained timesteps (344-361, 559), the sampling loop (612-682), the advantages and the
zero-advantage mask (738-817) and the training loop (827-955: shuffle, re-batch, CFG embeddings, PPO-clipped loss
with the KL term, backward, gradient clipping, optimizer step). Three things differ, none in the numbers:
prompts are fixed embeddings (no text encoders: the step consumes ``prompt_embeds``, and the tiny pipeline has
none), the reward is a stand-in (the mean brightness of the decoded image), and the reference model's forward
calls ``transformer.disable_adapter()`` where the script calls ``transformer.module.disable_adapter()`` (``.module``
is the DDP wrapper of a multi-GPU run; one CPU process has none). The raw gradients are read just before the
script's ``clip_grad_norm_`` and the LoRA weights just after its ``optimizer.step()``.

Writes, next to this file: ``pipeline/`` (a tiny random SD3.5-like pipeline in the diffusers layout: 2 MM-DiT
blocks, the first with SD3.5's second self-attention, RMS q/k norms; no text encoders), ``lora_init/`` (the
initial adapter in peft's layout: r 32, alpha 64 on the recipe's target modules, random A and B, so that it is not
the identity and every LoRA weight gets a gradient), ``rollout.safetensors`` (the sampled rollout as the training
loop consumes it), ``step.safetensors`` (per optimizer step: the gradient of every LoRA weight before clipping and
every LoRA weight after the step) and ``golden.json`` (settings, losses, ratios, gradient norms).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COMMIT = "ac4c86e8cae021841f1fde853d340e0db67690dd"
SHA256 = {
    "flow_grpo/diffusers_patch/sd3_sde_with_logprob.py": (
        "9392d8978073ea26ad7726806412bd39cc284f16857eb027e8fe991cf0be470e"
    ),
    "flow_grpo/diffusers_patch/sd3_pipeline_with_logprob.py": (
        "c4a4ae4e5680572df30e8adc905ee3e76d4eaa2e52f68e4ee75617be05941be8"
    ),
    "flow_grpo/stat_tracking.py": "1708c9a4da6f948ed5ccac9ec844705f470cd551acc99958b1f7736b01b10d27",
    "scripts/train_sd3.py": "d45e92160265a4663e5a9f6e6be9c96dfeccf5577452437e1a08d503ed6ea1ba",
    "config/grpo.py": "81fe326e5b88d9871db3c69336fe260cc3b2d27059c43fccc1595e25a321e487",
    "config/base.py": "3257b19922fb505110399790916a3c2a182b7d91999bde35970f699f5555d53b",
}
RECIPE = "pickscore_sd3"
# The recipe at a CPU size: 2 prompts x 4 samples, drawn in 4 batches of 2; 2 optimizer steps per rollout (the
# recipe's gradient_accumulation_steps = num_batches_per_epoch // 2); 4 sampling steps, int(4 * 0.99) = 3 trained.
TINY = {
    "resolution": 32,
    "sample.num_steps": 4,
    "sample.train_batch_size": 2,
    "sample.num_image_per_prompt": 4,
    "sample.num_batches_per_epoch": 4,
    "train.batch_size": 2,
    "train.gradient_accumulation_steps": 2,
    "mixed_precision": "no",
}
PROMPTS = ("p0", "p1")  # stand-ins: the step sees only the embeddings
# The batches the sampler draws (prompt index per sample), as DistributedKRepeatSampler shuffles them.
BATCH_PROMPTS = ((0, 0), (1, 1), (0, 1), (0, 1))
TEXT_TOKENS = 12  # length of the stand-in prompt embeddings
LORA_SCALE = 0.05  # std of the random initial A and B


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
    spec = importlib.util.spec_from_file_location("flow_grpo_config_grpo", root / "config" / "grpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = getattr(module, RECIPE)()
    for key, value in TINY.items():
        section, _, name = key.rpartition(".")
        setattr(config[section] if section else config, name, value)
    return config


def script_function(root: Path, name: str, namespace: dict, script: str = "train_sd3.py"):
    """A top-level function of ``scripts/<script>``, compiled from the script's source (the script itself imports
    wandb and every reward model, so it is not imported)."""
    path = root / "scripts" / script
    tree = ast.parse(path.read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def tiny_pipeline(directory: Path) -> None:
    """A tiny random SD3.5-like pipeline (mmreward.tiny_models' SD3 sizes, plus SD3.5's dual attention in the first
    block and RMS q/k norms), saved in the diffusers layout; no text encoders."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=32,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipeline.save_pretrained(directory)


def load_pipeline(directory: Path):
    """``StableDiffusion3Pipeline.from_pretrained`` (train_sd3.py line 377) of the saved pipeline, which has no text
    encoders (diffusers asks for them to be passed as None)."""
    from diffusers import StableDiffusion3Pipeline

    absent = ("text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3")
    return StableDiffusion3Pipeline.from_pretrained(directory, **dict.fromkeys(absent))


def lora_names(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Trainable LoRA weights by a name both sides share: ``transformer_blocks.0.attn.to_q.lora_A.weight``."""
    names = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            names[name.removeprefix("base_model.model.").replace(".default.", ".")] = param
    return names


def main() -> None:
    root = checkout()
    import accelerate
    import diffusers
    import peft
    from accelerate import Accelerator
    from flow_grpo.diffusers_patch.sd3_pipeline_with_logprob import pipeline_with_logprob
    from flow_grpo.diffusers_patch.sd3_sde_with_logprob import sde_step_with_logprob
    from flow_grpo.stat_tracking import PerPromptStatTracker
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import save_file

    config = load_recipe(root)
    compute_log_prob = script_function(
        root, "compute_log_prob", {"torch": torch, "sde_step_with_logprob": sde_step_with_logprob}
    )
    tiny_pipeline(HERE / "pipeline")

    # scripts/train_sd3.py 419-434: the recipe's adapter; A and B drawn at random and saved as train.lora_path.
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
    initial = get_peft_model(load_pipeline(HERE / "pipeline").transformer, transformer_lora_config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, param in sorted(lora_names(initial).items()):  # drawn in name order
            param.copy_(torch.randn(param.shape, generator=generator) * LORA_SCALE)
    initial.save_pretrained(HERE / "lora_init")
    (HERE / "lora_init" / "README.md").unlink()  # peft's model-card template
    adapter_config = HERE / "lora_init" / "adapter_config.json"
    saved = json.loads(adapter_config.read_text())
    saved["target_modules"] = sorted(saved["target_modules"])  # peft writes a set, in hash order
    adapter_config.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    config.train.lora_path = str(HERE / "lora_init")

    # ---- scripts/train_sd3.py main(), lines 344-471
    num_train_timesteps = int(config.sample.num_steps * config.train.timestep_fraction)
    accelerator = Accelerator(
        cpu=True,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.train.gradient_accumulation_steps * num_train_timesteps,
    )
    accelerate.utils.set_seed(config.seed, device_specific=True)
    pipeline = load_pipeline(HERE / "pipeline")
    pipeline.vae.requires_grad_(False)
    pipeline.transformer.requires_grad_(not config.use_lora)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.vae.to(accelerator.device, dtype=torch.float32)
    pipeline.transformer.to(accelerator.device)
    pipeline.transformer = PeftModel.from_pretrained(pipeline.transformer, config.train.lora_path)
    pipeline.transformer.set_adapter("default")
    transformer = pipeline.transformer
    transformer_trainable_parameters = list(filter(lambda p: p.requires_grad, transformer.parameters()))
    optimizer = torch.optim.AdamW(
        transformer_trainable_parameters,
        lr=config.train.learning_rate,
        betas=(config.train.adam_beta1, config.train.adam_beta2),
        weight_decay=config.train.adam_weight_decay,
        eps=config.train.adam_epsilon,
    )
    # Stand-in prompt embeddings (compute_text_embeddings' output): two prompts and the empty negative prompt.
    embed_generator = torch.Generator().manual_seed(2)
    prompt_embeds_all = torch.randn(len(PROMPTS), TEXT_TOKENS, 32, generator=embed_generator)
    pooled_all = torch.randn(len(PROMPTS), 64, generator=embed_generator)
    neg_prompt_embed = torch.randn(1, TEXT_TOKENS, 32, generator=embed_generator)
    neg_pooled_prompt_embed = torch.randn(1, 64, generator=embed_generator)
    sample_neg_prompt_embeds = neg_prompt_embed.repeat(config.sample.train_batch_size, 1, 1)
    train_neg_prompt_embeds = neg_prompt_embed.repeat(config.train.batch_size, 1, 1)
    sample_neg_pooled_prompt_embeds = neg_pooled_prompt_embed.repeat(config.sample.train_batch_size, 1)
    train_neg_pooled_prompt_embeds = neg_pooled_prompt_embed.repeat(config.train.batch_size, 1)
    stat_tracker = PerPromptStatTracker(config.sample.global_std)
    autocast = contextlib.nullcontext if config.use_lora else accelerator.autocast
    transformer, optimizer = accelerator.prepare(transformer, optimizer)

    # ---- sampling, lines 609-707
    pipeline.transformer.eval()
    samples = []
    prompts = []
    for i in range(config.sample.num_batches_per_epoch):
        index = list(BATCH_PROMPTS[i])
        batch_prompts = [PROMPTS[k] for k in index]
        prompt_embeds, pooled_prompt_embeds = prompt_embeds_all[index], pooled_all[index]
        with autocast():
            with torch.no_grad():
                images, latents, log_probs = pipeline_with_logprob(
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
        latents = torch.stack(latents, dim=1)  # (batch_size, num_steps + 1, 4, 16, 16)
        log_probs = torch.stack(log_probs, dim=1)  # (batch_size, num_steps)
        timesteps = pipeline.scheduler.timesteps.repeat(config.sample.train_batch_size, 1)  # (batch_size, num_steps)
        prompts.extend(batch_prompts)
        samples.append(
            {
                "prompt_embeds": prompt_embeds,
                "pooled_prompt_embeds": pooled_prompt_embeds,
                "timesteps": timesteps,
                "latents": latents[:, :-1],
                "next_latents": latents[:, 1:],
                "log_probs": log_probs,
                # the reward stand-in: the decoded image's mean brightness
                "rewards": {"avg": images.float().mean(dim=(1, 2, 3))},
            }
        )
    samples = {
        k: torch.cat([s[k] for s in samples], dim=0)
        if not isinstance(samples[0][k], dict)
        else {sub_key: torch.cat([s[k][sub_key] for s in samples], dim=0) for sub_key in samples[0][k]}
        for k in samples[0].keys()
    }
    sigmas = pipeline.scheduler.sigmas.clone()

    # ---- advantages, lines 738-817 (one process: gather is the identity)
    samples["rewards"]["ori_avg"] = samples["rewards"]["avg"]
    samples["rewards"]["avg"] = samples["rewards"]["avg"].unsqueeze(1).repeat(1, num_train_timesteps)
    gathered_rewards = {key: value.cpu().numpy() for key, value in samples["rewards"].items()}
    advantages = stat_tracker.update(prompts, gathered_rewards["avg"])
    stat_tracker.clear()
    advantages = torch.as_tensor(advantages)
    samples["advantages"] = advantages.reshape(accelerator.num_processes, -1, advantages.shape[-1])[
        accelerator.process_index
    ].to(accelerator.device)
    rewards = samples.pop("rewards")
    rollout = {
        "prompt_embeds": prompt_embeds_all,
        "pooled_prompt_embeds": pooled_all,
        "negative_prompt_embeds": neg_prompt_embed,
        "negative_pooled_prompt_embeds": neg_pooled_prompt_embed,
        "prompt_index": torch.tensor([PROMPTS.index(p) for p in prompts]),
        "rewards": rewards["ori_avg"].float(),
        "sigmas": sigmas,
        **{k: v for k, v in samples.items() if k not in ("prompt_embeds", "pooled_prompt_embeds")},
    }
    mask = samples["advantages"].abs().sum(dim=1) != 0
    num_batches = config.sample.num_batches_per_epoch
    true_count = mask.sum()
    if true_count % num_batches != 0:
        false_indices = torch.where(~mask)[0]
        num_to_change = num_batches - (true_count % num_batches)
        if len(false_indices) >= num_to_change:
            random_indices = torch.randperm(len(false_indices))[:num_to_change]
            mask[false_indices[random_indices]] = True
    assert bool(mask.all()), "every sample has a nonzero advantage: all are trained"
    samples = {k: v[mask] for k, v in samples.items()}
    total_batch_size, num_timesteps = samples["timesteps"].shape
    assert num_timesteps == config.sample.num_steps

    # ---- training, lines 827-955
    steps = []  # per optimizer step: loss terms, ratios, the samples trained, gradients and weights
    current = {"samples": [], "ratios": []}
    for _ in range(config.train.num_inner_epochs):
        perm = torch.randperm(total_batch_size, device=accelerator.device)
        samples = {k: v[perm] for k, v in samples.items()}
        order = perm.tolist()  # the trained samples, as indices into the sampled (collated) order
        samples_batched = {
            k: v.reshape(-1, total_batch_size // config.sample.num_batches_per_epoch, *v.shape[1:])
            for k, v in samples.items()
        }
        samples_batched = [
            dict(zip(samples_batched, x, strict=True)) for x in zip(*samples_batched.values(), strict=True)
        ]
        pipeline.transformer.train()
        info = defaultdict(list)
        for i, sample in list(enumerate(samples_batched)):
            size = len(sample["prompt_embeds"])
            current["samples"].extend(order[i * size : (i + 1) * size])
            if config.train.cfg:
                embeds = torch.cat([train_neg_prompt_embeds[: len(sample["prompt_embeds"])], sample["prompt_embeds"]])
                pooled_embeds = torch.cat(
                    [
                        train_neg_pooled_prompt_embeds[: len(sample["pooled_prompt_embeds"])],
                        sample["pooled_prompt_embeds"],
                    ]
                )
            else:
                embeds = sample["prompt_embeds"]
                pooled_embeds = sample["pooled_prompt_embeds"]
            train_timesteps = [step_index for step_index in range(num_train_timesteps)]
            for j in train_timesteps:
                with accelerator.accumulate(transformer):
                    with autocast():
                        prev_sample, log_prob, prev_sample_mean, std_dev_t = compute_log_prob(
                            transformer, pipeline, sample, j, embeds, pooled_embeds, config
                        )
                        if config.train.beta > 0:
                            with torch.no_grad():
                                with transformer.disable_adapter():
                                    _, _, prev_sample_mean_ref, _ = compute_log_prob(
                                        transformer, pipeline, sample, j, embeds, pooled_embeds, config
                                    )
                    advantages = torch.clamp(
                        sample["advantages"][:, j], -config.train.adv_clip_max, config.train.adv_clip_max
                    )
                    ratio = torch.exp(log_prob - sample["log_probs"][:, j])
                    unclipped_loss = -advantages * ratio
                    clipped_loss = -advantages * torch.clamp(
                        ratio, 1.0 - config.train.clip_range, 1.0 + config.train.clip_range
                    )
                    policy_loss = torch.mean(torch.maximum(unclipped_loss, clipped_loss))
                    if config.train.beta > 0:
                        kl_loss = ((prev_sample_mean - prev_sample_mean_ref) ** 2).mean(
                            dim=(1, 2, 3), keepdim=True
                        ) / (2 * std_dev_t**2)
                        kl_loss = torch.mean(kl_loss)
                        loss = policy_loss + config.train.beta * kl_loss
                    else:
                        loss = policy_loss
                    info["policy_loss"].append(policy_loss.detach())
                    if config.train.beta > 0:
                        info["kl_loss"].append(kl_loss.detach())
                    info["loss"].append(loss.detach())
                    current["ratios"].append(ratio.detach().tolist())
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grads = {name: p.grad.detach().clone() for name, p in lora_names(transformer).items()}
                        grad_norm = accelerator.clip_grad_norm_(transformer.parameters(), config.train.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                if accelerator.sync_gradients:
                    steps.append(
                        {
                            **current,
                            **{k: float(torch.mean(torch.stack(v))) for k, v in info.items()},
                            "grad_norm": float(grad_norm),
                            "grads": grads,
                            "weights": {n: p.detach().clone() for n, p in lora_names(transformer).items()},
                        }
                    )
                    info = defaultdict(list)
                    current = {"samples": [], "ratios": []}
    assert len(steps) == 2 and not current["samples"], "two optimizer steps, every micro-batch in one of them"

    tensors = {}
    for s, step in enumerate(steps):
        for kind in ("grads", "weights"):
            for name, value in step.pop(kind).items():
                tensors[f"step{s}.{kind}.{name}"] = value.float().contiguous()
    save_file(tensors, str(HERE / "step.safetensors"))
    save_file({k: v.float().contiguous() for k, v in rollout.items()}, str(HERE / "rollout.safetensors"))
    golden = {
        "reference": f"yifan123/flow_grpo@{COMMIT}: scripts/train_sd3.py one epoch (CPU, float32)",
        "recipe": f"config/grpo.py::{RECIPE}",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "peft": peft.__version__,
            "accelerate": accelerate.__version__,
        },
        "settings": {
            "seed": config.seed,
            "resolution": config.resolution,
            "num_steps": config.sample.num_steps,
            "num_train_timesteps": num_train_timesteps,
            "guidance_scale": config.sample.guidance_scale,
            "noise_level": config.sample.noise_level,
            "train_batch_size": config.sample.train_batch_size,
            "gradient_accumulation_steps": config.train.gradient_accumulation_steps,
            "learning_rate": config.train.learning_rate,
            "adam_beta1": config.train.adam_beta1,
            "adam_beta2": config.train.adam_beta2,
            "adam_weight_decay": config.train.adam_weight_decay,
            "adam_epsilon": config.train.adam_epsilon,
            "max_grad_norm": config.train.max_grad_norm,
            "clip_range": config.train.clip_range,
            "adv_clip_max": config.train.adv_clip_max,
            "beta": config.train.beta,
            "cfg": config.train.cfg,
            "global_std": config.sample.global_std,
            "lora_rank": transformer_lora_config.r,
            "lora_alpha": transformer_lora_config.lora_alpha,
            "lora_target_modules": target_modules,
        },
        "prompts": list(PROMPTS),
        "steps": steps,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps({k: v for k, v in golden.items() if k != "steps"}, indent=2))
    for s, step in enumerate(steps):
        print(s, {k: v for k, v in step.items() if k != "ratios"})


if __name__ == "__main__":
    main()

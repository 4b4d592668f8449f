"""Regenerate the golden Pref-GRPO FLUX training step with the reference training code (CodeGoat24/Pref-GRPO).

Run in a virtualenv with diffusers and peft (the Flow-GRPO one serves; see tests/golden/README.md), pointing at a
checkout::

    PREF_GRPO_DIR=/path/to/Pref-GRPO /path/to/flowgrpo-ref/bin/python tests/golden/pref_grpo_step/make_golden.py

What runs as published (compiled or imported from the checkout, files pinned by sha256):

- the recipe: the arguments of ``scripts/lora/lora_ur_think_prefgrpo_flux.sh`` and ``scripts/_common_finetune.sh``
  parsed by ``build_parser`` of ``fastvideo/train_flux.py``, ``--rationorm`` included; only the sizes are made tiny
  (``TINY`` below). The step is taken twice from the same state: as published, and with ``--rationorm`` left out
  (the plain PPO ratio; the same rollout, since RatioNorm draws nothing);
- ``train_one_step`` of ``fastvideo/train_flux.py`` (advantages, per-sample timestep permutation, ``grpo_one_step``
  with its quantized timestep and guidance 3.5, ``flow_grpo_step`` of ``fastvideo/grpo/steps.py``, with
  ``--rationorm`` the ratio ``exp(s (logp - logp_old + mean((mu - mu_old)^2) / (2 s^2)))`` against each step's
  rollout mean ``mu_old`` and the policy loss divided by ``-dt``, the loss scaled by
  ``1 / (gradient_accumulation_steps * train_timesteps)``, gradient clipping and the AdamW step every 4 samples),
  with ``run_sample_step``, ``gather_tensor``, ``pack_latents`` and ``prepare_latent_image_ids``;
- ``compute_weighted_advantages`` of ``fastvideo/rewards/dispatcher.py`` (each reward normalized in its group, then
  weighted, then ``--apply_gdpo``), ``cal_win_rate_images`` of ``fastvideo/rewards/unifiedreward_think.py`` on
  canned judge outputs (``tests/golden/pref_grpo/cases.py``).

What is re-expressed, because the script is built for 64 GPUs: ``main``'s setup (lines 835-1086: the transformer in
float32, ``add_adapter`` with the recipe's LoRA, the AdamW of lines 1060-1066, the constant scheduler), with the
initial adapter's A and B copied in at random instead of peft's init (B = 0 would give A no gradient: the path of
``--resume_from_lora_checkpoint``); ``sample_reference_model`` (lines 400-535) for the tiny pipeline's sizes (the
script hard-codes 16 latent channels and 8x VAE compression) and with the rewards canned: the judge answers each pair
with a fixed text through the reference's own win-rate code, the CLIP scores are stand-in numbers (no image is
decoded); the noise is drawn in bfloat16 as the script draws it and cast to float32 (the CPU has no CUDA autocast
to do it at the first layer); ``torch.distributed`` is a one-process stand-in (rank 0, world 1, ``all_reduce`` the
identity: it records the loss of each backward) and ``transformer.clip_grad_norm_`` (FSDP's, line 818) is
``torch.nn.utils.clip_grad_norm_`` over the transformer's parameters. The raw gradients are read just before the
clip and the LoRA weights just after each ``optimizer.step()``.

Writes, next to this file: ``pipeline/`` (a tiny random FLUX.1-dev-like transformer, VAE and scheduler in the
diffusers layout, no text encoders: the step consumes prompt embeddings), ``lora_init.safetensors`` (the initial
adapter's A and B in peft's naming), ``rollout.safetensors`` (the rollout as ``train_one_step`` holds it before
training: the packed latents of every step, the rollout's mean of every step (``prev_sample_mean``, what
``--rationorm`` compares with), the log-probabilities, the sigma grid, the two rewards, the advantages and the steps
each sample trained), ``step.safetensors`` (the recipe as published; per optimizer step: the gradient of every LoRA
weight before clipping and every LoRA weight after the step), ``step_no_rationorm.safetensors`` (the same without
``--rationorm``) and ``golden.json`` (settings, losses, gradient norms of both).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import sys
import tempfile
import types
from collections import OrderedDict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COMMIT = "3e787f6dd5a3051b40d61f07e9578468ac26130a"
SHA256 = {
    "fastvideo/train_flux.py": "d4d196b087ca2bffb20f8b559e92bc009644a93368a19147e46e0d0f89ef5b7c",
    "fastvideo/grpo/steps.py": "dba9345baa83278380aadd2b6525261c7a3a4accb95e0df79d4738c1013e11ab",
    "fastvideo/rewards/dispatcher.py": "e56d785362afe45d750de114cde383b4f518a2cead295575751add0435d52628",
    "fastvideo/rewards/unifiedreward_think.py": "9d654d9e50bc1a135c78a03fa0c6517cef781f1536d1f2abdb798ca576479163",
    "scripts/_common_finetune.sh": "06197e3b974f8cdfed8db09a7c4b3b2567a1b21a7ca179fa9d0a83d94e2f4355",
    "scripts/lora/lora_ur_think_prefgrpo_flux.sh": "47d0ec4dea15d6ad0d9112921910c1c1f6b40cdb6bc7efa1e68da4c1996ab333",
}
RECIPE = "scripts/lora/lora_ur_think_prefgrpo_flux.sh"
# The recipe at a CPU size: one prompt (one GPU's share) x 8 generations, 6 sampling steps (5 stored after
# --ignore_last, int(5 * 0.6) = 3 trained per sample), 32 px.
TINY = ["--h", "32", "--w", "32", "--sampling_steps", "6", "--mixed_precision", "no"]
# The second case: the recipe without RatioNorm (the plain PPO ratio exp(logp - logp_old), no step reweighting).
WITHOUT_RATIONORM = ("--rationorm",)
TEXT_TOKENS = 12  # length of the stand-in prompt embeddings
LORA_SCALE = 0.05  # std of the random initial A and B
# The canned judge: pair k of the group (itertools.combinations order) is answered by cases.ANSWERS[JUDGE[k]]
# (Image 1 / Image 2 better, ties and unreadable answers mixed so that the win rates spread out).
JUDGE = (0, 1, 2, 1, 0, 22, 6, 7, 1, 0, 8, 26, 9, 0, 2, 1, 10, 0, 12, 13, 1, 0, 16, 2, 23, 1, 0, 17)
CLIP_SEED = 3  # the stand-in CLIP scores: 0.3 + 0.02 N(0, 1)

_spec = importlib.util.spec_from_file_location("_cases", HERE.parent / "pref_grpo" / "cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def checkout() -> Path:
    root = Path(os.environ.get("PREF_GRPO_DIR", "")).expanduser()
    for path, expected in SHA256.items():
        source = root / path
        if not source.is_file():
            sys.exit(f"set PREF_GRPO_DIR to a checkout of https://github.com/CodeGoat24/Pref-GRPO at {COMMIT}")
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if digest != expected:
            sys.exit(f"{source} has sha256 {digest}, not the pinned {expected}: check out commit {COMMIT}")
    sys.path.insert(0, str(root))
    return root


def functions(path: Path, names: tuple[str, ...], namespace: dict) -> dict:
    """Top-level functions of a reference file, compiled from its source into ``namespace`` (the files import
    wandb, FSDP, every reward model and an HTTP client at the top, so they are not imported)."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert sorted(n.name for n in nodes) == sorted(names), names
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def recipe_arguments(root: Path, output_dir: str, dropped: tuple[str, ...] = ()) -> list[str]:
    """The command line the recipe passes: ``COMMON_TRAIN_ARGS`` then ``TRAIN_ARGS``, shell variables filled in,
    less the flags in ``dropped``."""
    variables = {"EXP_NAME": "pref_flux_lora", "API_URL": "http://unused", "OUTPUT_DIR": output_dir}
    tokens = []
    for script in ("scripts/_common_finetune.sh", RECIPE):
        text = (root / script).read_text()
        body = re.search(r"^(?:COMMON_)?TRAIN_ARGS=\(\n(.*?)^\)", text, re.S | re.M).group(1)
        for line in body.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "[@]" in line:
                continue
            line = re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], line)
            tokens += shlex.split(line)
    for flag in dropped:
        tokens.remove(flag)
    return tokens


def load_judge(root: Path) -> types.ModuleType:
    """``unifiedreward_think`` with its HTTP client and OpenCV replaced by stand-ins (as tests/golden/pref_grpo)."""
    client = types.ModuleType("vllm_utils.vllm_request")
    client.evaluate_batch = None
    sys.modules.setdefault("vllm_utils", types.ModuleType("vllm_utils"))
    sys.modules["vllm_utils.vllm_request"] = client
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    spec = importlib.util.spec_from_file_location(
        "pref_grpo_unifiedreward_think", root / "fastvideo/rewards/unifiedreward_think.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_pipeline(directory: Path) -> None:
    """mmreward.tiny_models' FLUX transformer (guidance embedding like FLUX.1-dev), VAE and scheduler, saved in the
    diffusers layout; no text encoders."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(0)
    FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    ).save_pretrained(directory / "transformer")
    AutoencoderKL(
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
    ).save_pretrained(directory / "vae")
    FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    ).save_pretrained(directory / "scheduler")


def lora_names(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Trainable LoRA weights by a name both sides share: ``transformer_blocks.0.attn.to_q.lora_A.weight``."""
    return {
        name.removeprefix("base_model.model.").replace(".default.", "."): p
        for name, p in model.named_parameters()
        if p.requires_grad
    }


class OneProcess:
    """``torch.distributed`` as one process sees it (rank 0 of 1); ``all_reduce`` records what it is given (the
    script all-reduces each backward's scaled loss)."""

    class ReduceOp:
        AVG = "avg"
        SUM = "sum"

    def __init__(self) -> None:
        self.reduced: list[float] = []

    def is_initialized(self) -> bool:
        return False

    def get_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 1

    def all_reduce(self, tensor, op=None) -> None:
        self.reduced.append(float(tensor))

    def barrier(self) -> None:
        pass


def train_step(root: Path, judge: types.ModuleType, dropped: tuple[str, ...]) -> dict:
    """``main()``'s setup and one ``train_one_step`` under the recipe less ``dropped``, from the seeded state; returns
    the rollout as ``train_one_step`` holds it, the steps each sample trained, and per optimizer step the raw
    gradients, the weights after it and its loss."""
    from accelerate.utils import set_seed
    from diffusers import FluxTransformer2DModel
    from diffusers.optimization import get_scheduler
    from fastvideo.grpo.steps import dance_grpo_step, flow_grpo_step, sd3_time_shift
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from tqdm.auto import tqdm

    output_dir = tempfile.mkdtemp(prefix="pref-grpo-step-")
    script = root / "fastvideo/train_flux.py"
    parser = functions(script, ("build_parser",), {"argparse": argparse})["build_parser"]()
    args = parser.parse_args(recipe_arguments(root, output_dir, dropped) + ["--data_json_path", "unused"] + TINY)
    rationorm = getattr(args, "rationorm", False)
    assert rationorm == ("--rationorm" not in dropped)
    dispatcher = functions(
        root / "fastvideo/rewards/dispatcher.py",
        ("parse_reward_spec", "compute_weighted_advantages"),
        {
            "torch": torch,
            "json": json,
            "OrderedDict": OrderedDict,
            "Dict": dict,
            "Tuple": tuple,
            "List": list,
            "Iterable": list,
            "_flex_get_env_float": None,
        },
    )
    args.reward_weights = dispatcher["parse_reward_spec"](args.reward_spec)
    dist = OneProcess()
    namespace = functions(
        script,
        (
            "train_one_step",
            "grpo_one_step",
            "run_sample_step",
            "gather_tensor",
            "pack_latents",
            "prepare_latent_image_ids",
            "assert_eq",
        ),
        {
            "torch": torch,
            "dist": dist,
            "tqdm": tqdm,
            "dance_grpo_step": dance_grpo_step,
            "flow_grpo_step": flow_grpo_step,
            "compute_weighted_advantages": dispatcher["compute_weighted_advantages"],
        },
    )

    # ---- main(), lines 835-1086 (one process, rank 0)
    set_seed(args.seed + 0)
    transformer = FluxTransformer2DModel.from_pretrained(
        HERE / "pipeline", subfolder="transformer", torch_dtype=torch.float32
    )
    transformer.requires_grad_(False)
    default_target_modules = [
        "attn.to_k",
        "attn.to_q",
        "attn.to_v",
        "attn.to_out.0",
        "attn.add_k_proj",
        "attn.add_q_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "ff.net.0.proj",
        "ff.net.2",
        "ff_context.net.0.proj",
        "ff_context.net.2",
    ]
    assert args.use_lora and args.lora_target_modules is None
    transformer_lora_config = LoraConfig(
        r=args.lora_rank, lora_alpha=args.lora_alpha, init_lora_weights=True, target_modules=default_target_modules
    )
    transformer.add_adapter(transformer_lora_config)
    # The initial adapter (the --resume_from_lora_checkpoint path): A and B at random, drawn in name order.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, param in sorted(lora_names(transformer).items()):
            param.copy_(torch.randn(param.shape, generator=generator) * LORA_SCALE)
    lora_init = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    transformer.train()
    params_to_optimize = list(filter(lambda p: p.requires_grad, transformer.parameters()))
    optimizer = torch.optim.AdamW(
        params_to_optimize, lr=args.learning_rate, betas=(0.9, 0.999), weight_decay=args.weight_decay, eps=1e-8
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer, num_warmup_steps=0, num_training_steps=1, last_epoch=-1
    )

    # FSDP's clip_grad_norm_ (line 818), reading the raw gradients first; the weights after each optimizer.step().
    steps: list[dict] = []
    names = {id(p): n for n, p in lora_names(transformer).items()}

    def clip_grad_norm_(max_norm):
        steps.append({"grads": {names[id(p)]: p.grad.detach().clone() for p in params_to_optimize}})
        return torch.nn.utils.clip_grad_norm_(transformer.parameters(), max_norm)

    transformer.clip_grad_norm_ = clip_grad_norm_
    optimizer.register_step_post_hook(
        lambda *_: steps[-1].update(weights={n: p.detach().clone() for n, p in lora_names(transformer).items()})
    )
    # Which step each backward trains (grpo_one_step's index argument: perms[i][_]).
    trained = []
    grpo_one_step = namespace["grpo_one_step"]

    def recording_grpo_one_step(*a, **k):
        trained.append(int(a[9]))
        return grpo_one_step(*a, **k)

    namespace["grpo_one_step"] = recording_grpo_one_step

    # Stand-in prompt embeddings (the dataset's precomputed T5 / CLIP outputs) for one prompt.
    embed_generator = torch.Generator().manual_seed(2)
    prompt_embeds = torch.randn(1, TEXT_TOKENS, 32, generator=embed_generator)
    pooled_prompt_embeds = torch.randn(1, 32, generator=embed_generator)
    text_ids = torch.zeros(1, 3)
    caption = ["a canned caption"]
    rollout = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds}

    # ---- sample_reference_model (lines 400-535) at the tiny pipeline's sizes, with canned rewards.
    def sample_reference_model(
        args,
        device,
        transformer,
        vae,
        encoder_hidden_states,
        pooled_prompt_embeds,
        text_ids,
        reward_dispatcher,
        caption,
    ):
        sigma_schedule = sd3_time_shift(args.shift, torch.linspace(1, 0, args.sampling_steps + 1))
        B = encoder_hidden_states.shape[0]
        latent_channels, latent_h, latent_w = 4, args.h // 2, args.w // 2  # 2x VAE, 4 x 2 x 2 = 16 packed
        all_latents, all_log_probs, all_prev_sample_mean, all_image_ids = [], [], [], []
        assert args.init_same_noise
        input_latents = torch.randn((1, latent_channels, latent_h, latent_w), device=device, dtype=torch.bfloat16)
        for batch_idx in torch.chunk(torch.arange(B), B):
            input_latents_new = namespace["pack_latents"](
                input_latents.float(), len(batch_idx), latent_channels, latent_h, latent_w
            )
            image_ids = namespace["prepare_latent_image_ids"](
                len(batch_idx), latent_h // 2, latent_w // 2, device, torch.bfloat16
            )
            with torch.no_grad():
                # with --rationorm a fifth output: the mean of every step (batch, steps, tokens, 4C)
                _, _, batch_latents, batch_log_probs, *batch_prev_sample_mean = namespace["run_sample_step"](
                    args,
                    input_latents_new,
                    range(args.sampling_steps),
                    sigma_schedule,
                    transformer,
                    encoder_hidden_states[batch_idx],
                    pooled_prompt_embeds[batch_idx],
                    text_ids[batch_idx],
                    image_ids,
                    True,
                )
            all_image_ids.append(image_ids)
            all_latents.append(batch_latents)
            all_log_probs.append(batch_log_probs)
            all_prev_sample_mean += batch_prev_sample_mean
        # The rewards (dispatcher.compute_rewards): the judge's win rates from its canned answers, stand-in CLIP.
        outputs = dict(zip(itertools.combinations(range(B), 2), (cases.ANSWERS[k] for k in JUDGE), strict=True))
        judge.evaluate_batch = lambda payload, api_url: [
            {**item, "model_output": outputs[(item["first_index"], item["second_index"])]} for item in payload
        ]
        data = [{"images": f"image-{i}", "problem": "unused"} for i in range(B)]
        rates, _ = judge.cal_win_rate_images(data, api_url=args.api_url, device=device)
        clip = 0.3 + 0.02 * torch.randn(B, generator=torch.Generator().manual_seed(CLIP_SEED))
        reward_tensors = {"unifiedreward_think": torch.cat(rates, dim=0), "clip": clip}
        all_latents = torch.cat(all_latents, dim=0)
        all_log_probs = torch.cat(all_log_probs, dim=0)
        all_image_ids = torch.stack(all_image_ids)
        rollout.update(latents=all_latents, log_probs=all_log_probs, sigmas=sigma_schedule, **reward_tensors)
        if not rationorm:
            return reward_tensors, all_latents, all_log_probs, sigma_schedule, all_image_ids, {}
        all_prev_sample_mean = torch.cat(all_prev_sample_mean, dim=0)
        rollout["prev_sample_mean"] = all_prev_sample_mean
        return reward_tensors, all_latents, all_log_probs, all_prev_sample_mean, sigma_schedule, all_image_ids, {}

    namespace["sample_reference_model"] = sample_reference_model
    # compute_weighted_advantages' output, as train_one_step stores it
    compute = namespace["compute_weighted_advantages"]

    def recording_compute(*a, **k):
        out = compute(*a, **k)
        rollout["advantages"] = out[0].clone()
        return out

    namespace["compute_weighted_advantages"] = recording_compute
    loader = iter([(prompt_embeds, pooled_prompt_embeds, text_ids, caption)])
    total_loss, grad_norm, _, _ = namespace["train_one_step"](
        args, "cpu", transformer, None, None, None, optimizer, lr_scheduler, loader, None, args.max_grad_norm
    )

    samples = args.num_generations
    per_sample = int((args.sampling_steps - 1) * args.timestep_fraction)
    assert len(trained) == samples * per_sample == len(dist.reduced)
    assert len(steps) == samples // args.gradient_accumulation_steps == 2
    backwards_per_step = args.gradient_accumulation_steps * per_sample
    losses = [sum(dist.reduced[s * backwards_per_step : (s + 1) * backwards_per_step]) for s in range(len(steps))]
    assert abs(sum(losses) - total_loss) < 1e-12
    rollout["trained_steps"] = torch.tensor(trained).reshape(samples, per_sample)
    return {
        "args": args,
        "lora_init": lora_init,
        "target_modules": default_target_modules,
        "rollout": rollout,
        "steps": steps,
        "losses": losses,
        "grad_norm_last": float(grad_norm),
        "train_timesteps": per_sample,
    }


def step_tensors(run: dict) -> dict[str, torch.Tensor]:
    """``step{k}.grads.<name>`` and ``step{k}.weights.<name>`` of each optimizer step ``k``."""
    tensors = {}
    for s, step in enumerate(run["steps"]):
        for kind in ("grads", "weights"):
            for name, value in step[kind].items():
                tensors[f"step{s}.{kind}.{name}"] = value.float().contiguous()
    return tensors


def main() -> None:
    root = checkout()
    import accelerate
    import diffusers
    import peft
    from safetensors.torch import save_file

    judge = load_judge(root)
    tiny_pipeline(HERE / "pipeline")
    published = train_step(root, judge, ())
    plain = train_step(root, judge, WITHOUT_RATIONORM)
    # RatioNorm draws nothing: both runs start from the same adapter and sample the same rollout, advantages and steps.
    for key, value in plain["lora_init"].items():
        assert torch.equal(value, published["lora_init"][key]), key
    for key, value in plain["rollout"].items():
        assert torch.equal(value, published["rollout"][key]), key
    assert "prev_sample_mean" in published["rollout"] and "prev_sample_mean" not in plain["rollout"]

    save_file(published["lora_init"], str(HERE / "lora_init.safetensors"))
    save_file(step_tensors(published), str(HERE / "step.safetensors"))
    save_file(step_tensors(plain), str(HERE / "step_no_rationorm.safetensors"))
    rollout = published["rollout"]
    save_file(
        {
            "prompt_embeds": rollout["prompt_embeds"],
            "pooled_prompt_embeds": rollout["pooled_prompt_embeds"],
            "latents": rollout["latents"].float(),  # (8, 7, 64, 16): packed, every step's input and the final
            "prev_sample_mean": rollout["prev_sample_mean"].float(),  # (8, 6, 64, 16): the mean of every step
            "log_probs": rollout["log_probs"].float(),  # (8, 6): every sampled step (the last is not trained)
            "sigmas": rollout["sigmas"].float(),  # (7,)
            "win_rate": rollout["unifiedreward_think"].float(),
            "clip": rollout["clip"].float(),
            "advantages": rollout["advantages"].float(),
            "trained_steps": rollout["trained_steps"],  # (8, 3)
        },
        str(HERE / "rollout.safetensors"),
    )
    args = published["args"]
    golden = {
        "reference": f"CodeGoat24/Pref-GRPO@{COMMIT}: fastvideo/train_flux.py train_one_step (CPU, float32)",
        "recipe": RECIPE,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "peft": peft.__version__,
            "accelerate": accelerate.__version__,
        },
        "settings": {
            "arguments": recipe_arguments(root, "<output_dir>") + TINY,
            "rationorm": args.rationorm,
            "num_generations": args.num_generations,
            "sampling_steps": args.sampling_steps,
            "train_timesteps": published["train_timesteps"],
            "resolution": args.h,
            "shift": args.shift,
            "eta": args.eta,
            "learning_rate": args.learning_rate,
            "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "clip_range": args.clip_range,
            "adv_clip_max": args.adv_clip_max,
            "kl_beta": args.kl_beta,
            "reward_weights": dict(args.reward_weights),
            "apply_gdpo": args.apply_gdpo,
            "lora_rank": args.lora_rank,
            "lora_alpha": args.lora_alpha,
            "lora_target_modules": published["target_modules"],
        },
        "steps": [{"loss": loss} for loss in published["losses"]],
        "grad_norm_last": published["grad_norm_last"],
        "without_rationorm": {
            "dropped": list(WITHOUT_RATIONORM),
            "tensors": "step_no_rationorm.safetensors",
            "steps": [{"loss": loss} for loss in plain["losses"]],
            "grad_norm_last": plain["grad_norm_last"],
        },
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

"""Speed and memory of one Flow-DPO training step, against the bare transformer calls it has to make.

A Flow-DPO step on B pairs must run the transformer once without gradients (reference, 2B samples) and once with
gradients (policy forward and backward, 2B samples); everything else -- noise and noise-level draws, building
x_t, the loss, LoRA bookkeeping, the adapter-disabled reference, gradient clipping, AdamW, EMA -- is overhead.

    python benchmarks/bench_flow_dpo.py        # CPU; SD3 MM-DiT, 4 layers, 4 heads x 64, 64x64 latents
    python benchmarks/bench_flow_dpo.py --device cuda --dtype bfloat16
    python benchmarks/bench_flow_dpo.py --smoke   # 1 layer, 1 head, 8x8 latents, 1 pair, once: checks it runs

The step is timed with the functions align/flow_dpo.py uses (``dpo_loss`` then clip, AdamW, EMA), and split into
phases with the same calls. The baseline is the same transformer calls made directly on prepared inputs, timed in
the same process, interleaved with the step. Times are the best of the repeats (the run least disturbed by other
work on a shared machine). The last line is ``overhead: NN%`` = step time / baseline time - 1.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from align.flow_dpo import FlowDPOConfig  # noqa: E402
from mmreward.alignment.flow_dpo_objective import dpo_loss, draw_noise  # noqa: E402
from mmreward.alignment.preference_sets import PairDataConfig, TrainingSet  # noqa: E402
from mmreward.flow.models import DEFAULT_LORA_TARGETS, PromptEmbeds, SD3Model  # noqa: E402
from mmreward.flow.noising import noisy_latents, velocity_target  # noqa: E402
from mmreward.flow.rollout import seeded  # noqa: E402
from mmreward.losses import flow_dpo_loss, flow_matching_error  # noqa: E402
from mmreward.tiny_models import tiny_pipeline  # noqa: E402
from mmreward.train.ema import EMA  # noqa: E402
from mmreward.train.lora import LoraReference, adapters_disabled, add_lora  # noqa: E402


class _Accelerator:
    """The two accelerate calls dpo_loss makes, without a distributed setup (single process)."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype

    def autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)


def build(args) -> tuple[SD3Model, torch.optim.Optimizer, LoraReference, EMA]:
    from diffusers import SD3Transformer2DModel

    pipeline = tiny_pipeline("sd3")  # tiny text encoders and VAE; the transformer below is the benchmarked one
    torch.manual_seed(0)
    pipeline.transformer = SD3Transformer2DModel(
        sample_size=args.latent_size,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=args.layers,
        attention_head_dim=64,
        num_attention_heads=args.heads,
        joint_attention_dim=32,
        caption_projection_dim=64 * args.heads,
        pooled_projection_dim=64,
        pos_embed_max_size=args.latent_size,
    )
    device = torch.device(args.device)
    weight_dtype = getattr(torch, args.dtype)
    pipeline.transformer.requires_grad_(False).eval().to(device)
    if weight_dtype != torch.float32:
        pipeline.transformer.to(dtype=weight_dtype)
    if args.gradient_checkpointing:
        pipeline.transformer.enable_gradient_checkpointing()
    if args.attention == "xformers":
        pipeline.transformer.set_attention_backend("xformers")
    model = SD3Model(pipeline, device=device)
    model.max_sequence_length = 77
    add_lora(model.transformer, rank=32, alpha=64, target_modules=DEFAULT_LORA_TARGETS)
    params = [p for p in model.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    return model, optimizer, LoraReference(model.transformer), EMA(model.transformer, decay=0.9, update_every=1)


class Timer:
    """Wall time per named phase, synchronizing CUDA around each; ``start()`` opens a new repeat."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.repeats = device, []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def start(self) -> None:
        self.repeats.append({})

    @contextmanager
    def __call__(self, name: str):
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.repeats[-1][name] = self.repeats[-1].get(name, 0.0) + time.perf_counter() - start

    def best(self, name: str) -> float:
        return min(r[name] for r in self.repeats)


# ``--smoke``: every phase of the step and the baseline at the smallest sizes, one repeat.
SMOKE = {"pairs": 1, "layers": 1, "heads": 1, "latent_size": 8, "repeats": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--pairs", type=int, default=2, help="pairs per step (2x samples per transformer call)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--latent-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "xformers"])
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat (the test suite's run)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model, optimizer, reference, ema = build(args)
    accelerator = _Accelerator(device, dtype)
    cfg = FlowDPOConfig(data=PairDataConfig(source="synthetic"))
    params = [p for p in model.transformer.parameters() if p.requires_grad]
    latent = (args.pairs * 4, 16, args.latent_size, args.latent_size)
    pool = torch.randn(latent, generator=torch.Generator().manual_seed(0))  # 2x the pairs needed, indexed per step
    prompts = [f"prompt {i}" for i in range(len(pool) // 2)]
    model.encode_prompts(prompts)
    data = TrainingSet(prompts, pool[: len(pool) // 2], pool[len(pool) // 2 :])

    def program_step(step: int) -> None:
        """What align/flow_dpo.py does per optimizer step (one micro-batch, one process)."""
        rows = [(step * args.pairs + k) % len(data) for k in range(args.pairs)]
        batch = TrainingSet([data.prompts[i] for i in rows], data.chosen[rows], data.rejected[rows])
        generators = [seeded(0, step, 0, k) for k in range(args.pairs)]
        loss, _ = dpo_loss(cfg, model, model.transformer, reference, batch, generators, accelerator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step()

    def split_step(step: int, timer: Timer) -> None:
        """The same calls as program_step, with a timer around each phase."""
        with timer("data"):
            rows = [(step * args.pairs + k) % len(data) for k in range(args.pairs)]
            batch = TrainingSet([data.prompts[i] for i in rows], data.chosen[rows], data.rejected[rows])
            generators = [seeded(0, step, 0, k) for k in range(args.pairs)]
            sigma, noise = draw_noise(cfg, model, batch.chosen.shape, generators)
            x0 = torch.cat([batch.chosen, batch.rejected]).to(device)
            noise2, sigma2 = torch.cat([noise, noise]).to(device), torch.cat([sigma, sigma]).to(device)
            x_t, target = noisy_latents(x0, noise2, sigma2), velocity_target(x0, noise2)
            cond = model.encode_prompts(batch.prompts)
            cond2 = PromptEmbeds.cat([cond, cond])
        with timer("reference forward"), reference.active(), accelerator.autocast():
            ref_error = flow_matching_error(model.velocity(x_t, sigma2, cond2), target)
        with timer("policy forward+backward"):
            with accelerator.autocast():
                error = flow_matching_error(model.velocity(x_t, sigma2, cond2), target)
            size = args.pairs
            out = flow_dpo_loss(error[:size], error[size:], ref_error[:size], ref_error[size:], beta=100.0)
            out.loss.backward()
        with timer("optimizer"):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step()

    # Baseline inputs: what the transformer sees in a step, prepared once, outside the timing.
    dtype_in = next(model.transformer.parameters()).dtype
    hidden = torch.randn(2 * args.pairs, *latent[1:], device=device, dtype=dtype_in)
    timestep = torch.full((2 * args.pairs,), 500.0, device=device)
    cond = model.encode_prompts(prompts[: 2 * args.pairs])
    inputs = {
        "hidden_states": hidden,
        "timestep": timestep,
        "encoder_hidden_states": cond.embeds.to(dtype_in),
        "pooled_projections": cond.pooled.to(dtype_in),
        "return_dict": False,
    }

    def bare_calls() -> None:
        with torch.no_grad(), adapters_disabled(model.transformer), accelerator.autocast():
            model.transformer(**inputs)
        with accelerator.autocast():
            out = model.transformer(**inputs)[0]
        out.float().pow(2).mean().backward()
        optimizer.zero_grad(set_to_none=True)

    timer = Timer(device)
    timer.start()
    program_step(0), split_step(0, timer), bare_calls()  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_times, bare_times = [], []
    timer = Timer(device)
    for r in range(args.repeats):  # interleaved, so load changes on a shared machine hit all three alike
        timer.sync()
        start = time.perf_counter()
        bare_calls()
        timer.sync()
        bare_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        program_step(r + 1)
        timer.sync()
        step_times.append(time.perf_counter() - start)
        timer.start()
        split_step(r + 1, timer)

    step, bare = min(step_times), min(bare_times)
    tokens = (args.latent_size // 2) ** 2
    print(
        f"Flow-DPO step on {args.device} ({args.dtype}): SD3 MM-DiT {args.layers} layers x {args.heads} heads x 64, "
        f"{args.latent_size}x{args.latent_size} latents ({tokens} image tokens), {args.pairs} pairs, LoRA r32, "
        f"best of {args.repeats}"
    )
    phases = {name: timer.best(name) for name in timer.repeats[0]}
    print(f"{'phase':<26}{'seconds':>10}{'share':>9}")
    for name, seconds in phases.items():
        print(f"{name:<26}{seconds:>10.4f}{seconds / sum(phases.values()):>9.1%}")
    print(f"{'program step':<26}{step:>10.4f}")
    print(f"{'bare transformer calls':<26}{bare:>10.4f}")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    else:
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print(f"overhead: {100 * (step / bare - 1):.0f}%")


if __name__ == "__main__":
    main()

"""Reward gained against model evaluations spent, for every guidance method, on the tiny SD3 pipeline.

    python benchmarks/bench_guidance.py [--seeds 16] [--steps 8] [--plot outputs/bench_guidance.png]
    python benchmarks/bench_guidance.py --smoke   # 2 seeds, 2 steps, 2 candidates, 2 training steps: checks it runs

The known reward is brightness (the mean pixel value, differentiable). Every method draws one output per seed for
the prompt "a cat" from the same initial noise; the baseline is plain Euler sampling from the same seeds, in the
same process. Per method and budget the table shows forward evaluations (the budget's unit: one transformer pass
on one sample), transformer backward passes and VAE decodes per output, the mean brightness gain over the
baseline with its standard error over seeds (paired), the fraction of seeds improved, and the wall time per
output as a ratio to the baseline's. The plot shows gain against forward evaluations.

Flow-NRG uses a latent reward trained by align/train_latent_reward.py (configs/tiny/train_latent_reward.yaml, in
a temporary directory) on noised latents, and, for VideoAlign's Table 7 ablation, the same reward trained on
clean latents only (``train.noise_levels=clean``). Everything runs on one thread (``--threads``): on a shared
2-core machine, two threads of tiny ops mostly wait on each other.

A second table measures what VAE gradient checkpointing saves in pixel guidance at a real size: the gradient of
brightness through ``decode(x0_hat)`` with SD3's VAE architecture (16 latent channels, 128-256-512-512 blocks,
random weights) at ``--memory-size`` pixels, through :func:`mmreward.guidance.sampling.reward_gradient`: the
activations kept for backward (counted with ``saved_tensors_hooks``), the process's peak resident memory over
its level before the first decode (checkpointed run first, since the peak only grows), and the time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from align.train_latent_reward import TrainLatentRewardConfig  # noqa: E402
from align.train_latent_reward import main as train_latent_reward  # noqa: E402
from mmreward.flow.models import load_flow_model  # noqa: E402
from mmreward.guidance.latent_reward import load_latent_reward  # noqa: E402
from mmreward.guidance.objective import EvaluationCount, GuidanceObjective, LatentTerm, PixelTerm  # noqa: E402
from mmreward.guidance.sampling import (  # noqa: E402
    GuidanceSettings,
    SamplingSettings,
    generate,
    prepare_checkpointing,
    reward_gradient,
)
from mmreward.rewards.registry import load_reward  # noqa: E402
from mmreward.train.config import parse_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BRIGHTNESS = "mmreward.rewards.brightness:DifferentiableBrightnessReward"


def latent_reward(root: Path, args, *overrides: str):
    config = ["--config", str(REPO / "configs/tiny/train_latent_reward.yaml"), "--output_dir", str(root)]
    if args.reward_steps:
        overrides = ("--train.max_steps", str(args.reward_steps), *overrides)
    if args.reward_pairs:
        overrides = ("--data.num_synthetic", str(args.reward_pairs), *overrides)
    train_latent_reward(parse_config(TrainLatentRewardConfig, [*config, *overrides]))
    return load_latent_reward(root / "latent_reward")


def memory_table(size: int) -> None:
    from diffusers import AutoencoderKL

    from mmreward.flow.models import SD3Model
    from mmreward.tiny_models import tiny_pipeline

    pipeline = tiny_pipeline("sd3")
    torch.manual_seed(0)
    pipeline.vae = (
        AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=16,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5305,
        )
        .eval()
        .requires_grad_(False)
    )
    model = SD3Model(pipeline)
    objective = GuidanceObjective([PixelTerm(load_reward(BRIGHTNESS))])
    x, v = torch.randn(1, 16, size // 8, size // 8), torch.randn(1, 16, size // 8, size // 8)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    print(f"\npixel-guidance gradient through SD3's VAE architecture at {size}x{size}, one sample")
    print(f"{'VAE checkpointing':<20}{'saved for backward':>20}{'peak RSS over start':>21}{'time':>8}")
    for checkpointing in (True, False):
        if checkpointing:
            prepare_checkpointing(model, GuidanceSettings(gradient_checkpointing=True))
        else:
            model.vae.disable_gradient_checkpointing()
        saved = [0]

        def pack(tensor: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved[0] += tensor.numel() * tensor.element_size()
            return tensor

        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            reward_gradient(model, objective, x, 0.5, v, ["a cat"], EvaluationCount())
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
        print(f"{'on' if checkpointing else 'off':<20}{saved[0] / 2**20:>16.0f} MiB{peak:>17.0f} MiB{seconds:>7.1f}s")


# ``--smoke``: every method and both tables at the smallest sizes (two seeds: the gain's standard error needs them).
SMOKE = {"seeds": 2, "steps": 2, "candidates": [2], "memory_size": 16, "reward_steps": 2, "reward_pairs": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", default="outputs/bench_guidance.png")
    parser.add_argument("--memory-size", type=int, default=256, help="pixels of the memory table (0: skip it)")
    parser.add_argument(
        "--candidates", type=int, nargs="+", default=[2, 4, 8, 16], help="N of best-of-N, and search budgets N x K"
    )
    parser.add_argument("--reward-steps", type=int, default=0, help="latent-reward training steps (0: the config's)")
    parser.add_argument("--reward-pairs", type=int, default=0, help="latent-reward synthetic pairs (0: the config's)")
    parser.add_argument("--smoke", action="store_true", help="smallest sizes (the test suite's run)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    torch.set_num_threads(args.threads)
    if args.memory_size:
        memory_table(args.memory_size)  # first: the peak resident memory only grows
    k = args.steps

    model = load_flow_model("sd3", "tiny", max_sequence_length=32)
    brightness = GuidanceObjective([PixelTerm(load_reward(BRIGHTNESS))])
    with tempfile.TemporaryDirectory() as tmp:
        noised = GuidanceObjective([LatentTerm(latent_reward(Path(tmp) / "noised", args))])
        clean_reward = latent_reward(Path(tmp) / "clean", args, "--train.noise_levels", "clean")
        clean = GuidanceObjective([LatentTerm(clean_reward)])
    sampling = SamplingSettings(num_steps=k, height=32, width=32)

    # (label, family for the plot, objective, method, budget, guidance settings)
    runs = [("unguided", "unguided", brightness, "best-of-n", k, None)]
    runs += [(f"best-of-{n}", "best-of-n", brightness, "best-of-n", n * k, None) for n in args.candidates]
    runs += [(f"search {n}K", "search", brightness, "search", n * k, None) for n in args.candidates]
    runs += [
        ("pixel 0.5", "pixel", brightness, "pixel", k, GuidanceSettings(scale=0.5)),
        ("pixel 0.5, best of 4", "pixel", brightness, "pixel", 4 * k, GuidanceSettings(scale=0.5)),
        ("pixel 2.0", "pixel (other scales)", brightness, "pixel", k, GuidanceSettings(scale=2.0)),
        (
            "pixel 0.5 through model",
            "pixel through model",
            brightness,
            "pixel",
            k,
            GuidanceSettings(scale=0.5, through_model=True),
        ),
        ("nrg 0.25", "nrg", noised, "nrg", k, GuidanceSettings(scale=0.25)),
        ("nrg 0.25, best of 4", "nrg", noised, "nrg", 4 * k, GuidanceSettings(scale=0.25)),
        ("nrg 1.0", "nrg (other scales)", noised, "nrg", k, GuidanceSettings(scale=1.0)),
        ("nrg 4.0", "nrg (other scales)", noised, "nrg", k, GuidanceSettings(scale=4.0)),
        ("nrg 0.25, clean-trained", "nrg clean-trained", clean, "nrg", k, GuidanceSettings(scale=0.25)),
    ]
    results = []
    for label, family, objective, method, budget, guidance in runs:
        values, seconds, counts = [], [], []
        for seed in range(args.seeds):
            start = time.perf_counter()
            out = generate(
                model, "a cat", objective, method, budget=budget, seed=seed, sampling=sampling, guidance=guidance
            )
            seconds.append(time.perf_counter() - start)
            values.append(float(out.media.mean()))
            counts.append(out.count)
        results.append((label, family, values, min(seconds), counts))

    base_values, base_time = results[0][2], results[0][3]
    spread = statistics.pstdev(base_values)
    columns = [
        ("method", "<26"),
        ("forward", ">8"),
        ("backward", ">9"),
        ("decode", ">7"),
        ("gain", ">10"),
        ("sem", ">9"),
        ("improved", ">9"),
        ("time", ">7"),
    ]
    header = "".join(f"{name:{align}}" for name, align in columns)
    print(
        f"tiny SD3, {k} steps, {args.seeds} seeds; unguided brightness {statistics.fmean(base_values):.4f} "
        f"(std over seeds {spread:.4f})"
    )
    print(header)
    rows = []
    for label, family, values, best_time, counts in results:
        gains = [v - b for v, b in zip(values, base_values, strict=True)]
        gain, sem = statistics.fmean(gains), statistics.stdev(gains) / len(gains) ** 0.5
        improved = sum(g > 0 for g in gains) / len(gains)
        forward = statistics.fmean(c.forward for c in counts)
        backward = statistics.fmean(c.backward for c in counts)
        decode = statistics.fmean(c.decode for c in counts)
        print(
            f"{label:<26}{forward:>8.0f}{backward:>9.0f}{decode:>7.0f}{gain:>+10.4f}{sem:>9.4f}{improved:>9.0%}"
            f"{best_time / base_time:>6.1f}x"
        )
        rows.append((family, forward, gain, sem))
    print("gain: mean brightness minus the unguided sample's, same seed; time: best wall time per output / unguided's")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in dict.fromkeys(r[0] for r in rows):
        points = sorted((f, g, s) for fam, f, g, s in rows if fam == family)
        xs, ys, errors = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=family, linestyle="-" if len(xs) > 1 else "")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("forward evaluations per output (transformer passes)")
    ax.set_ylabel("brightness gain over unguided (same seed)")
    ax.set_title(f"Reward guidance on tiny SD3 ({k} steps, {args.seeds} seeds)")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

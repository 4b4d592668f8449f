"""Held-out reward gained per transformer evaluation: Flow-GRPO, Flow-GRPO-Fast, MixGRPO, DiffusionNFT and online
Flow-DPO on the same tiny problem.

    python benchmarks/bench_algorithms.py [--seeds 3] [--steps 24] [--plot outputs/bench_algorithms.png]
    python benchmarks/bench_algorithms.py --smoke   # 1 seed, 2 steps, 2 prompts x 2 samples: checks it runs

The problem is the learning tests' (tests/align/test_*_learning.py): the tiny random SD3 pipeline, the pointwise
brightness reward ``mmreward.rewards.brightness:BrightnessReward``, the training prompts of
configs/tiny/flow_dpo_prompts.txt, no CFG anywhere, LoRA r4, no EMA, 24 optimizer steps, lr 3e-2. Every method runs
through its program's ``main(cfg)`` in this process, from its tiny config with ``parse_config`` overrides
(``METHODS``), once per training seed (``train.seed`` 0, 1, 2):

- Flow-GRPO (align/pref_grpo.py, configs/tiny/pref_grpo_flow_grpo.yaml as test_pref_grpo_learning.py runs it):
  4 prompts x 4 samples per step, 4 SDE steps (noise 0.7), 3 trained, one optimizer step per rollout, no KL;
- Flow-GRPO-Fast: the same, but ODE except a random window of 1 SDE step among the first 2 (what distinguishes
  configs/align/pref_grpo_flow_grpo_fast_sd3.yaml: a window of the first steps), only the window trained;
- MixGRPO: the same with ``rollout.sde_window_schedule: sliding``: a 1-step window over the first 3 steps, a third
  of the run at each place, in order;
- DiffusionNFT (align/diffusion_nft.py, configs/tiny/diffusion_nft.yaml as test_diffusion_nft_learning.py runs
  it): 4 x 4 ODE samples per step from the old policy, 3 noise levels trained per sample, the config's KL
  (``loss.kl_beta`` 1e-4) to the base model;
- Flow-DPO online (align/flow_dpo.py, configs/tiny/flow_dpo_online.yaml): every 4 steps the reference draws 8
  SDE samples (4 steps) for each of 4 prompts, best vs worst pairs, 4 pairs per step, reference refreshed every 4
  steps.

Transformer evaluations are counted, not derived: a forward hook on the program's transformer (the module that
``load_lora_policy`` returns) adds the batch rows of every call, and a gradient hook on the call's output adds them
again when a backward pass goes through it. One evaluation is one sample through the transformer once (a batch of
16 is 16; a CFG call, none here, would count its two halves). Rollouts, old-policy and reference forwards all
count; the benchmark's own held-out evaluations do not (the counter is paused).

Held-out reward: the mean brightness of ODE samples (4 steps) of the first 4 held-out prompts of
configs/tiny/grpo_eval_prompts.txt x 4 samples from fixed seeds (``sample_eval``, the programs' own evaluation
sampler, with the same evaluation seed for every method and run), before training (the adapter off) and at every
checkpoint (every 4 steps). Gain = after - before; the table gives the mean and sample standard deviation over the
training seeds of the final gain and of the gain per 1000 evaluations; the plot (``--plot``) shows the mean gain (sd
as error bars) against evaluations. The last lines compare DiffusionNFT with Flow-GRPO twice: the evaluations
DiffusionNFT needs to reach Flow-GRPO's final gain (the paper's kind of measure), and the ratio of gains per
evaluation (goal: >= 3x, the smallest gain the DiffusionNFT paper claims).

Measured on the shared 2-core CPU machine (one thread; 100-102 s of CPU, 6-8 min wall time under the usual load;
the runs are deterministic: a rerun printed the same numbers):

    method            evaluations  forward    base     gain      sd  gain/1k eval      sd  cpu s
    Flow-GRPO                3840     2688  0.5982  +0.0090  0.0019      +0.00234 0.00050      8
    Flow-GRPO-Fast           2304     1920  0.5982  +0.0079  0.0058      +0.00344 0.00251      5
    MixGRPO                  2304     1920  0.5982  +0.0097  0.0007      +0.00421 0.00029      5
    DiffusionNFT             6144     4992  0.5982  +0.0115  0.0008      +0.00187 0.00013     11
    Flow-DPO online          1344     1152  0.5982  +0.0082  0.0019      +0.00608 0.00140      4
    evaluations to Flow-GRPO's final gain +0.0090: Flow-GRPO 3840, DiffusionNFT 4117 (speed-up 0.93x)
    DiffusionNFT / Flow-GRPO gain per evaluation: 0.80x
    goal >= 3x: not met

Why the tiny problem cannot show the paper's >= 3x. DiffusionNFT gains the most per *step* (0.0115 vs 0.0090, and
the smallest spread over seeds), but a step costs it 256 evaluations against Flow-GRPO's 160: the rollouts cost the
same here (16 samples x 4 steps, ODE or SDE), and each of the 48 trained (sample, level) pairs costs Flow-GRPO a
forward and a backward but DiffusionNFT four (the old policy's forward, the current forward and backward, and the KL
reference's forward; without the KL 3, 208 a step: 0.98x at the same gain). 1.28x the gain per step at 1.6x the cost
is 0.80x. The paper's gains come from what this problem does not have: its Flow-GRPO baseline samples and trains
with CFG (two evaluations per denoising step, DiffusionNFT none), which would double the baseline's count here
(about 1.6x, arithmetic, not measured), and from real rewards (GenEval, PickScore) on a real model, where
Flow-GRPO's SDE exploration needs thousands of steps; here, a random 4-step model and a reward read straight off the
pixels, DiffusionNFT's per-step advantage is 1.28x. On this problem the cheapest learners per evaluation are the
windowed GRPO variants (one trained step instead of three; MixGRPO's sliding window steadier than Fast's random one)
and online Flow-DPO (few, cheap pair updates; the largest spread early on).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from align import diffusion_nft, flow_dpo, pref_grpo  # noqa: E402
from mmreward.alignment.monitor import EvalConfig, sample_eval  # noqa: E402
from mmreward.data.prompts import read_prompts  # noqa: E402
from mmreward.rewards.brightness import BrightnessReward  # noqa: E402
from mmreward.train.config import parse_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVAL_SEED = 1234  # the held-out noise: the same for every method and training seed

GRPO = [
    *"--config configs/tiny/pref_grpo_flow_grpo.yaml --train.learning_rate 3e-2 --train.ema false".split(),
    *"--train.micro_batch_size 16 --train.updates_per_step 1 --rollout.batch_size 16 --rollout.num_steps 4".split(),
    *"--loss.kl_beta 0 --eval.every 0".split(),
]
# (program module, its config class, overrides); sizes (steps, prompts, samples) are set by ``arguments``
METHODS: dict[str, tuple[ModuleType, type, list[str]]] = {
    "Flow-GRPO": (
        pref_grpo,
        pref_grpo.PrefGRPOConfig,
        [
            *GRPO,
            *("--rollout.sde_window_size", "0", "--rollout.sde_window_range", "[]"),
            *("--loss.timestep_fraction", "0.99"),
        ],
    ),
    "Flow-GRPO-Fast": (
        pref_grpo,
        pref_grpo.PrefGRPOConfig,
        [
            *GRPO,
            *("--rollout.sde_window_size", "1", "--rollout.sde_window_range", "[0, 2]"),
            *("--loss.timestep_fraction", "1.0"),
        ],
    ),
    "MixGRPO": (
        pref_grpo,
        pref_grpo.PrefGRPOConfig,
        [
            *GRPO,
            *("--rollout.sde_window_size", "1", "--rollout.sde_window_range", "[0, 3]"),
            *("--rollout.sde_window_schedule", "sliding", "--loss.timestep_fraction", "1.0"),
        ],
    ),
    "DiffusionNFT": (
        diffusion_nft,
        diffusion_nft.DiffusionNFTConfig,
        [
            *"--config configs/tiny/diffusion_nft.yaml --train.learning_rate 3e-2 --train.ema false".split(),
            *"--rollout.batch_size 16 --train.micro_batch_size 16 --eval.every 0".split(),
        ],
    ),
    "Flow-DPO online": (
        flow_dpo,
        flow_dpo.FlowDPOConfig,
        [
            *"--config configs/tiny/flow_dpo_online.yaml --train.learning_rate 3e-2 --train.ema false".split(),
            *"--online.sampling.num_steps 4".split(),
        ],
    ),
}


def arguments(name: str, steps: int, every: int, prompts: int, samples: int) -> list[str]:
    """The size overrides of one method: ``steps`` optimizer steps, a checkpoint (and held-out evaluation) every
    ``every``, ``prompts`` x ``samples`` per rollout or round."""
    common = ["--train.max_steps", str(steps), "--train.save_every", str(every)]
    if name == "Flow-DPO online":
        return [
            *common,
            *("--online.prompts_per_round", str(prompts), "--online.samples_per_prompt", str(2 * samples)),
            *("--train.batch_size", str(prompts)),
            # a new round and reference every 4 steps (checkpoints must fall on round boundaries)
            *("--online.round_steps", str(min(4, every)), "--online.ref_refresh_every", str(min(4, every))),
        ]
    sized = [*common, "--rollout.prompts_per_step", str(prompts), "--rollout.group_size", str(samples)]
    if name == "MixGRPO":  # the window visits each of its 3 places for a third of the run, in order
        return [*sized, "--rollout.sde_window_shift_every", str(max(1, steps // 3))]
    return sized


@dataclass
class Counter:
    """Transformer evaluations (sample rows through the transformer, forward and backward) while not paused."""

    forward: int = 0
    backward: int = 0
    paused: bool = False

    def hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.paused:
            return
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        rows = hidden.shape[0]
        self.forward += rows
        out = output[0] if isinstance(output, tuple) else output.sample
        if out.requires_grad:
            out.register_hook(lambda grad: self._backward(rows))

    def _backward(self, rows: int) -> None:
        self.backward += rows


@dataclass
class Run:
    """One training run: held-out reward before training and at each checkpoint, with the evaluations spent."""

    base: float = float("nan")
    # (step, forward evaluations, backward evaluations, held-out reward) at each checkpoint
    points: list[tuple[int, int, int, float]] = field(default_factory=list)
    seconds: float = 0.0  # CPU time of the run (training and held-out evaluations)

    @property
    def gain(self) -> float:
        return self.points[-1][3] - self.base

    @property
    def forward(self) -> int:
        return self.points[-1][1]

    @property
    def evaluations(self) -> int:
        return self.points[-1][1] + self.points[-1][2]


class HeldOut:
    """ODE samples of fixed held-out prompts and seeds through ``sample_eval``, scored by brightness."""

    def __init__(self, prompts: int, samples: int) -> None:
        self.prompts = read_prompts(str(REPO / "configs/tiny/grpo_eval_prompts.txt"))[:prompts]
        self.cfg = EvalConfig(
            every=1, num_prompts=prompts, samples_per_prompt=samples, num_steps=4, guidance_scale=1.0, batch_size=16
        )
        self.reward = BrightnessReward()

    def __call__(self, policy: Any, cfg: Any, accelerator: Any, *, base_model: bool = False) -> float:
        size = cfg.model.sample_size()
        with torch.no_grad():
            samples = sample_eval(
                policy, self.prompts, self.cfg, base_model=base_model, **size, accelerator=accelerator, seed=EVAL_SEED
            )
        return float(self.reward.score(samples.prompts, list(samples.media)).scores.mean())


@contextmanager
def instrumented(module: ModuleType, run: Run, held_out: HeldOut):
    """Run ``module.main`` with its transformer's evaluations counted and the held-out reward measured before
    training and after every checkpoint: wraps the program's policy loader (``load_policy``, or ``load_lora_policy``
    in a program that trains LoRA only) and ``save_checkpoint``."""
    loader = "load_policy" if hasattr(module, "load_policy") else "load_lora_policy"
    load, save = getattr(module, loader), module.save_checkpoint
    counter = Counter()
    state: dict[str, Any] = {}

    def measure(base_model: bool = False) -> float:
        counter.paused = True
        value = held_out(state["policy"], state["cfg"], state["accelerator"], base_model=base_model)
        counter.paused = False
        return value

    def counted_load(cfg: Any, accelerator: Any, optimizer_steps: int, **options: Any) -> Any:
        policy = load(cfg, accelerator, optimizer_steps=optimizer_steps, **options)
        state.update(policy=policy, cfg=cfg, accelerator=accelerator)
        policy.unwrapped.register_forward_hook(counter.hook, with_kwargs=True)
        run.base = measure(base_model=True)
        return policy

    def measured_save(directory: Any, step: int, **kwargs: Any) -> None:
        save(directory, step, **kwargs)
        run.points.append((step, counter.forward, counter.backward, measure()))

    setattr(module, loader, counted_load)
    module.save_checkpoint = measured_save
    try:
        yield counter
    finally:
        setattr(module, loader, load)
        module.save_checkpoint = save


def train(name: str, seed: int, sizes: dict[str, int], held_out: HeldOut, root: Path) -> Run:
    module, config_class, overrides = METHODS[name]
    output = root / f"{name.replace(' ', '_')}-{seed}"
    sized = arguments(name, sizes["steps"], sizes["every"], sizes["prompts"], sizes["samples"])
    cfg = parse_config(config_class, [*overrides, *sized, "--output_dir", str(output), "--train.seed", str(seed)])
    run = Run()
    start = time.process_time()
    with instrumented(module, run, held_out):
        module.main(cfg)
    run.seconds = time.process_time() - start
    return run


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def curve(runs: list[Run]) -> tuple[list[float], list[float], list[float]]:
    """Evaluations, mean held-out gain and its spread over the runs: at the start and at every checkpoint (the
    checkpoints fall on the same steps in every run, and the evaluations per step are the same across seeds)."""
    points = len(runs[0].points)
    xs = [0.0] + [statistics.fmean(r.points[k][1] + r.points[k][2] for r in runs) for k in range(points)]
    gains = [[0.0] + [p[3] - r.base for p in r.points] for r in runs]
    means = [statistics.fmean(g[k] for g in gains) for k in range(len(xs))]
    return xs, means, [spread([g[k] for g in gains]) for k in range(len(xs))]


def reach(xs: list[float], means: list[float], target: float) -> float | None:
    """The evaluations at which the mean gain curve first reaches ``target`` (linear between checkpoints)."""
    for k in range(1, len(xs)):
        if means[k] >= target:
            fraction = (target - means[k - 1]) / (means[k] - means[k - 1])
            return xs[k - 1] + fraction * (xs[k] - xs[k - 1])
    return None


# ``--smoke``: every method through one checkpoint at the smallest sizes that still form groups and pairs.
SMOKE = {"seeds": 1, "steps": 2, "every": 2, "prompts": 2, "samples": 2, "eval_prompts": 2, "eval_samples": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 per method")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per run (the learning tests' 24)")
    parser.add_argument("--every", type=int, default=4, help="steps between held-out evaluations (multiple of 4)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per rollout (Flow-DPO: per round)")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt (Flow-DPO: twice as many)")
    parser.add_argument("--eval-prompts", type=int, default=4)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--plot", default="outputs/bench_algorithms.png")
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one seed (the test suite's run)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    for name in ("seeds", "steps", "every", "prompts", "eval_prompts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("samples", "eval_samples"):
        if getattr(args, name) < 2:
            parser.error(
                f"--{name.replace('_', '-')} must be >= 2 (groups and pairs need two), got {getattr(args, name)}"
            )
    if args.every > 4 and args.every % 4:
        parser.error(
            f"--every must be at most 4 or a multiple of 4 (Flow-DPO's rounds last 4 steps), got {args.every}"
        )
    plot = Path(args.plot).resolve()
    os.chdir(REPO)  # the tiny configs name their prompt files relative to the repository root
    torch.set_num_threads(1)
    sizes = {"steps": args.steps, "every": args.every, "prompts": args.prompts, "samples": args.samples}
    held_out = HeldOut(args.eval_prompts, args.eval_samples)

    runs: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_algorithms-") as root:
        for name in args.methods:
            runs[name] = [train(name, seed, sizes, held_out, Path(root)) for seed in range(args.seeds)]

    print(
        f"tiny SD3, brightness reward, {args.steps} steps, {args.prompts} prompts x {args.samples} samples, "
        f"{args.seeds} seeds; held-out: {args.eval_prompts} prompts x {args.eval_samples} seeds, 4 ODE steps"
    )
    print(
        f"{'method':<17}{'evaluations':>12}{'forward':>9}{'base':>8}{'gain':>9}{'sd':>8}"
        f"{'gain/1k eval':>14}{'sd':>8}{'cpu s':>7}"
    )
    per_eval: dict[str, float] = {}
    for name, method_runs in runs.items():
        gains = [r.gain for r in method_runs]
        rates = [1000 * r.gain / r.evaluations for r in method_runs]
        per_eval[name] = statistics.fmean(rates)
        print(
            f"{name:<17}{statistics.fmean(r.evaluations for r in method_runs):>12.0f}"
            f"{statistics.fmean(r.forward for r in method_runs):>9.0f}"
            f"{statistics.fmean(r.base for r in method_runs):>8.4f}"
            f"{statistics.fmean(gains):>+9.4f}{spread(gains):>8.4f}"
            f"{per_eval[name]:>+14.5f}{spread(rates):>8.5f}{statistics.fmean(r.seconds for r in method_runs):>7.0f}"
        )
    print("gain: held-out brightness after training minus before (same prompts and seeds); sd: over training seeds")
    curves = {name: curve(method_runs) for name, method_runs in runs.items()}
    if "DiffusionNFT" in per_eval and "Flow-GRPO" in per_eval:
        # the paper's measure: the cost of reaching the baseline's final reward
        target = curves["Flow-GRPO"][1][-1]
        needed = reach(*curves["DiffusionNFT"][:2], target) if target > 0 else None
        spent = curves["Flow-GRPO"][0][-1]
        if target <= 0:
            outcome = "none (Flow-GRPO did not gain)"
        else:
            outcome = f"{needed:.0f} (speed-up {spent / needed:.2f}x)" if needed else "not reached"
        print(f"evaluations to Flow-GRPO's final gain {target:+.4f}: Flow-GRPO {spent:.0f}, DiffusionNFT {outcome}")
        if per_eval["Flow-GRPO"] > 0:
            ratio = per_eval["DiffusionNFT"] / per_eval["Flow-GRPO"]
            print(f"DiffusionNFT / Flow-GRPO gain per evaluation: {ratio:.2f}x")
            print(f"goal >= 3x: {'met' if ratio >= 3 else 'not met'}")
        else:  # no ratio against a baseline that did not learn
            print("DiffusionNFT / Flow-GRPO gain per evaluation: none (Flow-GRPO did not gain)")
            print("goal >= 3x: not measured")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (xs, means, errors) in curves.items():
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name)
    ax.set_xlabel("transformer evaluations (forward + backward, per sample)")
    ax.set_ylabel("held-out brightness gain")
    ax.set_title(f"Tiny SD3, brightness reward, {args.seeds} seeds (mean, sd)")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=120)
    print(f"plot: {plot}")


if __name__ == "__main__":
    main()

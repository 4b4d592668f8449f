"""Every script in ``benchmarks/`` runs end to end with ``--smoke`` and prints its ratio lines.

Each benchmark runs once, in its own interpreter, the way a user starts it (``python benchmarks/NAME.py --smoke``
from the repository root, offline), and each test checks the lines that benchmark's docstring promises, by their
format: a benchmark whose code rots (a renamed function, a changed signature, a division by an empty table) fails
here instead of on the next person who measures with it. The numbers of a smoke run mean nothing (the sizes are
the smallest that exercise every timed path), so only their form is checked, and values that do not depend on
timing (counts from shipped labels, evaluations per method) are checked exactly.

The benchmarks are started together on a pool of ``os.cpu_count()`` workers when the first test asks for one
(only those whose tests were selected), so the module's wall time is about the sum of their CPU times divided by
the cores, not the sum of their wall times; most of that is importing torch, diffusers and transformers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"-?\d+(\.\d+)?"
PERCENT = rf"{NUMBER}%"
TIMES = rf"{NUMBER}x"

# ``--smoke`` best-of-N candidates and steps of bench_guidance.py (its SMOKE table): N = 2, K = 2.
GUIDANCE_ROWS = {  # label: (forward evaluations, backward passes, VAE decodes) per output, fixed by the method
    "unguided": (2, 0, 1),
    "best-of-2": (4, 0, 2),
    "search 2K": (3, 0, 3),
    "pixel 0.5": (2, 0, 3),
    "pixel 0.5, best of 4": (8, 0, 12),
    "pixel 2.0": (2, 0, 3),
    "pixel 0.5 through model": (2, 2, 3),
    "nrg 0.25": (2, 0, 1),
    "nrg 0.25, best of 4": (8, 0, 4),
    "nrg 1.0": (2, 0, 1),
    "nrg 4.0": (2, 0, 1),
    "nrg 0.25, clean-trained": (2, 0, 1),
}

# ``--smoke`` of bench_algorithms.py (its SMOKE table): 2 steps of 2 prompts x 2 samples, 4 denoising steps. The
# transformer evaluations are counted by hooks, so they are checked against the methods' arithmetic:
ALGORITHM_ROWS = {  # label: (forward + backward, forward) over the 2 steps
    # per step: rollout 4 samples x 4 steps; 3 trained steps x 4 samples, forward and backward (no KL)
    "Flow-GRPO": (80, 56),
    # per step: rollout 16; the 1-step SDE window trained: 4 forward, 4 backward
    "Flow-GRPO-Fast": (48, 40),
    "MixGRPO": (48, 40),  # the same with a sliding window
    # per step: rollout 16 (old policy); 3 levels x 4 samples: old, current and reference (KL) forward, 1 backward
    "DiffusionNFT": (128, 104),
    # one round: 2 prompts x 4 samples x 4 steps; per step 2 pairs: policy forward + backward on both sides, reference
    "Flow-DPO online": (56, 48),
}
PLOTS = ("bench_algorithms", "bench_guidance")  # benchmarks that write a plot where --plot says
SIGNED = r"[+-]\d+\.\d+"

# bench_rewards.py prints one row per shipped preset, in the registry's order; served (remote) presets have no rate.
REWARD_ROWS = [
    rf"{re.escape(name)}\s+served\s+-\s+\(an OpenAI-compatible server's speed\)"
    if name.endswith("-remote")
    else rf"{re.escape(name)}\s+(pointwise|pairwise)\s+{NUMBER}\s+(items|pairs)/s"
    for name in sorted(p.stem for p in (REPO / "configs" / "rewards").glob("*.yaml"))
]

# benchmark: lines its output must contain (full-line regexes, in order); the last one must be the last line.
EXPECTED = {
    "bench_adv_grpo": [
        rf"GRPO step \(rollout, reward, advantages, update\): {NUMBER} s",
        rf"discriminator work, backbone outputs reused \(2 refs, 2 samples, 1 steps\): {NUMBER} s \({TIMES}\)",
        rf"discriminator/step: {PERCENT}",
    ],
    "bench_algorithms": [
        *(
            rf"{re.escape(label)}\s+{total}\s+{forward}\s+{NUMBER}\s+{SIGNED}\s+{NUMBER}\s+{SIGNED}\s+{NUMBER}\s+\d+"
            for label, (total, forward) in ALGORITHM_ROWS.items()
        ),
        rf"evaluations to Flow-GRPO's final gain {SIGNED}: Flow-GRPO 80, DiffusionNFT .+",
        rf"DiffusionNFT / Flow-GRPO gain per evaluation: ({TIMES}|none \(Flow-GRPO did not gain\))",
        r"goal >= 3x: (met|not met|not measured)",
        r"plot: .+\.png",
    ],
    "bench_async_reward": [
        r"2 samples in 2 micro-batches, 2 SDE steps, 1 trained",
        rf"sequential: rollout {NUMBER} s, reward {NUMBER} s, update {NUMBER} s",
        rf"sequential iteration: {NUMBER} s",
        rf"overlapped iteration: {NUMBER} s \(rollout {NUMBER} s, reward left after it {NUMBER} s\)",
        rf"goal 1\.15 x max\(rollout, reward\) \+ update = {NUMBER} s: (met|missed) \({TIMES} of it\)",
        r"ideal \(1 \+ 1/M\) / 2 with no update: 0\.75x",
        rf"overlap/sequential: {TIMES}",
    ],
    "bench_checklist": [
        rf"baseline: forward per test point\s+12\s+{NUMBER}\s+1\.00x",
        rf"check\(mode=logits\), batch 2\s+12\s+{NUMBER}\s+{TIMES}",
        rf"check\(mode=generate\), one batch\s+12\s+{NUMBER}\s+{TIMES}",
        rf"speedup: {TIMES}",
    ],
    "bench_flow_dpo": [
        *(rf"{phase}\s+{NUMBER}\s+{PERCENT}" for phase in ("data", "reference forward", "optimizer")),
        rf"program step\s+{NUMBER}",
        rf"bare transformer calls\s+{NUMBER}",
        rf"overhead: {PERCENT}",
    ],
    "bench_grpo": [
        *(
            rf"{mode}\s+{phase}\s+{NUMBER}\s+{NUMBER}\s+{PERCENT}"
            for mode in ("pointwise", "pairwise")
            for phase in ("rollout", "reward", "update", "step")
        ),
        rf"rollout with log-probs {NUMBER} s vs StableDiffusion3Pipeline {NUMBER} s: bookkeeping {PERCENT}",
        *(
            rf"{family} rollout with log-probs {NUMBER} s vs {pipeline} {NUMBER} s: bookkeeping {PERCENT}"
            for family, pipeline in (
                ("flux", "FluxPipeline"),
                ("qwenimage", "QwenImagePipeline"),
                ("zimage", "ZImagePipeline"),
                ("flux2klein", "Flux2KleinPipeline"),
                ("wan22", "WanPipeline"),
                ("wan22ti2v", "WanPipeline"),
                ("flux2", "Flux2Pipeline"),
                ("hunyuanvideo15", "HunyuanVideo15Pipeline"),
                ("qwenimage21", "QwenImage21Pipeline"),
                ("qwenimage-edit", "QwenImageEditPlusPipeline"),
                ("flux-kontext", "FluxKontextPipeline"),
            )
        ),
        rf"overhead: {PERCENT}",
    ],
    "bench_guidance": [
        rf"on\s+{NUMBER} MiB\s+{NUMBER} MiB\s+{NUMBER}s",
        rf"off\s+{NUMBER} MiB\s+{NUMBER} MiB\s+{NUMBER}s",
        *(
            rf"{re.escape(label)}\s+{f}\s+{b}\s+{d}\s+[+-]\d\.\d{{4}}\s+\d\.\d{{4}}\s+\d+%\s+{TIMES}"
            for label, (f, b, d) in GUIDANCE_ROWS.items()
        ),
        r"plot: .+\.png",
    ],
    "bench_sharding": [
        r"full fine-tuning, SD3 MM-DiT 2 layers x 2 heads x 16, 2 processes",
        *(
            rf"{mode}\s+{rank}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}"
            for mode in ("ddp", "fsdp2")
            for rank in (0, 1)
        ),
        # The counts are tensor sizes, not timings: exactly half, as the sharding of every tensor over 2 processes
        r"fsdp2 / ddp per process \(largest process\): 0\.5[0-4]\dx \(goal <= 0\.55x\)",
    ],
    "bench_pairwise": [
        rf"tiny judge: one-order speedup {TIMES}, both-orders speedup {TIMES}",
        rf"win_rate orders=both, batch 2\s+6\s+{NUMBER}\s+{TIMES}",
        rf"one-order speedup: {TIMES}",
        rf"speedup: {TIMES}",
    ],
    "bench_rewards": REWARD_ROWS,
    "bench_score": [
        *(rf"\({k}\) [a-z +,-]+\s+{NUMBER}" for k in "abcd"),
        *(rf"{name}\s+{NUMBER}\s+{NUMBER}\s+{TIMES}" for name in ("bigbuckbunny", "carphone_pristine")),
        rf"efficiency: {NUMBER}",
        rf"speedup: {TIMES}",
    ],
    "eval_metrics": [
        rf"   speed-up\s+:\s+{TIMES}",
        # counted from the shipped ImageReward test labels, so exact
        r"   both sides of each untied pair : 12798",
        r"   distinct \(prompt, image\)       : 2720",
        r"   fewer forward passes           : 4\.7x",
    ],
}


def test_every_benchmark_is_covered():
    # device_check.py is a GPU acceptance script, not a benchmark: tests/benchmarks/test_device_check.py covers it.
    benchmarks = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem != "device_check")
    assert sorted(EXPECTED) == benchmarks


def run_benchmark(name: str, out_dir: Path) -> subprocess.CompletedProcess:
    extra = ["--plot", str(out_dir / f"{name}.png")] if name in PLOTS else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--smoke", *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory) -> dict[str, Future]:
    """The selected benchmarks' smoke runs, started together; each test waits for its own."""
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module and "name" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    out_dir = tmp_path_factory.mktemp("benchmarks")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        yield {name: pool.submit(run_benchmark, name, out_dir) for name in dict.fromkeys(selected)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_smoke_run(name, smoke_runs):
    result = smoke_runs[name].result()
    assert result.returncode == 0, f"{name} --smoke failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    lines = result.stdout.strip().splitlines()
    position = 0
    for pattern in EXPECTED[name]:
        found = next((i for i in range(position, len(lines)) if re.fullmatch(pattern, lines[i])), None)
        assert found is not None, f"{name}: no line matching {pattern!r} after line {position}:\n{result.stdout}"
        position = found + 1
    assert position == len(lines), f"{name}: the last line is not {EXPECTED[name][-1]!r}:\n{result.stdout}"
    if name in PLOTS:
        plot = Path(re.fullmatch(r"plot: (.+)", lines[-1]).group(1))
        assert plot.is_file() and plot.stat().st_size > 0

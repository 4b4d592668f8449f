"""align/train_latent_reward.py on 2 gloo CPU processes, sharded with FSDP2
(configs/tiny/train_latent_reward_fsdp.yaml) and under DDP: both equal the one-process run with the same global batch
(same global batches and per-sample noise), checkpoints hold every process's shard, the resume from the sharded
step-3 checkpoint is exact, and the gathered latent_reward/ loads with load_latent_reward and scores as the
one-process model does. One launch runs the three 2-process runs (tests.program_runs)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.train_latent_reward import TrainLatentRewardConfig, main
from mmreward.guidance.latent_reward import LatentRewardModel, load_latent_reward, read_latent_reward_spec
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics
from tests.program_runs import Run, assert_resumed_exactly, launch_runs, shard_files

REPO = Path(__file__).resolve().parents[2]
CONFIG = ("--config", str(REPO / "configs" / "tiny" / "train_latent_reward_fsdp.yaml"))
WEIGHTS = Path("latent_reward") / "latent_reward.safetensors"


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[str, Path]:
    """The 2-process runs (4 pairs per process): ``sharded`` (FSDP2), ``ddp`` and ``resumed`` (``sharded`` from
    its step-3 checkpoint)."""
    root = tmp_path_factory.mktemp("fsdp")
    runs = {
        "sharded": Run(root / "sharded", CONFIG),
        "ddp": Run(root / "ddp", (*CONFIG, "--train.sharding", "ddp")),
        "resumed": Run(root / "resumed", CONFIG, root / "sharded" / "checkpoints" / "step-00000003"),
    }
    launch_runs("align/train_latent_reward.py", list(runs.values()))
    return {name: run.output for name, run in runs.items()}


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    """One process, 8 pairs per step: the 2-process runs' global batch (its checkpoints hold the whole weights)."""
    output = tmp_path_factory.mktemp("single")
    overrides = ["--output_dir", str(output), "--train.batch_size", "8", "--train.sharding", "ddp"]
    main(parse_config(TrainLatentRewardConfig, [*CONFIG, *overrides]))
    return output


@pytest.mark.parametrize("run", ["sharded", "ddp"])
def test_two_processes_equal_one_process(launched, single_run, run):
    """The same loss, accuracy and gradient norm at every step, the same held-out accuracy, and the same trained
    weights up to fp32 noise, which Adam magnifies for entries with near-zero gradients: each tensor within 1% of
    its update, the whole within 0.1% of the whole update."""
    single, two = read_metrics(single_run), read_metrics(launched[run])
    assert [r["step"] for r in two] == [r["step"] for r in single] == [1, 2, 3, 4, 5, 6, 6]  # 6 steps, then eval
    for a, b in zip(single[:6], two[:6], strict=True):
        for key in ("loss", "accuracy", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)
    assert single[-1] == two[-1]  # the held-out accuracies
    torch.manual_seed(0)  # train.seed: the program's initial weights
    initial = LatentRewardModel(read_latent_reward_spec(single_run / "latent_reward")).state_dict()
    one, other = load_file(single_run / WEIGHTS), load_file(launched[run] / WEIGHTS)
    assert set(one) == set(other) == set(initial)
    moved = apart = 0.0
    for key, value in one.items():
        update, gap = float((value - initial[key]).norm()), float((other[key] - value).norm())
        if key == "head.bias":
            # A shift of every reward cancels in the pairwise margin, so this gradient is zero up to rounding, and
            # Adam turns the rounding into steps of up to the learning rate (3e-3) in either direction: 6 steps.
            assert gap <= 2 * 6 * 3e-3
            continue
        assert gap <= 1e-2 * update + 1e-7, key
        moved, apart = moved + update**2, apart + gap**2
    assert math.sqrt(moved) > 0.1 and math.sqrt(apart) <= 1e-3 * math.sqrt(moved)


def test_sharded_checkpoints_hold_every_process_shard(launched):
    for run, files in (("sharded", ["__0_0.distcp", "__1_0.distcp"]), ("ddp", [])):
        step = launched[run] / "checkpoints" / "step-00000006"
        assert shard_files(step) == files
        assert {p.name for p in step.glob("rng-rank*.pt")} == {"rng-rank0.pt", "rng-rank1.pt"}
    # FSDP2 writes no whole copy of the weights into a checkpoint; DDP writes only the whole copy
    assert not list((launched["sharded"] / "checkpoints" / "step-00000006").glob("*.safetensors"))
    assert (launched["ddp"] / "checkpoints" / "step-00000006" / "latent_reward.safetensors").is_file()


def test_resume_from_the_sharded_checkpoint_is_exact(launched):
    assert [r["step"] for r in read_metrics(launched["resumed"])] == [4, 5, 6, 6]
    assert_resumed_exactly(launched["sharded"], launched["resumed"], 3, [WEIGHTS])


@pytest.mark.parametrize("run", ["sharded", "ddp"])
def test_the_saved_reward_loads_and_scores_as_the_one_process_model(launched, single_run, run):
    """latent_reward/ (gathered from the shards under FSDP2) loads with load_latent_reward, with its spec, and
    orders latents as the one-process model does: the same score differences (the head's bias, an offset the
    pairwise loss never sees, differs by Adam-scaled rounding; see above)."""
    one, two = load_latent_reward(single_run / "latent_reward"), load_latent_reward(launched[run] / "latent_reward")
    assert two.dims == ["brightness"] and two.spec.latent_shape == [4, 16, 16] and two.spec.training["steps"] == 6
    latents = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    text = torch.randn(3, two.spec.text_dim, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.1, 0.5, 0.9])
    a, b = one(latents, sigma, text), two(latents, sigma, text)  # (3, 1)
    assert len(set(a[:, 0].tolist())) == 3  # distinct scores: the differences below are not trivially zero
    torch.testing.assert_close(b - b[0], a - a[0], rtol=1e-4, atol=1e-5)

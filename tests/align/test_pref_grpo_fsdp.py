"""Pref-GRPO full fine-tuning sharded with FSDP2 on 2 gloo CPU processes (configs/tiny/pref_grpo_fsdp.yaml), launched
exactly as a user would on a machine without GPUs: equal to the one-process run, exact resume from the sharded
checkpoint, and the exported transformer loads into a diffusers pipeline without mmreward; LoRA sharded the same way.
One launch runs the sharded run, its resume from the step-1 checkpoint and the LoRA run (tests.program_runs)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.pref_grpo import PrefGRPOConfig, main
from mmreward.tiny_models import tiny_pipeline
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics
from tests.program_runs import Run, assert_lora_changes_tiny_sd3, assert_resumed_exactly, launch_runs, shard_files

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "tiny" / "pref_grpo_fsdp.yaml"
WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"
ADAPTER = Path("lora") / "pytorch_lora_weights.safetensors"
LORA = ("--model.train", "lora", "--lora.rank", "4", "--lora.alpha", "8", "--train.learning_rate", "3e-3")


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[str, Path]:
    """The 2-process runs: ``sharded`` (full fine-tuning), ``resumed`` (the same from ``sharded``'s step-1
    checkpoint) and ``lora`` (the adapter sharded)."""
    root = tmp_path_factory.mktemp("fsdp")
    config = ("--config", str(CONFIG))
    runs = {
        "sharded": Run(root / "sharded", config),
        "resumed": Run(root / "resumed", config, root / "sharded" / "checkpoints" / "step-00000001"),
        "lora": Run(root / "lora", (*config, *LORA)),
    }
    launch_runs("align/pref_grpo.py", list(runs.values()))
    return {name: run.output for name, run in runs.items()}


@pytest.fixture(scope="module")
def sharded_run(launched) -> Path:
    return launched["sharded"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("single")
    main(parse_config(PrefGRPOConfig, ["--config", str(CONFIG), "--output_dir", str(output)]))
    return output


def test_two_sharded_processes_equal_one_process(sharded_run, single_run):
    """Same rewards, advantages, gradient norms and KL at every step; the same fine-tuned weights up to fp32 noise
    (which Adam's first steps, close to sign(gradient), magnify for tiny gradient entries): the whole update
    differs by under 0.1% of its size, each weight's by under 1%."""
    single, sharded = read_metrics(single_run), read_metrics(sharded_run)
    assert [r["step"] for r in sharded] == [r["step"] for r in single] == [1, 2]
    for a, b in zip(single, sharded, strict=True):
        for key in ("reward/std", "reward/group_spread", "adv/mean_abs", "grad_norm", "update/optimizer_steps"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)
        assert b["update/kl"] == pytest.approx(a["update/kl"], rel=1e-3, abs=1e-12)
    assert single[1]["update/kl"] > 0  # the frozen reference is the initial transformer; the policy moved off it
    base = tiny_pipeline("sd3").transformer.state_dict()
    one, two = load_file(single_run / WEIGHTS), load_file(sharded_run / WEIGHTS)
    assert set(one) == set(two) == set(base)
    moved = apart = 0.0
    for key, value in one.items():
        update = (value - base[key]).norm()
        assert (two[key] - value).norm() <= 1e-2 * update + 1e-7, key
        moved, apart = moved + float(update) ** 2, apart + float((two[key] - value).norm()) ** 2
    assert math.sqrt(moved) > 1e-3 and math.sqrt(apart) <= 1e-3 * math.sqrt(moved)


def test_sharded_checkpoints_hold_every_process_shard(sharded_run):
    step = sharded_run / "checkpoints" / "step-00000002"
    assert shard_files(step) == ["__0_0.distcp", "__1_0.distcp"]
    assert {p.name for p in step.glob("rng-rank*.pt")} == {"rng-rank0.pt", "rng-rank1.pt"}
    assert not list(step.glob("*.safetensors"))  # no gathered copy: each process wrote its own shard


def test_resume_from_the_sharded_checkpoint_is_exact(launched):
    assert [r["step"] for r in read_metrics(launched["resumed"])] == [2]
    assert_resumed_exactly(launched["sharded"], launched["resumed"], 1, [WEIGHTS])


def test_exported_transformer_loads_into_a_pipeline_without_mmreward(sharded_run):
    """The export is the EMA weights in diffusers' model layout: from_pretrained loads it, and the pipeline built
    with it samples differently from the base pipeline."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel.from_pretrained(sharded_run / "transformer")
    exported = load_file(sharded_run / WEIGHTS)
    for name, value in transformer.state_dict().items():
        torch.testing.assert_close(value, exported[name], rtol=0, atol=0)
    base = tiny_pipeline("sd3")
    tuned = StableDiffusion3Pipeline(**{**base.components, "transformer": transformer})
    kwargs = {"height": 32, "width": 32, "num_inference_steps": 2, "guidance_scale": 1.0, "output_type": "pt"}
    kwargs["max_sequence_length"] = 32
    before = base("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    after = tuned("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert not torch.allclose(before, after)


def test_lora_sharded_with_fsdp2_equals_one_process_and_its_adapter_loads(launched, tmp_path):
    """The adapter is sharded with the frozen base it sits on; the reference is the base (adapter disabled), the
    export gathers the adapter into the diffusers LoRA format."""
    main(parse_config(PrefGRPOConfig, ["--config", str(CONFIG), "--output_dir", str(tmp_path / "one"), *LORA]))
    single, sharded = read_metrics(tmp_path / "one"), read_metrics(launched["lora"])
    assert [r["step"] for r in sharded] == [r["step"] for r in single] == [1, 2]
    for a, b in zip(single, sharded, strict=True):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["update/kl"] == pytest.approx(a["update/kl"], rel=1e-3, abs=1e-12)
    one, two = load_file(tmp_path / "one" / ADAPTER), load_file(launched["lora"] / ADAPTER)
    assert set(one) == set(two) and any("lora_B" in k and v.abs().sum() > 0 for k, v in two.items())
    for key, value in one.items():
        assert (two[key] - value).norm() <= 1e-2 * value.norm() + 1e-7, key
    assert_lora_changes_tiny_sd3(launched["lora"] / "lora")

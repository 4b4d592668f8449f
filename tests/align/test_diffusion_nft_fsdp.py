"""DiffusionNFT full fine-tuning sharded with FSDP2 on 2 gloo CPU processes (configs/tiny/diffusion_nft_fsdp.yaml),
launched as a user would on a machine without GPUs: equal to the one-process run, the old policy a sharded frozen
copy of the transformer that follows the trained weights by the EMA rule, exact resume from the sharded checkpoint,
and the exported transformer loads into a diffusers pipeline without mmreward; LoRA sharded the same way. One launch
runs the sharded run, its resume from the step-1 checkpoint, the LoRA run and its resume from the step-2 checkpoint
(tests.program_runs)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.diffusion_nft import DiffusionNFTConfig, main
from mmreward.tiny_models import tiny_pipeline
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics
from tests.program_runs import (
    Run,
    assert_lora_changes_tiny_sd3,
    assert_resumed_exactly,
    gathered_state,
    launch_runs,
    shard_files,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "tiny" / "diffusion_nft_fsdp.yaml"
WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"
ADAPTER = Path("lora") / "pytorch_lora_weights.safetensors"
LORA = ("--model.train", "lora", "--lora.rank", "4", "--lora.alpha", "8", "--train.learning_rate", "3e-3")
COMPARED = ("reward/std", "adv/mean_abs", "loss/nft", "loss/positive", "loss/negative", "grad_norm")


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[str, Path]:
    """The 2-process runs: ``sharded`` (full fine-tuning), ``resumed`` (the same from ``sharded``'s step-1
    checkpoint), ``lora`` (the adapter sharded) and ``lora_resumed`` (from ``lora``'s step-2 checkpoint, the first
    whose old policy is a sharded snapshot that lags the adapter)."""
    root = tmp_path_factory.mktemp("fsdp")
    config = ("--config", str(CONFIG))
    runs = {
        "sharded": Run(root / "sharded", config),
        "resumed": Run(root / "resumed", config, root / "sharded" / "checkpoints" / "step-00000001"),
        "lora": Run(root / "lora", (*config, *LORA)),
        "lora_resumed": Run(root / "lora_resumed", (*config, *LORA), root / "lora" / "checkpoints" / "step-00000002"),
    }
    launch_runs("align/diffusion_nft.py", list(runs.values()))
    return {name: run.output for name, run in runs.items()}


@pytest.fixture(scope="module")
def sharded_run(launched) -> Path:
    return launched["sharded"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("single")
    main(parse_config(DiffusionNFTConfig, ["--config", str(CONFIG), "--output_dir", str(output)]))
    return output


def test_two_sharded_processes_equal_one_process(sharded_run, single_run):
    """Same rewards, NFT losses, old-policy deviation, KL and gradient norms at every step; the same fine-tuned
    weights up to fp32 noise (the advantages divide by a reward std of ~3e-3, which magnifies it): the whole update
    differs by under 0.1% of its size."""
    single, sharded = read_metrics(single_run), read_metrics(sharded_run)
    assert [r["step"] for r in sharded] == [r["step"] for r in single] == [1, 2, 3]
    for a, b in zip(single, sharded, strict=True):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], rel=1e-3), (a["step"], key)
        for key in ("loss/kl", "old/deviation"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-12), (a["step"], key)
        assert b["old/decay"] == a["old/decay"]
    # Step 1 trains against an old policy equal to the initial weights (both forwards agree: no deviation, no KL);
    # afterwards the old policy lags the trained weights and the KL reference stays at the initial ones.
    assert single[0]["old/deviation"] == single[0]["loss/kl"] == 0.0
    assert single[1]["old/deviation"] > 0 and single[2]["loss/kl"] > single[1]["loss/kl"] > 0
    base = tiny_pipeline("sd3").transformer.state_dict()
    one, two = load_file(single_run / WEIGHTS), load_file(sharded_run / WEIGHTS)
    assert set(one) == set(two) == set(base)
    moved = apart = 0.0
    for key, value in one.items():
        moved += float((value - base[key]).norm()) ** 2
        apart += float((two[key] - value).norm()) ** 2
    assert math.sqrt(moved) > 1e-4 and math.sqrt(apart) <= 1e-3 * math.sqrt(moved)


def test_the_sharded_old_policy_follows_the_trained_weights_by_the_ema_rule(sharded_run, tmp_path):
    """Every process wrote its shard of the old policy next to the weights; gathered, the old policy after step 2
    is decay 0.5 x the old policy after step 1 + 0.5 x the trained weights after step 2, and after step 1 it is
    0.25 x the initial weights + 0.75 x the trained ones (the config's schedule: decay = min(0.25 x steps, 0.5))."""
    checkpoints = sharded_run / "checkpoints"
    assert shard_files(checkpoints / "step-00000002") == ["__0_0.distcp", "__1_0.distcp"]
    assert not list((checkpoints / "step-00000002").glob("*.safetensors"))  # no gathered copy was written
    first = gathered_state(checkpoints / "step-00000001", tmp_path / "1.pt")
    second = gathered_state(checkpoints / "step-00000002", tmp_path / "2.pt")
    initial = tiny_pipeline("sd3").transformer
    base, parameters = initial.state_dict(), {name for name, _ in initial.named_parameters()}
    old1, old2 = first["old_policy"]["weights"], second["old_policy"]["weights"]
    theta1, theta2 = first["model"], second["model"]
    trained = [name for name in theta1 if name in parameters]  # buffers (the position embedding) never move
    assert len(trained) == len(parameters)
    for name in trained:
        torch.testing.assert_close(old1[name], 0.25 * base[name] + 0.75 * theta1[name], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(old2[name], 0.5 * old1[name] + 0.5 * theta2[name], rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(old2[n], theta2[n]) for n in trained)  # the old policy lags the trained weights


def test_resume_from_the_sharded_checkpoint_is_exact(launched):
    assert [r["step"] for r in read_metrics(launched["resumed"])] == [2, 3]
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


def test_lora_sharded_with_fsdp2_equals_one_process_and_resumes_exactly(launched, tmp_path):
    """The adapter is sharded with the frozen base it sits on and the old policy is an adapter snapshot sharded
    like it: the same run as one process, an exact resume from the sharded snapshot, and an adapter that loads."""
    main(parse_config(DiffusionNFTConfig, ["--config", str(CONFIG), "--output_dir", str(tmp_path / "one"), *LORA]))
    single, sharded = read_metrics(tmp_path / "one"), read_metrics(launched["lora"])
    assert [r["step"] for r in sharded] == [r["step"] for r in single] == [1, 2, 3]
    assert single[1]["old/deviation"] > 0
    for a, b in zip(single, sharded, strict=True):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], rel=1e-3), (a["step"], key)
        assert b["old/deviation"] == pytest.approx(a["old/deviation"], rel=1e-3, abs=1e-12)
    one, two = load_file(tmp_path / "one" / ADAPTER), load_file(launched["lora"] / ADAPTER)
    assert set(one) == set(two) and any("lora_B" in k and v.abs().sum() > 0 for k, v in two.items())
    for key, value in one.items():
        assert (two[key] - value).norm() <= 1e-2 * value.norm() + 1e-7, key
    assert_lora_changes_tiny_sd3(launched["lora"] / "lora")
    assert [r["step"] for r in read_metrics(launched["lora_resumed"])] == [3]
    assert_resumed_exactly(launched["lora"], launched["lora_resumed"], 2, [ADAPTER])


def test_full_fine_tuning_without_kl_or_evaluation_builds_no_base_model_copy(tmp_path, monkeypatch):
    """With loss.kl_beta 0 and no evaluation nothing reads the base model, so only the old policy's copy is made."""
    import align.diffusion_nft as program

    policies = []
    load = program.load_policy

    def recording(*args, **kwargs):
        policies.append(load(*args, **kwargs))
        return policies[-1]

    monkeypatch.setattr(program, "load_policy", recording)
    overrides = ["--loss.kl_beta", "0", "--train.max_steps", "1", "--train.sharding", "ddp"]
    main(parse_config(DiffusionNFTConfig, ["--config", str(CONFIG), "--output_dir", str(tmp_path), *overrides]))
    (policy,) = policies
    assert policy.reference is None and policy.frozen_copy is not None
    assert read_metrics(tmp_path)[0]["loss/kl"] == 0.0

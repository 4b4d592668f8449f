"""DiffusionNFT full fine-tuning sharded with FSDP2 on 2 gloo CPU processes (configs/tiny/diffusion_nft_fsdp.yaml),
launched as a user would on a machine without GPUs: equal to the one-process run, the old policy a sharded frozen
copy of the transformer that follows the trained weights by the EMA rule, exact resume from the sharded checkpoint,
and the exported transformer loads into a diffusers pipeline without mmreward; LoRA sharded the same way."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.diffusion_nft import DiffusionNFTConfig, main
from mmreward.tiny_models import tiny_pipeline
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics
from tests.program_runs import accelerate_launch, assert_lora_changes_tiny_sd3

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "tiny" / "diffusion_nft_fsdp.yaml"
WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"
LORA = ["--model.train", "lora", "--lora.rank", "4", "--lora.alpha", "8", "--train.learning_rate", "3e-3"]
COMPARED = ("reward/std", "adv/mean_abs", "loss/nft", "loss/positive", "loss/negative", "grad_norm")


def _launch(output: Path, *overrides: str) -> None:
    # No ACCELERATE_USE_CPU: the programs train together over gloo when launched on a machine without GPUs.
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [*accelerate_launch(2), "align/diffusion_nft.py", "--config", str(CONFIG), "--output_dir", str(output)]
    result = subprocess.run([*command, *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _sharded_state(checkpoint: Path, into: Path) -> dict:
    """A sharded checkpoint's state gathered into one dict (torch's offline converter: no process group)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(checkpoint / "sharded", into)
    return torch.load(into, weights_only=False)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("fsdp")
    _launch(output)
    return output


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
    assert sorted(p.name for p in (checkpoints / "step-00000002" / "sharded").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert not list((checkpoints / "step-00000002").glob("*.safetensors"))  # no gathered copy was written
    first = _sharded_state(checkpoints / "step-00000001", tmp_path / "1.pt")
    second = _sharded_state(checkpoints / "step-00000002", tmp_path / "2.pt")
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


def test_resume_from_the_sharded_checkpoint_is_exact(sharded_run, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    shutil.copytree(sharded_run / "checkpoints" / "step-00000001", tmp_path / "checkpoints" / "step-00000001")
    (tmp_path / "checkpoints" / "latest").write_text("step-00000001")
    _launch(tmp_path)
    resumed = read_metrics(tmp_path)
    original = [r for r in read_metrics(sharded_run) if r["step"] > 1]
    assert [r["step"] for r in resumed] == [2, 3]
    strip = lambda row: {k: v for k, v in row.items() if not k.startswith("time/")}  # noqa: E731
    assert [strip(r) for r in resumed] == [strip(r) for r in original]
    a, b = load_file(sharded_run / WEIGHTS), load_file(tmp_path / WEIGHTS)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


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


def test_lora_sharded_with_fsdp2_equals_one_process_and_resumes_exactly(tmp_path):
    """The adapter is sharded with the frozen base it sits on and the old policy is an adapter snapshot sharded
    like it: the same run as one process, an exact resume from the sharded snapshot, and an adapter that loads."""
    _launch(tmp_path / "fsdp", *LORA)
    main(parse_config(DiffusionNFTConfig, ["--config", str(CONFIG), "--output_dir", str(tmp_path / "one"), *LORA]))
    single, sharded = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "fsdp")
    assert single[1]["old/deviation"] > 0
    for a, b in zip(single, sharded, strict=True):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], rel=1e-3), (a["step"], key)
        assert b["old/deviation"] == pytest.approx(a["old/deviation"], rel=1e-3, abs=1e-12)
    adapter = Path("lora") / "pytorch_lora_weights.safetensors"
    one, two = load_file(tmp_path / "one" / adapter), load_file(tmp_path / "fsdp" / adapter)
    assert set(one) == set(two) and any("lora_B" in k and v.abs().sum() > 0 for k, v in two.items())
    for key, value in one.items():
        assert (two[key] - value).norm() <= 1e-2 * value.norm() + 1e-7, key
    assert_lora_changes_tiny_sd3(tmp_path / "fsdp" / "lora")

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "fsdp" / "checkpoints" / "step-00000002", resumed / "checkpoints" / "step-00000002")
    (resumed / "checkpoints" / "latest").write_text("step-00000002")
    _launch(resumed, *LORA)
    assert [r["loss/nft"] for r in read_metrics(resumed)] == [r["loss/nft"] for r in sharded[2:]]
    a, b = load_file(tmp_path / "fsdp" / adapter), load_file(resumed / adapter)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


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

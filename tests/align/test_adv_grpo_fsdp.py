"""Adv-GRPO full fine-tuning sharded with FSDP2 on 2 gloo CPU processes (configs/tiny/adv_grpo_fsdp.yaml): equal to
the same 2 processes under DDP (each process draws its own references and patch tokens, seeded by its rank, so
one process is a different run), exact resume of the sharded policy and the discriminator, and the exported
transformer loads without mmreward."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmreward.tiny_models import tiny_pipeline
from mmreward.train.tracking import read_metrics
from tests.program_runs import accelerate_launch

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "tiny" / "adv_grpo_fsdp.yaml"
WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"
DISCRIMINATOR = Path("discriminator.safetensors")


def _launch(output: Path, *overrides: str) -> None:
    # No ACCELERATE_USE_CPU: the programs train together over gloo when launched on a machine without GPUs.
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [*accelerate_launch(2), "align/adv_grpo.py", "--config", str(CONFIG), "--output_dir", str(output)]
    result = subprocess.run([*command, *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("fsdp")
    _launch(output)
    return output


def test_sharded_equals_ddp_on_the_same_processes(sharded_run, tmp_path):
    """Same discriminator accuracy and loss, rewards, gradient norms and KL at every step; the same fine-tuned
    weights and discriminator up to fp32 noise."""
    _launch(tmp_path, "--train.sharding", "ddp")
    ddp, sharded = read_metrics(tmp_path), read_metrics(sharded_run)
    assert [r["step"] for r in sharded] == [r["step"] for r in ddp] == [1, 2, 3]
    for a, b in zip(ddp, sharded, strict=True):
        assert b["disc/accuracy"] == a["disc/accuracy"], a["step"]
        for key in ("disc/loss", "reward/mean", "adv/mean_abs", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-3), (a["step"], key)
        assert b["update/kl"] == pytest.approx(a["update/kl"], rel=1e-3, abs=1e-12)
    assert ddp[2]["update/kl"] > ddp[0]["update/kl"] > 0  # the frozen reference is the initial transformer
    base = tiny_pipeline("sd3").transformer.state_dict()
    one, two = load_file(tmp_path / WEIGHTS), load_file(sharded_run / WEIGHTS)
    assert set(one) == set(two) == set(base)
    for key, value in one.items():
        update = (value - base[key]).norm()
        assert (two[key] - value).norm() <= 1e-2 * update + 1e-7, key
    for key, value in load_file(tmp_path / DISCRIMINATOR).items():
        torch.testing.assert_close(load_file(sharded_run / DISCRIMINATOR)[key], value, rtol=1e-4, atol=1e-6)


def test_checkpoints_shard_the_policy_and_keep_the_discriminator_whole(sharded_run):
    step = sharded_run / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in (step / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert sorted(p.name for p in step.glob("*.safetensors")) == ["discriminator.safetensors"]
    assert (step / "discriminator_optimizer.state.pt").is_file()


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
    for name in (WEIGHTS, DISCRIMINATOR):
        a, b = load_file(sharded_run / name), load_file(tmp_path / name)
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def test_exported_transformer_loads_without_mmreward(sharded_run):
    from diffusers import SD3Transformer2DModel

    transformer = SD3Transformer2DModel.from_pretrained(sharded_run / "transformer")
    exported = load_file(sharded_run / WEIGHTS)
    base = tiny_pipeline("sd3").transformer.state_dict()
    for name, value in transformer.state_dict().items():
        torch.testing.assert_close(value, exported[name], rtol=0, atol=0)
    assert any(not torch.equal(exported[n], base[n]) for n in exported)

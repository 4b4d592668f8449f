"""align/flow_dpo.py fine-tuning the whole tiny SD3 transformer, sharded with FSDP2 on 2 gloo CPU processes: the
same losses and gradient norms as one process with the same global batch, the reference (a frozen copy of the
initial transformer) sharded too, and an exact resume from the sharded checkpoint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmreward.train.tracking import read_metrics
from tests.program_runs import accelerate_launch

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny" / "flow_dpo.yaml"
FULL = ["--model.train", "full", "--train.sharding", "fsdp2", "--train.learning_rate", "1e-4"]
WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"


def _run(output: Path, *args: str, processes: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = accelerate_launch(processes) if processes > 1 else [sys.executable]
    command = [*launcher, "align/flow_dpo.py", "--config", str(TINY), "--output_dir", str(output), *FULL, *args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("fsdp")
    _run(output, "--train.batch_size", "1", processes=2)  # 1 pair per process: the global batch of 2
    return output


def test_two_sharded_processes_equal_one_process(sharded_run, tmp_path):
    _run(tmp_path, processes=1)
    single, sharded = read_metrics(tmp_path), read_metrics(sharded_run)
    assert [r["step"] for r in sharded] == [r["step"] for r in single] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(single, sharded, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), a["step"]
    assert single[-1]["loss"] < single[0]["loss"]  # the policy moved away from its (sharded) reference
    one, two = load_file(tmp_path / WEIGHTS), load_file(sharded_run / WEIGHTS)
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-3, atol=1e-5)


def test_resume_from_the_sharded_checkpoint_is_exact(sharded_run, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    shutil.copytree(sharded_run / "checkpoints" / "step-00000003", tmp_path / "checkpoints" / "step-00000003")
    (tmp_path / "checkpoints" / "latest").write_text("step-00000003")
    _run(tmp_path, "--train.batch_size", "1", processes=2)
    resumed = read_metrics(tmp_path)
    original = [r for r in read_metrics(sharded_run) if r["step"] > 3]
    assert [r["step"] for r in resumed] == [4, 5, 6]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in original]
    a, b = load_file(sharded_run / WEIGHTS), load_file(tmp_path / WEIGHTS)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def test_online_lora_resume_restores_the_refreshed_reference_snapshot(tmp_path):
    """Online DPO with the LoRA sharded (FSDP2): the reference is refreshed at step 4 (an adapter snapshot, sharded
    like the adapter); resuming from that step's checkpoint restores the snapshot and ends bit-identical."""
    online = REPO / "configs" / "tiny" / "flow_dpo_online.yaml"
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def launch(output: Path) -> None:
        command = [*accelerate_launch(2), "align/flow_dpo.py", "--config", str(online), "--output_dir", str(output)]
        command += ["--train.sharding", "fsdp2"]
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    launch(tmp_path / "straight")
    rows = read_metrics(tmp_path / "straight")
    assert [r["reference_refreshes"] for r in rows] == [0, 0, 0, 1, 1, 1, 1, 2]
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-00000004", resumed / "checkpoints" / "step-00000004")
    (resumed / "checkpoints" / "latest").write_text("step-00000004")
    launch(resumed)
    assert [r["loss"] for r in read_metrics(resumed)] == [r["loss"] for r in rows[4:]]
    adapter = Path("lora") / "pytorch_lora_weights.safetensors"
    a, b = load_file(tmp_path / "straight" / adapter), load_file(resumed / adapter)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)

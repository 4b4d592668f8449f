"""benchmarks/device_check.py (the GPU acceptance script): without a GPU it refuses in one line with status 2, before
any check runs; its launched checks name shipped accelerate configs, and its program check a shipped tiny config."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "device_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_refuses_cleanly_without_a_gpu():
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "bf16"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert result.stdout.strip().splitlines() == [
        "device_check: no CUDA GPU is visible; run this on a GPU machine (the CPU suite covers the rest)"
    ]
    assert "Traceback" not in result.stderr


def test_checks_name_shipped_configs():
    module = _module()
    assert set(module.ACCELERATE_CONFIGS) | {"xformers", "bf16", "program"} == set(module.CHECKS)
    for config in module.ACCELERATE_CONFIGS.values():
        assert (REPO / "configs" / "accelerate" / config).is_file()
    assert (REPO / "configs" / "tiny" / "pref_grpo_fsdp.yaml").is_file()

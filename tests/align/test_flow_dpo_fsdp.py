"""align/flow_dpo.py fine-tuning the whole tiny SD3 transformer, sharded with FSDP2 on 2 gloo CPU processes: the
same losses and gradient norms as one process with the same global batch, the reference (a frozen copy of the
initial transformer) sharded too, and an exact resume from the sharded checkpoint; online DPO with the LoRA sharded
resumes its refreshed reference exactly. One launch runs the four 2-process runs (tests.program_runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.flow_dpo import FlowDPOConfig, main
from mmreward.train.config import parse_config
from mmreward.train.tracking import read_metrics
from tests.program_runs import Run, assert_resumed_exactly, launch_runs

REPO = Path(__file__).resolve().parents[2]
TINY = ("--config", str(REPO / "configs" / "tiny" / "flow_dpo.yaml"))
ONLINE = ("--config", str(REPO / "configs" / "tiny" / "flow_dpo_online.yaml"), "--train.sharding", "fsdp2")
FULL = ("--model.train", "full", "--train.sharding", "fsdp2", "--train.learning_rate", "1e-4")
WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"
ADAPTER = Path("lora") / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[str, Path]:
    """The 2-process runs: ``sharded`` (full fine-tuning, 1 pair per process: the global batch of 2), ``resumed``
    (the same from its step-3 checkpoint), ``online`` (online DPO, LoRA sharded, the reference refreshed every 4
    steps) and ``online_resumed`` (from ``online``'s step-4 checkpoint, right after the first refresh)."""
    root = tmp_path_factory.mktemp("fsdp")
    full = (*TINY, *FULL, "--train.batch_size", "1")
    runs = {
        "sharded": Run(root / "sharded", full),
        "resumed": Run(root / "resumed", full, root / "sharded" / "checkpoints" / "step-00000003"),
        "online": Run(root / "online", ONLINE),
        "online_resumed": Run(root / "online_resumed", ONLINE, root / "online" / "checkpoints" / "step-00000004"),
    }
    launch_runs("align/flow_dpo.py", list(runs.values()))
    return {name: run.output for name, run in runs.items()}


def test_two_sharded_processes_equal_one_process(launched, tmp_path):
    main(parse_config(FlowDPOConfig, [*TINY, *FULL, "--output_dir", str(tmp_path)]))
    single, sharded = read_metrics(tmp_path), read_metrics(launched["sharded"])
    assert [r["step"] for r in sharded] == [r["step"] for r in single] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(single, sharded, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), a["step"]
    assert single[-1]["loss"] < single[0]["loss"]  # the policy moved away from its (sharded) reference
    one, two = load_file(tmp_path / WEIGHTS), load_file(launched["sharded"] / WEIGHTS)
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-3, atol=1e-5)


def test_resume_from_the_sharded_checkpoint_is_exact(launched):
    assert [r["step"] for r in read_metrics(launched["resumed"])] == [4, 5, 6]
    assert_resumed_exactly(launched["sharded"], launched["resumed"], 3, [WEIGHTS])


def test_online_lora_resume_restores_the_refreshed_reference_snapshot(launched):
    """Online DPO with the LoRA sharded (FSDP2): the reference is refreshed at step 4 (an adapter snapshot, sharded
    like the adapter); resuming from that step's checkpoint restores the snapshot and ends bit-identical."""
    rows = read_metrics(launched["online"])
    assert [r["reference_refreshes"] for r in rows] == [0, 0, 0, 1, 1, 1, 1, 2]
    assert_resumed_exactly(launched["online"], launched["online_resumed"], 4, [ADAPTER])

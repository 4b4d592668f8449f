"""What the program tests share: an ``accelerate launch`` command for CPU processes, run through the running
interpreter (so a test does not depend on the environment's ``bin/`` being on PATH), and the check that a saved LoRA
loads into a fresh tiny SD3 pipeline with diffusers' own ``load_lora_weights`` and changes what it samples."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import torch

from mmreward.tiny_models import tiny_pipeline


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it), so that launches running side by side (parallel test
    workers) do not all rendezvous on accelerate's default 29500."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch(processes: int) -> list[str]:
    """``accelerate launch`` on ``processes`` CPU processes (gloo DDP with ``--multi_gpu`` when there are several;
    the caller sets ``ACCELERATE_USE_CPU=1`` for those), without mixed precision or dynamo, on a free port."""
    kind = ["--multi_gpu", "--main_process_port", str(free_port())] if processes > 1 else ["--cpu"]
    options = ["--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no"]
    return [sys.executable, "-m", "accelerate.commands.launch", *kind, *options, "--dynamo_backend", "no"]


def assert_lora_changes_tiny_sd3(lora_dir: Path) -> None:
    """ "a cat" from the tiny SD3 pipeline, same seed, before and after ``load_lora_weights(lora_dir)`` differ."""
    pipeline = tiny_pipeline("sd3")
    kwargs = {"height": 32, "width": 32, "num_inference_steps": 2, "guidance_scale": 1.0, "output_type": "pt"}
    kwargs["max_sequence_length"] = 32
    before = pipeline("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    pipeline.load_lora_weights(lora_dir)
    after = pipeline("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert not torch.allclose(before, after)

"""Launch checks shared by the training programs."""

from __future__ import annotations

import os
from typing import Any

import torch

from mmreward.errors import ConfigError


def make_accelerator(**kwargs: Any) -> Any:
    """The program's ``Accelerator``. Several processes launched on a machine without GPUs (``accelerate launch
    --multi_gpu`` or torchrun on CPU) train together over gloo: accelerate is told to use the CPU, which it would
    otherwise only do with ``ACCELERATE_USE_CPU=1`` (without it every process would train alone)."""
    from accelerate import Accelerator

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(cpu=several and not torch.cuda.is_available(), **kwargs)


def check_launch(accelerator: Any, sharding: str) -> str:
    """Fail early, with the fix, when a program is launched in a way it cannot train correctly: more processes
    than accelerate set up (:func:`check_launched_processes`), or an engine the programs do not drive
    (DeepSpeed; :func:`mmreward.train.sharding.resolve_sharding` names the alternative). DDP and FSDP2
    (``train.sharding: fsdp2`` or an accelerate config with ``distributed_type: FSDP``) train. Returns the
    sharding the run uses."""
    from mmreward.train.sharding import resolve_sharding

    check_launched_processes(accelerator)
    return resolve_sharding(sharding, accelerator)


def check_launched_processes(accelerator: Any) -> None:
    """Fail when more processes were launched than accelerate set up (each would train alone on its own data)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise ConfigError(
            f"{launched} processes were launched but accelerate set up {accelerator.num_processes}; launch with "
            "accelerate launch --multi_gpu (GPUs) or set ACCELERATE_USE_CPU=1 on a machine without GPUs"
        )

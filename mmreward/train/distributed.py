"""Launch checks shared by the training programs."""

from __future__ import annotations

import os
from typing import Any

from mmreward.errors import ConfigError


def require_ddp(accelerator: Any, program: str) -> None:
    """Fail early, with the fix, when a LoRA program is launched in a way it cannot train correctly.

    - More processes were launched than accelerate set up (:func:`check_launched_processes`).
    - DeepSpeed or FSDP: the adapter-disabled reference, the EMA of the adapter and exact checkpoints need the
      whole (small) adapter on every process, which DDP gives; the frozen base fits one GPU for the supported
      families (bf16 weights, ``model.gradient_checkpointing`` for activations).
    """
    from accelerate.utils import DistributedType

    check_launched_processes(accelerator)
    if accelerator.distributed_type not in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        raise ConfigError(
            f"{program} trains LoRA adapters under DDP (single or multi GPU); {accelerator.distributed_type} is not "
            "supported: the adapter-disabled reference, EMA and exact checkpoints need whole adapter weights on "
            "every process. Use configs/accelerate/single_gpu.yaml or multi_gpu.yaml with bf16 weights and "
            "model.gradient_checkpointing for memory"
        )


def check_launched_processes(accelerator: Any) -> None:
    """Fail when more processes were launched than accelerate set up: on a machine without GPUs, ``accelerate
    launch`` needs ``ACCELERATE_USE_CPU=1`` to run DDP over CPU processes (otherwise every process trains alone)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise ConfigError(
            f"{launched} processes were launched but accelerate set up {accelerator.num_processes}; on a machine "
            "without GPUs set ACCELERATE_USE_CPU=1 (accelerate launch --multi_gpu then runs DDP on the CPU)"
        )

"""Start and end of a training run, the same for every alignment program: the processes, the output folder with
the resolved config, the metrics tracker, and at the end the trained weights exported in the diffusers format
(the LoRA adapter, or the whole fine-tuned transformer), gathered from the shards under FSDP2."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import torch
from accelerate import Accelerator

from mmreward.errors import ConfigError
from mmreward.flow.models import check_attention
from mmreward.train.config import save_config
from mmreward.train.distributed import check_launch, make_accelerator
from mmreward.train.export import export_policy
from mmreward.train.policy import Policy
from mmreward.train.tracking import Tracker


class Run(NamedTuple):
    """The processes, the output folder (with the resolved config saved in it) and the metrics tracker."""

    accelerator: Accelerator
    output: Path
    tracker: Tracker


def start_processes(cfg: Any, program: str) -> Accelerator:
    """The processes of a program config with ``model`` and ``train`` sections; refuses launches the program cannot
    train under (DeepSpeed, fewer processes than launched) and attention backends the device lacks. Nothing is
    written yet, so checks that need the process count (and reading the prompts) can still fail cleanly before
    :func:`open_run`."""
    accelerator = make_accelerator(mixed_precision=cfg.train.mixed_precision)
    check_scale_support(cfg, program, check_launch(accelerator, cfg.train.sharding))
    check_attention(cfg.model.attention, accelerator.device)
    return accelerator


# Programs whose loop saves, resumes and exports through Policy.checkpoint_args / finish_policy_run, so that full
# fine-tuning and FSDP2 shards are handled: every alignment program; a new one is refused them until it is listed.
SCALED_PROGRAMS = ("pref_grpo", "flow_dpo", "diffusion_nft", "adv_grpo")


def check_scale_support(cfg: Any, program: str, sharding: str) -> None:
    """Refuse ``model.train: full`` and FSDP2 (``train.sharding`` or an FSDP accelerate config) in a program whose
    checkpoints are not written for them yet, naming the one that has them."""
    if program in SCALED_PROGRAMS:
        return
    if cfg.model.train != "lora" or sharding != "ddp":
        raise ConfigError(
            f"{program} trains LoRA under DDP (model.train lora, train.sharding ddp, multi_gpu.yaml); got model.train "
            f"{cfg.model.train} with {sharding}. Full fine-tuning and FSDP2 sharding are available in "
            f"{', '.join(f'align/{p}.py' for p in SCALED_PROGRAMS)}"
        )


def require_steps(max_steps: int) -> None:
    """``train.max_steps`` >= 0; 0 asks for a data check (:func:`data_checked`)."""
    if max_steps < 0:
        raise ConfigError(
            f"train.max_steps must be >= 0, got {max_steps} (0 reads the data and stops before any model loads)"
        )


def data_checked(program: str, counts: dict[str, int], accelerator: Accelerator) -> None:
    """The end of a ``train.max_steps 0`` run: the data was read (downloading pinned prompt sets on first use), so
    a recipe is known to start; one line per run says what was read. Nothing is written and no model loads."""
    if accelerator.is_main_process:
        read = ", ".join(f"{name}: {count}" for name, count in counts.items())
        print(f"{program}: data read ({read}); train.max_steps is 0, so no model is loaded and nothing is written")
    accelerator.end_training()


def open_run(cfg: Any, accelerator: Accelerator) -> Run:
    """:class:`Run` of a program config with ``output_dir`` and ``logging``: the output folder with the resolved
    config saved in it (by the main process) and the metrics tracker."""
    output = Path(cfg.output_dir)
    if accelerator.is_main_process:
        save_config(cfg, output)
    tracker = Tracker(
        output, cfg.logging, run_name=output.name, config=asdict(cfg), enabled=accelerator.is_main_process
    )
    return Run(accelerator, output, tracker)


def finish_policy_run(run: Run, policy: Policy) -> Path:
    """The end of a run: once every process is done, the trained weights (the EMA weights when EMA is on) are
    exported by :func:`mmreward.train.export.export_policy`: the adapter in the diffusers LoRA format to
    ``output/lora``, or the fine-tuned transformer in the diffusers model format to ``output/transformer``; then
    the tracker closes and the process group ends. Returns the exported folder."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    exported = export_policy(policy, run.output, is_main_process=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    run.tracker.close()
    accelerator.end_training()
    return exported


finish_lora_run = finish_policy_run  # the name the other alignment programs call


def clock(device: torch.device) -> float:
    """Wall time after the device's queued work (CUDA runs asynchronously): for the step-time split."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()

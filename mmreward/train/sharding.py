"""Sharded training with torch's FSDP2 (``torch.distributed.fsdp.fully_shard``): parameters, gradients and
optimizer state split over the processes, for full fine-tuning of models that do not fit one device with DDP.

Why torch's engine directly, not accelerate's FSDP plugin: accelerate's FSDP and DeepSpeed plugins need a GPU (on a
CPU machine a ``distributed_type: FSDP`` config silently becomes single-process training and ``Accelerator(cpu=True,
fsdp_plugin=...)`` wraps the model in DDP), so the sharded code path could not be tested where there is no GPU.
``fully_shard`` runs on CPU with gloo as on GPU with NCCL, so the programs call it themselves and the path users get
on GPUs is the one the tests run. The launch stays ``accelerate launch`` (or torchrun); accelerate sets up the
processes, the device and autocast, and never wraps the sharded model.

What this module does, the way the engine is meant to be used (PyTorch FSDP2 tutorial, torchtitan):

- :func:`shard_model`: ``fully_shard`` on every transformer block (the classes the model lists in
  ``_no_split_modules``, the same unit accelerate's transformer auto-wrap policy picks) and then on the root, which
  takes the remaining parameters (embeddings, norms, heads). Each block's parameters are all-gathered just before
  its forward and freed after it, so one block is whole at a time. Mixed precision is FSDP2's
  ``MixedPrecisionPolicy``: fp32 master parameters, compute in ``param_dtype`` (bf16/fp16), gradients reduced in
  fp32. Gradient checkpointing composes: a recomputed block all-gathers its parameters again in backward.
- :func:`clip_grad_norm`: the global gradient norm over the shards (a replicated DTensor) and the clipping.
- :class:`ShardedState`: checkpoint save and exact resume through ``torch.distributed.checkpoint`` (each process
  writes its shards), for the model, the optimizer and sharded extras (the EMA of sharded parameters). Exact
  resume needs the same process count (each process's random state is restored), which
  :func:`mmreward.train.checkpoint.load_checkpoint` checks.
- :func:`full_state_dict`: the whole weights gathered to the main process (CPU), for the exported model.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mmreward.errors import ConfigError

Sharding = Literal["ddp", "fsdp2"]
SHARDED_DIR = "sharded"  # the torch.distributed.checkpoint folder inside a checkpoint directory

_PRECISION = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_sharding(requested: str, accelerator: Any) -> Sharding:
    """The sharding a run uses: ``train.sharding``, or ``fsdp2`` when accelerate was launched with an FSDP config
    (``configs/accelerate/fsdp.yaml``: accelerate then only sets up the processes; the model is sharded here).
    DeepSpeed is refused with the alternative: its engine replaces the optimizer and the backward pass, which the
    programs' on-policy check, EMA and exact checkpoints are not written against."""
    from accelerate.utils import DistributedType

    if requested not in ("ddp", "fsdp2"):
        raise ConfigError(f"train.sharding must be ddp or fsdp2, got {requested!r}")
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        raise ConfigError(
            "DeepSpeed is not supported by the training programs: shard with FSDP2 instead (launch with "
            "configs/accelerate/fsdp.yaml, or multi_gpu.yaml and --train.sharding fsdp2), which shards parameters, "
            "gradients and optimizer state as ZeRO-3 does"
        )
    if kind == DistributedType.FSDP:
        return "fsdp2"
    if kind not in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        raise ConfigError(f"distributed type {kind} is not supported; use DDP (multi_gpu.yaml) or FSDP2 (fsdp.yaml)")
    return requested  # type: ignore[return-value]


def block_classes(module: nn.Module) -> set[str]:
    """Class names of ``module``'s transformer blocks: its ``_no_split_modules`` (diffusers and transformers models
    list them; e.g. SD3 ``JointTransformerBlock``, FLUX both block kinds, Qwen2-VL decoder and vision blocks)."""
    names = set(getattr(module, "_no_split_modules", None) or [])
    if not names:
        raise ConfigError(
            f"{type(module).__name__} does not name its transformer blocks (_no_split_modules), so FSDP2 cannot "
            "shard it block by block; use train.sharding: ddp"
        )
    return names


def shard_model(
    module: nn.Module,
    *,
    mixed_precision: str = "no",
    reshard_after_forward: bool = True,
    blocks: set[str] | None = None,
) -> int:
    """``fully_shard`` every block of ``module`` and then the root, in place (the module keeps its class
    interface; it becomes an ``FSDPModule`` whose parameters are DTensors sharded on dim 0). Needs the process
    group (accelerate sets it up). Returns the number of blocks sharded.

    ``mixed_precision`` (``train.mixed_precision``): ``no`` computes in the parameters' dtype; ``bf16``/``fp16``
    casts the gathered parameters to that dtype for compute and reduces gradients in fp32 (the master parameters
    and the optimizer stay in their own dtype). ``blocks``: the block class names, default
    :func:`block_classes` of ``module``."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    names = blocks or block_classes(module)
    param_dtype = _PRECISION[mixed_precision]
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    blocks = [m for m in module.modules() if type(m).__name__ in names and m is not module]
    if not blocks:
        raise ConfigError(f"none of {sorted(names)} is a submodule of {type(module).__name__}; cannot shard it")
    for block in blocks:
        fully_shard(block, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(module, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return len(blocks)


def shard_with_groups(
    module: nn.Module, groups: list[dict[str, Any]], *, blocks_of: nn.Module | None = None, mixed_precision: str = "no"
) -> list[dict[str, Any]]:
    """:func:`shard_model` on ``module`` (its blocks found on ``blocks_of``, default ``module``: a wrapper such as a
    reward scorer shards the blocks of the model it holds) and the optimizer parameter ``groups`` rebuilt on the
    sharded parameters (``fully_shard`` replaces every parameter by a DTensor one; names stay)."""
    names = {id(p): name for name, p in module.named_parameters()}
    by_name = [[names[id(p)] for p in group["params"]] for group in groups]
    shard_model(module, mixed_precision=mixed_precision, blocks=block_classes(blocks_of or module))
    params = dict(module.named_parameters())
    return [{**group, "params": [params[n] for n in named]} for group, named in zip(groups, by_name, strict=True)]


class OptimizerSteps:
    """The optimizer and learning-rate schedule of a loop with gradient accumulation, stepped as accelerate's
    wrappers step them: once per optimizer step (when the gradients sync), the schedule ``num_processes`` times (it
    counts per-process batches). ``prepared``: both are accelerate's wrappers already, which do this themselves;
    otherwise (FSDP2: accelerate never sees the model) it is done here."""

    def __init__(self, optimizer: Any, scheduler: Any, accelerator: Any, *, prepared: bool) -> None:
        self.optimizer, self.scheduler, self.accelerator, self.prepared = optimizer, scheduler, accelerator, prepared

    def step(self) -> None:
        if self.prepared:
            self.optimizer.step()
            self.scheduler.step()
        elif self.accelerator.sync_gradients:
            self.optimizer.step()
            for _ in range(self.accelerator.num_processes):
                self.scheduler.step()

    def zero_grad(self) -> None:
        if self.prepared or self.accelerator.sync_gradients:
            self.optimizer.zero_grad()


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the gradients of sharded ``params`` to the global norm ``max_norm`` and return the norm before
    clipping (the norm over all shards of all processes: torch reduces the DTensor norm across the mesh)."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)


def _state_options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**kwargs)


def full_state_dict(module: nn.Module, *, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The whole weights of a sharded ``module`` on the main process (CPU tensors; an empty dict elsewhere).
    Every process must call it (the shards are gathered). ``trainable_only`` keeps the parameters with
    ``requires_grad`` (a LoRA adapter)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(module, options=_state_options(full_state_dict=True, cpu_offload=True))
    if trainable_only:
        keep = {name for name, p in module.named_parameters() if p.requires_grad}
        state = {name: t for name, t in state.items() if name in keep}
    return {name: t.detach().contiguous() for name, t in state.items()}


class ShardedState:
    """The part of a checkpoint every process writes and reads: the model's (trainable) weights, the optimizer
    state and ``extras`` (objects with ``state_dict``/``load_state_dict`` whose tensors may be sharded, e.g. the
    EMA of sharded parameters), through ``torch.distributed.checkpoint`` into ``<checkpoint>/sharded/``.

    Loading is in place into the live (sharded) tensors, so a resume restores exactly what was saved."""

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        trainable_only: bool,
        extras: dict[str, Any] | None = None,
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.trainable_only = trainable_only
        self.extras = extras or {}

    def _state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        model = get_model_state_dict(self.module)
        if self.trainable_only:
            keep = {name for name, p in self.module.named_parameters() if p.requires_grad}
            model = {name: t for name, t in model.items() if name in keep}
        optimizer = get_optimizer_state_dict(self.module, self.optimizer)
        return {"model": model, "optimizer": optimizer, **{n: obj.state_dict() for n, obj in self.extras.items()}}

    def save(self, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp

        with _single_process_quiet():
            dcp.save(self._state(), checkpoint_id=str(directory / SHARDED_DIR))

    def load(self, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        path = directory / SHARDED_DIR
        if not path.is_dir():
            raise ConfigError(
                f"checkpoint {str(directory)!r} has no sharded state ({SHARDED_DIR}/): it was written with "
                "train.sharding ddp; resume with the same sharding or start a new output_dir"
            )
        state = self._state()
        with _single_process_quiet():
            dcp.load(state, checkpoint_id=str(path))
        set_model_state_dict(self.module, state["model"], options=_state_options(strict=not self.trainable_only))
        set_optimizer_state_dict(self.module, self.optimizer, state["optimizer"])
        for name, obj in self.extras.items():
            obj.load_state_dict(state[name])


@contextmanager
def _single_process_quiet() -> Iterator[None]:
    """Silence torch's warning that a checkpoint is saved or loaded without a process group: one process runs
    without one on purpose (a plain ``python`` run; the checkpoint layout is the same as under a launcher)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield

"""Atomic checkpoints and exact resume for the training programs.

A checkpoint directory ``<root>/step-00000042/`` holds

- ``<name>.safetensors`` for each module: its trainable parameters only (LoRA weights, heads), or the full
  state dict with ``trainable_only=False``;
- ``<name>.optimizer.pt`` / ``<name>.scheduler.pt`` for each optimizer / scheduler, and any extra state objects
  (EMA, a discriminator's optimizer) through their ``state_dict``;
- ``rng-rank<r>.pt``: Python, NumPy and torch (CPU and CUDA) random states of every process;
- ``state.json``: the step counter and whatever small JSON the program adds (epoch, data position, counters).

Everything is written into a hidden temporary directory that is renamed into place only when complete, so an
interrupted save never leaves a checkpoint that looks valid; ``latest`` names the newest one. Resuming restores
all of it, so a resumed run continues exactly as the uninterrupted run would have (same samples, same noise).
Distributed runs: every rank writes its RNG state, the main process writes the rest (weights and optimizer
states are replicated under DDP). Sharded runs (FSDP2) add a ``collective`` state that every process writes and
reads (:class:`mmreward.train.sharding.ShardedState`: ``sharded/``, torch.distributed.checkpoint's layout) for
what is split over the processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmreward.errors import MMRewardError

LATEST = "latest"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class CollectiveState(Protocol):
    """State that every process saves and loads together (its shards), into and from a checkpoint directory."""

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


def module_state(module: nn.Module, trainable_only: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of ``module`` worth saving: trainable parameters, or everything."""
    if trainable_only:
        return {name: p.detach().cpu().contiguous() for name, p in module.named_parameters() if p.requires_grad}
    return {name: t.detach().cpu().contiguous() for name, t in module.state_dict().items()}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    modules: dict[str, nn.Module],
    states: dict[str, Stateful] | None = None,
    extra: dict[str, Any] | None = None,
    trainable_only: bool = True,
    keep_last: int | None = 2,
    rank: int = 0,
    barrier: Callable[[], None] = lambda: None,
    collective: CollectiveState | None = None,
) -> Path:
    """Write a checkpoint for ``step`` under ``root`` atomically and return its directory.

    Args:
        modules: models to save (unwrapped from DDP), by name.
        states: optimizers, schedulers, EMA and other objects with ``state_dict``/``load_state_dict``, by name.
        extra: small JSON-serializable program state (epoch, counters, data position).
        keep_last: delete older checkpoints beyond this many (None keeps all).
        rank, barrier: the process rank and a barrier across processes (``accelerator.wait_for_everyone``) for
            distributed runs; every rank must call this function.
        collective: sharded state every rank writes into the checkpoint (model and optimizer under FSDP2).
    """
    root = Path(root)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if collective is not None:
        collective.save(tmp)
    if rank == 0:
        for name, module in modules.items():
            save_file(module_state(module, trainable_only), str(tmp / f"{name}.safetensors"))
        for name, obj in (states or {}).items():
            torch.save(obj.state_dict(), tmp / f"{name}.state.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}, indent=2))
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer = root / f".{LATEST}.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, root / LATEST)
        if keep_last is not None:
            for old in sorted(root.glob("step-*"))[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load_checkpoint(
    path: str | Path,
    *,
    modules: dict[str, nn.Module],
    states: dict[str, Stateful] | None = None,
    rank: int = 0,
    restore_rng: bool = True,
    collective: CollectiveState | None = None,
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns its ``state.json`` (with ``step``).

    Module tensors are loaded with ``strict`` checking of the saved names: every saved tensor must exist in the
    module (a mismatch means the checkpoint belongs to another model or LoRA configuration). ``collective``:
    the sharded state saved with :func:`save_checkpoint` (every rank must call this function then).
    """
    path = Path(path)
    if not (path / "state.json").is_file():
        raise MMRewardError(f"{str(path)!r} is not a complete checkpoint (no state.json)")
    for name, module in modules.items():
        tensors = load_file(str(path / f"{name}.safetensors"))
        own = dict(module.named_parameters()) | dict(module.named_buffers())
        missing = sorted(set(tensors) - set(own))
        if missing:
            raise MMRewardError(
                f"checkpoint {str(path)!r} has tensors {missing[:5]} that module {name!r} lacks; it was written "
                "for another model or LoRA configuration"
            )
        with torch.no_grad():
            for key, value in tensors.items():
                own[key].copy_(value.to(own[key].device, own[key].dtype))
    if collective is not None:
        collective.load(path)
    # The .pt files below hold optimizer and RNG states (NumPy arrays, Python tuples) that weights_only loading
    # refuses; they are files this module wrote, never downloaded ones.
    for name, obj in (states or {}).items():
        obj.load_state_dict(torch.load(path / f"{name}.state.pt", map_location="cpu", weights_only=False))
    if restore_rng:
        rng_file = path / f"rng-rank{rank}.pt"
        if not rng_file.is_file():
            raise MMRewardError(
                f"{str(path)!r} has no random state for rank {rank}; resume with the same number of processes"
            )
        set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((path / "state.json").read_text())

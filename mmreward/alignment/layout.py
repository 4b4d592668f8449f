"""How the ``P x G`` samples of a GRPO iteration are laid out over the processes: which prompts an iteration draws,
which process holds which sample, and moving rows to the process that needs them.

The samples are prompt-major (global sample ``i`` belongs to prompt ``i // G``) and every process holds one
contiguous slice, so the same run on 1 or N processes draws, rewards and trains the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmreward.errors import ConfigError
from mmreward.flow.rollout import seeded


@dataclass(frozen=True)
class GroupLayout:
    """The ``P x G`` samples of one iteration, prompt-major (global sample ``i`` belongs to prompt ``i // G``),
    split into contiguous slices of ``N = P G / world`` samples: process ``r`` holds samples ``[r N, (r + 1) N)``.

    Groups are *local* when every slice holds whole groups (``N % G == 0``); otherwise a group spans processes and
    rewards that need whole groups are computed by the group's owner (:meth:`owner`) after a gather.
    """

    prompts: int
    group_size: int
    world: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        if self.total % self.world:
            raise ConfigError(
                f"{self.prompts} prompts x {self.group_size} samples = {self.total} samples per step cannot be split "
                f"evenly over {self.world} processes; make rollout.prompts_per_step x rollout.group_size a multiple "
                f"of {self.world}"
            )

    @property
    def total(self) -> int:
        return self.prompts * self.group_size

    @property
    def per_rank(self) -> int:
        return self.total // self.world

    @property
    def groups_are_local(self) -> bool:
        return self.per_rank % self.group_size == 0

    def local_index(self) -> torch.Tensor:
        """``(N,)`` global indices of this process's samples."""
        return torch.arange(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)

    def owner(self, group: int) -> int:
        """The process that computes group-level rewards for ``group``: its holder when groups are local, else
        round-robin (every process judges about as many groups)."""
        if self.groups_are_local:
            return group * self.group_size // self.per_rank
        return group % self.world

    def owners(self) -> torch.Tensor:
        """``(P G,)`` the owner of each sample's group."""
        per_group = torch.tensor([self.owner(g) for g in range(self.prompts)])
        return per_group.repeat_interleave(self.group_size)


def iteration_prompts(prompts: Sequence[str], iteration: int, count: int, seed: int) -> list[str]:
    """The ``count`` prompts of an iteration: consecutive slices of a stream of seeded permutations of the prompt
    set (every prompt once per pass), the same on every process and after a resume."""
    chosen = []
    for k in range(count):
        epoch, offset = divmod(iteration * count + k, len(prompts))
        order = torch.randperm(len(prompts), generator=seeded(seed, "prompts", epoch))
        chosen.append(prompts[int(order[offset])])
    return chosen


def exchange_rows(local: torch.Tensor, destination: torch.Tensor, accelerator: Any, max_bytes: int = 1 << 26):
    """Deliver rows of a tensor laid out like :class:`GroupLayout` (process ``r`` holds global rows
    ``[r N, (r + 1) N)``) to the process that needs each.

    ``destination`` is ``(world N,)``, the same on every process: the rank that needs each global row, or -1.
    Returns ``(index, rows)`` of the rows this process receives, in increasing global index. Every process must call
    this (the transfers are collective); rows go in chunks of at most ``max_bytes`` per process, so peak memory stays
    bounded whatever the batch.
    """
    rank, world = accelerator.process_index, accelerator.num_processes
    size = local.shape[0]
    if destination.shape != (world * size,):
        raise ValueError(f"destination must have one entry per global row ({world * size}), got {destination.shape}")
    if world == 1:
        index = (destination == rank).nonzero().flatten()
        return index, local[index.to(local.device)]
    needed = destination.view(world, size)  # (world, N): who needs row k of process r
    positions = (needed >= 0).any(dim=0).nonzero().flatten().tolist()
    row_bytes = max(1, local[0].numel() * local.element_size())
    chunk = max(1, max_bytes // (row_bytes * world))
    kept_index, kept_rows = [], []
    for start in range(0, len(positions), chunk):
        part = positions[start : start + chunk]
        gathered = accelerator.gather(local[part].contiguous())  # (world * len(part), ...), process-major
        for r in range(world):
            for t, k in enumerate(part):
                if int(needed[r, k]) == rank:
                    kept_index.append(r * size + k)
                    kept_rows.append(gathered[r * len(part) + t])
    if not kept_rows:
        return torch.zeros(0, dtype=torch.long), local[:0]
    order = sorted(range(len(kept_index)), key=kept_index.__getitem__)
    return torch.tensor([kept_index[i] for i in order]), torch.stack([kept_rows[i] for i in order])

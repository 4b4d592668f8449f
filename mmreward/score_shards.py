"""``mmreward score`` on many processes, and resuming an interrupted run (``eval/gen_bench.py`` shares the launch
helpers and :func:`batch_share` to draw its samples on many processes).

Launched by ``accelerate launch -m mmreward score ...`` or ``torchrun -m mmreward score ...`` (any launcher that sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``), every process expands the same inputs, takes every ``world``-th item
still missing (``missing[rank::world]``, so processes get about as many items of each part of the input), scores
them and appends each row, as soon as its batch is scored, to its own part file under ``.<output name>.parts/``
beside the output. When all processes are done (a barrier), rank 0 merges the part files into the one output file,
in input order, atomically (a temporary file renamed over it), and removes the part files.

A run that stops (killed, out of memory, a lost machine) leaves its part files: the next run with the same output
and the same rewards reads every complete row from all part files, whatever the number of processes that wrote
them, and scores only the items that have none. A row belongs to an item by its position in the expanded inputs,
its path, prompt and file size, so a changed input list or a rewritten file is scored again. The part files start
with a fingerprint of the rewards (:func:`mmreward.evaluation.score_cache.reward_fingerprint` of each, with its
weight and the video sampling options): rows scored with other rewards are refused, never mixed in.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from mmreward.errors import ConfigError
from mmreward.score_inputs import Item

PART_GLOB = "part-*.jsonl"


@dataclass(frozen=True)
class Processes:
    """This process's place in the launch: ``rank`` of ``world``, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_processes(env: dict[str, str] | None = None) -> Processes:
    """The launch from the environment that torchrun and accelerate set (one process when they are absent)."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {err}") from err
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world}; start with torchrun or accelerate launch")
    return Processes(rank, world, local_rank)


def start_group(processes: Processes) -> None:
    """Join the process group (gloo: the barrier needs no GPU) when there are several processes. The timeout is a
    day: a process that finishes its shard waits at the barrier for the slowest one."""
    import torch.distributed as dist

    if processes.world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(days=1))


def barrier(processes: Processes) -> None:
    if processes.world > 1:
        import torch.distributed as dist

        dist.barrier()


def end_group(processes: Processes) -> None:
    import torch.distributed as dist

    if processes.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def row_key(position: int, item: Item) -> str:
    """Which item a recorded row belongs to: its position in the expanded inputs, path, prompt and file size, and
    its source image's path when it has one (a row scored against another source is not this item's)."""
    try:
        size = os.stat(item.path).st_size if item.error is None else -1
    except OSError:
        size = -1
    key: list[Any] = [position, item.path, item.prompt, size]
    return json.dumps(key if item.source is None else [*key, item.source])


def parts_dir(output: str | os.PathLike) -> Path:
    """Where the processes record their rows: ``.<output name>.parts/`` beside the output."""
    path = Path(output)
    return path.with_name(f".{path.name}.parts")


def read_parts(directory: Path, fingerprint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every complete row recorded under ``directory``: ``{row key: row}``. A part file written for other rewards is
    refused; a last line cut short by an interruption is skipped (its item is scored again)."""
    done: dict[str, dict[str, Any]] = {}
    expected = json.loads(json.dumps(fingerprint, default=str))
    for path in sorted(directory.glob(PART_GLOB)):
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines:
            continue
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = {}
        if header.get("fingerprint") != expected:
            raise ConfigError(
                f"{path} holds rows scored with other rewards or options than this run's; delete {directory} to "
                "score everything again, or run with the options it was started with"
            )
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[record["key"]] = record["row"]
    return done


class PartWriter:
    """This process's part file: a header with the fingerprint, then one ``{"key", "row"}`` line per scored row,
    flushed as written (a new file per run and rank, so no two processes ever append to one file)."""

    def __init__(self, directory: Path, processes: Processes, fingerprint: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        run = len(list(directory.glob(f"part-*-rank{processes.rank:05d}.jsonl")))
        self.path = directory / f"part-{run:03d}-rank{processes.rank:05d}.jsonl"
        self._file = self.path.open("x", encoding="utf-8")
        self._file.write(json.dumps({"fingerprint": fingerprint}, default=str) + "\n")
        self._file.flush()

    def write(self, key: str, row: dict[str, Any]) -> None:
        self._file.write(json.dumps({"key": key, "row": row}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def my_share(keys: list[str], done: Iterable[str], processes: Processes) -> list[int]:
    """Positions of the items this process scores: every ``world``-th of those without a recorded row."""
    recorded = set(done)
    missing = [i for i, key in enumerate(keys) if key not in recorded]
    return missing[processes.rank :: processes.world]


def batch_share(count: int, batch_size: int, processes: Processes) -> list[int]:
    """Positions of the items this process draws when ``count`` items are drawn ``batch_size`` at a time: every
    ``world``-th batch, so each model call holds the items it would hold on one process (batched kernels give
    the same numbers)."""
    batches = [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]
    return [i for batch in batches[processes.rank :: processes.world] for i in batch]


def merged_rows(keys: list[str], directory: Path, fingerprint: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The rows of every item, in input order, from all part files (rank 0, after the barrier)."""
    done = read_parts(directory, fingerprint)
    missing = [i for i, key in enumerate(keys) if key not in done]
    if missing:
        raise ConfigError(
            f"{len(missing)} items have no scored row in {directory} after every process finished (first: input "
            f"{missing[0]}); run the same command again to score them"
        )
    return (done[key] for key in keys)


def remove_parts(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)

"""The non-finite-loss decision is taken jointly by all processes (2 real CPU processes, gloo). Kept in a module
with light imports: every spawned process imports it."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from mmreward.train.guards import finite_everywhere


def _finite_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        ACCELERATE_USE_CPU="1",
    )
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    losses = [1.0, float("nan") if rank == 1 else 2.0, 3.0]  # process 1 alone has a NaN at the second step
    decisions = [finite_everywhere(torch.tensor(loss), accelerator.reduce) for loss in losses]
    # accelerate's reduce has no "min": it sums, so "all finite" via reduce(isfinite, "min") == 1 would be wrong
    summed_min = float(accelerator.reduce(torch.tensor([float(rank == 0)]), "min"))
    Path(out, f"{rank}.json").write_text(json.dumps({"decisions": decisions, "min": summed_min}))
    # Tear the gloo group down before exiting: a process that exits with it alive aborts ("terminate called
    # without an active exception") when its background threads are destroyed.
    accelerator.wait_for_everyone()
    accelerator.end_training()


def test_nonfinite_losses_are_decided_jointly_across_processes(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_finite_worker, args=(port, str(tmp_path)), nprocs=2)
    for rank in range(2):
        result = json.loads((tmp_path / f"{rank}.json").read_text())
        assert result == {"decisions": [True, False, True], "min": 1.0}

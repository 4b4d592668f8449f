"""Run under ``accelerate launch`` by :func:`tests.program_runs.launch_runs`: the runs of a plan (a JSON file:
``{"program": "align/x.py", "runs": [{"args": [...], "output": DIR, "resume_from": CHECKPOINT or null, "port": N}]}``)
one after the other in the same processes, each executed as ``__main__`` with its arguments, as ``accelerate launch
align/x.py ARGS`` would execute it. A program ends by destroying the process group (``Accelerator.end_training``);
accelerate's shared state is reset after each run so that the next one sets the group up again, on the run's own
port. A run with ``resume_from`` gets that checkpoint copied into its output as the latest one by the first process;
the others wait for the ``latest`` pointer, which is written last and atomically (there is no process group between
two runs to wait on)."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
import time
from pathlib import Path

from accelerate.state import AcceleratorState, GradientState


def _prepare_resume(checkpoint: Path, output: Path, rank: int) -> None:
    pointer = output / "checkpoints" / "latest"
    if rank == 0:
        shutil.copytree(checkpoint, output / "checkpoints" / checkpoint.name)
        pointer.with_suffix(".tmp").write_text(checkpoint.name)
        pointer.with_suffix(".tmp").replace(pointer)
        return
    deadline = time.monotonic() + 300
    while not pointer.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {rank}: {pointer} was not written within 300 s")
        time.sleep(0.05)


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    # The program's folder first on the path, as when the launch runs the script itself; this file's folder (tests/,
    # whose mmreward/ and align/ test packages would shadow the real ones) is not on it.
    sys.path[0] = str(Path(plan["program"]).resolve().parent)
    for index, run in enumerate(plan["runs"]):
        if index:
            # A fresh rendezvous store per run, hosted by the first process on a port of its own: in the launcher's
            # store the previous group's keys remain under the names the new group uses, and a process that reached
            # the new group first would read the other's old gloo address and fail to connect.
            os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)
            os.environ["MASTER_PORT"] = str(run["port"])
        if run["resume_from"] is not None:
            _prepare_resume(Path(run["resume_from"]), Path(run["output"]), rank)
        sys.argv = [plan["program"], *run["args"]]
        runpy.run_path(plan["program"], run_name="__main__")
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


if __name__ == "__main__":
    main()

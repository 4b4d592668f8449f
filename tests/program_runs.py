"""What the program tests share: an ``accelerate launch`` command for CPU processes, run through the running
interpreter (so a test does not depend on the environment's ``bin/`` being on PATH); :func:`launch_runs`, several
runs of one training program in one multi-process launch (a run, a resume from its checkpoint, a variant), so that a
test module pays the launch and the imports once; the resume and sharded-checkpoint checks the FSDP2 tests repeat;
and the check that a saved LoRA loads into a fresh tiny SD3 pipeline with diffusers' own ``load_lora_weights`` and
changes what it samples."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from mmreward.tiny_models import tiny_pipeline
from mmreward.train.tracking import read_metrics

REPO = Path(__file__).resolve().parents[1]
SEQUENCE = Path(__file__).resolve().with_name("run_in_sequence.py")


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


@dataclass(frozen=True)
class Run:
    """One run of :func:`launch_runs`: the program's arguments (``--output_dir`` is added) and its output folder;
    ``resume_from``, a checkpoint folder (``<output>/checkpoints/step-N``) written by an earlier run of the same
    launch, is copied into this run's output as its latest checkpoint before the run starts."""

    output: Path
    args: tuple[str, ...] = ()
    resume_from: Path | None = None


TEARDOWN_ABORT = "terminate called without an active exception"


def _write_plan(plan: Path, program: str, runs: list[Run]) -> None:
    """The plan tests/run_in_sequence.py reads, each run after the first on a newly chosen rendezvous port."""
    plan.write_text(
        json.dumps(
            {
                "program": program,
                "runs": [
                    {
                        "args": [*run.args, "--output_dir", str(run.output)],
                        "output": str(run.output),
                        "resume_from": None if run.resume_from is None else str(run.resume_from),
                        "port": free_port(),
                    }
                    for run in runs
                ],
            }
        ),
        encoding="utf-8",
    )


def launch_runs(program: str, runs: list[Run], processes: int = 2) -> str:
    """Run ``program`` (``align/<name>.py``) once per :class:`Run`, one after the other, in the same ``processes``
    gloo CPU processes of one ``accelerate launch`` (tests/run_in_sequence.py runs each as ``__main__``, exactly as
    the launch would run the script). No ``ACCELERATE_USE_CPU``: the programs train together over gloo when launched
    on a machine without GPUs, as a user launches them. Asserts the launch succeeded; returns its stdout."""
    runs[0].output.parent.mkdir(parents=True, exist_ok=True)
    plan = runs[0].output.parent / f".{runs[0].output.name}-plan.json"
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [*accelerate_launch(processes), str(SEQUENCE), str(plan)]
    for attempt in (1, 2):
        _write_plan(plan, program, runs)
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode == 0 or attempt == 2 or TEARDOWN_ABORT not in result.stderr:
            break
        # On a loaded machine torch now and then aborts a process while gloo groups are torn down and set up again
        # in the same processes (three or four per launch here; a user's launch runs one program and one group):
        # the launch runs once more, from empty outputs, so that no run resumes from the first attempt's files.
        for run in runs:
            shutil.rmtree(run.output, ignore_errors=True)
    # the Python errors first: a crashed process's C++ stack trace can fill the tail
    errors = [line for line in result.stderr.splitlines() if "Error" in line and "frame #" not in line]
    assert result.returncode == 0, "\n".join(errors[-20:]) + "\n...\n" + result.stderr[-3000:]
    return result.stdout


def run_script(program: str, *args: str, monkeypatch, capsys) -> tuple[int, str]:
    """``python <program> ARGS`` from the repository root, in the test process: the script's ``__main__`` block (its
    argument parsing and error handling) run with ``sys.argv`` set, without a new interpreter's start and imports
    (what early-error tests pay for most). Returns the exit status (0 when the script returned) and its stderr; an
    exception the script does not turn into an exit propagates (a traceback a user would see fails the test)."""
    monkeypatch.setattr(sys, "argv", [program, *args])
    monkeypatch.chdir(REPO)
    capsys.readouterr()
    try:
        runpy.run_path(str(REPO / program), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


def assert_resumed_exactly(original: Path, resumed: Path, from_step: int, weights: list[Path]) -> None:
    """A run resumed from ``original``'s checkpoint at ``from_step`` logged the same metrics for the later steps
    (wall times aside) and saved bit-identical ``weights`` (paths inside each output folder)."""
    later = [r for r in read_metrics(original) if r["step"] > from_step]
    rows = read_metrics(resumed)
    assert later and [r["step"] for r in rows] == [r["step"] for r in later]
    strip = lambda row: {k: v for k, v in row.items() if not k.startswith("time/")}  # noqa: E731
    assert [strip(r) for r in rows] == [strip(r) for r in later]
    for name in weights:
        a, b = load_file(original / name), load_file(resumed / name)
        assert set(a) == set(b), name
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def shard_files(checkpoint: Path) -> list[str]:
    """The per-process shard files of a sharded checkpoint (``__<rank>_0.distcp``), sorted."""
    return sorted(p.name for p in (checkpoint / "sharded").glob("*.distcp"))


def gathered_state(checkpoint: Path, into: Path) -> dict:
    """A sharded checkpoint's state gathered into one dict (torch's offline converter: no process group)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(checkpoint / "sharded", into)
    return torch.load(into, weights_only=False)


def assert_lora_changes_tiny_sd3(lora_dir: Path) -> None:
    """ "a cat" from the tiny SD3 pipeline, same seed, before and after ``load_lora_weights(lora_dir)`` differ."""
    pipeline = tiny_pipeline("sd3")
    kwargs = {"height": 32, "width": 32, "num_inference_steps": 2, "guidance_scale": 1.0, "output_type": "pt"}
    kwargs["max_sequence_length"] = 32
    before = pipeline("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    pipeline.load_lora_weights(lora_dir)
    after = pipeline("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert not torch.allclose(before, after)

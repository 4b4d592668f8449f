"""eval/gen_bench.py on two processes (torchrun, gloo on the CPU): each draws every other batch of the missing
samples; the sample files, the manifest and the scores equal the one-process run's; an interrupted run resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mmreward.evaluation.generation import MANIFEST

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "eval" / "gen_bench.py"
TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _run(launcher: list[str], out: Path) -> subprocess.CompletedProcess:
    args = "--model tiny --family sd3 --prompts unigenbench --limit 3 --images-per-prompt 2 --steps 2".split()
    args += ["--batch-size", "2", "--reward", "mmreward.rewards.brightness:BrightnessReward", "--bootstrap", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [*launcher, str(PROGRAM), *args, "--out", str(out), "--no-progress"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "samples").glob("*.png"))}


def test_two_processes_draw_the_one_process_samples(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert (result := _run([sys.executable], one)).returncode == 0, result.stderr
    assert (result := _run(TWO, two)).returncode == 0, result.stderr
    assert len(_files(one)) == 6 and _files(two) == _files(one)
    manifests = [json.loads((o / "samples" / MANIFEST).read_text()) for o in (one, two)]
    assert manifests[0] == manifests[1] and len(manifests[0]) == 6
    assert not list((two / "samples").glob("prompts.rank*.json"))
    scores = [
        json.loads((o / "results.json").read_text())["rewards"]["BrightnessReward"]["scores"] for o in (one, two)
    ]
    assert scores[0] == scores[1] and len(scores[0]) == 6
    assert json.loads((two / "results.json").read_text())["generation"] == {"total": 6, "generated": 6}

    # An interrupted two-process run: two samples and one process's manifest left; the rerun draws the other four.
    resumed = tmp_path / "resumed"
    (resumed / "samples").mkdir(parents=True)
    (resumed / "run.json").write_bytes((two / "run.json").read_bytes())
    manifest = json.loads((one / "samples" / MANIFEST).read_text())
    kept = sorted(_files(one))[:2]
    for name in kept:
        (resumed / "samples" / name).write_bytes(_files(one)[name])
    first = {Path(name).stem: manifest[Path(name).stem] for name in kept}
    (resumed / "samples" / "prompts.rank00001.json").write_text(json.dumps(first))
    assert (result := _run(TWO, resumed)).returncode == 0, result.stderr
    assert _files(resumed) == _files(one)
    assert json.loads((resumed / "results.json").read_text())["generation"] == {"total": 6, "generated": 4}
    assert json.loads((resumed / "samples" / MANIFEST).read_text()) == manifest

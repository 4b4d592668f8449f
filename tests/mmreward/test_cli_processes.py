"""`mmreward score` on several processes (torchrun, accelerate launch; gloo on the CPU): the merged output equals
the one-process output row for row, in input order; an interrupted run resumes and scores only what is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmreward.score_shards import parts_dir
from tests.program_runs import accelerate_launch

REPO = Path(__file__).resolve().parents[2]
CRASHING = "tests.mmreward.crashing_reward:CrashingBrightness"


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def _torchrun(processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]


def _score(launcher: list[str], inputs: Path, out: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    # the documented form, `<launcher> -m mmreward score ...`
    command = [*launcher, "-m", "mmreward", "score", str(inputs), "--reward", "jpeg-compressibility"]
    command += ["--reward", f"{CRASHING}=0.5", "--batch-size", "1", "--workers", "0", "--device", "cpu"]
    command += ["--prompt", "a photo", "-o", str(out), "--no-progress", *extra]
    return subprocess.run(command, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=300)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_images):
    """9 photos and an unreadable file in the middle (a failed row keeps its place)."""
    directory = tmp_path_factory.mktemp("photos")
    for path in sample_images[:9]:
        shutil.copy(path, directory / path.name)
    (directory / sorted(p.name for p in sample_images[:9])[4].replace(".", "_broken.")).write_bytes(b"not an image")
    return directory


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "scores.jsonl"
    result = _score([sys.executable], photos, out)
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert len(rows) == 10 and sum(r["failed"] for r in rows) == 1 and rows[5]["failed"]
    assert not parts_dir(out).exists()
    return rows


def test_two_processes_write_the_one_process_rows_in_order(photos, reference, tmp_path):
    out = tmp_path / "scores.jsonl"
    result = _score(accelerate_launch(2), photos, out, env=_env(ACCELERATE_USE_CPU="1"))
    assert result.returncode == 0, result.stderr
    assert _rows(out) == reference
    titles = [line for line in result.stderr.splitlines() if line.strip() == "10 items"]
    assert len(titles) == 1, result.stderr  # one summary table, from rank 0
    assert not parts_dir(out).exists() and not list(tmp_path.glob(".*.tmp"))


def test_an_interrupted_run_resumes_on_two_processes_and_scores_only_the_rest(photos, reference, tmp_path):
    out = tmp_path / "scores.jsonl"
    crash_on = Path(reference[7]["path"]).name
    first = _score([sys.executable], photos, out, env=_env(MMREWARD_TEST_CRASH_ON=crash_on))
    assert first.returncode != 0 and "interrupted while reading" in first.stderr
    assert not out.exists()
    parts = list(parts_dir(out).glob("part-*.jsonl"))
    assert len(parts) == 1 and len(parts[0].read_text().splitlines()) == 1 + 7  # header + rows 0..6
    # a line cut short by the interruption is not taken for a row
    with parts[0].open("a") as handle:
        handle.write('{"key": "[8, "')
    second = _score(_torchrun(2), photos, out)
    assert second.returncode == 0, second.stderr
    assert "resuming: 7 of 10 items already scored" in second.stderr
    assert _rows(out) == reference
    assert not parts_dir(out).exists()


def test_rows_of_other_rewards_are_refused(photos, reference, tmp_path):
    out = tmp_path / "scores.jsonl"
    crash_on = Path(reference[3]["path"]).name
    assert _score([sys.executable], photos, out, env=_env(MMREWARD_TEST_CRASH_ON=crash_on)).returncode != 0
    command = [sys.executable, "-m", "mmreward.cli", "score", str(photos), "--reward", "jpeg-compressibility"]
    changed = subprocess.run(
        [*command, "--device", "cpu", "-o", str(out), "--no-progress"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (
        changed.returncode == 2
        and "other rewards or options" in changed.stderr
        and str(parts_dir(out)) in changed.stderr
    )


def test_several_processes_need_an_output(photos):
    command = [sys.executable, "-m", "mmreward.cli", "score", str(photos), "--reward", "jpeg-compressibility"]
    result = subprocess.run(
        command, cwd=REPO, env=_env(WORLD_SIZE="2", RANK="0"), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "scoring on 2 processes needs --output" in result.stderr

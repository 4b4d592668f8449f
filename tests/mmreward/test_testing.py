"""``python -m mmreward.testing``: the sample-media directories it prints, and the README quick start built on it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mmreward.media import IMAGE_EXTENSIONS, load_image
from mmreward.rewards.compressibility import jpeg_size_kb
from mmreward.testing import SAMPLE_PHOTOS

REPO = Path(__file__).resolve().parents[2]


def run_testing(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmreward.testing", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_images_prints_the_sample_photo_directory():
    result = run_testing("images")
    assert result.returncode == 0, result.stderr
    directory = Path(result.stdout.strip())
    assert directory.is_dir()
    images = {p.name for p in directory.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    assert set(SAMPLE_PHOTOS) <= images


def test_videos_prints_the_sample_video_directory():
    result = run_testing("videos")
    assert result.returncode == 0, result.stderr
    assert {p.stem for p in Path(result.stdout.strip()).glob("*.mp4")} >= {"bigbuckbunny", "carphone_pristine"}


def test_unknown_argument_prints_usage_and_fails():
    result = run_testing("photos")
    assert result.returncode == 2 and "usage: python -m mmreward.testing images|videos" in result.stderr


def quick_start_commands() -> list[str]:
    """The shell lines of the README's quick-start block (between '## Quick start' and the next heading)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return block.strip().splitlines()


def test_readme_quick_start_scores_the_sample_photos(tmp_path):
    """The README's first quick-start line, run as written after its install step, scores every sample photo."""
    install, score = quick_start_commands()[0].split(" && ", 1)
    assert install == 'pip install -e ".[dev]"'
    assert "$(python -m mmreward.testing images)" in score
    # The README's `mmreward` and `python` are the ones pip installs into; here, this interpreter.
    python = shlex.quote(sys.executable)
    command = score.replace("python -m", f"{python} -m").replace(
        "mmreward score", f"{python} -m mmreward.cli score", 1
    )
    # PYTHONPATH: this checkout, whichever checkout the environment's editable install points to.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        ["bash", "-c", command + " --no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    output = tmp_path / re.search(r"--output (\S+)", score).group(1)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    scored = {Path(r["path"]).name: r for r in rows}
    photos = Path(run_testing("images").stdout.strip())
    assert set(scored) == {p.name for p in photos.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    assert not [r for r in rows if r["failed"]]
    reward = re.search(r"--reward (\S+)", score).group(1)
    assert reward == "jpeg-compressibility"
    for name in SAMPLE_PHOTOS[:3]:
        assert scored[name]["score"] == pytest.approx(-jpeg_size_kb(load_image(scored[name]["path"])), rel=1e-6)


def test_readme_quick_start_second_line_runs_the_suite_offline():
    install, tests = quick_start_commands()[1].split(" && ", 1)
    assert install == 'pip install -e ".[dev]"'
    assert tests == "HF_HUB_OFFLINE=1 python -m pytest -q -n auto --dist worksteal"

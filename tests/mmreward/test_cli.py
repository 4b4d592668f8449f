"""`mmreward score` and `mmreward list` end to end, including every kind of bad input.

Commands run in this process (``tests.cli_runs.run_cli``); ``test_the_module_runs_as_a_script`` runs one the way
a user starts it, in its own interpreter.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time

import pytest
import torch

from mmreward import cli, media
from mmreward.rewards.compressibility import jpeg_size_kb
from mmreward.testing import tiny_reward_preset
from tests.cli_runs import run_cli


def test_the_module_runs_as_a_script(photos, tmp_path):
    out = tmp_path / "s.jsonl"
    command = [sys.executable, "-m", "mmreward.cli", "score", str(photos), "--reward", "jpeg-compressibility"]
    result = subprocess.run([*command, "-o", str(out), "--no-progress"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 4


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_images):
    directory = tmp_path_factory.mktemp("photos")
    for path in sample_images[:4]:
        shutil.copy(path, directory / path.name)
    return directory


@pytest.fixture(scope="module")
def tiny_clip(tiny_root):
    return tiny_reward_preset("clip-score", tiny_root)


def test_score_directory_with_weight_free_reward(photos, tmp_path):
    out = tmp_path / "scores.jsonl"
    result = run_cli("score", photos, "--reward", "jpeg-compressibility", "-o", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out)
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == sorted(p.name for p in photos.iterdir())
    for row in rows:
        expected = -jpeg_size_kb(media.load_image(row["path"]))
        assert row["jpeg-compressibility"] == pytest.approx(expected, rel=1e-6)
        assert row["score"] == row["jpeg-compressibility"] and row["failed"] is False
    assert "jpeg-compressibility" in result.stderr and "mean" in result.stderr  # the summary table
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_weighted_total_dims_and_formats(photos, tiny_clip, tmp_path, sample_videos):
    video = tmp_path / "clip.mp4"
    shutil.copy(sample_videos["carphone_distorted"], video)
    args = [
        "score",
        photos,
        video,
        "--prompt",
        "a photo",
        "--reward",
        f"{tiny_clip}=2",
        *"--reward jpeg-incompressibility=0.5 --num-frames 4 --batch-size 2 --no-progress".split(),
    ]
    result = run_cli(*args, "-o", tmp_path / "s.csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(rows) == 5
    for row in rows:
        total = 2 * float(row["clip-score"]) + 0.5 * float(row["jpeg-incompressibility"])
        assert float(row["score"]) == pytest.approx(total, rel=1e-5, abs=1e-6)
    assert run_cli(*args, "-o", tmp_path / "s.parquet").returncode == 0
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [r["path"] for r in table] == [r["path"] for r in rows]
    # The video row equals the library's score of 4 sampled frames.
    from mmreward import load_reward

    frames, _ = media.load_video(video, num_frames=4)
    expected = load_reward(str(tiny_clip)).score(["a photo"], [frames]).scores.item()
    assert float(rows[-1]["clip-score"]) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_manifests_carry_prompts_and_relative_paths(photos, tiny_clip, tmp_path):
    names = sorted(p.name for p in photos.iterdir())[:2]
    (photos / "m.csv").write_text("path,prompt\n" + "".join(f"{n},prompt {i}\n" for i, n in enumerate(names)))
    (photos / "m.jsonl").write_text(
        "".join(json.dumps({"path": n, "prompt": f"p{i}"}) + "\n" for i, n in enumerate(names))
    )
    for manifest in ("m.csv", "m.jsonl"):
        out = tmp_path / f"{manifest}.jsonl"
        result = run_cli("score", photos / manifest, "--reward", tiny_clip, "-o", out, "--no-progress")
        assert result.returncode == 0, result.stderr
        rows = read_jsonl(out)
        assert [r["path"] for r in rows] == [str(photos / n) for n in names]
        assert rows[0]["prompt"] in ("prompt 0", "p0") and not any(r["failed"] for r in rows)
    (photos / "m.csv").unlink(), (photos / "m.jsonl").unlink()


def test_prompts_file_count_mismatch_fails_before_loading(photos, tmp_path):
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    start = time.perf_counter()
    result = run_cli("score", photos, "--prompts", tmp_path / "p.txt", "--reward", "pickscore")
    assert result.returncode == 2
    assert "--prompts has 2 lines for 4 media items" in result.stderr
    assert "weights" not in result.stderr  # failed before trying to load PickScore
    assert time.perf_counter() - start < 60


def test_prompt_required_for_prompt_dependent_rewards(photos):
    result = run_cli("score", photos, "--reward", "pickscore")
    assert result.returncode == 2 and "give --prompt, --prompts" in result.stderr


def test_missing_weights_exit_cleanly(photos):
    result = run_cli("score", photos, *"--prompt x --reward pickscore".split())
    assert result.returncode == 2
    assert "yuvalkirstain/PickScore_v1" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, sample_images, sample_videos):
    d = tmp_path_factory.mktemp("bad")
    good = d / "good.png"
    shutil.copy(sample_images[0], good)
    data = sample_images[1].read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 3])
    (d / "notes.txt").write_text("hello")
    (d / "corrupt.mp4").write_bytes(b"\x00\x01" * 500)
    import av

    with av.open(str(d / "zero.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.start_encoding()  # write the header, then close without a single frame
    (d / "empty").mkdir()
    (d / "latin1.csv").write_bytes("path,prompt\ngood.png,caf\xe9\n".encode("latin-1"))
    (d / "columns.csv").write_text("file,caption\ngood.png,x\n")
    return {
        "good": good,
        "missing": d / "missing.png",
        "truncated": d / "truncated.png",
        "extension": d / "notes.txt",
        "corrupt video": d / "corrupt.mp4",
        "zero-frame video": d / "zero.mp4",
        "empty dir": d / "empty",
        "non-utf8 manifest": d / "latin1.csv",
        "wrong columns": d / "columns.csv",
        "glob": d / "nothing-*.png",
    }


def test_every_bad_input_is_recorded_and_the_rest_scored(bad_inputs, tmp_path):
    out = tmp_path / "s.jsonl"
    inputs = list(bad_inputs.values())
    result = run_cli("score", *inputs, "--reward", "jpeg-compressibility", "-o", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out)
    assert len(rows) == len(inputs)
    by_kind = dict(zip(bad_inputs, rows, strict=True))
    assert not by_kind["good"]["failed"] and by_kind["good"]["score"] < 0
    expected_reasons = {
        "missing": "file not found",
        "truncated": "could not be decoded",
        "extension": "unsupported extension '.txt'",
        "corrupt video": "could not be decoded as a video",
        "zero-frame video": "video",
        "empty dir": "directory has no image or video files",
        "non-utf8 manifest": "not UTF-8",
        "wrong columns": "needs a 'path' column",
        "glob": "pattern matches no files",
    }
    for kind, reason in expected_reasons.items():
        row = by_kind[kind]
        assert row["failed"] and row["score"] is None, kind
        assert reason in row["error"], (kind, row["error"])
    assert f"{len(expected_reasons)} of {len(inputs)} items failed" in result.stderr


def test_on_error_fail_names_the_first_bad_input(bad_inputs, tmp_path):
    # An input problem known before decoding: exit 1 at once, without loading anything.
    result = run_cli(
        "score", bad_inputs["good"], bad_inputs["missing"], *"--reward jpeg-compressibility --on-error fail".split()
    )
    assert result.returncode == 1 and "missing.png: file not found" in result.stderr
    # A decoding problem: the output is still written, then exit 1 naming the item.
    out = tmp_path / "s.jsonl"
    result = run_cli(
        "score",
        bad_inputs["good"],
        bad_inputs["truncated"],
        *"--reward jpeg-compressibility --on-error fail -o".split(),
        out,
        "--no-progress",
    )
    assert result.returncode == 1 and "truncated.png" in result.stderr
    assert len(read_jsonl(out)) == 2


def test_bad_arguments(photos):
    assert "--output must end in one of" in run_cli("score", photos, "-o", "x.txt").stderr
    assert (
        "given twice"
        in run_cli("score", photos, *"--reward jpeg-compressibility --reward jpeg-compressibility".split()).stderr
    )
    result = run_cli("score", photos, "--reward", "nope")
    assert result.returncode == 2 and "Registered rewards:" in result.stderr


def test_bad_numbers_and_prompt_files_stop_before_anything_loads(photos, tmp_path, capsys):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    cases = {
        "--batch-size 0": "--batch-size must be >= 1, got 0",
        "--num-frames 0": "--num-frames must be >= 1, got 0",
        "--fps -2": "--fps must be a positive number of frames per second, got -2.0",
        "--fps nan": "--fps must be a positive number of frames per second, got nan",
        f"--prompts {tmp_path / 'missing.txt'}": f"prompts file '{tmp_path / 'missing.txt'}' not found",
        f"--prompts {latin}": f"prompts file '{latin}' is not UTF-8 text; re-save it as UTF-8",
    }
    for flags, message in cases.items():  # in process: these stop before any model or file is loaded
        assert cli.main(["score", str(photos), *flags.split(), "--reward", "jpeg-compressibility"]) == 2, flags
        assert f"mmreward: error: {message}" in capsys.readouterr().err, flags


def test_list_prints_the_registry():
    result = run_cli("list", "--json")
    assert result.returncode == 0
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert entries["pickscore"]["weights"] == "yuvalkirstain/PickScore_v1" and entries["pickscore"]["differentiable"]
    assert entries["jpeg-compressibility"]["raw_range"] == [-200.0, 0.0]
    assert entries["videoreward"]["template"] == "reference (KwaiVGI/VideoAlign@219ab9d)"
    assert entries["unigenbench-eval"]["template"] == "ours (unigenbench-checklist)"
    table = run_cli("list").stdout
    assert "hpsv2.1" in table and "laion-aesthetic" in table
    assert "reference (MizzenAI/HPSv3@77e8fa3)" in table


def test_identical_files_are_scored_once(tmp_path, sample_images):
    """Two copies of a photo under different names, same prompt: one model evaluation, two equal rows."""
    from mmreward.rewards.compressibility import JpegCompressibility
    from mmreward.score_inputs import expand_inputs
    from mmreward.scoring import score_items

    class Counting(JpegCompressibility):
        calls = 0

        def score_images(self, prompts, frames):
            Counting.calls += len(frames)
            return super().score_images(prompts, frames)

    for name in ("a.png", "b.png"):
        shutil.copy(sample_images[0], tmp_path / name)
    shutil.copy(sample_images[1], tmp_path / "c.png")
    items = expand_inputs([str(tmp_path)]).items
    rows = list(score_items(items, {"jpeg": Counting()}, {"jpeg": 1.0}, num_workers=0))
    assert Counting.calls == 2
    assert rows[0].score == rows[1].score != rows[2].score
    assert torch.isfinite(torch.tensor([r.score for r in rows])).all()


DELTA = "mmreward.rewards.brightness:BrightnessDeltaReward"


def test_editing_rewards_get_each_items_source_and_a_bad_source_fails_alone(photos, tmp_path):
    """Manifest sources (relative to the manifest) reach the editing reward, whose scores equal the reward's own
    ``score(..., sources=...)``; a source that is not an image fails its row alone, and the reward that ignores
    sources still scores that row."""
    names = sorted(p.name for p in photos.iterdir())
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows_in = [(names[0], names[1]), (names[1], names[2]), (names[2], "broken.png")]
    for name in names:
        shutil.copy(photos / name, tmp_path / name)
    (tmp_path / "m.csv").write_text("path,source\n" + "".join(f"{p},{s}\n" for p, s in rows_in))
    out = tmp_path / "s.jsonl"
    args = ["score", tmp_path / "m.csv", "--reward", DELTA, "--reward", "jpeg-compressibility", "--no-progress"]
    result = run_cli(*args, "-o", out)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out)
    assert [r["source"] for r in rows] == [str(tmp_path / s) for _, s in rows_in]
    from mmreward import load_reward

    expected = load_reward(DELTA).score(
        ["", ""], [r["path"] for r in rows[:2]], sources=[r["source"] for r in rows[:2]]
    )
    assert [r[DELTA] for r in rows[:2]] == pytest.approx(expected.scores.tolist(), abs=1e-6)
    assert all(r["failed"] is False for r in rows[:2]) and rows[0][DELTA] != 0
    bad = rows[2]
    assert bad["failed"] is True and bad[DELTA] is None
    assert bad["error"].startswith(f"{DELTA}: source: ") and "broken.png" in bad["error"]
    assert bad["jpeg-compressibility"] == pytest.approx(-jpeg_size_kb(media.load_image(bad["path"])), rel=1e-6)

    # --source: every input is an edit of that one image.
    result = run_cli("score", photos, "--source", photos / names[0], "--reward", DELTA, "-o", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out)
    sources = [str(photos / names[0])] * len(names)
    expected = load_reward(DELTA).score([""] * len(names), [r["path"] for r in rows], sources=sources)
    assert [r["source"] for r in rows] == sources
    assert [r[DELTA] for r in rows] == pytest.approx(expected.scores.tolist(), abs=1e-6)
    assert rows[0][DELTA] == 0.0  # the source itself is an unchanged edit


def test_editing_reward_without_sources_is_refused_before_loading(photos, tmp_path):
    result = run_cli("score", photos, "--reward", DELTA)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "compares each edit with its source image, but 4 of 4 items have none" in result.stderr
    assert "give --source FILE (one image for every input) or a manifest with a 'source' column" in result.stderr
    result = run_cli("score", photos, "--source", tmp_path / "missing.png", "--reward", DELTA)
    assert result.returncode == 2 and "is not a file" in result.stderr
    # Rewards that judge media alone ignore a source.
    out = tmp_path / "s.jsonl"
    names = sorted(p.name for p in photos.iterdir())
    result = run_cli("score", photos, "--source", photos / names[0], "--reward", "jpeg-compressibility", "-o", out)
    assert result.returncode == 0, result.stderr
    assert [r["failed"] for r in read_jsonl(out)] == [False] * 4

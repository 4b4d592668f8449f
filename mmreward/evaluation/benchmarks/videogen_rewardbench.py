"""VideoGen-RewardBench (Liu et al. 2025, VideoAlign, arXiv 2501.13918): 26.5k text-to-video pairs, 4 dimensions.

Files (Hugging Face ``KlingTeam/VideoGen-RewardBench``, formerly ``KwaiVGI/``): ``videogen-rewardbench.csv`` with
columns ``path_A, path_B, A_model, B_model, prompt, fps_A, num_frames_A, fps_B, num_frames_B, VQ, MQ, TA,
Overall`` and ``videos.zip``. ``path_A``/``path_B`` are relative to the folder holding the CSV (VideoAlign's
``eval_videogen_rewardbench.py`` joins them with its data directory). Labels are ``A``, ``B`` or ``same``
(-> +1, -1, 0). Metrics: accuracy with and without ties on each of VQ (visual quality), MQ (motion quality), TA
(text alignment) and Overall.
"""

from __future__ import annotations

from pathlib import Path

from mmreward.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    DatasetSource,
    MediaResolver,
    PreferencePair,
    ReferenceResult,
    check_data_dir,
    check_media,
    hub_download,
    read_csv_records,
    unpack_once,
)

CSV_NAME = "videogen-rewardbench.csv"
DIMS = ("VQ", "MQ", "TA", "Overall")
COLUMNS = ("path_A", "path_B", "prompt", *DIMS)
LABELS = {"A": 1, "B": -1, "same": 0}
_META_COLUMNS = ("A_model", "B_model", "fps_A", "num_frames_A", "fps_B", "num_frames_B")

SOURCE = DatasetSource(
    hub_id="KlingTeam/VideoGen-RewardBench",
    files=(CSV_NAME, "videos.zip"),
    layout=f"DIR/{CSV_NAME} and the videos unpacked from videos.zip so that DIR/<path_A> exists",
    license="Apache-2.0",
    paper="Liu et al. 2025, Improving Video Generation with Human Feedback (VideoAlign), arXiv 2501.13918",
)

# HF Space KwaiVGI/VideoGen-RewardBench leaderboard (eval.md 2.1): percent, Overall.
REFERENCES = (
    ReferenceResult("VideoReward (Qwen2-VL-2B)", "Overall w/o ties", 73.59, "VideoGen-RewardBench leaderboard"),
    ReferenceResult("VideoReward (Qwen2-VL-2B)", "Overall w/ ties", 61.26, "VideoGen-RewardBench leaderboard"),
    ReferenceResult("VisionReward", "Overall w/o ties", 67.59, "VideoGen-RewardBench leaderboard"),
    ReferenceResult("VisionReward", "Overall w/ ties", 56.77, "VideoGen-RewardBench leaderboard"),
    ReferenceResult("UnifiedReward-7B-v1.5", "Overall w/o ties", 80.5, "UnifiedReward README (8 frames)"),
)


def download(data_dir: Path) -> None:
    """Fetch the CSV and videos.zip and unpack the videos (13.4 GB) unless they are already there."""
    hub_download(SOURCE, data_dir)
    unpack_once(data_dir / "videos.zip", data_dir, data_dir / ".videos-unpacked")


def load(data_dir: str | Path, *, download_missing: bool = False) -> Benchmark:
    """Load VideoGen-RewardBench from ``data_dir`` (see the module docstring for the layout)."""
    data_dir = Path(data_dir).expanduser()
    if download_missing:
        download(data_dir)
    data_dir = check_data_dir(data_dir, SOURCE)
    csv_path = data_dir / CSV_NAME
    if not csv_path.is_file():
        raise BenchmarkDataError(f"{str(csv_path)!r} not found. {SOURCE.how_to_get()}")
    rows = read_csv_records(csv_path, COLUMNS)
    resolve = MediaResolver([data_dir])
    pairs = []
    for index, row in enumerate(rows):
        labels = {}
        for dim in DIMS:
            value = row[dim].strip()
            if value not in LABELS:
                raise BenchmarkDataError(
                    f"{str(csv_path)!r} row {index + 2} has {dim}={value!r}; labels must be one of {sorted(LABELS)}"
                )
            labels[dim] = LABELS[value]
        pairs.append(
            PreferencePair(
                id=str(index),
                prompt=row["prompt"],
                media_a=resolve(row["path_A"]),
                media_b=resolve(row["path_B"]),
                labels=labels,
                meta={k: row[k] for k in _META_COLUMNS if k in row},
            )
        )
    benchmark = Benchmark(
        name="videogen-rewardbench",
        title="VideoGen-RewardBench (eval split)",
        media_kind="video",
        protocol="pairwise",
        dims=DIMS,
        source=SOURCE,
        headline="accuracy_without_ties",
        pairs=pairs,
        references=REFERENCES,
    )
    check_media(benchmark.media_paths(), SOURCE, data_dir)
    return benchmark

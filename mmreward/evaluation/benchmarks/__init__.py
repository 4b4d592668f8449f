"""Reward-model benchmarks by name: ``load_benchmark(name, data_dir)`` -> :class:`Benchmark`.

Each loader reads the benchmark's published files from a local directory, validates them and returns uniform
pairs or ranked groups with local media paths (see :mod:`mmreward.evaluation.benchmarks.base`). Missing files are
errors that say where the dataset lives; ``download=True`` fetches it with huggingface_hub.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mmreward.evaluation.benchmarks import (
    editreward_bench,
    genai_bench,
    mjbench_video,
    mmrb2,
    pickapic,
    rankings,
    videogen_rewardbench,
)
from mmreward.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    BenchmarkDownloadError,
    DatasetSource,
    MissingMediaError,
    PreferencePair,
    RankedGroup,
    ReferenceResult,
)


@dataclass(frozen=True)
class BenchmarkEntry:
    """A registered benchmark: its loader, where its data live, and one line for ``--help``."""

    load: Callable[..., Benchmark]
    source: DatasetSource
    summary: str


BENCHMARKS: dict[str, BenchmarkEntry] = {
    "videogen-rewardbench": BenchmarkEntry(
        videogen_rewardbench.load,
        videogen_rewardbench.SOURCE,
        "26.5k T2V pairs; VQ/MQ/TA/Overall; acc w/ and w/o ties",
    ),
    "genai-bench-image": BenchmarkEntry(
        partial(genai_bench.load, task="image"), genai_bench.source("image"), "1,735 T2I arena votes (test_v1)"
    ),
    "genai-bench-video": BenchmarkEntry(
        partial(genai_bench.load, task="video"), genai_bench.source("video"), "1,069 T2V arena votes (test_v1)"
    ),
    "genai-bench-edit": BenchmarkEntry(
        partial(genai_bench.load, task="edit"), genai_bench.source("edit"), "919 image-edit arena votes (test_v1)"
    ),
    "hpdv2-test": BenchmarkEntry(
        rankings.load_hpdv2, rankings.HPDV2_SOURCE, "HPDv2 test rankings; inversion accuracy"
    ),
    "pickapic-v2": BenchmarkEntry(pickapic.load, pickapic.SOURCE, "Pick-a-Pic v2 test_unique; PickScore tie accuracy"),
    "imagereward-test": BenchmarkEntry(
        rankings.load_imagereward, rankings.IMAGEREWARD_SOURCE, "466 prompts x 4-9 images; pair accuracy (micro)"
    ),
    "mjbench-video": BenchmarkEntry(
        mjbench_video.load, mjbench_video.SOURCE, "1,085 T2V pairs, 5 aspects; strict acc"
    ),
    "mmrb2": BenchmarkEntry(
        mmrb2.load,
        mmrb2.SOURCE,
        "MMRB2: 1,000 pairs per task (t2i, edit, interleaved, reasoning; --tasks); acc over both orders, "
        "single-image pairs",
    ),
    "tigerlab-editreward-bench": BenchmarkEntry(
        editreward_bench.load,
        editreward_bench.SOURCE,
        "TIGER-Lab's EditReward-Bench (not EditScore's): 484 edit groups of K=2/3/4 with a source image; strict "
        "ranking acc. per K and pooled",
    ),
}


def list_benchmarks() -> list[str]:
    """Names accepted by :func:`load_benchmark` and ``eval/reward_bench.py --benchmark``."""
    return sorted(BENCHMARKS)


def load_benchmark(name: str, data_dir: str | Path, *, download: bool = False, **options: Any) -> Benchmark:
    """Load benchmark ``name`` from ``data_dir``; ``download=True`` first fetches missing files from the Hub.

    ``options`` go to the loader (e.g. ``votes_file`` for GenAI-Bench, ``tasks`` for MMRB2).
    """
    if name not in BENCHMARKS:
        raise BenchmarkDataError(f"unknown benchmark {name!r}; available: {', '.join(list_benchmarks())}")
    return BENCHMARKS[name].load(data_dir, download_missing=download, **options)


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkDataError",
    "BenchmarkDownloadError",
    "BenchmarkEntry",
    "DatasetSource",
    "MissingMediaError",
    "PreferencePair",
    "RankedGroup",
    "ReferenceResult",
    "list_benchmarks",
    "load_benchmark",
]

"""MJ-Bench-Video / MJ-VIDEO (Tu et al. 2025, arXiv 2502.01719): 1,085 text-to-video pairs, 5 aspects.

``test.json`` (shipped with mmreward from ``aiming-lab/MJ-Video`` ``datas/test.json``; identical to the Hugging Face
dataset ``MJ-Bench/MJ-BENCH-VIDEO``'s ``test.json``) holds records with ``caption, video_0_path, video_1_path,
overall_preference, category_preference{Alignment, Safety, Fineness, Coherence & Consistency, Bias}, discard`` and
per-criterion labels. Preferences are ``Video 1 better`` (video_0 wins, any capitalisation), ``Video 2 better``,
``Same`` (a tie) or ``Hard to judge`` (no label). Videos are ``DIR/videos/<video_0_path>`` (MJ-Video's scripts
default to ``--videos_dir datas/videos`` and join ``test/0_0.mp4``).

The published overall accuracy uses the decisive pairs only (118: MJ-Video's scripts skip Same and Hard to judge):
"strict" accuracy counts a tie prediction as wrong (our accuracy without ties) and "tie-aware" gives it half credit
(our tie-credit accuracy).
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
    label_file,
    read_json,
    require_list_of_records,
)

ASPECTS = ("Alignment", "Safety", "Fineness", "Coherence & Consistency", "Bias")
DIMS = ("Overall", *ASPECTS)
FIELDS = ("caption", "video_0_path", "video_1_path", "overall_preference", "category_preference")
# Lower-cased preference -> label; None = no usable label ("Hard to judge").
LABELS: dict[str, int | None] = {"video 1 better": 1, "video 2 better": -1, "same": 0, "hard to judge": None}

SOURCE = DatasetSource(
    hub_id="MJ-Bench/MJ-BENCH-VIDEO",
    files=("test.json", "videos/test/*"),
    layout="DIR/videos/test/<n>_<k>.mp4 (test.json is shipped with mmreward; a DIR/test.json overrides it)",
    license="MIT",
    paper="Tu et al. 2025, MJ-VIDEO: Fine-Grained Benchmarking and Rewarding Video Preferences, arXiv 2502.01719",
)

# aiming-lab/MJ-Video README (eval.md 2.4): overall strict / tie-aware accuracy on the decisive pairs, percent.
REFERENCES = (
    ReferenceResult("MJ-VIDEO", "Overall strict", 68.75, "MJ-Video README"),
    ReferenceResult("VideoScore", "Overall strict", 58.47, "MJ-Video README"),
    ReferenceResult("GPT-4o", "Overall strict / tie-aware", 35.35, "MJ-Video README (tie-aware 54.6)"),
)


def _label(value: object, where: str) -> int | None:
    key = str(value).strip().lower()
    if key not in LABELS:
        raise BenchmarkDataError(
            f"{where} is {value!r}; expected one of 'Video 1 better', 'Video 2 better', 'Same', 'Hard to judge'"
        )
    return LABELS[key]


def load(data_dir: str | Path, *, download_missing: bool = False) -> Benchmark:
    """Load the MJ-Bench-Video test split from ``data_dir`` (see the module docstring for the layout)."""
    data_dir = Path(data_dir).expanduser()
    if download_missing:
        hub_download(SOURCE, data_dir)
    data_dir = check_data_dir(data_dir, SOURCE)
    path = label_file(data_dir, "test.json", "mjbench_video_test.json")
    records = require_list_of_records(read_json(path, "MJ-Bench-Video test labels"), path, FIELDS)
    resolve = MediaResolver([data_dir / "videos", data_dir])
    pairs, discarded, unlabelled = [], 0, 0
    for index, record in enumerate(records):
        if record.get("discard") is True:
            discarded += 1
            continue
        aspects = record["category_preference"]
        if not isinstance(aspects, dict) or any(a not in aspects for a in ASPECTS):
            raise BenchmarkDataError(f"{str(path)!r} record {index}: category_preference must have keys {ASPECTS}")
        raw = {"Overall": record["overall_preference"], **{a: aspects[a] for a in ASPECTS}}
        labels = {}
        for dim, value in raw.items():
            label = _label(value, f"{str(path)!r} record {index} {dim} preference")
            if label is not None:
                labels[dim] = label
        unlabelled += "Overall" not in labels
        pairs.append(
            PreferencePair(
                id=str(index),
                prompt=str(record["caption"]),
                media_a=resolve(str(record["video_0_path"])),
                media_b=resolve(str(record["video_1_path"])),
                labels=labels,
                meta={"overall_preference": record["overall_preference"]},
            )
        )
    notes = [f"{unlabelled} pair(s) marked 'Hard to judge' have no Overall label and are left out of Overall"]
    if discarded:
        notes.append(f"{discarded} record(s) with discard=true skipped")
    benchmark = Benchmark(
        name="mjbench-video",
        title="MJ-Bench-Video (test)",
        media_kind="video",
        protocol="pairwise",
        dims=DIMS,
        source=SOURCE,
        headline="accuracy_without_ties",
        pairs=pairs,
        references=REFERENCES,
        notes=notes,
    )
    check_media(benchmark.media_paths(), SOURCE, data_dir)
    return benchmark

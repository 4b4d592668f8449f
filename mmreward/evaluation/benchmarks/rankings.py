"""Benchmarks of K-way human rankings: ImageReward test and HPDv2 test.

**ImageReward test** (Xu et al. 2023, arXiv 2304.05977): ``data/test.json`` of ``THUDM/ImageReward`` (shipped with
mmreward; a ``DIR/test.json`` overrides it) with records ``id, prompt, generations[], ranking[]`` (466 prompts,
4-9 images, rank 1 = best, ties allowed). ImageReward's ``test.py`` reads images from ``--img_prefix
data/test_images``; the same uuid-named images are in the Hugging Face dataset ``THUDM/ImageRewardDB``
(``images/test/test_{1,2}.zip``), so images are found by relative path under ``DIR/test_images`` or ``DIR``, or else
by their unique file name anywhere under ``DIR``. Metric: pair accuracy over untied pairs, micro-averaged.

**HPDv2 test** (Wu et al. 2023, arXiv 2306.09341): ``test.json`` and ``test.tar.gz`` of ``ymhao/HPDv2`` with records
``prompt, image_path[], rank[]`` (averaged human rank, lower = better). HPSv2's ``evaluate_rank`` joins
``image_path`` with the image folder: here ``DIR/test/<image_path>`` (the tarball unpacked in ``DIR``) or
``DIR/<image_path>``. Metric: per-prompt inversion accuracy averaged over prompts.
"""

from __future__ import annotations

from pathlib import Path

from mmreward.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    DatasetSource,
    MediaResolver,
    RankedGroup,
    ReferenceResult,
    check_data_dir,
    check_media,
    hub_download,
    label_file,
    read_json,
    require_list_of_records,
    unpack_once,
)

IMAGE_SUFFIXES = (".webp", ".jpg", ".jpeg", ".png")

IMAGEREWARD_SOURCE = DatasetSource(
    hub_id="THUDM/ImageRewardDB",
    files=("images/test/test_1.zip", "images/test/test_2.zip"),
    layout="the test images under DIR (e.g. DIR/test_images/<generation path>, as ImageReward's test.sh unpacks "
    "test_images.zip; images elsewhere under DIR are matched by file name); test.json is shipped with mmreward",
    license="Apache-2.0",
    paper="Xu et al. 2023, ImageReward, arXiv 2304.05977",
)
HPDV2_SOURCE = DatasetSource(
    hub_id="ymhao/HPDv2",
    files=("test.json", "test.tar.gz"),
    layout="DIR/test.json and DIR/test/<image_path> (test.tar.gz unpacked in DIR)",
    license="Apache-2.0",
    paper="Wu et al. 2023, Human Preference Score v2, arXiv 2306.09341",
)

# HPSv2 README (eval.md 2.5 and 2.6), percent.
IMAGEREWARD_REFERENCES = (
    ReferenceResult("HPS v2.1", "ranking accuracy (micro)", 66.8, "HPSv2 README"),
    ReferenceResult("ImageReward", "ranking accuracy (micro)", 65.1, "HPSv2 README"),
    ReferenceResult("PickScore", "ranking accuracy (micro)", 62.9, "HPSv2 README"),
)
HPDV2_REFERENCES = (
    ReferenceResult("HPS v2.1", "inversion accuracy", 84.1, "HPSv2 README"),
    ReferenceResult("HPS v2", "inversion accuracy", 83.3, "HPSv2 README"),
    ReferenceResult("PickScore", "inversion accuracy", 79.8, "HPSv2 README"),
)


def _groups(
    records: list[dict], path: Path, media_key: str, rank_key: str, resolve: MediaResolver, id_key: str | None
):
    groups = []
    for index, record in enumerate(records):
        media, ranks = record[media_key], record[rank_key]
        if not isinstance(media, list) or not isinstance(ranks, list) or len(media) != len(ranks) or len(media) < 2:
            raise BenchmarkDataError(
                f"{str(path)!r} record {index}: {media_key!r} and {rank_key!r} must be lists of the same length >= 2 "
                f"(got {type(media).__name__} of {len(media) if isinstance(media, list) else '?'} and "
                f"{type(ranks).__name__} of {len(ranks) if isinstance(ranks, list) else '?'})"
            )
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in ranks):
            raise BenchmarkDataError(f"{str(path)!r} record {index}: {rank_key!r} must hold numbers, got {ranks}")
        groups.append(
            RankedGroup(
                id=str(record[id_key]) if id_key else str(index),
                prompt=str(record["prompt"]),
                media=tuple(resolve(str(m)) for m in media),
                ranks=tuple(float(r) for r in ranks),
            )
        )
    return groups


def download_imagereward(data_dir: Path) -> None:
    hub_download(IMAGEREWARD_SOURCE, data_dir)
    for name in IMAGEREWARD_SOURCE.files:
        archive = data_dir / name
        unpack_once(archive, archive.parent, archive.with_suffix(".unpacked"))


def load_imagereward(data_dir: str | Path, *, download_missing: bool = False) -> Benchmark:
    """Load the ImageReward test rankings from ``data_dir``."""
    data_dir = Path(data_dir).expanduser()
    if download_missing:
        download_imagereward(data_dir)
    data_dir = check_data_dir(data_dir, IMAGEREWARD_SOURCE)
    path = label_file(data_dir, "test.json", "imagereward_test.json")
    records = require_list_of_records(
        read_json(path, "ImageReward test labels"), path, ("id", "prompt", "generations", "ranking")
    )
    resolve = MediaResolver([data_dir, data_dir / "test_images"], match_names=IMAGE_SUFFIXES)
    benchmark = Benchmark(
        name="imagereward-test",
        title="ImageReward test",
        media_kind="image",
        protocol="ranking",
        dims=("Overall",),
        source=IMAGEREWARD_SOURCE,
        headline="ranking_accuracy_micro",
        groups=_groups(records, path, "generations", "ranking", resolve, "id"),
        references=IMAGEREWARD_REFERENCES,
    )
    check_media(benchmark.media_paths(), IMAGEREWARD_SOURCE, data_dir)
    return benchmark


def download_hpdv2(data_dir: Path) -> None:
    hub_download(HPDV2_SOURCE, data_dir)
    unpack_once(data_dir / "test.tar.gz", data_dir, data_dir / ".test-unpacked")


def load_hpdv2(data_dir: str | Path, *, download_missing: bool = False) -> Benchmark:
    """Load the HPDv2 test rankings from ``data_dir``."""
    data_dir = Path(data_dir).expanduser()
    if download_missing:
        download_hpdv2(data_dir)
    data_dir = check_data_dir(data_dir, HPDV2_SOURCE)
    path = data_dir / "test.json"
    if not path.is_file():
        raise BenchmarkDataError(f"{str(path)!r} not found. {HPDV2_SOURCE.how_to_get()}")
    records = require_list_of_records(read_json(path, "HPDv2 test labels"), path, ("prompt", "image_path", "rank"))
    resolve = MediaResolver([data_dir / "test", data_dir])
    benchmark = Benchmark(
        name="hpdv2-test",
        title="HPDv2 test",
        media_kind="image",
        protocol="ranking",
        dims=("Overall",),
        source=HPDV2_SOURCE,
        headline="inversion_accuracy",
        groups=_groups(records, path, "image_path", "rank", resolve, None),
        references=HPDV2_REFERENCES,
    )
    check_media(benchmark.media_paths(), HPDV2_SOURCE, data_dir)
    return benchmark

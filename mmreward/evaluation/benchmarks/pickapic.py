"""Pick-a-Pic v2 ``test_unique`` (Kirstain et al. 2023, PickScore, arXiv 2305.01569), 500 pairs.

Hugging Face dataset ``yuvalkirstain/pickapic_v2``: ``data/test_unique-*.parquet`` and
``data/validation_unique-*.parquet`` with columns ``caption, jpg_0, jpg_1 (JPEG bytes), label_0, label_1,
image_0_uid, image_1_uid, ...``; ``label_0`` is 1 (image 0 preferred), 0 (image 1 preferred) or 0.5 (tie).

Metric (PickScore ``trainer/scripts/eval_preference_predictor.py``): the tie-aware accuracy on ``test_unique``
with the probability-gap threshold chosen on ``validation_unique`` (``pickscore_accuracy``); the "no ties" variant
(accuracy without ties) and tie-calibrated accuracy are reported too. Images are written once to
``DIR/media/<split>/<image uid>.jpg``.
"""

from __future__ import annotations

from pathlib import Path

from mmreward.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    DatasetSource,
    MissingMediaError,
    PreferencePair,
    ReferenceResult,
    check_data_dir,
    check_media,
    hub_download,
)
from mmreward.evaluation.benchmarks.parquet_media import read_parquet_rows, write_image

TEST_SPLIT, VALIDATION_SPLIT = "test_unique", "validation_unique"
COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0", "image_0_uid", "image_1_uid")
LABELS = {1.0: 1, 0.0: -1, 0.5: 0}

SOURCE = DatasetSource(
    hub_id="yuvalkirstain/pickapic_v2",
    files=(f"data/{TEST_SPLIT}-*.parquet", f"data/{VALIDATION_SPLIT}-*.parquet"),
    layout=f"DIR/data/{TEST_SPLIT}-*.parquet and DIR/data/{VALIDATION_SPLIT}-*.parquet",
    license="not stated on the dataset card (check before redistributing)",
    paper="Kirstain et al. 2023, Pick-a-Pic: An Open Dataset of User Preferences for Text-to-Image Generation, "
    "arXiv 2305.01569",
)

# eval.md 2.7 and the HPSv3 table (reward_models.md 3.3), percent; measured on Pick-a-Pic test sets.
REFERENCES = (
    ReferenceResult("PickScore", "tie-aware accuracy", 70.5, "PickScore paper / HPSv3 table"),
    ReferenceResult("Humans", "tie-aware accuracy", 68.0, "PickScore paper"),
    ReferenceResult("CLIP-H", "tie-aware accuracy", 60.8, "PickScore paper"),
)


def _split_pairs(data_dir: Path, split: str) -> tuple[list[PreferencePair], int]:
    files = sorted({*(data_dir / "data").glob(f"{split}-*.parquet"), *data_dir.glob(f"{split}-*.parquet")})
    if not files:
        raise MissingMediaError(f"no {split} parquet file under {str(data_dir)!r}. {SOURCE.how_to_get()}")
    rows = read_parquet_rows(files, COLUMNS)
    pairs, unlabelled = [], 0
    for index, row in enumerate(rows):
        if row.get("has_label") is False:
            unlabelled += 1
            continue
        label = LABELS.get(float(row["label_0"])) if row["label_0"] is not None else None
        if label is None:
            raise BenchmarkDataError(
                f"Pick-a-Pic {split} row {index}: label_0 is {row['label_0']!r}; expected 1, 0, 0.5"
            )
        where = f"Pick-a-Pic {split} row {index}"
        folder = data_dir / "media" / split
        pairs.append(
            PreferencePair(
                id=f"{split}/{index}",
                prompt=str(row["caption"]),
                media_a=write_image(
                    row["jpg_0"], folder / str(row["image_0_uid"]), f"{where} jpg_0", default_suffix=".jpg"
                ),
                media_b=write_image(
                    row["jpg_1"], folder / str(row["image_1_uid"]), f"{where} jpg_1", default_suffix=".jpg"
                ),
                labels={"Overall": label},
                meta={"split": split, "ranking_id": row.get("ranking_id")},
            )
        )
    return pairs, unlabelled


def load(data_dir: str | Path, *, download_missing: bool = False) -> Benchmark:
    """Load Pick-a-Pic v2 test_unique (and validation_unique for the tie threshold) from ``data_dir``."""
    data_dir = Path(data_dir).expanduser()
    if download_missing:
        hub_download(SOURCE, data_dir)
    data_dir = check_data_dir(data_dir, SOURCE)
    test, test_unlabelled = _split_pairs(data_dir, TEST_SPLIT)
    validation, validation_unlabelled = _split_pairs(data_dir, VALIDATION_SPLIT)
    notes = [f"tie threshold chosen on {VALIDATION_SPLIT} ({len(validation)} pairs) from 0, 0.1, ..., 1"]
    if test_unlabelled or validation_unlabelled:
        notes.append(f"rows with has_label=false skipped: {test_unlabelled} test, {validation_unlabelled} validation")
    benchmark = Benchmark(
        name="pickapic-v2",
        title=f"Pick-a-Pic v2 ({TEST_SPLIT})",
        media_kind="image",
        protocol="pickscore",
        dims=("Overall",),
        source=SOURCE,
        headline="pickscore_accuracy",
        pairs=test,
        validation_pairs=validation,
        references=REFERENCES,
        notes=notes,
    )
    check_media(benchmark.media_paths(), SOURCE, data_dir)
    return benchmark

"""Helpers for the evaluation tests: small benchmarks in the real file formats, built from real sample media, and
a deterministic pairwise judge.

Imported by the test modules as ``tests.eval_fixtures`` (tests/ is a package; pytest puts the repository root on
sys.path) and, for the judge, by ``eval/reward_bench.py`` subprocesses through
``--reward tests.eval_fixtures:BrightnessJudge`` with the repository root on PYTHONPATH.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import torch
from PIL import Image

from mmreward.errors import MediaError
from mmreward.rewards.base import Orders, PairwiseOutput, RewardModel, check_batch
from mmreward.testing import sample_images, sample_videos

VIDEO_NAMES = ("bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted")
VIDEO_PROMPTS = ("a rabbit in a meadow", "people riding bikes")


class BrightnessJudge(RewardModel):
    """A pairwise judge for tests: prefers the brighter item, with a bias towards the item shown first.

    P(first shown wins) = sigmoid(sharpness * (brightness_first - brightness_second) + position_bias); with both
    orders, P(A better) is the mean of P_AB(A) and 1 - P_BA(B). Pairs of similar brightness flip with the order
    (inconsistent), like a real judge with position bias. Unreadable media fail the pair.
    """

    kind = "pairwise"

    def __init__(self, *, position_bias: float = 0.4, sharpness: float = 20.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.position_bias = position_bias
        self.sharpness = sharpness

    def score_prepared(self, prompts, inputs):
        raise TypeError("BrightnessJudge is a pairwise judge: use compare()")

    def compare(self, prompts, media_a, media_b, orders: Orders = "both") -> PairwiseOutput:
        prompt_list, items_a = check_batch(prompts, media_a)
        _, items_b = check_batch(prompt_list, media_b)
        size = len(items_a)
        prob_a = torch.full((size,), float("nan"))
        consistent = torch.ones(size, dtype=torch.bool)
        errors: list[str | None] = [None] * size
        for i in range(size):
            try:
                bright_a = float(self.load_media(items_a[i]).mean())
                bright_b = float(self.load_media(items_b[i]).mean())
            except MediaError as err:
                errors[i] = str(err)
                continue
            a_first = torch.sigmoid(torch.tensor(self.sharpness * (bright_a - bright_b) + self.position_bias))
            b_first = 1.0 - torch.sigmoid(torch.tensor(self.sharpness * (bright_b - bright_a) + self.position_bias))
            prob_a[i] = (a_first + b_first) / 2 if orders == "both" else a_first
            consistent[i] = bool((a_first > 0.5) == (b_first > 0.5))
        failed = torch.tensor([e is not None for e in errors])
        return PairwiseOutput(
            prob_a=prob_a, tie=torch.zeros(size), consistent=consistent, failed=failed, errors=errors
        )


# ----------------------------------------------------------------------------------------- VideoGen-RewardBench

VIDEOGEN_COLUMNS = [
    "path_A",
    "path_B",
    "A_model",
    "B_model",
    "prompt",
    "fps_A",
    "num_frames_A",
    "fps_B",
    "num_frames_B",
    "VQ",
    "MQ",
    "TA",
    "Overall",
]


def write_videogen_fixture(root: Path, rows: Sequence[dict] | None = None) -> Path:
    """A VideoGen-RewardBench folder: the 4 sample mp4s in videos/ and a CSV with the real columns.

    Default rows: every pair of the 4 videos for each of 2 prompts (12 pairs, 8 distinct prompt-video items).
    Labels cycle through A/B/same per dimension, so every dimension has wins, losses and ties.
    """
    (root / "videos").mkdir(parents=True, exist_ok=True)
    videos = sample_videos()
    for name in VIDEO_NAMES:
        shutil.copyfile(videos[name], root / "videos" / f"{name}.mp4")
    if rows is None:
        cycle = ("A", "B", "same", "A", "B")
        rows = []
        for p, prompt in enumerate(VIDEO_PROMPTS):
            for k, (a, b) in enumerate(combinations(VIDEO_NAMES, 2)):
                n = 6 * p + k
                rows.append(
                    {
                        # VideoAlign's CSVs mix "videos/x.mp4" and "./videos/x.mp4"; both must resolve.
                        "path_A": f"videos/{a}.mp4",
                        "path_B": f"./videos/{b}.mp4",
                        "A_model": "m1",
                        "B_model": "m2",
                        "prompt": prompt,
                        "fps_A": 25.0,
                        "num_frames_A": 120,
                        "fps_B": 25.0,
                        "num_frames_B": 120,
                        "VQ": cycle[n % 5],
                        "MQ": cycle[(n + 1) % 5],
                        "TA": cycle[(n + 2) % 5],
                        "Overall": cycle[(n + 3) % 5],
                    }
                )
    with (root / "videogen-rewardbench.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


# --------------------------------------------------------------------------------------------- ImageReward test


def write_imagereward_fixture(root: Path, *, broken: bool = False) -> Path:
    """An ImageReward-test folder: test.json in the real schema and the sample photos under test_images/.

    3 prompts with 4, 4 and 3 images, ranks with ties (rank 1 = best). ``broken`` makes one image of the last
    prompt an unreadable file, so its score fails.
    """
    photos = sample_images()
    images = root / "test_images" / "part-000001" / "images"
    images.mkdir(parents=True, exist_ok=True)
    records, start = [], 0
    for index, (size, ranking) in enumerate(((4, [1, 2, 3, 4]), (4, [2, 1, 1, 3]), (3, [1, 3, 2]))):
        generations = []
        for photo in photos[start : start + size]:
            target = images / f"{index:04d}" / f"{photo.stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(photo).convert("RGB").resize((64, 64)).save(target)
            generations.append(target.relative_to(root / "test_images").as_posix())
        start += size
        records.append(
            {
                "id": f"00000{index}-0001",
                "prompt": f"a photo number {index}",
                "generations": generations,
                "ranking": ranking,
            }
        )
    if broken:
        (root / "test_images" / records[-1]["generations"][-1]).write_bytes(b"not an image at all")
    (root / "test.json").write_text(json.dumps(records), encoding="utf-8")
    return root


# ------------------------------------------------------------------------------------------------ parquet


def png_bytes(photo: Path, size: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.open(photo).convert("RGB").resize((size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(photo: Path, size: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.open(photo).convert("RGB").resize((size, size)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_parquet(path: Path, rows: list[dict]) -> Path:
    """Rows -> parquet; dict cells with bytes/path become the struct ``datasets`` uses for Image features."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def pickapic_rows(labels: list[float], offset: int) -> list[dict]:
    """Pick-a-Pic v2 rows with the dataset's columns; ``label_0`` 1 = image 0 preferred, 0.5 = tie."""
    photos = sample_images()
    return [
        {
            "are_different": True,
            "best_image_uid": "",
            "caption": f"caption {offset + i}",
            "has_label": True,
            "image_0_uid": f"uid-{offset + i}-0",
            "image_1_uid": f"uid-{offset + i}-1",
            "jpg_0": jpeg_bytes(photos[i]),
            "jpg_1": jpeg_bytes(photos[i + 1]),
            "label_0": label,
            "label_1": 1 - label,
            "model_0": "sdxl",
            "model_1": "sd15",
            "ranking_id": offset + i,
        }
        for i, label in enumerate(labels)
    ]


# ------------------------------------------------------------------------------------ TIGER-Lab EditReward-Bench

# Stand-in groups: (subset, group id, human ranking, source grey level, candidate grey levels A, B, ...). A brighter
# edit has a larger BrightnessDeltaReward score, so the reward's order is the order of the levels.
EDITREWARD_GROUPS = (
    (2, "s1", "A>B", 100, (160, 120)),
    (2, "s2", "A=B", 100, (130, 130)),
    (2, "s3", "A>B", 100, (110, 150)),
    (3, "t1", "C>A>B", 90, (140, 120, 200)),
    (3, "t2", "A>B>C", 90, (90, 150, 60)),
    (4, "u1", "D>B>A>C", 70, (120, 150, 80, 220)),
)


def grey_png(level: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (level, level, level)).save(buffer, format="PNG")
    return buffer.getvalue()


def editreward_rows(k: int, gid: str, ranking: str, source: int, levels: Sequence[int]) -> list[dict]:
    """The Hub rows of one group: one per pair ``XvsY``, ``candidate_1`` showing X; K=2 rows are the group."""
    rows = []
    for n, (i, j) in enumerate(combinations(range(k), 2)):
        x, y = "ABCD"[i], "ABCD"[j]
        if k == 2:
            verdict = ranking
        else:
            verdict = f"{x}>{y}" if ranking.index(x) < ranking.index(y) else f"{y}>{x}"
        rows.append(
            {
                "id": gid if k == 2 else f"{gid}_{n}",
                "instruction": f"brighten the scene ({gid})",
                "dataset": f"{k}pair",
                "comparison_type": f"{x}vs{y}",
                "ranking": verdict,
                "source_image": {"bytes": grey_png(source), "path": None},
                "candidate_1": {"bytes": grey_png(levels[i]), "path": None},
                "candidate_2": {"bytes": grey_png(levels[j]), "path": None},
                "model_1": f"model-{x}",
                "model_2": f"model-{y}",
                "score_1": float(levels[i]),
                "score_2": float(levels[j]),
            }
        )
    return rows


def write_editreward_bench_standin(data: Path) -> Path:
    """EditReward-Bench in the Hub layout: ``DIR/<k>pair/train-*.parquet`` with the groups of EDITREWARD_GROUPS;
    the 4-pair group's rows are split over two shards, and the 3-pair file has a malformed group (a comparison of a
    candidate E the subset does not have)."""
    by_subset: dict[int, list[dict]] = {2: [], 3: [], 4: []}
    for k, gid, ranking, source, levels in EDITREWARD_GROUPS:
        by_subset[k] += editreward_rows(k, gid, ranking, source, levels)
    bad = editreward_rows(3, "t3", "A>B>C", 90, (100, 110, 120))
    bad[1]["comparison_type"] = "AvsE"
    write_parquet(data / "2pair" / "train-00000-of-00001.parquet", by_subset[2])
    write_parquet(data / "3pair" / "train-00000-of-00001.parquet", by_subset[3] + bad)
    write_parquet(data / "4pair" / "train-00000-of-00002.parquet", by_subset[4][:4])
    write_parquet(data / "4pair" / "train-00001-of-00002.parquet", by_subset[4][4:])
    return data

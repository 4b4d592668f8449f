"""GenAI-Bench (Jiang et al. 2024, GenAI-Arena, arXiv 2406.04485): GenAI-Arena human votes, split ``test_v1``.

Hugging Face dataset ``TIGER-Lab/GenAI-Bench``, configs ``image_generation`` (1,735 votes), ``video_generation``
(1,069) and ``image_edition`` (919). Each config's ``test_v1`` split is a parquet file under ``DIR/<config>/`` with

- image_generation: ``prompt, left_model, left_image, right_model, right_image, vote_type``
- video_generation: ``prompt, left_model, left_video, right_model, right_video, vote_type`` (videos are URLs)
- image_edition: ``source_prompt, target_prompt, instruct_prompt, source_image, left_model, left_output_image,
  right_model, right_output_image, vote_type``

``vote_type`` is ``leftvote`` (A better), ``rightvote`` (B better), ``tievote`` or ``bothbad_vote`` (both ties, as
in the "tau"/"diff" numbers of reward-model papers). The loaded rows are checked against the test_v1 votes shipped
with mmreward (``TIGER-AI-Lab/GenAI-Bench`` ``results/<config>/random/pairwise.json``: per-row prompt and human vote)
so that another split or revision (``test`` has 3,192 image votes) is an error, not a silently different number.

Embedded images are written once to ``DIR/media/<config>/``. Videos are looked up by the URL's file name in
``DIR/video_generation/videos/``; ``download=True`` fetches Hub-hosted ones with huggingface_hub.

Image editing is scored with ``target_prompt`` (a caption of the wanted result, which text-image rewards can
judge); ``instruct_prompt`` and the source image are kept in each pair's ``meta``.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from mmreward.evaluation.benchmarks.base import (
    SHIPPED_LABELS,
    Benchmark,
    BenchmarkDataError,
    BenchmarkDownloadError,
    DatasetSource,
    MissingMediaError,
    PreferencePair,
    ReferenceResult,
    check_data_dir,
    check_media,
    hub_download,
    read_json,
    require_list_of_records,
)
from mmreward.evaluation.benchmarks.parquet_media import read_parquet_rows, write_image

Task = Literal["image", "video", "edit"]
SPLIT = "test_v1"
HUB_ID = "TIGER-Lab/GenAI-Bench"
VOTES = {"leftvote": 1, "rightvote": -1, "tievote": 0, "bothbad_vote": 0}


@dataclass(frozen=True)
class _TaskSpec:
    """A GenAI-Bench config: its name, the column scored as the prompt, the A/B media columns, other columns."""

    config: str
    prompt: str
    a: str
    b: str
    extra: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.prompt, self.a, self.b, "vote_type", *self.extra)


TASKS: dict[str, _TaskSpec] = {
    "image": _TaskSpec("image_generation", "prompt", "left_image", "right_image", ()),
    "video": _TaskSpec("video_generation", "prompt", "left_video", "right_video", ()),
    "edit": _TaskSpec(
        "image_edition",
        "target_prompt",
        "left_output_image",
        "right_output_image",
        ("source_prompt", "instruct_prompt", "source_image"),
    ),
}

# UnifiedReward README @838b1cd (eval.md 2.2): tau / diff, percent, test split of the RM papers.
REFERENCES = {
    "image": (
        ReferenceResult("PickScore", "w/o ties (diff)", 67.2, "UnifiedReward README"),
        ReferenceResult("PickScore", "w/ ties (tau)", 53.2, "UnifiedReward README"),
        ReferenceResult("HPSv2", "w/o ties (diff)", 68.4, "UnifiedReward README"),
        ReferenceResult("UnifiedReward-7B-v1.5", "w/o ties (diff)", 72.4, "UnifiedReward README"),
    ),
    "video": (
        ReferenceResult("VideoReward", "w/o ties (diff)", 73.3, "UnifiedReward README"),
        ReferenceResult("VideoReward", "w/ ties (tau)", 50.2, "UnifiedReward README"),
        ReferenceResult("UnifiedReward-7B-v1.5", "w/o ties (diff)", 78.5, "UnifiedReward README"),
    ),
    "edit": (ReferenceResult("EditReward (MiMo-VL-7B)", "4-way accuracy", 65.72, "EditReward README"),),
}


def source(task: Task) -> DatasetSource:
    spec = TASKS[task]
    return DatasetSource(
        hub_id=HUB_ID,
        files=(f"{spec.config}/{SPLIT}*",),
        layout=f"DIR/{spec.config}/{SPLIT}-*.parquet (or DIR/{spec.config}/{SPLIT}/*.parquet)"
        + (f"; videos in DIR/{spec.config}/videos/<file name of the URL>" if task == "video" else ""),
        license="CC-BY-4.0 (dataset card; earlier revisions MIT)",
        paper="Jiang et al. 2024, GenAI Arena, arXiv 2406.04485",
    )


def _parquet_files(data_dir: Path, task: Task) -> list[Path]:
    folder = data_dir / TASKS[task].config
    files = sorted({*folder.glob(f"{SPLIT}-*.parquet"), *folder.glob(f"{SPLIT}/*.parquet")})
    if not files:
        found = sorted(str(p.relative_to(data_dir)) for p in folder.rglob("*.parquet")) if folder.is_dir() else []
        raise MissingMediaError(
            f"no {SPLIT} parquet file for GenAI-Bench {TASKS[task].config} under {str(folder)!r}"
            + (f" (found other splits: {found})" if found else "")
            + f". {source(task).how_to_get()}"
        )
    return files


def _check_votes(rows: list[dict], votes_path: Path, task: Task) -> None:
    """The rows must be test_v1: same count, and per row the same vote (and prompt, where the votes have one)."""
    votes = require_list_of_records(read_json(votes_path, "GenAI-Bench votes"), votes_path, ("idx", "human_vote"))
    by_idx = {int(v["idx"]): v for v in votes}
    hint = (
        f"the data directory does not hold GenAI-Bench {TASKS[task].config} split {SPLIT} as published "
        f"(reference votes: {str(votes_path)!r}); another split or revision gives different numbers"
    )
    if len(rows) != len(by_idx):
        raise BenchmarkDataError(f"{len(rows)} rows but {len(by_idx)} {SPLIT} votes: {hint}")
    prompt_key = TASKS[task].prompt
    for idx, row in enumerate(rows):
        vote = by_idx.get(idx)
        if vote is None or vote["human_vote"] != row["vote_type"]:
            raise BenchmarkDataError(f"row {idx}: vote {row['vote_type']!r} differs from the reference: {hint}")
        if "prompt" in vote and prompt_key == "prompt" and vote["prompt"] != row["prompt"]:
            raise BenchmarkDataError(f"row {idx}: prompt differs from the reference: {hint}")


def _video_name(url: str) -> str:
    return Path(unquote(urlparse(url).path)).name


_HUB_FILE_URL = re.compile(r"^https?://huggingface\.co/(?:datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def download_videos(urls: list[str], folder: Path) -> None:
    """Fetch videos hosted on the Hugging Face Hub (``.../resolve/<revision>/<file>`` URLs) into ``folder``."""
    from huggingface_hub import hf_hub_download

    elsewhere = [u for u in urls if not _HUB_FILE_URL.match(u)]
    if elsewhere:
        raise BenchmarkDownloadError(
            f"{len(elsewhere)} GenAI-Bench video URL(s) are not Hugging Face Hub files and are not fetched by "
            f"--download (first: {elsewhere[0]}); download them into {str(folder)!r} yourself"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for url in urls:
        repo, revision, filename = _HUB_FILE_URL.match(url).groups()
        repo_type = "dataset" if "/datasets/" in url else "model"
        try:
            cached = hf_hub_download(repo, unquote(filename), revision=revision, repo_type=repo_type)
        except Exception as err:
            raise BenchmarkDownloadError(
                f"cannot download GenAI-Bench video {url}: {type(err).__name__}: {str(err).splitlines()[0]}. "
                f"Download it where the hub is reachable into {str(folder)!r}"
            ) from err
        shutil.copyfile(cached, folder / _video_name(url))


def load(
    data_dir: str | Path, *, task: Task = "image", download_missing: bool = False, votes_file: Path | None = None
) -> Benchmark:
    """Load GenAI-Bench ``task`` (``"image"``, ``"video"`` or ``"edit"``), split test_v1, from ``data_dir``.

    ``votes_file`` replaces the shipped reference votes the rows are checked against (same format).
    """
    if task not in TASKS:
        raise ValueError(f"unknown GenAI-Bench task {task!r}; one of {sorted(TASKS)}")
    spec, src = TASKS[task], source(task)
    data_dir = Path(data_dir).expanduser()
    if download_missing:
        hub_download(src, data_dir)
    data_dir = check_data_dir(data_dir, src)
    rows = read_parquet_rows(_parquet_files(data_dir, task), spec.columns)
    unknown = sorted({str(r["vote_type"]) for r in rows} - set(VOTES))
    if unknown:
        raise BenchmarkDataError(f"unknown vote_type value(s) {unknown}; expected {sorted(VOTES)}")
    _check_votes(rows, votes_file or SHIPPED_LABELS / f"genaibench_{spec.config}_votes.json", task)

    media_dir = data_dir / "media" / spec.config / SPLIT
    video_dir = data_dir / spec.config / "videos"
    pairs = []
    for idx, row in enumerate(rows):
        where = f"GenAI-Bench {spec.config} row {idx}"
        if task == "video":
            media_a, media_b = (video_dir / _video_name(str(row[k])) for k in (spec.a, spec.b))
        else:
            media_a = write_image(row[spec.a], media_dir / f"{idx:05d}_left", f"{where} {spec.a}")
            media_b = write_image(row[spec.b], media_dir / f"{idx:05d}_right", f"{where} {spec.b}")
        meta = {
            "vote_type": row["vote_type"],
            "left_model": row.get("left_model"),
            "right_model": row.get("right_model"),
        }
        if task == "edit":
            meta["instruct_prompt"] = row["instruct_prompt"]
            meta["source_image"] = str(write_image(row["source_image"], media_dir / f"{idx:05d}_source", where))
        pairs.append(
            PreferencePair(
                id=str(idx),
                prompt=str(row[spec.prompt]),
                media_a=media_a,
                media_b=media_b,
                labels={"Overall": VOTES[row["vote_type"]]},
                meta=meta,
            )
        )
    if task == "video":
        _ensure_videos(rows, spec, video_dir, download_missing)
    benchmark = Benchmark(
        name=f"genai-bench-{task}",
        title=f"GenAI-Bench {spec.config} ({SPLIT})",
        media_kind="video" if task == "video" else "image",
        protocol="pairwise",
        dims=("Overall",),
        source=src,
        headline="accuracy_without_ties",
        pairs=pairs,
        references=REFERENCES[task],
        notes=["tievote and bothbad_vote are both human ties"],
    )
    check_media(benchmark.media_paths(), src, data_dir)
    return benchmark


def _ensure_videos(rows: list[dict], spec: _TaskSpec, video_dir: Path, download_missing: bool) -> None:
    """Download missing Hub-hosted videos when asked; otherwise list the missing URLs in a file for the user."""
    urls = {str(row[k]) for row in rows for k in (spec.a, spec.b)}
    missing = sorted(u for u in urls if not (video_dir / _video_name(u)).is_file())
    if not missing:
        return
    if download_missing:
        download_videos(missing, video_dir)
        return
    video_dir.mkdir(parents=True, exist_ok=True)
    listing = video_dir / "missing_video_urls.txt"
    listing.write_text("\n".join(missing) + "\n", encoding="utf-8")
    raise MissingMediaError(
        f"{len(missing)} GenAI-Bench video(s) are missing from {str(video_dir)!r}; their URLs are listed in "
        f"{str(listing)!r} (fetch them there, e.g. `wget -P {video_dir} -i {listing}`, or rerun with --download)"
    )

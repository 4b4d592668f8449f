"""The uniform form every benchmark loader produces, and the checks and file helpers they share.

A loader reads a benchmark's files in their published layout and returns a :class:`Benchmark`: preference
*pairs* (prompt, media A, media B, a human label per dimension) or ranked *groups* (prompt, K media, human
ranks), with local media paths. Loaders validate the schema (missing or renamed fields are errors naming the file,
the row and the expected fields) and check that every media file exists; when some are missing the error lists
them and says where the dataset lives on the Hugging Face Hub. Nothing is downloaded unless the caller asks
(``download=True``, ``--download``), and then only through ``huggingface_hub``.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mmreward.errors import MMRewardError

# Label files shipped with mmreward (the project's data/benchmarks, linked into the package).
SHIPPED_LABELS = Path(__file__).resolve().parent / "labels"

Protocol = Literal["pairwise", "pickscore", "ranking", "mmrb2", "editreward"]
_MISSING_SHOWN = 5


class BenchmarkDataError(MMRewardError, ValueError):
    """A benchmark's files are missing, malformed, or not the expected version."""


class MissingMediaError(BenchmarkDataError, FileNotFoundError):
    """Media files a benchmark refers to are not in the data directory."""


class BenchmarkDownloadError(BenchmarkDataError):
    """Downloading a benchmark from the Hugging Face Hub failed (offline, unknown file, network)."""


@dataclass(frozen=True)
class DatasetSource:
    """Where a benchmark lives and what a data directory must hold.

    Attributes:
        hub_id: the Hugging Face dataset id.
        files: the files (or glob patterns) of that dataset the loader needs.
        layout: how ``--data-dir`` must look, for messages.
        license: the dataset's licence as its card states it.
        paper: the paper that defines the benchmark and its metric.
    """

    hub_id: str
    files: tuple[str, ...]
    layout: str
    license: str
    paper: str

    def how_to_get(self) -> str:
        include = "--include " + " ".join(f"'{f}'" for f in self.files)
        return (
            f"The dataset is on the Hugging Face Hub as {self.hub_id} (files: {', '.join(self.files)}; licence "
            f"{self.license}). Get it with `hf download {self.hub_id} --repo-type dataset {include} --local-dir DIR` "
            f"(then unpack archives) or rerun with --download; expected layout: {self.layout}"
        )


@dataclass(frozen=True)
class PreferencePair:
    """Two media for one prompt and the human verdicts.

    Attributes:
        id: stable identifier within the benchmark (row index or the dataset's own id).
        prompt: the text the media were generated from (what rewards score against).
        media_a, media_b: local paths.
        labels: dimension -> +1 (A better), 0 (tie), -1 (B better). A dimension is absent where the pair has no
            usable label for it (e.g. MJ-Bench-Video's "Hard to judge").
        meta: benchmark-specific fields kept for reports (model names, source image, raw vote).
    """

    id: str
    prompt: str
    media_a: Path
    media_b: Path
    labels: dict[str, int]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RankedGroup:
    """K media for one prompt with their human ranks (lower is better, ties allowed)."""

    id: str
    prompt: str
    media: tuple[Path, ...]
    ranks: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceResult:
    """A published number to compare with (model, metric, value in percent, where it was published)."""

    model: str
    metric: str
    value: float
    source: str


@dataclass
class Benchmark:
    """A loaded benchmark.

    Attributes:
        name: registry name, e.g. ``"videogen-rewardbench"``.
        title: human-readable name with split.
        media_kind: ``"image"`` or ``"video"``.
        protocol: which metrics apply: ``"pairwise"`` (accuracy with/without ties per dimension), ``"pickscore"``
            (PickScore's tie accuracy with a validation split, plus the pairwise metrics), ``"ranking"`` or
            ``"mmrb2"`` (MMRB2's accuracy over both presentation orders, plus the pairwise metrics per task) or
            ``"editreward"`` (EditReward-Bench's strict ranking and pairwise accuracies per group size; groups with
            their source image in ``meta["source_image"]``).
        dims: label dimensions, in report order.
        pairs: test pairs (pairwise and pickscore protocols).
        validation_pairs: pairs used only to choose a threshold (Pick-a-Pic ``validation_unique``).
        groups: ranked groups (ranking protocol).
        headline: the metric each paper reports for this benchmark (a key of the result dictionaries).
        source: where the data lives.
        references: published numbers, for the report.
        notes: facts about this load a reader needs (excluded pairs, split).
        subset_sizes: pairs per subset (task) in the published files, loaded or not (MMRB2's metric reports the
            pairs it leaves out as missing); groups per size for EditReward-Bench.
    """

    name: str
    title: str
    media_kind: Literal["image", "video"]
    protocol: Protocol
    dims: tuple[str, ...]
    source: DatasetSource
    headline: str
    pairs: list[PreferencePair] = field(default_factory=list)
    validation_pairs: list[PreferencePair] = field(default_factory=list)
    groups: list[RankedGroup] = field(default_factory=list)
    references: tuple[ReferenceResult, ...] = ()
    notes: list[str] = field(default_factory=list)
    subset_sizes: dict[str, int] = field(default_factory=dict)

    def media_paths(self) -> list[Path]:
        """Every media path the benchmark uses (with repeats)."""
        paths: list[Path] = []
        for pair in (*self.pairs, *self.validation_pairs):
            paths += [pair.media_a, pair.media_b]
        for group in self.groups:
            paths += list(group.media)
        return paths

    def limited(self, limit: int | None) -> Benchmark:
        """The first ``limit`` pairs (and validation pairs) or groups, for quick runs; ``None`` keeps all."""
        if limit is None:
            return self
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        total = len(self.pairs) or len(self.groups)
        notes = [*self.notes, f"limited to the first {limit} of {total} items (--limit): not the full benchmark"]
        return replace(
            self,
            pairs=self.pairs[:limit],
            validation_pairs=self.validation_pairs[:limit],
            groups=self.groups[:limit],
            notes=notes,
        )


# --------------------------------------------------------------------------------------------- file reading


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file, with an error that names the file and what it should be."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise BenchmarkDataError(f"{what} not found: {str(path)!r}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BenchmarkDataError(f"cannot read {what} {str(path)!r}: {err}") from err


def require_list_of_records(data: Any, path: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    """Check that ``data`` is a non-empty list of objects that all have the ``required`` fields."""
    if not isinstance(data, list) or not data:
        raise BenchmarkDataError(
            f"{str(path)!r} must hold a non-empty JSON list of records, got {type(data).__name__}"
        )
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise BenchmarkDataError(f"{str(path)!r} record {index} is a {type(record).__name__}, not an object")
        missing = [key for key in required if key not in record]
        if missing:
            raise BenchmarkDataError(
                f"{str(path)!r} record {index} lacks field(s) {missing}; this benchmark's records need "
                f"{list(required)} (found {sorted(record)})"
            )
    return data


def require_columns(columns: Iterable[str], path: Path, required: Sequence[str]) -> None:
    """Check a table's columns, naming the missing ones and the ones found."""
    found = list(columns)
    missing = [c for c in required if c not in found]
    if missing:
        raise BenchmarkDataError(
            f"{str(path)!r} lacks column(s) {missing}; expected columns {list(required)}, found {found}"
        )


def label_file(data_dir: Path, name: str, shipped_name: str) -> Path:
    """``data_dir/name`` when the data directory has its own copy, else mmreward's shipped copy."""
    local = data_dir / name
    if local.is_file():
        return local
    shipped = SHIPPED_LABELS / shipped_name
    if not shipped.is_file():
        raise BenchmarkDataError(f"neither {str(local)!r} nor mmreward's shipped label file {str(shipped)!r} exists")
    return shipped


def check_data_dir(data_dir: str | Path, source: DatasetSource) -> Path:
    """The data directory as a Path; an error with the download instructions when it does not exist."""
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise BenchmarkDataError(f"data directory {str(path)!r} does not exist. {source.how_to_get()}")
    return path


def check_media(paths: Iterable[Path], source: DatasetSource, data_dir: Path) -> None:
    """Raise :class:`MissingMediaError` listing the missing files (the first few and a count)."""
    missing = sorted({str(p) for p in paths if not p.is_file()})
    if missing:
        shown = "\n  ".join(missing[:_MISSING_SHOWN])
        more = f"\n  ... and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
        raise MissingMediaError(
            f"{len(missing)} media file(s) of this benchmark are missing under {str(data_dir)!r}:\n  {shown}{more}\n"
            f"{source.how_to_get()}"
        )


def read_csv_records(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file with a header, after checking the ``required`` columns are there."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            require_columns(reader.fieldnames or [], path, required)
            rows = list(reader)
    except FileNotFoundError as err:
        raise BenchmarkDataError(f"label file not found: {str(path)!r}") from err
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BenchmarkDataError(f"cannot read CSV {str(path)!r}: {err}") from err
    if not rows:
        raise BenchmarkDataError(f"{str(path)!r} has a header but no rows")
    return rows


class MediaResolver:
    """Find a media file a label file names by a relative path.

    Tries ``root / relative`` for each root in order. When ``match_names`` is set and none exists, falls back to
    a file of the same name anywhere under the first root (for archives that unpack into another folder layout
    but keep unique file names, like ImageReward's uuid-named images). Unresolved paths are returned under the
    first root, so the missing-media check reports where the file was expected.
    """

    def __init__(self, roots: Sequence[Path], *, match_names: Iterable[str] = ()) -> None:
        self.roots = list(roots)
        self.suffixes = {s.lower() for s in match_names}
        self._by_name: dict[str, Path] | None = None

    def __call__(self, relative: str) -> Path:
        for root in self.roots:
            candidate = Path(os.path.normpath(root / relative))
            if candidate.is_file():
                return candidate
        name = Path(relative).name
        if self.suffixes and name in self._index():
            return self._index()[name]
        return Path(os.path.normpath(self.roots[0] / relative))

    def _index(self) -> dict[str, Path]:
        if self._by_name is None:
            found: dict[str, Path | None] = {}
            root = self.roots[0]
            if root.is_dir():
                for path in root.rglob("*"):
                    if path.suffix.lower() in self.suffixes and path.is_file():
                        # A name seen twice is ambiguous: map it to None and drop it below.
                        found[path.name] = None if path.name in found else path
            self._by_name = {name: path for name, path in found.items() if path is not None}
        return self._by_name


# ----------------------------------------------------------------------------------------------- download


def hub_download(source: DatasetSource, data_dir: Path, patterns: Sequence[str] | None = None) -> None:
    """Download ``patterns`` (default: all the benchmark's files) of the dataset into ``data_dir``.

    Uses ``huggingface_hub.snapshot_download``, so the usual settings apply (HF_TOKEN, HF_ENDPOINT, cache);
    files already in ``data_dir`` are not fetched again.
    """
    from huggingface_hub import snapshot_download

    allow = list(patterns or source.files)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(source.hub_id, repo_type="dataset", allow_patterns=allow, local_dir=data_dir)
    except Exception as err:  # offline, unknown repo or file, network, auth: all mean "could not download"
        offline = " HF_HUB_OFFLINE is set, so the hub is not contacted." if os.environ.get("HF_HUB_OFFLINE") else ""
        reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else ""
        raise BenchmarkDownloadError(
            f"cannot download {allow} of the Hugging Face dataset {source.hub_id} into {str(data_dir)!r}: "
            f"{type(err).__name__}: {reason}.{offline} Download the files where the hub is reachable "
            f"(`hf download {source.hub_id} --repo-type dataset --local-dir DIR`), unpack archives, and pass "
            "--data-dir DIR without --download"
        ) from err


def extract_archive(archive: Path, target: Path) -> None:
    """Unpack a .zip or .tar(.gz) into ``target``, refusing members that would land outside it."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            _check_members(archive, root, names)
            zf.extractall(target)
    else:
        with tarfile.open(archive) as tf:
            _check_members(archive, root, tf.getnames())
            tf.extractall(target, filter="data")


def unpack_once(archive: Path, target: Path, marker: Path) -> None:
    """Extract ``archive`` (when downloaded) into ``target`` unless ``marker`` exists, then create ``marker``: a
    rerun skips archives of many GB, and an extraction cut short leaves no marker, so the next run redoes it."""
    if archive.is_file() and not marker.exists():
        extract_archive(archive, target)
        marker.touch()


def _check_members(archive: Path, root: Path, names: Iterable[str]) -> None:
    for name in names:
        if not (root / name).resolve().is_relative_to(root):
            raise BenchmarkDataError(f"archive {str(archive)!r} has a member outside its folder: {name!r}")

"""Chosen/rejected media pairs for aligning generators (Flow-DPO), read from CSV or JSONL and brought to one size.

Two table layouts are accepted (``.csv``, ``.jsonl`` or ``.json`` lines):

- ``prompt, chosen, rejected``: paths of the preferred and the other image or video;
- the VideoAlign pair schema ``path_A, path_B, prompt, VQ, MQ, TA[, fps_A, num_frames_A, ...]`` with labels
  ``A``/``B``/``same`` per dimension. ``label_columns`` says which dimensions decide: the side with more votes
  among them is chosen (``[TA]`` for text alignment only, ``[VQ, MQ, TA]`` for the majority of the three); rows
  without a winner are skipped as ties.

Editing families' pairs add a source image column (``source_column``, ``data.image_column`` of Flow-DPO, default
``image``): both sides are edits of that source under the row's instruction (``prompt``), e.g. one JSONL line
``{"prompt": "make it brighter", "image": "sources/cat.png", "chosen": "edits/cat_a.png", "rejected":
"edits/cat_b.png"}``. The column is then required in the header; a row without a source, or whose source is missing
or is not an image, is skipped alone with its row number.

Relative paths resolve against ``media_root`` (default: the table's directory). Rows whose files are missing,
and JSONL lines that are not JSON objects, are skipped with their reason; the caller reports the list (never a
silent drop).

The size rule (:func:`load_fitted`): every image or video frame is scaled so that it covers
``height x width`` and center-cropped to exactly that size (aspect ratio kept, nothing stretched). Videos are
sampled at ``fps`` (the generator's frame rate) and cut to the first ``num_frames`` frames; with ``fps=None``,
``num_frames`` frames are spread over the whole clip. A clip with fewer frames is rejected, never padded. The two
sides of a pair therefore always have the same shape.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mmreward import media as media_io
from mmreward.errors import ConfigError, MediaError
from mmreward.jsonl import json_object_lines


@dataclass(frozen=True)
class MediaPair:
    """One preference: ``chosen`` is preferred over ``rejected`` for ``prompt``; ``row`` is the table row (1-based,
    header excluded); ``source``: the image both sides edit (editing families), else None."""

    prompt: str
    chosen: Path
    rejected: Path
    row: int
    source: Path | None = None


@dataclass
class SkippedPair:
    row: int
    reason: str


@dataclass
class PairTable:
    pairs: list[MediaPair] = field(default_factory=list)
    skipped: list[SkippedPair] = field(default_factory=list)


def _read_rows(path: Path) -> list[dict | str]:
    """The table's rows in order; a JSONL line that is not a JSON object stands as the reason it is skipped."""
    if not path.is_file():
        raise ConfigError(f"pairs file {str(path)!r} does not exist")
    if path.suffix.lower() == ".csv":
        # utf-8-sig: spreadsheet programs save "CSV UTF-8" with a byte-order mark before the first column name.
        with path.open(newline="", encoding="utf-8-sig") as f:
            return [dict(row) for row in csv.DictReader(f)]
    if path.suffix.lower() in (".jsonl", ".json"):
        return [row for _, row in json_object_lines(path.read_text(encoding="utf-8-sig"))]
    raise ConfigError(f"pairs file {str(path)!r} must be .csv or .jsonl (one JSON object per line)")


def _vote_margin(row: dict, label_columns: Sequence[str]) -> int:
    """Votes for A minus votes for B among ``label_columns`` (labels ``A``, ``B`` or ``same``, any case): positive
    when A is preferred, negative when B is, zero for a tie."""
    votes = [str(row[c]).strip().upper() for c in label_columns]
    return votes.count("A") - votes.count("B")


def _kind_or_reason(path: Path) -> str:
    """``image`` or ``video`` by the file's extension, or why it is neither."""
    try:
        return media_io.media_kind(path)
    except MediaError as err:
        return str(err)


def read_pair_table(
    path: str | Path,
    *,
    media_root: str | Path | None = None,
    label_columns: Sequence[str] = (),
    source_column: str | None = None,
) -> PairTable:
    """Read a pair table (see the module docstring). Missing files and ties are skipped, with reasons.
    ``source_column``: editing pairs, the column of the source image both sides edit (required in the header)."""
    path = Path(path)
    rows = _read_rows(path)
    if not any(isinstance(row, dict) for row in rows):
        raise ConfigError(f"pairs file {str(path)!r} has no rows" + (f" ({rows[0]})" if rows else ""))
    columns = set(next(row for row in rows if isinstance(row, dict)))
    root = Path(media_root) if media_root else path.parent
    videoalign = {"path_A", "path_B", "prompt"} <= columns
    if videoalign:
        if not label_columns:
            labels = sorted(
                columns
                - {"path_A", "path_B", "prompt"}
                - {c for c in columns if c.startswith(("fps_", "num_frames_"))}
            )
            raise ConfigError(
                f"{str(path)!r} uses the VideoAlign schema; set data.label_columns to the dimensions that decide "
                f"which side is preferred (available: {labels}), e.g. [TA] or [VQ, MQ, TA]"
            )
        unknown = sorted(set(label_columns) - columns)
        if unknown:
            raise ConfigError(f"label columns {unknown} are not in {str(path)!r} (columns: {sorted(columns)})")
    elif not {"prompt", "chosen", "rejected"} <= columns:
        raise ConfigError(
            f"{str(path)!r} has columns {sorted(columns)}; expected prompt, chosen, rejected (paths) or the "
            "VideoAlign schema path_A, path_B, prompt and label columns"
        )
    if source_column is not None and source_column not in columns:
        raise ConfigError(
            f"{str(path)!r} has no source image column {source_column!r} (columns: {sorted(columns)}); editing "
            "families train on edits of a source: add the column (the source image's path) or set data.image_column"
        )
    required = {"path_A", "path_B", *label_columns} if videoalign else {"chosen", "rejected"}
    required |= set() if source_column is None else {source_column}
    table = PairTable()
    for number, row in enumerate(rows, start=1):
        if isinstance(row, str):
            table.skipped.append(SkippedPair(number, row))
            continue
        absent = sorted(c for c in required if row.get(c) in (None, ""))
        if absent:
            table.skipped.append(SkippedPair(number, f"no value for {', '.join(absent)}"))
            continue
        prompt = str(row.get("prompt") or "").strip()
        if not prompt:
            table.skipped.append(SkippedPair(number, "empty prompt"))
            continue
        if videoalign:
            margin = _vote_margin(row, label_columns)
            if margin == 0:
                table.skipped.append(SkippedPair(number, f"tie on {', '.join(label_columns)}"))
                continue
            chosen, rejected = (row["path_A"], row["path_B"]) if margin > 0 else (row["path_B"], row["path_A"])
        else:
            chosen, rejected = row["chosen"], row["rejected"]
        sides = (chosen, rejected) if source_column is None else (chosen, rejected, row[source_column])
        paths = [root / str(p) for p in sides]  # an absolute path replaces the root
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            table.skipped.append(SkippedPair(number, f"missing file(s): {', '.join(missing)}"))
            continue
        source = None if source_column is None else paths[2]
        kind = None if source is None else _kind_or_reason(source)
        if kind not in (None, "image"):
            table.skipped.append(SkippedPair(number, f"source {str(source)!r} is not an image ({kind})"))
            continue
        table.pairs.append(MediaPair(prompt, paths[0], paths[1], number, source))
    return table


def fit_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scale ``(..., 3, h, w)`` so it covers ``height x width`` (aspect kept), then center-crop to exactly that."""
    h, w = frames.shape[-2:]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    flat = frames.reshape(-1, 3, h, w)  # (N, 3, h, w) for images (N=1) and videos (N=T)
    if (new_h, new_w) != (h, w):
        flat = F.interpolate(flat, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    flat = flat[..., top : top + height, left : left + width]  # bilinear weights are convex: stays in [0, 1]
    return flat.reshape(*frames.shape[:-2], height, width)


def load_fitted(
    path: str | Path,
    *,
    kind: str,
    height: int,
    width: int,
    num_frames: int | None = None,
    fps: float | None = None,
) -> torch.Tensor:
    """One media file at the pair size: image ``(3, H, W)`` or video ``(num_frames, 3, H, W)``.

    Raises MediaError when the file cannot be read, is of the other kind, or is a video that is too short.
    """
    actual = media_io.media_kind(path)
    if actual != kind:
        raise MediaError(f"{str(path)!r} is an {actual}, but this model generates {kind}s")
    if kind == "image":
        return fit_frames(media_io.load_image(path), height, width)
    if num_frames is None:
        raise ConfigError("video pairs need num_frames")
    if fps is None:
        frames, _ = media_io.load_video(path, num_frames=num_frames, if_short="error")
    else:
        frames, info = media_io.load_video(path, fps=fps)
        if frames.shape[0] < num_frames:
            raise MediaError(
                f"{str(path)!r} gives {frames.shape[0]} frames at {fps} fps ({info.duration:.2f} s), fewer than "
                f"num_frames={num_frames}; the clip is rejected rather than padded"
            )
        frames = frames[:num_frames]
    return fit_frames(frames, height, width)

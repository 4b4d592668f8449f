"""Preference-pair files: VideoAlign's CSV schema (also VideoGen-RewardBench's) and the same fields as JSONL.

Columns / keys::

    path_A, path_B, prompt, <dim>, <dim>, ...     labels per dimension: A | B | same (case-insensitive; "tie" = same)
    [MOS_A_<dim>, MOS_B_<dim>]                    optional mean opinion scores (the margin loss uses their gap)
    [fps_A, num_frames_A, fps_B, num_frames_B]    ignored: frames are sampled from the containers' real fps

Relative media paths are resolved against ``media_root`` (default: the file's directory); ``"./videos/x.mp4"``
and ``"videos/x.mp4"`` are the same file. Labels are encoded as VideoAlign does: +1 (A better), -1 (B better),
0 (tie), and :data:`INVALID` for anything else (empty, "invalid"), which losses and metrics ignore.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from mmreward.errors import ConfigError

INVALID = 22  # VideoAlign's code for an unusable label
_LABELS = {"a": 1, "b": -1, "same": 0, "tie": 0}


@dataclass
class LabeledPair:
    """One annotated pair: media paths, the prompt, per-dimension labels and optional MOS gaps (A minus B)."""

    path_a: str
    path_b: str
    prompt: str
    labels: dict[str, int]
    mos_gap: dict[str, float] = field(default_factory=dict)


def _rows(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{str(path)!r} line {number} is not valid JSON: {err}") from err
                if not isinstance(row, dict):
                    raise ConfigError(f"{str(path)!r} line {number} is not a JSON object")
                rows.append({k: "" if v is None else str(v) for k, v in row.items()})
        return rows
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_pairs(
    path: str | Path, dims: list[str] | tuple[str, ...], media_root: str | Path | None = None
) -> list[LabeledPair]:
    """Read a pair file (CSV, or JSONL with the same keys) and check every media file exists.

    Raises:
        ConfigError: missing file or columns (the message lists the columns found), no rows, missing media.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pair file {str(path)!r} does not exist")
    rows = _rows(path)
    if not rows:
        raise ConfigError(f"pair file {str(path)!r} has no rows")
    needed = ["path_A", "path_B", "prompt", *dims]
    missing = [c for c in needed if c not in rows[0]]
    if missing:
        raise ConfigError(f"pair file {str(path)!r} lacks column(s) {missing}; it has {sorted(rows[0])}")
    root = Path(media_root) if media_root is not None else path.parent
    pairs, absent = [], []
    for row in rows:
        media = []
        for key in ("path_A", "path_B"):
            file = Path(row[key])
            file = file if file.is_absolute() else root / file
            if not file.is_file():
                absent.append(str(file))
            media.append(str(file))
        labels = {d: _LABELS.get(row[d].strip().lower(), INVALID) for d in dims}
        gaps = {}
        for d in dims:
            a, b = row.get(f"MOS_A_{d}", ""), row.get(f"MOS_B_{d}", "")
            if a.strip() and b.strip():
                gap = float(a) - float(b)
                if math.isfinite(gap):
                    gaps[d] = gap
        pairs.append(LabeledPair(media[0], media[1], row["prompt"], labels, gaps))
    if absent:
        raise ConfigError(
            f"{len(absent)} media file(s) named in {str(path)!r} do not exist (relative paths are read from "
            f"{str(root)!r}; set media_root), e.g. {absent[:3]}"
        )
    return pairs


def split_pairs(pairs: list[LabeledPair], fraction: float, seed: int) -> tuple[list, list]:
    """A seeded ``(train, validation)`` split with ``fraction`` (at least one pair) held out."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {fraction}")
    if len(pairs) < 2:
        raise ConfigError(f"{len(pairs)} pair(s) cannot be split into training and validation sets")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held = max(1, round(fraction * len(pairs)))
    return [pairs[i] for i in order[held:]], [pairs[i] for i in order[:held]]

"""Read Hugging Face parquet exports and write their embedded images to files once.

Datasets saved with ``datasets`` store an ``Image`` feature as a struct ``{bytes, path}``; some store raw JPEG bytes
in a binary column (Pick-a-Pic's ``jpg_0``). Rewards take file paths (and score each distinct file once, with an on
disk cache keyed by path), so images are written to ``DIR/media/...`` the first time a benchmark is loaded and
reused afterwards.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmreward.evaluation.benchmarks.base import BenchmarkDataError, require_columns

_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


def read_parquet_rows(paths: Sequence[Path], required: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of the parquet files, in file order, after checking the ``required`` columns."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise BenchmarkDataError(
            "reading this benchmark's parquet files needs pyarrow: pip install 'mmreward[eval]'"
        ) from err
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several types for unreadable files
            raise BenchmarkDataError(f"cannot read parquet file {str(path)!r}: {err}") from err
        require_columns(table.column_names, path, required)
        rows.extend(table.to_pylist())
    return rows


def image_bytes(value: Any, where: str) -> tuple[bytes, str | None]:
    """``(bytes, original file name or None)`` from an Image struct or a binary cell."""
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path")
    else:
        data, name = value, None
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise BenchmarkDataError(f"{where} holds no image bytes (got {type(data).__name__})")
    return bytes(data), name


def _suffix(data: bytes, name: str | None, default: str) -> str:
    if name and Path(name).suffix:
        return Path(name).suffix.lower()
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return _FORMAT_SUFFIX.get(img.format or "", default)
    except (UnidentifiedImageError, OSError):
        # Written as is; scoring records the unreadable file as a failed item with the decoder's reason.
        return default


def write_image(value: Any, stem: Path, where: str, *, default_suffix: str = ".img") -> Path:
    """Write an embedded image to ``stem`` + its suffix unless an identical-size file is there; return the path."""
    data, name = image_bytes(value, where)
    target = stem.with_name(stem.name + _suffix(data, name, default_suffix))
    if target.is_file() and target.stat().st_size == len(data):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, target)  # atomic: an interrupted load never leaves a truncated image behind
    return target

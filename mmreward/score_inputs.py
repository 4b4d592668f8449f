"""What ``mmreward score`` scores: files, directories, globs and manifests -> (path, prompt) items.

Every problem with an input is recorded on the item it concerns (``Item.error``) instead of stopping the run:
a missing file, an unsupported extension, a directory with no media, a glob that matches nothing, a manifest
that is not UTF-8 or lacks the ``path`` column. Only a prompt count that does not match the media count is
fatal, because then no item's prompt can be trusted.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mmreward.errors import MMRewardError
from mmreward.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MANIFEST_EXTENSIONS = (".csv", ".jsonl")
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
_GLOB_CHARS = set("*?[")


class InputError(MMRewardError, ValueError):
    """The inputs as a whole are inconsistent (for example, prompt and media counts differ)."""


@dataclass
class Item:
    """One thing to score. ``source`` is the argument that produced it (for messages)."""

    path: str
    prompt: str | None
    source: str
    error: str | None = None


def _from_manifest(path: Path) -> list[Item]:
    """Rows of a CSV or JSONL manifest with a ``path`` column and an optional ``prompt`` column.

    Relative paths are relative to the manifest's directory.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        return [
            Item(
                source,
                None,
                source,
                f"manifest is not UTF-8 text ({err.reason} at byte {err.start}); re-save it as UTF-8",
            )
        ]
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        rows = list(reader)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                return [Item(source, None, source, f"line {number} is not valid JSON: {err.msg}")]
            if not isinstance(row, dict):
                return [Item(source, None, source, f"line {number} is not a JSON object")]
            rows.append(row)
        columns = sorted({key for row in rows for key in row})
    if "path" not in columns:
        return [
            Item(
                source,
                None,
                source,
                f"manifest has columns {columns}; it needs a 'path' column (and optionally 'prompt')",
            )
        ]
    if not rows:
        return [Item(source, None, source, "manifest has no rows")]
    items = []
    for row in rows:
        media = Path(str(row["path"])).expanduser()
        if not media.is_absolute():
            media = path.parent / media
        prompt = row.get("prompt")
        items.append(Item(str(media), None if prompt is None else str(prompt), source))
    return items


def _check_file(path: Path, source: str) -> Item:
    if not path.exists():
        return Item(str(path), None, source, "file not found")
    if path.suffix.lower() not in MEDIA_EXTENSIONS:
        return Item(
            str(path),
            None,
            source,
            f"unsupported extension {path.suffix or '(none)'!r}; images: "
            f"{' '.join(sorted(IMAGE_EXTENSIONS))}; videos: {' '.join(sorted(VIDEO_EXTENSIONS))}",
        )
    return Item(str(path), None, source)


def expand_inputs(inputs: list[str]) -> list[Item]:
    """Expand command-line inputs into items, in order; directories and globs are sorted."""
    items: list[Item] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
            if not found:
                items.append(Item(raw, None, raw, "directory has no image or video files"))
            items.extend(Item(str(p), None, raw) for p in found)
        elif path.suffix.lower() in MANIFEST_EXTENSIONS and path.is_file():
            items.extend(_from_manifest(path))
        elif _GLOB_CHARS & set(raw) and not path.exists():
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True) if Path(m).is_file())
            if not matches:
                items.append(Item(raw, None, raw, "pattern matches no files"))
            items.extend(_check_file(p, raw) for p in matches)
        else:
            items.append(_check_file(path, raw))
    return items


def read_prompts_file(path: str) -> list[str]:
    """``--prompts`` of ``mmreward score``: one prompt per media item, one per line (trailing newline ignored; blank
    lines are prompts too, to keep the lines aligned with the items). Prompt *sets* for generators, where blank
    lines are dropped and tables are read too, come from :func:`mmreward.data.prompts.read_prompts`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError(f"prompts file {path!r} not found") from err
    except UnicodeDecodeError as err:
        raise InputError(f"prompts file {path!r} is not UTF-8 text; re-save it as UTF-8") from err
    return text.splitlines()


def assign_prompts(items: list[Item], prompt: str | None, prompts: list[str] | None) -> None:
    """Give every item without a manifest prompt its prompt: ``--prompt`` for all, or ``--prompts`` in order.

    Items that already failed (missing files, ...) still take their place in the ``--prompts`` order, so one
    bad path does not shift every later prompt.
    """
    if prompt is not None and prompts is not None:
        raise InputError("give --prompt or --prompts, not both")
    needing = [item for item in items if item.prompt is None and not _is_manifest_error(item)]
    if prompts is not None:
        if len(prompts) != len(needing):
            raise InputError(
                f"--prompts has {len(prompts)} lines for {len(needing)} media items; give exactly one prompt per "
                "item, in the order the inputs expand (directories and globs sorted by name)"
            )
        for item, text in zip(needing, prompts, strict=True):
            item.prompt = text
    elif prompt is not None:
        for item in needing:
            item.prompt = prompt


def _is_manifest_error(item: Item) -> bool:
    return item.error is not None and item.path == item.source and Path(item.source).suffix in MANIFEST_EXTENSIONS


def content_key(path: str) -> str:
    """SHA-256 of a file's bytes: identical files (under any name) are scored once."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

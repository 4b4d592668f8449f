"""What ``mmreward score`` scores: files, directories, globs and manifests -> (path, prompt, source) items.

Every problem with an input is recorded on the item it concerns (``Item.error``) instead of stopping the run:
a missing file, a broken link, an unsupported extension, a directory with no media, a glob that matches nothing,
a manifest that is not UTF-8 or lacks the ``path`` column, one manifest line that is not a row (the manifest's
other rows are still scored). Files in a directory that are not media are counted in the summary. Only a prompt
count that does not match the media count is fatal, because then no item's prompt can be trusted.

An edit's source image (the image it was made from, for rewards that compare the two) comes from a manifest's
``source`` column or from ``--source`` (one image for every input); an unreadable source fails its item when the
item is scored, not here.
"""

from __future__ import annotations

import csv
import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmreward.errors import MMRewardError
from mmreward.jsonl import json_object_lines
from mmreward.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MANIFEST_EXTENSIONS = (".csv", ".jsonl")
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
_GLOB_CHARS = set("*?[")


class InputError(MMRewardError, ValueError):
    """The inputs as a whole are inconsistent (for example, prompt and media counts differ)."""


@dataclass
class Item:
    """One thing to score: a media file (or, when ``error`` is set, the input that failed), its prompt and, for
    an edit, the path of its ``source`` image (None when it has none).

    ``takes_prompt`` says whether the item has a place in the ``--prompts`` order: every media item does, even a
    failed one; an input that stands for no media (an unreadable manifest, an empty directory, a glob without
    matches) does not, nor does a row of a manifest that has a ``prompt`` column (its prompt comes from there,
    even when the row itself could not be parsed).
    """

    path: str
    prompt: str | None
    error: str | None = None
    takes_prompt: bool = True
    source: str | None = None


@dataclass
class Expansion:
    """The items of all inputs, in order, and what was left out on purpose (files in a directory that are not
    images or videos), as lines for the run's summary."""

    items: list[Item]
    skipped: list[str]


def _manifest_failure(source: str, reason: str) -> list[Item]:
    return [Item(source, None, reason, takes_prompt=False)]


def _from_manifest(path: Path) -> list[Item]:
    """Rows of a CSV or JSONL manifest with a ``path`` column and optional ``prompt`` and ``source`` columns.

    Relative paths (``path`` and ``source``) are relative to the manifest's directory; an empty ``source`` is none.
    A CSV saved with a byte-order mark ("CSV UTF-8" in spreadsheet programs) is read like any other. A JSONL line
    that is not a JSON object, or a row without a path, fails on its own (as ``manifest:line``); the other rows
    are scored.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        return _manifest_failure(
            source, f"manifest is not UTF-8 text ({err.reason} at byte {err.start}); re-save it as UTF-8"
        )
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        # DictReader numbers rows by line; the header is line 1.
        rows: list[tuple[int, dict | str]] = [(reader.line_num, row) for row in reader]
    else:
        rows = json_object_lines(text)
        columns = sorted({key for _, row in rows if isinstance(row, dict) for key in row})
    if not rows:
        return _manifest_failure(source, "manifest has no rows")
    if "path" not in columns:
        return _manifest_failure(
            source, f"manifest has columns {columns}; it needs a 'path' column (and optionally 'prompt' and 'source')"
        )
    prompt_column = "prompt" in columns
    items = []
    for number, row in rows:
        where = f"{source}:{number}"
        if isinstance(row, str):
            items.append(Item(where, None, row, takes_prompt=not prompt_column))
            continue
        if row.get("path") in (None, ""):
            items.append(Item(where, None, f"line {number} has no path", takes_prompt=not prompt_column))
            continue
        prompt = row.get("prompt")
        original = row.get("source")
        items.append(
            Item(
                _beside(path, row["path"]),
                None if prompt is None else str(prompt),
                source=None if original in (None, "") else _beside(path, original),
            )
        )
    return items


def _beside(manifest: Path, value: Any) -> str:
    """A path written in a manifest: relative ones are relative to the manifest's directory."""
    target = Path(str(value)).expanduser()
    return str(target if target.is_absolute() else manifest.parent / target)


def _check_file(path: Path) -> Item:
    if not path.exists():
        return Item(str(path), None, "file not found")
    if path.suffix.lower() not in MEDIA_EXTENSIONS:
        return Item(
            str(path),
            None,
            f"unsupported extension {path.suffix or '(none)'!r}; images: "
            f"{' '.join(sorted(IMAGE_EXTENSIONS))}; videos: {' '.join(sorted(VIDEO_EXTENSIONS))}",
        )
    return Item(str(path), None)


def _from_directory(path: Path, raw: str) -> tuple[list[Item], str | None]:
    """The directory's images and videos, sorted by name, and a summary line for the other files it holds.

    A link named like media whose target is missing becomes a failed item (not silently nothing)."""
    media, other = [], []
    for entry in sorted(path.iterdir()):
        if entry.suffix.lower() in MEDIA_EXTENSIONS and (entry.is_file() or entry.is_symlink()):
            media.append(entry)
        elif entry.is_file():
            other.append(entry.name)
    items = [Item(str(p), None, None if p.exists() else "broken link: its target does not exist") for p in media]
    if not items:
        items.append(Item(raw, None, "directory has no image or video files", takes_prompt=False))
    note = None
    if other:
        shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
        note = f"{raw}: skipped {len(other)} file(s) that are not images or videos ({shown})"
    return items, note


def expand_inputs(inputs: list[str]) -> Expansion:
    """Expand command-line inputs into items, in order; directories and globs are sorted."""
    items: list[Item] = []
    skipped: list[str] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found, note = _from_directory(path, raw)
            items.extend(found)
            if note:
                skipped.append(note)
        elif path.suffix.lower() in MANIFEST_EXTENSIONS and path.is_file():
            items.extend(_from_manifest(path))
        elif _GLOB_CHARS & set(raw) and not path.exists():
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True) if Path(m).is_file())
            if not matches:
                items.append(Item(raw, None, "pattern matches no files", takes_prompt=False))
            items.extend(_check_file(p) for p in matches)
        else:
            items.append(_check_file(path))
    return Expansion(items, skipped)


def read_prompts_file(path: str) -> list[str]:
    """``--prompts`` of ``mmreward score``: one prompt per media item, one per line (trailing newline ignored; blank
    lines are prompts too, to keep the lines aligned with the items). Prompt *sets* for generators, where blank
    lines are dropped and tables are read too, come from :func:`mmreward.data.prompts.read_prompts`."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise InputError(f"prompts file {path!r} not found") from err
    except UnicodeDecodeError as err:
        raise InputError(f"prompts file {path!r} is not UTF-8 text; re-save it as UTF-8") from err
    return text.splitlines()


def assign_prompts(items: list[Item], prompt: str | None, prompts: list[str] | None) -> None:
    """Give every item without a manifest prompt its prompt: ``--prompt`` for all, or ``--prompts`` in order.

    Items that already failed (missing files, ...) still take their place in the ``--prompts`` order, so one
    bad path does not shift every later prompt; inputs that stand for no media take none (``Item.takes_prompt``).
    """
    if prompt is not None and prompts is not None:
        raise InputError("give --prompt or --prompts, not both")
    needing = [item for item in items if item.prompt is None and item.takes_prompt]
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


def assign_source(items: list[Item], source: str) -> None:
    """``--source``: every item without a manifest ``source`` is an edit of this one image.

    The file must exist: a missing ``--source`` would fail every item, so it stops the run instead."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"--source {source!r} is not a file; give the image the inputs were edited from")
    for item in items:
        if item.source is None:
            item.source = str(path)


def content_key(path: str) -> str:
    """SHA-256 of a file's bytes: identical files (under any name) are scored once."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

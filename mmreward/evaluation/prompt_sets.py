"""Prompt sets of generator benchmarks: ``load_prompt_set(name or file)`` -> :class:`PromptSet`.

Named sets are the public files shipped in ``data/prompts/`` (provenance and licences in ``data/README.md``):

============== ===== =====================================================================================
name           media what it is
============== ===== =====================================================================================
unigenbench    image UniGenBench (EN short): 600 prompts, 1,813 test points in 10 primary / 27 sub-dimensions
geneval        image GenEval: 553 prompts in 6 tasks (objects, counting, colours, position, attribute binding)
pickscore      image Flow-GRPO's PickScore test prompts: 2,048 Pick-a-Pic prompts
ocr            image Flow-GRPO's text-rendering test prompts: 1,018 prompts, the text to draw in double quotes
vbench         video VideoAlign's rewrite of the 946 VBench prompts
videogen-eval  video VideoGen-Eval: 400 prompts
ta-hard        video TA-Hard: 72 prompts that are hard to follow (VideoAlign)
geneval2       image GenEval 2: 800 prompts with Soft-TIFA atoms, scored by ``--reward geneval2``
============== ===== =====================================================================================

GenEval 2's file is CC BY-NC 4.0 and not shipped: ``geneval2`` names it at a pinned commit (the same pin the
``geneval2`` reward reads its questions from), fetched, verified and cached on first use
(:mod:`mmreward.data.prompts`).

Files are read by suffix: ``.txt`` (one prompt per line), ``.csv`` / ``.tsv`` (a ``prompt`` column, or
``prompt_field``), ``.jsonl`` (a ``prompt`` key; the other keys are kept as metadata, e.g. GenEval's ``tag``). A
CSV in UniGenBench's layout (``index``, ``prompt_en`` and ``sub_dims_en``, or the ``_zh`` columns) also gives each
prompt its checklist of test points and keeps its ``index`` as the prompt id; elsewhere the id is the prompt's
position in the file. Ids name the generated files (``{id}_{k}.png``, UniGenBench's naming), so they must be
file-name safe.

Editing sets (``load_edit_prompt_set``, for the editing families) are user files in the layout training reads
(:func:`mmreward.data.prompts.read_edit_prompts`: ``.jsonl`` / ``.csv`` / ``.tsv`` with ``prompt`` and ``image``,
paths relative to the file); each item carries its source image, and its id is its line number in the file, so a
sample's name says which line it edits. A line that is malformed or whose source image does not decode is left
out with its line number and the fix; the others are kept.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mmreward import pinned_files
from mmreward.data.prompts import load_sources, read_edit_prompts, resolve_prompt_file
from mmreward.errors import ConfigError, MMRewardError
from mmreward.rewards.soft_tifa import GENEVAL2_DATA
from mmreward.rewards.vlm.checklist import TestPoint

MediaKind = Literal["image", "video"]
SHIPPED_PROMPTS = Path(__file__).resolve().parent / "prompts"


@dataclass(frozen=True)
class NamedSet:
    file: str  # a file in data/prompts/, or a github:...#sha256=... pin fetched on first use
    media_kind: MediaKind
    summary: str
    prompt_field: str | None = None


PROMPT_SETS: dict[str, NamedSet] = {
    "unigenbench": NamedSet("unigenbench_test_en.csv", "image", "UniGenBench EN: 600 prompts, 1,813 test points"),
    "geneval": NamedSet("geneval_metadata.jsonl", "image", "GenEval: 553 prompts, 6 tasks"),
    "pickscore": NamedSet("pickscore_test.txt", "image", "PickScore test prompts (Flow-GRPO): 2,048"),
    "ocr": NamedSet("ocr_test.txt", "image", "text-rendering test prompts (Flow-GRPO): 1,018"),
    "vbench": NamedSet("vbench.csv", "video", "VBench prompts (VideoAlign's rewrite): 946"),
    "videogen-eval": NamedSet("videogen_eval.csv", "video", "VideoGen-Eval prompts: 400"),
    "ta-hard": NamedSet("ta_hard.csv", "video", "TA-Hard prompts (VideoAlign): 72"),
    "geneval2": NamedSet(GENEVAL2_DATA, "image", "GenEval 2: 800 prompts, Soft-TIFA atoms (fetched, CC BY-NC 4.0)"),
}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNIGENBENCH_COLUMNS = {
    "en": ("prompt_en", "sub_dims_en", "Testpoints", "Testpoint Description"),
    "zh": ("prompt_zh", "sub_dims_zh", "考点", "考点对应描述"),
}


@dataclass(frozen=True)
class PromptItem:
    """One prompt: its id (file-name safe), text, test points (UniGenBench), other metadata from the file, and for
    editing sets the source image it edits."""

    id: str
    prompt: str
    checklist: tuple[TestPoint, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None


@dataclass(frozen=True)
class PromptSet:
    """The prompts of a benchmark or file, in file order."""

    name: str
    media_kind: MediaKind | None  # None: a user file, good for either
    items: tuple[PromptItem, ...]
    source: Path

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_checklists(self) -> bool:
        return bool(self.items) and all(item.checklist for item in self.items)

    def limited(self, limit: int | None) -> PromptSet:
        """The first ``limit`` prompts (all when None)."""
        return self if limit is None else replace(self, items=self.items[:limit])


def list_prompt_sets() -> list[str]:
    return list(PROMPT_SETS)


def resolve_prompt_set(spec: str) -> tuple[str, Path, MediaKind | None, str | None]:
    """``(name, file, media kind, default prompt field)`` of a set name or a file, without reading it (a pinned set
    is fetched into its cache first).

    Raises:
        ConfigError: neither a known name nor an existing file; the message lists the names.
        DataNotAvailableError: a pinned set with no cached copy that cannot be downloaded; the message says how.
    """
    if spec in PROMPT_SETS:
        entry = PROMPT_SETS[spec]
        pinned = pinned_files.is_spec(entry.file)
        file = resolve_prompt_file(entry.file) if pinned else SHIPPED_PROMPTS / entry.file
        return spec, file, entry.media_kind, entry.prompt_field
    path = Path(spec).expanduser()
    if path.is_file():
        return path.stem, path, None, None
    raise ConfigError(
        f"unknown prompt set {spec!r}: not one of {', '.join(PROMPT_SETS)} and not an existing file (.txt with one "
        "prompt per line, .csv/.tsv with a prompt column, or .jsonl with a 'prompt' key)"
    )


def load_prompt_set(spec: str, prompt_field: str | None = None) -> PromptSet:
    """Read a named prompt set or a prompt file (see the module docstring)."""
    name, path, media_kind, default_field = resolve_prompt_set(spec)
    items = read_prompt_file(path, prompt_field or default_field)
    if not items:
        raise ConfigError(f"prompt file {str(path)!r} holds no prompts")
    ids = [item.id for item in items]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})[:5] if len(set(ids)) != len(ids) else []
    if duplicated:
        raise ConfigError(f"prompt ids must be unique in {str(path)!r}; repeated: {duplicated}")
    return PromptSet(name=name, media_kind=media_kind, items=tuple(items), source=path)


def load_edit_prompt_set(
    spec: str, prompt_field: str | None = None, image_field: str = "image", limit: int | None = None
) -> tuple[PromptSet, list[str]]:
    """An editing prompt file as a :class:`PromptSet` (ids: line numbers; every item with its ``source``) and the
    lines left out, each message naming the line and the fix (see the module docstring). ``limit``: keep the first
    that many usable lines (the sources past them are not decoded; a malformed line anywhere is still reported).

    Unlike training, which reads source pixels when a step draws them, every source is decoded here once, so an
    image whose header reads but whose pixels do not fails its line before any model loads rather than a batch.
    """
    if spec in PROMPT_SETS:
        raise ConfigError(
            f"--prompts {spec} is a text-to-media prompt set; editing families need a prompt file with a source image "
            "per line (.jsonl/.csv/.tsv with 'prompt' and 'image')"
        )
    edit = read_edit_prompts(spec, prompt_field, image_field)
    items, skipped = [], list(edit.skipped)
    for number, prompt, image in zip(edit.lines, edit.prompts, edit.images, strict=True):
        if limit is not None and len(items) == limit:
            break
        try:
            load_sources([image])
        except (MMRewardError, OSError, ValueError) as err:  # MediaError (unreadable pixels), a video, PIL's errors
            skipped.append(f"{Path(spec).name} line {number}: {err}")
            continue
        items.append(PromptItem(str(number), prompt, source=image))
    if not items:
        raise ConfigError(f"editing prompt file {spec!r} has no line with a readable source image: {skipped[0]}")
    # a user's file: its lines edit images or start videos, whichever the family makes
    return PromptSet(name=Path(spec).stem, media_kind=None, items=tuple(items), source=Path(spec)), skipped


def read_prompt_file(path: Path, prompt_field: str | None = None) -> list[PromptItem]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if prompt_field is not None:
            raise ConfigError(f"{str(path)!r} is a text file (one prompt per line); it has no field {prompt_field!r}")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [PromptItem(str(i), text) for i, text in enumerate(line for line in lines if line)]
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            rows = list(reader)
            columns = list(reader.fieldnames or [])
        for language, (prompt_col, dims_col, _, _) in _UNIGENBENCH_COLUMNS.items():
            if {"index", prompt_col, dims_col} <= set(columns) and prompt_field in (None, prompt_col):
                return [_unigenbench_item(row, n, path, language) for n, row in enumerate(rows)]
        return _records(rows, columns, path, prompt_field or "prompt")
    if suffix == ".jsonl":
        records = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{str(path)!r} line {n + 1} is not JSON: {err}") from err
            if not isinstance(record, dict):
                raise ConfigError(f"{str(path)!r} line {n + 1} must be a JSON object with a prompt key")
            records.append(record)
        columns = list(dict.fromkeys(key for record in records for key in record))
        return _records(records, columns, path, prompt_field or "prompt")
    raise ConfigError(f"cannot read prompts from {str(path)!r}: use .txt (one prompt per line), .csv/.tsv or .jsonl")


def _records(rows: list[dict[str, Any]], columns: list[str], path: Path, prompt_field: str) -> list[PromptItem]:
    if prompt_field not in columns:
        raise ConfigError(
            f"{str(path)!r} has no prompt field {prompt_field!r}; its fields are {columns[:20]} (choose one with "
            "--prompt-field)"
        )
    items = []
    for n, row in enumerate(rows):
        text = row.get(prompt_field)
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{str(path)!r} row {n + 1} has an empty {prompt_field!r}")
        meta = {k: v for k, v in row.items() if k != prompt_field}
        items.append(PromptItem(str(n), text.strip(), meta=meta))
    return items


def _unigenbench_item(row: dict[str, str], n: int, path: Path, language: str) -> PromptItem:
    prompt_col, dims_col, points_key, descriptions_key = _UNIGENBENCH_COLUMNS[language]
    where = f"{str(path)!r} row {n + 1}"
    item_id = (row.get("index") or "").strip()
    if not _SAFE_ID.match(item_id):
        raise ConfigError(f"{where}: index {item_id!r} cannot name a file; use letters, digits, '.', '_' or '-'")
    try:
        dims = json.loads(row[dims_col])
        points, descriptions = dims[points_key], dims[descriptions_key]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{where}: {dims_col} must be JSON with {points_key!r} and {descriptions_key!r} lists ({err!r})"
        ) from err
    if not isinstance(points, list) or not isinstance(descriptions, list) or len(points) != len(descriptions):
        raise ConfigError(f"{where}: {points_key!r} and {descriptions_key!r} must be lists of the same length")
    if not points:
        raise ConfigError(f"{where}: the prompt has no test points")
    text = (row.get(prompt_col) or "").strip()
    if not text:
        raise ConfigError(f"{where}: empty {prompt_col!r}")
    checklist = tuple(TestPoint(str(p).strip(), str(d).strip()) for p, d in zip(points, descriptions, strict=True))
    meta = {k: v for k, v in dims.items() if k not in (points_key, descriptions_key)}
    return PromptItem(item_id, text, checklist=checklist, meta=meta)

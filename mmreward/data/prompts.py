"""Prompt sets for generator training and evaluation: a text file (one prompt per line) or a table.

``read_prompts(path)`` reads

- ``.txt``: one prompt per line (Flow-GRPO's ``dataset/*/train.txt``, ``data/prompts/pickscore_test.txt``);
- ``.csv`` / ``.tsv``: the ``column`` column (default ``prompt``; UniGenBench's is ``prompt_en``);
- ``.jsonl`` / ``.json``: the ``column`` key of each record (GenEval's ``evaluation_metadata.jsonl``);
- ``.parquet``: the ``column`` column (Hugging Face dataset shards).

Blank prompts are dropped; duplicates are kept (a prompt listed twice is drawn twice as often).

Editing prompt sets (``read_edit_prompts``) pair each instruction with a source image file: ``.jsonl`` objects or
``.csv`` / ``.tsv`` rows with ``prompt`` and ``image`` (a path relative to the prompt file's folder); a bad line is
left out with a message naming it and the fix.

``path`` may also name a file published on GitHub at a pinned commit,
``github:<owner>/<repo>@<full commit>/<path>#sha256=<hex>``, or ``#git-blob=<blob id>`` (the recipes' training
sets, which are large or under licences we do not redistribute). It is downloaded once, verified and cached under
``$HF_HOME/mmreward/data/<owner>/<repo>/<commit>/<path>`` (:mod:`mmreward.pinned_files`); offline
(``HF_HUB_OFFLINE``) without a cached copy the error names the URL, the cache path and both fixes.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmreward import pinned_files
from mmreward.errors import ConfigError, DataNotAvailableError
from mmreward.pinned_files import PinnedFile

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def read_prompts(path: str | Path, column: str | None = None) -> list[str]:
    """The prompts of ``path`` (see the module docstring); raises ConfigError naming the file and the fix."""
    path = resolve_prompt_file(path)
    if not path.is_file():
        raise ConfigError(f"prompt file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix != ".txt" and suffix not in TABLE_SUFFIXES:
        raise ConfigError(
            f"cannot read prompts from {str(path)!r}: use a .txt file (one prompt per line) or a table "
            f"({', '.join(TABLE_SUFFIXES)}) with a prompt column"
        )
    if suffix == ".txt" and column is not None:
        raise ConfigError(f"{str(path)!r} is a text file (one prompt per line); remove the prompt column setting")
    try:
        if suffix == ".txt":
            prompts = path.read_text(encoding="utf-8").splitlines()
        else:
            prompts = _table_column(path, suffix, column or "prompt")
    except UnicodeDecodeError as err:
        raise ConfigError(f"prompt file {str(path)!r} is not UTF-8 text ({err.reason}); re-save it as UTF-8") from err
    prompts = [p.strip() for p in prompts if p is not None and str(p).strip()]
    if not prompts:
        raise ConfigError(f"prompt file {str(path)!r} has no prompts")
    return prompts


LOCAL_PROMPTS_FIX = "pass a local copy of the file as the prompt path (e.g. --data.prompts /path/to/prompts.txt)"


def resolve_prompt_file(path: str | Path, local_fix: str = LOCAL_PROMPTS_FIX) -> Path:
    """A local path as given; a ``github:...#sha256=...`` spec as the path of its verified cached copy.

    ``local_fix`` says where a local copy goes instead (the messages of a missing or mismatched copy end with it);
    the default names the training prompts, a reward's data file names its own option.
    """
    if not pinned_files.is_spec(path):
        return Path(path)
    pinned = pinned_files.parse_spec(str(path), "prompt file")
    return pinned_files.read_pinned(
        pinned,
        pinned_files.hf_cache_root("data"),
        unavailable=lambda reason: _not_available(pinned, reason, local_fix),
        mismatch=lambda digest, origin: ConfigError(
            f"prompt file {pinned.describe()} read from {origin} has {pinned.algorithm} {digest}, but the config "
            f"pins {pinned.digest}: it is not the file at commit {pinned.commit}, so it is not used. Delete "
            f"{_cache_path(pinned)} to download it again, or {local_fix}"
        ),
    )


def fetch_option_files(options: dict[str, dict[str, Any]], section: str = "reward.options") -> dict[str, int]:
    """Fetch (or find cached) and verify every pinned file among reward options ``{reward: {option: value}}`` (a
    ``github:...`` string, or a list holding some), so that a ``train.max_steps 0`` check leaves a machine with all
    of a recipe's files, the rewards' data included. Returns ``{"<section>.<reward>.<option>": files}`` for the
    options that name any."""
    counts: dict[str, int] = {}
    for reward, values in options.items():
        for key, value in values.items():
            specs = [v for v in (value if isinstance(value, list) else [value]) if pinned_files.is_spec(v)]
            where = f"{section}.{reward}.{key}"
            for spec in specs:
                resolve_prompt_file(spec, local_fix=f"pass a local copy of the file in {where}")
            if specs:
                counts[where] = len(specs)
    return counts


def _cache_path(pinned: PinnedFile) -> Path:
    return pinned_files.cache_path(pinned, pinned_files.hf_cache_root("data"))


def _not_available(pinned: PinnedFile, reason: str, local_fix: str) -> DataNotAvailableError:
    # One line: the training programs print it as their whole error.
    return DataNotAvailableError(
        f"prompt file {pinned.describe()} is not available: {reason}, and there is no cached copy at "
        f"{_cache_path(pinned)}. Either download it once where GitHub is reachable (run once online, or save "
        f"{pinned.url} to that path) and copy HF_HOME along, or {local_fix}"
    )


def _table_column(path: Path, suffix: str, column: str) -> list[str]:
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            columns = reader.fieldnames or []
            rows = list(reader)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        columns = table.column_names
        rows = table.to_pylist() if column in columns else []
    else:
        text = path.read_text(encoding="utf-8")
        records = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines() if line]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ConfigError(f"{str(path)!r} must hold a list of JSON objects, one per prompt")
        columns = list(dict.fromkeys(key for r in records for key in r))
        rows = records
    if column not in columns:
        raise ConfigError(
            f"{str(path)!r} has no column {column!r}; its columns are {columns[:20]}. Name the column that "
            "holds the prompts (e.g. prompt_en for UniGenBench)"
        )
    return [str(r[column]) if r.get(column) is not None else None for r in rows]


# ------------------------------------------------------------------------------------------ editing prompt sets

EDIT_SUFFIXES = (".jsonl", ".csv", ".tsv")


@dataclass
class EditPrompts:
    """An editing prompt set: ``prompts[i]`` is the instruction for the source image file ``images[i]``, read from
    line ``lines[i]`` of the file (1-based); ``skipped`` says which lines were left out and why (each message names
    the file, the line and the fix)."""

    prompts: list[str]
    images: list[Path]
    skipped: list[str]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.prompts)


def read_edit_prompts(path: str | Path, prompt_column: str | None = None, image_column: str = "image") -> EditPrompts:
    """Instructions and their source images from a ``.jsonl`` file (one object per line,
    ``{"prompt": "make it brighter", "image": "sources/cat.png"}``) or a ``.csv`` / ``.tsv`` table with a header
    naming the two columns. Image paths are absolute or relative to the prompt file's folder.

    Every line is checked before training starts (valid JSON, a non-empty prompt, an image path that exists and
    opens as an image); a bad line is left out with a message naming the line and the fix, the others are kept.
    A file that is not such a table, or has no good line, raises ConfigError.
    """
    from PIL import Image, UnidentifiedImageError

    path = resolve_prompt_file(path)
    if not path.is_file():
        raise ConfigError(f"editing prompt file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in EDIT_SUFFIXES:
        raise ConfigError(
            f"cannot read an editing prompt set from {str(path)!r}: use .jsonl (one object per line with "
            f"{prompt_column or 'prompt'!r} and {image_column!r}) or a .csv/.tsv table with those columns"
        )
    prompt_key = prompt_column or "prompt"
    try:
        lines = _edit_records(path, suffix, prompt_key, image_column)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{str(path)!r} is not UTF-8 text ({err.reason}); re-save it as UTF-8") from err
    prompts, images, skipped, numbers = [], [], [], []
    for number, record in lines:
        where = f"{path.name} line {number}"
        if isinstance(record, str):  # a line that could not be parsed: the reason
            skipped.append(f"{where}: {record}")
            continue
        prompt, image = record.get(prompt_key), record.get(image_column)
        if not isinstance(prompt, str) or not prompt.strip():
            skipped.append(f"{where}: no instruction in {prompt_key!r}; give the edit to make as text")
            continue
        if not isinstance(image, str) or not image.strip():
            skipped.append(f"{where}: no source image in {image_column!r}; give the image file's path")
            continue
        image_path = Path(image.strip()).expanduser()
        image_path = image_path if image_path.is_absolute() else path.parent / image_path
        if not image_path.is_file():
            skipped.append(
                f"{where}: source image {str(image_path)!r} does not exist; paths are relative to the prompt file's "
                "folder, or absolute"
            )
            continue
        try:
            with Image.open(image_path):  # identifies the format from the header; pixels are read when drawn
                pass
        except (UnidentifiedImageError, OSError) as err:
            skipped.append(f"{where}: {str(image_path)!r} is not a readable image ({err}); convert it to PNG or JPEG")
            continue
        prompts.append(prompt.strip())
        images.append(image_path)
        numbers.append(number)
    if not prompts:
        first = f"; first: {skipped[0]}" if skipped else ""
        raise ConfigError(f"editing prompt file {str(path)!r} has no usable line ({len(skipped)} left out{first})")
    return EditPrompts(prompts, images, skipped, numbers)


def _edit_records(path: Path, suffix: str, prompt_key: str, image_key: str) -> list[tuple[int, dict | str]]:
    """``(line number, record)`` per data line; a line that does not parse gives the reason instead of a record."""
    if suffix == ".jsonl":
        out: list[tuple[int, dict | str]] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                out.append((number, f"not valid JSON ({err.msg}); write one JSON object per line"))
                continue
            if not isinstance(record, dict):
                record = (
                    f"a JSON {type(record).__name__}, not an object; write {{{prompt_key!r}: ..., {image_key!r}: ...}}"
                )
            out.append((number, record))
        return out
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
        columns = reader.fieldnames or []
        missing = [key for key in (prompt_key, image_key) if key not in columns]
        if missing:
            raise ConfigError(
                f"{str(path)!r} has no column {missing[0]!r}; its columns are {columns[:20]}. The header must name "
                f"the instruction column ({prompt_key!r}) and the source image column ({image_key!r})"
            )
        return [(reader.line_num, row) for row in reader]


def load_sources(paths: list[Path]) -> list[Any]:
    """Canonical source images ``(3, H, W)`` float [0, 1] of ``paths`` (read when a step draws them, so a large
    editing set is not held in memory); videos are refused: editing sources are images."""
    from mmreward import media as media_io

    images = []
    for path in paths:
        image = media_io.to_tensor(path)
        if image.ndim != 3:
            raise ConfigError(f"source {str(path)!r} is a video; editing sources must be images")
        images.append(image)
    return images

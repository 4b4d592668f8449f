"""Prompt sets for generator training and evaluation: a text file (one prompt per line) or a table.

``read_prompts(path)`` reads

- ``.txt``: one prompt per line (Flow-GRPO's ``dataset/*/train.txt``, ``data/prompts/pickscore_test.txt``);
- ``.csv`` / ``.tsv``: the ``column`` column (default ``prompt``; UniGenBench's is ``prompt_en``);
- ``.jsonl`` / ``.json``: the ``column`` key of each record (GenEval's ``evaluation_metadata.jsonl``);
- ``.parquet``: the ``column`` column (Hugging Face dataset shards).

Blank prompts are dropped; duplicates are kept (a prompt listed twice is drawn twice as often).

``path`` may also name a file published on GitHub at a pinned commit,
``github:<owner>/<repo>@<full commit>/<path>#sha256=<hex>`` (the recipes' training sets, which are large or under
licences we do not redistribute). It is downloaded once, verified and cached under
``$HF_HOME/mmreward/data/<owner>/<repo>/<commit>/<path>`` (:mod:`mmreward.pinned_files`); offline
(``HF_HUB_OFFLINE``) without a cached copy the error names the URL, the cache path and both fixes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

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


def resolve_prompt_file(path: str | Path) -> Path:
    """A local path as given; a ``github:...#sha256=...`` spec as the path of its verified cached copy."""
    if not pinned_files.is_spec(path):
        return Path(path)
    pinned = pinned_files.parse_spec(str(path), "prompt file")
    return pinned_files.read_pinned(
        pinned,
        pinned_files.hf_cache_root("data"),
        unavailable=lambda reason: _not_available(pinned, reason),
        mismatch=lambda digest, origin: ConfigError(
            f"prompt file {pinned.describe()} read from {origin} has sha256 {digest}, but the config pins "
            f"{pinned.sha256}: it is not the file at commit {pinned.commit}, so it is not used. Delete "
            f"{_cache_path(pinned)} to download it again, or pass a local file as the prompt path"
        ),
    )


def _cache_path(pinned: PinnedFile) -> Path:
    return pinned_files.cache_path(pinned, pinned_files.hf_cache_root("data"))


def _not_available(pinned: PinnedFile, reason: str) -> DataNotAvailableError:
    # One line: the training programs print it as their whole error.
    return DataNotAvailableError(
        f"prompt file {pinned.describe()} is not available: {reason}, and there is no cached copy at "
        f"{_cache_path(pinned)}. Either download it once where GitHub is reachable (run once online, or save "
        f"{pinned.url} to that path) and copy HF_HOME along, or pass a local copy of the file as the prompt path "
        "(e.g. --data.prompts /path/to/prompts.txt)"
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

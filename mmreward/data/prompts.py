"""Prompt sets for generator training and evaluation: a text file (one prompt per line) or a table.

``read_prompts(path)`` reads

- ``.txt``: one prompt per line (Flow-GRPO's ``dataset/*/train.txt``, ``data/prompts/pickscore_test.txt``);
- ``.csv`` / ``.tsv``: the ``column`` column (default ``prompt``; UniGenBench's is ``prompt_en``);
- ``.jsonl`` / ``.json``: the ``column`` key of each record (GenEval's ``evaluation_metadata.jsonl``);
- ``.parquet``: the ``column`` column (Hugging Face dataset shards).

Blank prompts are dropped; duplicates are kept (a prompt listed twice is drawn twice as often).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mmreward.errors import ConfigError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def read_prompts(path: str | Path, column: str | None = None) -> list[str]:
    """The prompts of ``path`` (see the module docstring); raises ConfigError naming the file and the fix."""
    path = Path(path)
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

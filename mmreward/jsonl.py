"""JSON Lines read tolerantly: every line that is not a JSON object becomes the reason it is skipped, so one bad line
fails alone and the rows around it are still used (score manifests, pair tables)."""

from __future__ import annotations

import json


def json_object_lines(text: str) -> list[tuple[int, dict | str]]:
    """``(1-based line number, row or the reason the line is not a row)`` for every non-blank line of ``text``.

    A reason reads ``line N is not valid JSON: <parser message>`` or ``line N is not a JSON object``; JSON nested past
    Python's recursion limit is reported as ``nested too deeply`` instead of crashing the reader.
    """
    rows: list[tuple[int, dict | str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            rows.append((number, f"line {number} is not valid JSON: {reason}"))
            continue
        rows.append((number, row if isinstance(row, dict) else f"line {number} is not a JSON object"))
    return rows

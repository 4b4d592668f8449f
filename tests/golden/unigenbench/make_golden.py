"""Regenerate the UniGenBench answer-reading golden data with UniGenBench's own reader (see ../README.md).

UniGenBench's evaluation (``eval/src/eval_common.py``) reads an evaluation model's answer with
``parse_evaluation_response`` and counts a test point as passed where its score ``== 1``. The module imports pandas
and its multiprocessing helpers at the top, so this script takes that one function out of the pinned file with
``ast`` and runs it alone on the canned answers of cases.py. Run with any python, pointing at a checkout::

    UNIGENBENCH_DIR=/path/to/UniGenBench python tests/golden/unigenbench/make_golden.py
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "49d0bcebb0b9418d975d3957c2fee10f34811d14"
PATH = "eval/src/eval_common.py"
SHA256 = "c26c91cc65be7ed4234f07a310eed8812888c83b8b83b1934b77b1f48c463eb9"

_spec = importlib.util.spec_from_file_location("_cases", HERE / "cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def main() -> None:
    source = Path(os.environ.get("UNIGENBENCH_DIR", "")).expanduser() / PATH
    if not source.is_file():
        sys.exit(f"set UNIGENBENCH_DIR to a checkout of https://github.com/CodeGoat24/UniGenBench at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    tree = ast.parse(source.read_text())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_evaluation_response"]
    scope = {"re": re, "ast": ast}
    exec(compile(ast.Module(body=found, type_ignores=[]), str(source), "exec"), scope)  # noqa: S102 - pinned file
    rows = []
    for text, count, _ in cases.CASES:
        parsed = scope["parse_evaluation_response"](text, [f"point {k}" for k in range(count)])
        # None: the item fails; otherwise pass/fail per test point as the statistics count them (score == 1).
        rows.append({"text": text, "passed": None if parsed is None else [s == 1 for s in parsed[1]]})
    golden = {"reference": f"CodeGoat24/UniGenBench@{COMMIT}:{PATH} parse_evaluation_response", "cases": rows}
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

"""Regenerate the RationalRewards golden data with the authors' own T2I and I2I (edit) readers
(TIGER-AI-Lab/RationalRewards, see ../README.md).

The authors publish their T2I and I2I recipes in their README: ``build_t2i_messages`` / ``build_i2i_messages`` (the
prompts the presets read) and ``parse_t2i_scores`` / ``parse_i2i_scores`` (the readers), each in a fenced Python
block that also holds a usage example (it opens images and calls a server). This script takes each block from the
pinned README (hash checked), executes only its imports and its two reading functions (``extract_numeric_score`` and
the parser) unchanged, and records what they give for the canned answers of cases.py (golden.json: T2I,
golden_edit.json: I2I). Standard library only::

    RATIONALREWARDS_DIR=/path/to/RationalRewards python tests/golden/rationalrewards/make_golden.py
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "44e27ab68d537bee8a6831efe000701664853435"
PATH = "README.md"
SHA256 = "d485e041db25c8c306b9d1022d2d1e591be38bc4034a0ce667c64fda78b55c1c"
sys.path.insert(0, str(HERE))

from cases import ANSWERS, EDIT_ANSWERS  # noqa: E402


def reference_reader(readme: str, parser: str = "parse_t2i_scores"):
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    block = next(b for b in blocks if f"def {parser}" in b)
    module = ast.parse(block)
    keep = [
        n
        for n in module.body
        if isinstance(n, (ast.Import, ast.ImportFrom))
        or (isinstance(n, ast.FunctionDef) and n.name in {"extract_numeric_score", parser})
    ]
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), PATH, "exec"), namespace)  # noqa: S102
    return namespace[parser]


def main() -> None:
    path = Path(os.environ["RATIONALREWARDS_DIR"]) / PATH
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHA256, f"{path} is not {PATH} at {COMMIT}"
    parse = reference_reader(data.decode("utf-8"))
    golden = {}
    for name, answer in ANSWERS.items():
        reward, written = parse(answer)
        golden[name] = {"reward": reward, "scores": written}
    (HERE / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    parse_edit = reference_reader(data.decode("utf-8"), "parse_i2i_scores")
    golden_edit = {}
    for name, answer in EDIT_ANSWERS.items():
        reward, result = parse_edit(answer)
        golden_edit[name] = {"reward": reward, "scores": {k: v["score"] for k, v in result.items()}}
    (HERE / "golden_edit.json").write_text(json.dumps(golden_edit, indent=1) + "\n")
    print(json.dumps(golden_edit, indent=1))


if __name__ == "__main__":
    main()

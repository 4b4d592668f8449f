"""Regenerate the RationalRewards golden data with the authors' own T2I reader (TIGER-AI-Lab/RationalRewards, see
../README.md).

The authors publish their T2I recipe in their README: ``build_t2i_messages`` (the prompt the preset reads) and
``parse_t2i_scores`` (the reader), in one fenced Python block that also holds a usage example (it opens an image and
calls a server). This script takes that block from the pinned README (hash checked), executes only its imports and
its two reading functions (``extract_numeric_score``, ``parse_t2i_scores``) unchanged, and records what they give for
the canned answers of cases.py. Standard library only::

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

from cases import ANSWERS  # noqa: E402


def reference_reader(readme: str):
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    block = next(b for b in blocks if "def parse_t2i_scores" in b)
    module = ast.parse(block)
    keep = [
        n
        for n in module.body
        if isinstance(n, (ast.Import, ast.ImportFrom))
        or (isinstance(n, ast.FunctionDef) and n.name in {"extract_numeric_score", "parse_t2i_scores"})
    ]
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), PATH, "exec"), namespace)  # noqa: S102
    return namespace["parse_t2i_scores"]


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
    print(json.dumps(golden, indent=1))


if __name__ == "__main__":
    main()

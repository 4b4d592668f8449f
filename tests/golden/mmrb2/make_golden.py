"""Regenerate the MMRB2 accuracy golden data with MMRB2's own scoring script (see ../README.md).

MMRB2 scores reward models with ``evaluate/compute_scores/compute_accuracy.py`` (standard library only). This
script writes the canned benchmark and judgement files of cases.py to a temporary folder in the released layout
(``t2i.json``, ``edit.json``, ``interleaved.json``, ``reasoning.json``) and runs the pinned script's
``evaluate_all_tasks`` on them, keeping its per-task results and the overall line it prints. Run with any python,
pointing at a checkout::

    MMRB2_DIR=/path/to/MMRB2 python tests/golden/mmrb2/make_golden.py
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "7ff0552cf298441af5ebbabea634b682ef04afee"
PATH = "evaluate/compute_scores/compute_accuracy.py"
SHA256 = "5fc4d9b65a9de0dc20a1e8fd83d1ab8a22db1404c249b42f9b465fddbd558beb"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    source = Path(os.environ.get("MMRB2_DIR", "")).expanduser() / PATH
    if not source.is_file():
        sys.exit(f"set MMRB2_DIR to a checkout of https://github.com/facebookresearch/MMRB2 at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    cases = _load(HERE / "cases.py")
    reference = _load(source)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = []
        for task in cases.TASKS:
            (folder / f"{task}.json").write_text(json.dumps({"pairs": cases.BENCHMARK[task]}))
            files.append(folder / f"{task}_predictions.json")
            files[-1].write_text(json.dumps(cases.PREDICTIONS[task]))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            results = reference.evaluate_all_tasks([str(f) for f in files], str(folder))
    overall = re.search(r"^Overall\s+(\S+)%$", printed.getvalue(), re.MULTILINE)
    golden = {
        "reference": f"facebookresearch/MMRB2@{COMMIT}:{PATH} evaluate_all_tasks",
        "tasks": [
            {
                "task": task,
                "total_pairs": r.total_pairs,
                "evaluated_pairs": r.evaluated_pairs,
                "missing_pairs": r.missing_pairs,
                "total_correct": r.total_correct,
                "total_evaluated": r.total_evaluated,
                "accuracy": r.accuracy,
            }
            for task, r in zip(cases.TASKS, results, strict=True)
        ],
        "overall_printed_percent": overall.group(1),
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

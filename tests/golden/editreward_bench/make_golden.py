"""Regenerate the EditReward-Bench metric golden data with the authors' own evaluation function (see ../README.md).

TIGER-AI-Lab/EditReward evaluates reward models on EditReward-Bench with ``evaluate_edit_reward_bench`` of
``EditReward/evaluate/eval_bench.py``. That module imports the whole reward model at the top (transformers, the
EditReward package), which scoring canned numbers does not need, so this script reads the pinned file, checks its
sha256, takes the function and the helpers it calls out of it with ``ast`` (their source unchanged) and runs them on
the canned groups of cases.py, written in the layout the function reads (``EditReward_Bench_{2,3,4}pair.json``),
with an inferencer that returns each candidate's canned score. It keeps the summary the function saves and each
group's strict verdict from its detailed log. Needs torch, numpy and tqdm (the function's own imports)::

    EDITREWARD_DIR=/path/to/EditReward python tests/golden/editreward_bench/make_golden.py
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "edb027edde6080b8a9521ef8e87049b3797f8374"
PATH = "EditReward/evaluate/eval_bench.py"
SHA256 = "503c92dcb63ce1e1034be1b7186099ba57b723a9abd916b4cd1cb20a2ba1d677"
FUNCTIONS = (
    "suff_stats",
    "calc_acc",
    "calc_accuracy_without_ties",
    "get_pairwise_gt",
    "get_gt_ranking",
    "calc_accuracy_with_ties_for_edit_reward_bench",
    "evaluate_edit_reward_bench",
)
# The module-level imports those functions use (eval_bench.py imports them the same way).
PRELUDE = (
    "import os, json, gc\nimport torch\nimport numpy as np\nfrom tqdm import tqdm\n"
    "from itertools import combinations\n"
)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_functions(text: str) -> dict:
    """The FUNCTIONS of eval_bench.py, compiled from their unchanged source."""
    tree = ast.parse(text)
    chosen = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in FUNCTIONS]
    if sorted(node.name for node in chosen) != sorted(FUNCTIONS):
        sys.exit(f"{PATH} lacks some of {FUNCTIONS}")
    namespace: dict = {}
    exec(PRELUDE, namespace)
    for node in chosen:
        exec(compile(ast.Module(body=[node], type_ignores=[]), PATH, "exec"), namespace)
    return namespace


class CannedInferencer:
    """Answers ``reward(prompts, image_src, image_paths)`` like EditRewardInferencer: ``rewards[0][0]`` a tensor."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def reward(self, prompts, image_src, image_paths):
        import torch

        return [[torch.tensor(self.scores[path], dtype=torch.float64)] for path in image_paths]


def main() -> None:
    source = Path(os.environ.get("EDITREWARD_DIR", "")).expanduser() / PATH
    if not source.is_file():
        sys.exit(f"set EDITREWARD_DIR to a checkout of https://github.com/TIGER-AI-Lab/EditReward at {COMMIT}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {SHA256}: check out commit {COMMIT}")
    reference = reference_functions(source.read_text(encoding="utf-8"))
    cases = _load(HERE / "cases.py")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for k in cases.GROUPS:
            (folder / f"EditReward_Bench_{k}pair.json").write_text(json.dumps(cases.records(k)))
        summary = folder / "run_accuracy.json"
        with open(folder / "log.txt", "w") as log, contextlib.redirect_stdout(io.StringIO()):
            returned = reference["evaluate_edit_reward_bench"](
                CannedInferencer(cases.SCORES), log, str(summary), str(folder)
            )
        results = json.loads(summary.read_text())
        detailed = json.loads((folder / "run_detailed_log.json").read_text())
    golden = {
        "reference": f"TIGER-AI-Lab/EditReward@{COMMIT}:{PATH} evaluate_edit_reward_bench",
        "returned": returned,
        "results": results,
        "strict_correct": {
            f"{item['file_name']}/{item['sample_index']}": item["strict_accuracy_correct"] for item in detailed
        },
    }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

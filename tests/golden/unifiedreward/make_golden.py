"""Regenerate the UnifiedReward answer-reading golden data with the authors' own readers (see ../README.md).

UnifiedReward's inference scripts (the ones the presets take their prompts from) print the judge's answer and read
nothing out of it. The code by the same authors that does read these answers is

- the GenAI-Bench-Video evaluation scripts of UnifiedReward (pair ranking) and UnifiedReward-Think: a verdict
  statement run on the model's whole output (``pred`` = A, B or same), taken out of the script with ``ast`` and run
  alone on each canned output, since the scripts themselves download a benchmark and load a model at import;
- Pref-GRPO's ``extract_normalized_rewards`` (``fastvideo/rewards/unifiedreward.py``), which turns UnifiedReward 2.0's
  "<Dim> Score (1-5): x" answers into rewards during training, imported and run on one batch of canned outputs.

Run with any python that has torch and numpy, pointing at checkouts of both repositories::

    UNIFIEDREWARD_DIR=/path/to/UnifiedReward PREF_GRPO_DIR=/path/to/Pref-GRPO \\
        /path/to/ref-venv/bin/python tests/golden/unifiedreward/make_golden.py
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
UNIFIEDREWARD_COMMIT = "ff6f520247a2d36e2aff7b2ba53a935afd437f66"
PREF_GRPO_COMMIT = "3e787f6dd5a3051b40d61f07e9578468ac26130a"
READERS = {
    "pairwise": (
        "benchmark_evaluation/Qwen_evaluation/test_qwen_genAI_bench_video.py",
        "c787371ae4b014a17ef77cf341a469846e3efc908f3d8b2e80fcc57204df0e1c",
    ),
    "think": (
        "UnifiedReward-Think/benchmark_evaluation/GenAI-Bench-Video/test_qwen25_cot_genAI_bench_video.py",
        "05c70cef7809830abab8c5f6bd8422987627c545c1e8e755829e0400e16b22e5",
    ),
}
POINTWISE = ("fastvideo/rewards/unifiedreward.py", "80167e290bd4c4d967783522b3b22f37d80e118f140dbf9efd2388a74f93bf39")

_spec = importlib.util.spec_from_file_location("_cases", HERE / "cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def pinned_file(variable: str, repository: str, commit: str, path: str, sha256: str) -> Path:
    """``path`` in the checkout named by the environment variable, after checking its hash."""
    source = Path(os.environ.get(variable, "")).expanduser() / path
    if not source.is_file():
        sys.exit(f"set {variable} to a checkout of https://github.com/{repository} at {commit}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != sha256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {sha256}: check out commit {commit}")
    return source


def verdict_statement(source: Path):
    """The script's ``if 'Video 1 is better' in output: pred = ...`` statement, compiled on its own."""
    tree = ast.parse(source.read_text())
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Constant)
        and node.test.left.value == "Video 1 is better"
    ]
    if len(found) != 1:
        sys.exit(f"expected one verdict statement in {source}, found {len(found)}")
    return compile(ast.Module(body=found, type_ignores=[]), str(source), "exec")


def read_verdicts(statement, texts: list[str]) -> list[str]:
    verdicts = []
    for text in texts:
        scope = {"output": text}
        exec(statement, scope)  # noqa: S102 - the reference's own statement, from the pinned file
        verdicts.append(scope["pred"])
    return verdicts


def main() -> None:
    golden: dict = {"versions": {"torch": torch.__version__, "python": sys.version.split()[0]}, "readers": {}}
    for kind, (path, sha256) in READERS.items():
        source = pinned_file("UNIFIEDREWARD_DIR", "CodeGoat24/UnifiedReward", UNIFIEDREWARD_COMMIT, path, sha256)
        texts = [text for text, _ in getattr(cases, kind.upper())]
        golden["readers"][kind] = f"CodeGoat24/UnifiedReward@{UNIFIEDREWARD_COMMIT}:{path} (sha256 {sha256})"
        verdicts = read_verdicts(verdict_statement(source), texts)
        golden[kind] = [{"text": t, "pred": p} for t, p in zip(texts, verdicts, strict=True)]

    path, sha256 = POINTWISE
    source = pinned_file("PREF_GRPO_DIR", "CodeGoat24/Pref-GRPO", PREF_GRPO_COMMIT, path, sha256)
    spec = importlib.util.spec_from_file_location("pref_grpo_unifiedreward", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    texts = [text for text, _ in cases.POINTWISE]
    *_, dims = module.extract_normalized_rewards(texts, device="cpu")
    golden["readers"]["pointwise"] = f"CodeGoat24/Pref-GRPO@{PREF_GRPO_COMMIT}:{path} (sha256 {sha256})"
    golden["pointwise"] = [
        {"text": text, "scores": {dim: values[k] for dim, values in dims.items()}} for k, text in enumerate(texts)
    ]
    (HERE / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()

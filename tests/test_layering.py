"""Dependencies point one way: the library never imports the programs (align/, eval/, benchmarks/) and runtime
code never imports the test fixtures (mmreward.testing).

Imports are read from the whole syntax tree, so imports inside functions count as much as those at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("align", "eval", "benchmarks")
RUNTIME_DIRS = ("mmreward", "align", "eval")
TEST_FIXTURES = "mmreward.testing"


def _is_repo_module(name: str) -> bool:
    location = ROOT.joinpath(*name.split("."))
    return location.is_dir() or location.with_suffix(".py").is_file()


def _imported_modules(path: Path) -> set[str]:
    """Dotted names of every module ``path`` imports, anywhere in the file. ``from package import name`` is an
    import of ``package.name`` where that is a module of this repository (``from mmreward import testing``), and
    of ``package`` otherwise (``from mmreward import load_reward``, ``from torch import nn``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if _is_repo_module(submodule) else node.module)
    return names


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imported_modules(path)}


def _runtime_files() -> list[Path]:
    files = [path for directory in RUNTIME_DIRS for path in (ROOT / directory).rglob("*.py")]
    return [path for path in files if path != ROOT / "mmreward" / "testing.py"]


def test_library_does_not_import_programs():
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & set(FORBIDDEN))
        for path in (ROOT / "mmreward").rglob("*.py")
        if _imports(path) & set(FORBIDDEN)
    }
    assert offenders == {}


def test_runtime_code_does_not_import_test_fixtures():
    """mmreward/ (but testing.py), align/ and eval/ run for users; the tiny models they build come from
    mmreward.tiny_models, not from the test fixtures."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in _imported_modules(path) if name == TEST_FIXTURES or name.startswith(TEST_FIXTURES + ".")
        )
        for path in _runtime_files()
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_shipped_configs_do_not_load_test_fixtures():
    """Programs load the "module:Class" names of configs at run time, so configs must not name the fixtures."""

    def load_strings(value) -> list[str]:
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in load_strings(k) + load_strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in load_strings(v)]
        return [value] if isinstance(value, str) and value.startswith(TEST_FIXTURES + ":") else []

    offenders = {
        str(path.relative_to(ROOT)): load_strings(yaml.safe_load(path.read_text(encoding="utf-8")))
        for path in (ROOT / "configs").rglob("*.yaml")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_importing_mmreward_stays_light():
    """`import mmreward` must not pull in open_clip, diffusers or transformers models (the CLI starts fast)."""
    import subprocess
    import sys

    heavy = ("open_clip", "diffusers", "transformers")
    code = f"import sys, mmreward; print(','.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""

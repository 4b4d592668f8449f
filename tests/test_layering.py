"""Dependencies point one way: the library never imports the programs (align/, eval/, benchmarks/), a program
imports only the library, never another program, runtime code never imports the test fixtures (mmreward.testing),
and the library's packages import each other without cycles.

Imports are read from the whole syntax tree, so imports inside functions count as much as those at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("align", "eval", "benchmarks")
RUNTIME_DIRS = ("mmreward", "align", "eval")
TEST_FIXTURES = "mmreward.testing"
PROGRAMS = ("align", "eval")


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


def _package_of(module: str) -> str | None:
    """The node of ``module`` in the package graph: ``mmreward.<subpackage or top-level module>`` (``mmreward``
    itself for the package's ``__init__``), or None outside mmreward."""
    parts = module.split(".")
    if parts[0] != "mmreward":
        return None
    if len(parts) == 1:
        return "mmreward"
    return f"mmreward.{parts[1]}"


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "mmreward").rglob("*.py"):
        relative = path.relative_to(ROOT)
        source = _package_of(".".join(relative.with_suffix("").parts).removesuffix(".__init__"))
        edges = graph.setdefault(source, set())
        for module in _imported_modules(path):
            target = _package_of(module)
            if target not in (None, source):
                edges.add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None (depth-first search, three colours)."""
    state: dict[str, str] = {}  # absent: unvisited, "open": on the current path, "done": fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                return path[path.index(successor) :] + [successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


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


def test_package_graph_finds_a_planted_cycle():
    graph = {"mmreward.a": {"mmreward.b"}, "mmreward.b": {"mmreward.c"}, "mmreward.c": {"mmreward.a"}}
    assert _find_cycle(graph) == ["mmreward.a", "mmreward.b", "mmreward.c", "mmreward.a"]
    assert _find_cycle({"mmreward.a": {"mmreward.b"}, "mmreward.b": set()}) is None


def test_library_packages_import_each_other_without_cycles():
    """The graph mmreward.<subpackage or top-level module> -> mmreward.<...> over every import is acyclic."""
    cycle = _find_cycle(_package_graph())
    assert cycle is None, "import cycle between library packages: " + " -> ".join(cycle or [])


def test_programs_import_only_the_library():
    """What two programs share lives in mmreward/, so each program reads on its own (imports anywhere in the file,
    including inside functions, count)."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & set(PROGRAMS)) + _relative_imports(path)
        for folder in PROGRAMS
        for path in (ROOT / folder).rglob("*.py")
        if _imports(path) & set(PROGRAMS) or _relative_imports(path)
    }
    assert offenders == {}


def _relative_imports(path: Path) -> list[str]:
    """``from .x import y`` in a program folder imports a sibling program."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{'.' * n.level}{n.module or ''}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]


def test_importing_mmreward_stays_light():
    """`import mmreward` must not pull in open_clip, diffusers or transformers models (the CLI starts fast)."""
    import subprocess
    import sys

    heavy = ("open_clip", "diffusers", "transformers")
    code = f"import sys, mmreward; print(','.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""

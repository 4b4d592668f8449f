"""Dependencies point one way: the library never imports the programs (align/, eval/, benchmarks/), and a program
imports only the library, never another program."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("align", "eval", "benchmarks")
PROGRAMS = ("align", "eval")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_does_not_import_programs():
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & set(FORBIDDEN))
        for path in (ROOT / "mmreward").rglob("*.py")
        if _imports(path) & set(FORBIDDEN)
    }
    assert offenders == {}


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

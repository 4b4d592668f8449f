#!/usr/bin/env python
"""Mutation testing, one module at a time: which one-line changes to a module does its test suite not notice?

    python .ci/mutation.py                               # every module listed in pyproject.toml
    python .ci/mutation.py mmreward/score_inputs.py      # one module (a few minutes on 2 cores)
    python .ci/mutation.py mmreward/serve.py --show      # also print the diff of every surviving mutant

The modules and the tests that guard each are listed in ``[tool.mmreward.mutation]`` of pyproject.toml. For each
module, mutmut runs in a scratch copy of the checkout (tracked and untracked, non-ignored files) with a
``[tool.mutmut]`` section restricted to that module and its tests, so modules do not pay for each other's tests
and the checkout is never touched. The last lines are one row per module: mutants, killed, survived, timeouts and
the names of the survivors and of the mutants no selected test reaches (``--show`` prints their diffs).

A surviving mutant is either a missing test (write it) or equivalent to the original (the note on the change says
why). Exit status: 0 when every module ran and no mutant survived, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
# mutmut's status words (``mutmut results --all true``) grouped the way the summary reports them.
KILLED = {"killed"}
SURVIVED = {"survived"}
UNTESTED = {"no tests"}  # no selected test even runs the mutated function: as bad as a survivor
TIMEOUT = {"timeout"}


@dataclass
class ModuleResult:
    module: str
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)

    def count(self, statuses: set[str]) -> int:
        return sum(n for status, n in self.counts.items() if status in statuses)


def mutation_table() -> dict[str, list[str]]:
    """``{module path: [pytest arguments selecting its tests]}`` from pyproject.toml."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return config["tool"]["mmreward"]["mutation"]


def copy_checkout(destination: Path) -> None:
    """Tracked and untracked (not ignored) files: what the tests see in a fresh clone plus uncommitted work."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_symlink() or source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)


def module_config(module: str, tests: list[str]) -> str:
    """The ``[tool.mutmut]`` section that mutates ``module`` only and runs only ``tests``."""
    quoted = ", ".join(f'"{t}"' for t in tests)
    return (
        "\n[tool.mutmut]\n"
        f'source_paths = ["{module.split("/")[0]}"]\n'
        f'only_mutate = ["{module}"]\n'
        'also_copy = ["align", "eval", "configs", "data", "benchmarks"]\n'
        'pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "--timeout=120"]\n'
        f"pytest_add_cli_args_test_selection = [{quoted}]\n"
    )


def parse_results(text: str) -> tuple[dict[str, int], list[str]]:
    """``mutmut results --all true`` lines ``name: status`` -> (count per status, names of survivors)."""
    counts: dict[str, int] = {}
    survivors = []
    for line in text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or not name:
            continue
        counts[status] = counts.get(status, 0) + 1
        if status in SURVIVED | UNTESTED:
            survivors.append(name)
    return counts, survivors


def run_module(module: str, tests: list[str], children: int, show: bool, keep: bool) -> ModuleResult:
    scratch = Path(tempfile.mkdtemp(prefix="mutation-"))
    try:
        copy_checkout(scratch)
        # The tests are in place under mutants/ before mutmut starts: when mutmut copies them there itself, the first
        # test collection of a fresh copy can fail with "No module named 'tests'" (a directory listing cached by the
        # import system before the copy).
        copy_checkout(scratch / "mutants")
        pyproject = scratch / "pyproject.toml"
        pyproject.write_text(pyproject.read_text() + module_config(module, tests))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(scratch / "mutants")}
        print(f"== {module}: mutmut on {len(tests)} test selection(s) in {scratch}", flush=True)
        run = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)], cwd=scratch, env=env
        )
        if run.returncode != 0:  # e.g. a selected test fails on the unmutated code: say so, go on with the others
            print(f"== {module}: mutmut stopped with exit status {run.returncode} (see its output above)", flush=True)
            return ModuleResult(module, {"mutmut failed": 1}, [])
        results = subprocess.run(
            [sys.executable, "-m", "mutmut", "results", "--all", "true"],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        counts, survivors = parse_results(results)
        if show:
            for name in survivors:
                command = [sys.executable, "-m", "mutmut", "show", name]
                diff = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True)
                print(diff.stdout)
        return ModuleResult(module, counts, survivors)
    finally:
        if keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module paths from [tool.mmreward.mutation] (default: all)")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="parallel mutant runs")
    parser.add_argument("--show", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies (to run mutmut show there)")
    args = parser.parse_args(argv)
    table = mutation_table()
    unknown = [m for m in args.modules if m not in table]
    if unknown:
        parser.error(f"{unknown} not in [tool.mmreward.mutation] of pyproject.toml; listed: {', '.join(table)}")
    results = [run_module(m, table[m], args.children, args.show, args.keep) for m in args.modules or table]
    print(f"\n{'module':45} {'mutants':>8} {'killed':>7} {'survived':>9} {'no tests':>9} {'timeout':>8}  survivors")
    for r in results:
        total = sum(r.counts.values())
        print(
            f"{r.module:45} {total:8d} {r.count(KILLED):7d} {r.count(SURVIVED):9d} {r.count(UNTESTED):9d} "
            f"{r.count(TIMEOUT):8d}  " + " ".join(name.rsplit(".", 1)[-1] for name in r.survivors)
        )
    return 1 if any(r.survivors or "mutmut failed" in r.counts for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

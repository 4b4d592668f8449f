"""`mmreward` commands and programs run in the test process, captured as a finished subprocess would be.

The command goes through its entry point (``mmreward.cli:main``, a program's ``main``) with the test's arguments;
its exit status (argparse's ``SystemExit`` included), stdout and stderr come back as ``returncode``, ``stdout`` and
``stderr``. A new interpreter per command would import torch, transformers and diffusers again each time (about
5 s of CPU apiece, the larger part of most CLI tests); the few tests that check the installed command itself
start one.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

from mmreward import cli


def run_main(main: Callable[[list[str]], int], *args) -> SimpleNamespace:
    """``main(ARGS)`` as a finished process: ``returncode``, ``stdout`` and ``stderr``."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_cli(*args) -> SimpleNamespace:
    """``mmreward ARGS`` as a finished process."""
    return run_main(cli.main, *args)

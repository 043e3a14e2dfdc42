"""Helpers of the tests that run small study notebooks through the real runner (papermill, a real kernel)."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from pullstudy.report.runner import main

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(path: Path, *sources: str, parameters: str | None = 'output_dir = ""') -> Path:
    """A notebook of code cells ``sources``, after a parameters cell (papermill's tag) unless ``parameters`` is None."""
    cells = [new_code_cell(s) for s in sources]
    if parameters is not None:
        cells.insert(0, new_code_cell(parameters))
        cells[0].metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return Path(path)


def run_quietly(notebooks: Path, results: Path, *args: str) -> None:
    """``make reproduce``'s runner on ``notebooks`` into ``results``; fails the test with its stderr unless it succeeds."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["--notebooks", str(notebooks), "--results", str(results), "--no-progress", *args])
    assert code == 0, err.getvalue()


def interrupt_runner(notebooks: Path, results: Path, ready: Callable[[], bool], *args: str,
                     settle_s: float = 0.0, again_after_s: float | None = None) -> tuple[int, str, str]:
    """The runner as ``make reproduce`` starts it, in its own process, sent SIGINT (a real Ctrl-C) once
    ``ready()`` holds and ``settle_s`` more have passed; a second SIGINT ``again_after_s`` later if given.
    Returns (exit code, stdout, stderr); the process is killed if it outlives the test."""
    proc = subprocess.Popen([sys.executable, "-m", "pullstudy.report.runner", "--notebooks", str(notebooks),
                             "--results", str(results), "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGINT)
        if again_after_s is not None:
            time.sleep(again_after_s)
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stdout, stderr

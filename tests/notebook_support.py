"""Helpers of the tests that run small study notebooks through the real runner (papermill, a real kernel)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

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

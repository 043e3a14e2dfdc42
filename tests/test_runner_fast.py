"""``make reproduce`` fast (issue 16): notebooks run concurrently with the outputs of a serial run,
and a notebook unchanged since its last successful run is not re-executed."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from pullstudy import paths
from pullstudy.report.runner import main, run_notebooks

pytestmark = pytest.mark.notebooks

SMALL = ["02-registry-proximity", "03-local-ssd"]  # two of the real studies, the quickest


def _outputs(root: Path) -> dict[str, bytes]:
    """Every CSV, chart SVG and metrics.json (without its timestamp) under ``root``."""
    out = {}
    for f in sorted(root.rglob("*")):
        rel = str(f.relative_to(root))
        if f.suffix in (".csv", ".svg"):
            out[rel] = f.read_bytes()
        elif f.name == "metrics.json":
            metrics = json.loads(f.read_text())
            metrics.pop("generated_at", None)
            out[rel] = json.dumps(metrics, sort_keys=True).encode()
    return out


def test_concurrent_run_writes_what_a_serial_run_writes(tmp_path: Path) -> None:
    serial, parallel = tmp_path / "j1", tmp_path / "j2"
    one = run_notebooks(paths.notebooks_dir(), serial, SMALL, progress=False, jobs=1)
    two = run_notebooks(paths.notebooks_dir(), parallel, SMALL, progress=False, jobs=2)
    assert [r.stem for r in one] == [r.stem for r in two] == SMALL
    assert all(r.ok for r in one + two), [r.error for r in one + two]
    a, b = _outputs(serial), _outputs(parallel)
    assert any(k.endswith(".svg") for k in a) and any(k.endswith(".csv") for k in a)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def _write(path: Path, *sources: str) -> Path:
    cells = [new_code_cell(s) for s in sources]
    cells[0].metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_unchanged_notebook_is_not_re_executed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = tmp_path / "nb"
    d.mkdir()
    nb = _write(d / "01-count.ipynb", 'output_dir = ""\nn = 1',
                "from pathlib import Path\np = Path(output_dir) / 'runs.txt'\np.write_text(str(n))")
    results = tmp_path / "r"

    def run(*extra: str) -> list:
        assert main(["--notebooks", str(d), "--results", str(results), "--no-progress", *extra]) == 0
        return capsys.readouterr().out.splitlines()

    def executed_at() -> int:
        return (results / "01-count" / "01-count.ipynb").stat().st_mtime_ns

    run()
    first = executed_at()
    out = run()
    assert executed_at() == first and any("unchanged, not re-run" in line for line in out)
    assert (results / "01-count" / "runs.txt").read_text() == "1"  # its results are kept
    run("--force")
    assert executed_at() != first
    forced = executed_at()
    run("-p", "n=2")  # a new parameter value
    assert executed_at() != forced and (results / "01-count" / "runs.txt").read_text() == "2"
    changed = executed_at()
    _write(nb, 'output_dir = ""\nn = 1', "from pathlib import Path\n(Path(output_dir) / 'runs.txt').write_text('new')")
    run()  # a new source, parameters back to the defaults
    assert executed_at() != changed and (results / "01-count" / "runs.txt").read_text() == "new"


def test_failed_notebook_is_re_run_and_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = tmp_path / "nb"
    d.mkdir()
    _write(d / "01-ok.ipynb", 'output_dir = ""', "x = 1")
    _write(d / "02-fail.ipynb", 'output_dir = ""', "raise RuntimeError('boom')")
    _write(d / "03-later.ipynb", 'output_dir = ""', "y = 1")
    results = tmp_path / "r"
    for _ in range(2):  # the failure is not cached: the second run executes it again and says so again
        assert main(["--notebooks", str(d), "--results", str(results), "--no-progress", "-j", "2"]) == 1
        err = capsys.readouterr().err
        assert "notebook 02-fail" in err and "failed in cell 2 (`raise RuntimeError('boom')`)" in err
        assert "RuntimeError: boom" in err


def test_bad_jobs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--results", str(tmp_path), "-j", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: -j/--jobs must be at least 1, got 0"


def test_notebook_page_rendered_again_only_when_the_notebook_changed(tmp_path: Path) -> None:
    """The offline page of an executed notebook is kept while the notebook is unchanged (a no-change
    ``make reproduce`` rebuilt all seven, ~1 s each), and rendered again when it changes."""
    from pullstudy.report.offline_report import render_notebook

    folder = tmp_path / "01-x"
    folder.mkdir()
    ipynb = _write(folder / "01-x.ipynb", 'output_dir = ""', "print('first')")
    page = render_notebook(ipynb)
    first = page.stat().st_mtime_ns
    assert render_notebook(ipynb) == page and page.stat().st_mtime_ns == first
    _write(ipynb, 'output_dir = ""', "print('second')")
    render_notebook(ipynb)
    assert "second" in page.read_text() and page.stat().st_mtime_ns != first

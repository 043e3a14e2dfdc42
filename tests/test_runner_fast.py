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
from notebook_support import KERNELSPEC

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
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
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


def test_longest_notebooks_start_first_and_never_run_ones_before_them(tmp_path: Path) -> None:
    """Issue 16: with -j N the long notebooks start first (their last run time is kept with their cache key),
    so that none starts last while the other workers idle; unknown ones first, name order among equals."""
    from pullstudy.report.runner import CACHE_DIR, start_order

    notebooks = [tmp_path / f"{name}.ipynb" for name in ("01-a", "02-b", "03-c", "04-d", "05-e")]
    cache = tmp_path / "r" / CACHE_DIR
    cache.mkdir(parents=True)
    for stem, seconds in (("01-a", 3.0), ("02-b", 9.5), ("04-d", 3.0), ("05-e", 6.0)):
        (cache / f"{stem}.json").write_text(json.dumps({"key": "k", "seconds": seconds}))
    assert [p.stem for p in start_order(notebooks, tmp_path / "r")] == ["03-c", "02-b", "05-e", "01-a", "04-d"]
    (cache / "02-b.json").write_text(json.dumps({"key": "k"}))  # written before run times were kept
    assert [p.stem for p in start_order(notebooks, tmp_path / "r")][:2] == ["02-b", "03-c"]


def test_notebook_pages_number_their_gradients_in_notebook_order(tmp_path: Path) -> None:
    """Vega numbers gradients across all it draws in a process, so pages drawn as notebooks finish (any order)
    would differ; the results page numbers them as if drawn in one go, in name order, only in SVG ids."""
    from pullstudy.report.offline_report import number_gradients

    def page(name: str, ids: list[int]) -> Path:
        body = "".join(f'<rect fill="url(#gradient_{i})"/><linearGradient id="gradient_{i}"/>' for i in ids)
        path = tmp_path / f"{name}.html"
        path.write_text(f"<p>gradient_{ids[0] if ids else 0} in prose stays</p>{body}")
        return path

    a, b, c = page("a", [5, 9]), page("b", []), page("c", [2])
    assert number_gradients(a, 0) == 2 and number_gradients(b, 2) == 2 and number_gradients(c, 2) == 3
    assert a.read_text() == ('<p>gradient_5 in prose stays</p><rect fill="url(#gradient_0)"/><linearGradient '
                             'id="gradient_0"/><rect fill="url(#gradient_1)"/><linearGradient id="gradient_1"/>')
    assert 'url(#gradient_2)' in c.read_text() and 'id="gradient_2"' in c.read_text()
    before = a.read_text()
    assert number_gradients(a, 0) == 2 and a.read_text() == before  # numbered already: unchanged


def test_notebook_page_uses_the_svg_its_notebook_saved(tmp_path: Path) -> None:
    """A chart the notebook saved (out.chart) is shown on its page from the saved SVG, not drawn again;
    a chart shown but not saved is drawn."""
    import altair as alt
    import pandas as pd
    import vl_convert

    from pullstudy.report import offline_report
    from pullstudy.studies import charts

    folder = tmp_path / "01-x"
    saved = alt.Chart(pd.DataFrame({"x": [1, 2]}), title="saved").mark_point().encode(x="x:Q")
    charts.save_chart(saved, folder, "saved")
    marker = "<!-- the saved drawing -->"
    (folder / "saved.svg").write_text((folder / "saved.svg").read_text() + marker)
    shown = alt.Chart(pd.DataFrame({"x": [3]}), title="only shown").mark_point().encode(x="x:Q")
    nb = new_notebook(cells=[new_code_cell("")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"text/html": c._repr_mimebundle_()["text/html"]})
                           for c in (saved, shown)]
    drawn = []
    real = vl_convert.vegalite_to_svg
    try:
        vl_convert.vegalite_to_svg = lambda spec, *a, **k: drawn.append(spec.get("title")) or real(spec, *a, **k)
        assert offline_report.offline_outputs(nb, offline_report.saved_drawings(folder)) == (2, 0)
    finally:
        vl_convert.vegalite_to_svg = real
    assert drawn == ["only shown"]
    html = [o["data"]["text/html"] for o in nb.cells[0].outputs]
    assert marker in html[0] and marker not in html[1] and "<svg" in html[1]


def test_no_notebook_starts_after_a_failure_when_run_concurrently(tmp_path: Path) -> None:
    """With -j 2 a failure stops the notebooks not yet started; the one already running finishes."""
    d = tmp_path / "nb"
    d.mkdir()
    _write(d / "01-fail.ipynb", 'output_dir = ""', "raise RuntimeError('at once')")
    _write(d / "02-slow.ipynb", 'output_dir = ""', "import time\ntime.sleep(5)")
    _write(d / "03-after.ipynb", 'output_dir = ""', "x = 1")
    runs = run_notebooks(d, tmp_path / "r", progress=False, jobs=2)
    assert [(r.stem, r.ok) for r in runs] == [("01-fail", False), ("02-slow", True)]
    assert not (tmp_path / "r" / "03-after").exists()

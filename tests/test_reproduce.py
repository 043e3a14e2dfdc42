"""``make reproduce``: notebooks run with papermill, stop at the first failure, one results page."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from pullstudy.claims import CLAIMS
from pullstudy.reproduce import (
    main, parse_parameters, run_notebooks, select_notebooks, write_index,
)

pytestmark = pytest.mark.notebooks


def _write(path: Path, *cells) -> Path:
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _parameters_cell(source: str):
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("notebooks")
    _write(
        d / "01-ok.ipynb",
        new_markdown_cell("# A study that records a verdict"),
        _parameters_cell('output_dir = ""\nthreshold = 1.0\nlabel = "default"'),
        new_code_cell(
            "import pandas as pd\n"
            "from pullstudy.claims import Verdict\n"
            "from pullstudy.results import StudyOutput\n"
            "out = StudyOutput('01-ok', output_dir)\n"
            "out.table(pd.DataFrame({'x': [1, 2]}), 'records')\n"
            "out.metric('threshold', threshold)\n"
            "out.metric('label', label)\n"
            "out.metric('cwd', __import__('os').getcwd())\n"
            "out.excluded('cache hits <b>', 2)\n"
            "out.verdict(Verdict('size-growth', 'supported', 'slope > 0 <script>', value=6.5,\n"
            "                    ci_low=5.0, ci_high=8.0, unit='s/GB', n=9))\n"
            "out.write()"
        ),
    )
    _write(
        d / "02-fail.ipynb",
        _parameters_cell('output_dir = ""'),
        new_code_cell("x = 1"),
        new_code_cell("y = x + 1  # third cell raises\nraise RuntimeError('boom ' + str(y))"),
        new_code_cell("print('never')"),
    )
    _write(d / "03-after.ipynb", new_code_cell("print('must not run')"))
    return d


@pytest.fixture(scope="module")
def run(notebooks: Path, tmp_path_factory: pytest.TempPathFactory):
    results = tmp_path_factory.mktemp("results")
    # stale output of an earlier run must not survive into this one
    (results / "01-ok").mkdir()
    (results / "01-ok" / "stale.csv").write_text("old\n")
    runs = run_notebooks(notebooks, results, parameters={"threshold": 2.5, "label": "from-cli"},
                         progress=False)
    index = write_index(results)
    return runs, results, index


def test_stops_at_first_failure(run) -> None:
    runs, results, _ = run
    assert [(r.stem, r.ok) for r in runs] == [("01-ok", True), ("02-fail", False)]
    assert not (results / "03-after").exists()
    assert (results / "01-ok" / "01-ok.ipynb").exists()
    assert (results / "02-fail" / "02-fail.ipynb").exists()


def test_failure_names_notebook_cell_and_error(run) -> None:
    failed = run[0][1]
    assert "02-fail" in failed.error
    assert "cell 3" in failed.error
    assert "y = x + 1  # third cell raises" in failed.error
    assert "RuntimeError: boom 2" in failed.error
    assert (run[1] / "02-fail" / "reproduce-error.txt").read_text().strip() == failed.error


def test_parameters_and_output_dir_injected(run) -> None:
    _, results, _ = run
    data = json.loads((results / "01-ok" / "metrics.json").read_text())
    assert data["metrics"]["threshold"] == 2.5 and data["metrics"]["label"] == "from-cli"
    assert Path(data["metrics"]["cwd"]).name.startswith("notebooks")
    assert data["verdicts"][0]["notebook"] == "01-ok"
    assert (results / "01-ok" / "records.csv").exists()
    assert not (results / "01-ok" / "stale.csv").exists()


def test_index_and_claims_csv_list_every_claim(run) -> None:
    _, results, index = run
    assert index == results / "index.html"
    page = index.read_text()
    assert "<title>pullstudy results</title>" in page
    for claim_id in CLAIMS:
        assert f"<code>{claim_id}</code>" in page
    assert 'class="v-ok">supported<' in page
    assert page.count('class="v-na">not testable here<') == len(CLAIMS) - 1
    assert 'href="01-ok/01-ok.ipynb"' in page and 'href="01-ok/records.csv"' in page
    assert 'href="02-fail/02-fail.ipynb"' in page and "RuntimeError: boom 2" in page
    # text from notebooks is escaped, never injected as markup
    assert "<script>" not in page and "slope &gt; 0 &lt;script&gt;" in page
    assert "cache hits &lt;b&gt;" in page

    table = pd.read_csv(results / "claims.csv")
    assert list(dict.fromkeys(table["claim_id"])) == list(CLAIMS)
    row = table[table["claim_id"] == "size-growth"].iloc[0]
    assert (row["verdict"], row["value"], row["ci_low"], row["n"], row["notebook"]) == (
        "supported", 6.5, 5.0, 9, "01-ok")


def test_index_lists_charts_as_thumbnails(tmp_path: Path) -> None:
    import altair as alt

    from pullstudy.results import StudyOutput

    out = StudyOutput("09-charts", tmp_path / "09-charts")
    out.chart(alt.Chart(pd.DataFrame({"x": [1]}), title="t").mark_point().encode(x="x"), "dots")
    out.write()
    page = write_index(tmp_path).read_text()
    assert '<a href="09-charts/dots.html"><img src="09-charts/dots.png"' in page
    assert "not run by reproduce" in page


def test_index_refuses_broken_metrics(tmp_path: Path) -> None:
    (tmp_path / "01-x").mkdir()
    (tmp_path / "01-x" / "metrics.json").write_text("not json")
    with pytest.raises(ValueError, match="01-x/metrics.json"):
        write_index(tmp_path)


def test_parse_parameters() -> None:
    assert parse_parameters(["n=3", "f=0.5", "flag=true", "runs=[\"run1\",\"run3\"]",
                             "name=run1", "empty="]) == {
        "n": 3, "f": 0.5, "flag": True, "runs": ["run1", "run3"], "name": "run1", "empty": ""}
    for bad in (["novalue"], ["1x=2"], ["output_dir=/tmp"]):
        with pytest.raises(ValueError):
            parse_parameters(bad)


def test_select_notebooks(notebooks: Path) -> None:
    assert [p.stem for p in select_notebooks(notebooks)] == ["01-ok", "02-fail", "03-after"]
    assert [p.stem for p in select_notebooks(notebooks, ["03-after", "01-ok.ipynb"])] == [
        "01-ok", "03-after"]
    with pytest.raises(ValueError, match="no notebook named 04-nope.*available: 01-ok"):
        select_notebooks(notebooks, ["04-nope"])


def test_main_reports_failure_and_bad_arguments(notebooks: Path, tmp_path: Path) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["--notebooks", str(notebooks), "--results", str(tmp_path),
                     "--only", "02-fail", "--no-progress"])
    assert code == 1
    assert "FAILED  02-fail" in stdout.getvalue()
    assert "not testable here 12" in stdout.getvalue()
    assert str(tmp_path / "index.html") in stdout.getvalue()
    assert "02-fail" in stderr.getvalue() and "cell 3" in stderr.getvalue()
    assert (tmp_path / "index.html").exists() and (tmp_path / "claims.csv").exists()

    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["--notebooks", str(notebooks), "--results", str(tmp_path),
                     "--only", "nope"]) == 2
    assert "nope" in err.getvalue()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["--notebooks", str(notebooks), "-p", "output_dir=x"]) == 2
    assert "output_dir" in err.getvalue()

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

from pullstudy.studies.claims import CLAIMS
from pullstudy.report.runner import main, parse_parameters, run_notebooks, select_notebooks
from pullstudy.report.page import write_index
from notebook_support import KERNELSPEC

pytestmark = pytest.mark.notebooks


def _write(path: Path, *cells) -> Path:
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
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
            "from pullstudy.studies.claims import Verdict\n"
            "from pullstudy.report.output import StudyOutput\n"
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
                         progress=False, jobs=1)  # serially: the failed notebook is the last one run
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

    from pullstudy.report.output import StudyOutput

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


# ---------------------------------------------------------------- bad input: one line, nothing wrong


def _main(*args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(list(args))
    return code, stdout.getvalue(), stderr.getvalue()


def test_unknown_parameter_name_refused_before_anything_runs(tmp_path: Path) -> None:
    """papermill only warned about a typo (n_bot=50) and ran the notebook with the defaults."""
    code, _, err = _main("--only", "05-layer-similarity", "--results", str(tmp_path / "r"),
                         "-p", "n_bot=50", "--no-progress")
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "unknown parameter n_bot: notebook 05-layer-similarity has no parameter of that name" in err
    assert "its parameters: measures, sets, spack_set, tolerance" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("pair, message", [
    ("backend=nonsense", "backend='nonsense' is not allowed; allowed: 'archive' or 'local' or 'kube'"),
    ("treatment_run=pulling/run1", "the same run as baseline_run"),
    ("n_boot=1", "n_boot=1 is out of range"),
])
def test_bad_parameter_value_refused_before_anything_runs(tmp_path: Path, pair: str, message: str) -> None:
    """An unknown backend (once: backend=kube) started a registry and containerd as root and measured."""
    code, _, err = _main("--only", "03-local-ssd", "--results", str(tmp_path / "r"), "-p", pair, "--no-progress")
    assert code == 2
    assert message in err and err.strip().count("\n") == 0 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_parameter_error_in_a_notebook_is_one_line(tmp_path: Path) -> None:
    """The notebook's own check (the cell after its parameters) stops it before any work."""
    from pullstudy import paths

    runs = run_notebooks(paths.notebooks_dir(), tmp_path, ["06-gpu-usernetes-check"],
                         {"command_timeout_s": "soon"}, progress=False, check_values=False)
    assert len(runs) == 1 and not runs[0].ok
    assert runs[0].error == (
        "notebook 06-gpu-usernetes-check refused its parameters: 06-gpu-usernetes-check: parameter "
        "command_timeout_s='soon' is not allowed; allowed: a number > 0")
    executed = nbformat.read(runs[0].output_path, as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code" and c.get("execution_count")]
    assert len(ran) == 3  # parameters, injected parameters, the check: nothing else ran


def test_results_that_cannot_be_written_is_one_line(tmp_path: Path, notebooks: Path) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for target, message in ((a_file, "is a file, not a folder"), (a_file / "sub", "cannot be written"),
                            (Path("/proc/pullstudy-results"), "cannot be written")):
        code, _, err = _main("--notebooks", str(notebooks), "--only", "01-ok", "--results", str(target),
                             "--no-progress")
        assert code == 2, target
        assert f"--results {target}" in err and message in err, err
        assert err.strip().count("\n") == 0 and "Traceback" not in err


def _executed(path: Path, ran: int, cells: int) -> None:
    """An executed notebook as papermill leaves it after Ctrl-C: no exception, an end time, and
    every cell marked completed, but only the first ``ran`` cells have an execution count."""
    nb = new_notebook(cells=[new_code_cell(f"x = {i}") for i in range(cells)])
    nb.metadata["papermill"] = {"exception": None, "end_time": "2026-01-01T00:00:00", "duration": 3.0}
    for i, cell in enumerate(nb.cells):
        cell.execution_count = i + 1 if i < ran else None
        cell.metadata["papermill"] = {"status": "completed", "exception": False}
    nbformat.write(nb, path)


def test_truncated_notebook_is_interrupted_and_not_judged(tmp_path: Path) -> None:
    from pullstudy.studies.claims import Verdict
    from pullstudy.report.output import StudyOutput

    for stem, ran in (("01-cut", 2), ("02-whole", 3)):
        out = StudyOutput(stem, tmp_path / stem)
        out.verdict(Verdict("size-growth" if stem == "01-cut" else "layers-no-effect", "supported", "ok"))
        out.write()
        _executed(tmp_path / stem / f"{stem}.ipynb", ran, 3)
    page = write_index(tmp_path).read_text()
    assert '<td class="status-failed">interrupted</td>' in page
    assert '<td class="status-ok">OK</td>' in page
    table = pd.read_csv(tmp_path / "claims.csv").set_index("claim_id")
    assert table.loc["size-growth", "verdict"] == "not testable here"
    assert "notebook 01-cut was interrupted before every cell ran" in table.loc["size-growth", "reason"]
    assert table.loc["layers-no-effect", "verdict"] == "supported"


def test_ctrl_c_is_one_line_exit_130_and_the_notebook_interrupted(tmp_path: Path) -> None:
    """A real Ctrl-C (SIGINT) while a cell runs: no traceback, exit 130, listed as interrupted,
    and the verdict it had already written is not judged."""
    from notebook_support import interrupt_runner

    d = tmp_path / "nb"
    d.mkdir()
    _write(d / "01-slow.ipynb", _parameters_cell('output_dir = ""'),
           new_code_cell("from pullstudy.studies.claims import Verdict\nfrom pullstudy.report.output import StudyOutput\n"
                         "out = StudyOutput('01-slow', output_dir)\n"
                         "out.verdict(Verdict('size-growth', 'supported', 'too early'))\nout.write()"),
           new_code_cell("import time\ntime.sleep(120)"),
           new_code_cell("print('never')"))
    results = tmp_path / "r"
    code, stdout, stderr = interrupt_runner(d, results, (results / "01-slow" / "metrics.json").exists, settle_s=1.0)
    assert code == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "INTERRUPTED 01-slow" in stdout
    assert [line for line in stderr.splitlines() if line.strip()] == [
        next(line for line in stderr.splitlines() if "was interrupted (Ctrl-C)" in line)]
    assert "status-failed\">interrupted<" in (results / "index.html").read_text()
    row = pd.read_csv(results / "claims.csv").set_index("claim_id").loc["size-growth"]
    assert row["verdict"] == "not testable here" and "interrupted" in row["reason"]


def test_registry_cli_hints_insecure_on_a_tls_error(tmp_path: Path) -> None:
    """A plain-HTTP registry answered with TLS: the CLI says to use its --insecure option."""
    import http.server
    import threading

    from pullstudy.images import oci

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, out, _ = _main_of(oci.main, ["fetch", "--out", str(tmp_path / "set"),
                                                f"127.0.0.1:{server.server_port}/app:1"])
    finally:
        server.shutdown()
    assert code == 1
    assert "FAILED" in out and "SSL" in out
    assert "hint: a TLS (SSL) error usually means the registry speaks plain HTTP" in out and "--insecure" in out


def _main_of(fn, argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = fn(argv)
    return code, stdout.getvalue(), stderr.getvalue()

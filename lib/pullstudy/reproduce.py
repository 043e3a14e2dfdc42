"""The engine of ``make reproduce``: run every study notebook, then build one results page.

    python -m pullstudy.reproduce [--results DIR] [--only NAME ...] [-p key=value ...]

Each ``notebooks/<stem>.ipynb`` is executed by papermill into ``<results>/<stem>/<stem>.ipynb``
with ``output_dir=<results>/<stem>``. It stops at the first failing notebook (later studies would
only repeat or hide the error) and says which notebook, which cell and what error. The results page
(``index.html``) and ``claims.csv`` are written in every case, for what did run, and list every
claim, so an unchecked claim is visible.

Parameters are checked before any notebook starts: a name no selected notebook has is refused (papermill
would only warn and run with the defaults), each notebook gets only the parameters it has, and the
values are checked by :mod:`pullstudy.parameters`, as the notebooks check them again themselves.
A notebook counts as OK only if every cell ran: an interrupted one (Ctrl-C) is listed as
"interrupted" and its verdicts are not judged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

import nbformat
import pandas as pd
from tqdm import tqdm

from pullstudy import completeness, paths
from pullstudy.claims import VERDICTS, Verdict, reported_not_judged, verdict_table, verdicts_from_dicts
from pullstudy.parameters import SET_BY_RUNNER, SPECS, ParameterError, close_matches, notebook_parameters, validate
from pullstudy.results import METRICS_FILE, load_metrics
from pullstudy.uncertainty_figures import how_sure_html

KERNEL = "python3"
INDEX = "index.html"
CLAIMS_CSV = "claims.csv"
ERROR_FILE = "reproduce-error.txt"
INTERRUPTED_FILE = "reproduce-interrupted.txt"
INTERRUPTED = "interrupted"
EXIT_INTERRUPTED = 130  # the shell's code for a command stopped by SIGINT


@dataclass
class NotebookRun:
    """How one notebook run went; ``error`` names the notebook, the cell and the error."""

    stem: str
    input_path: Path
    output_path: Path
    ok: bool
    seconds: float
    error: str = ""
    interrupted: bool = False


# ---------------------------------------------------------------- selecting and parameters


def select_notebooks(notebooks_dir: str | Path, only: Iterable[str] | None = None) -> list[Path]:
    """The notebooks to run, sorted by name; an unknown ``--only`` name is an error, not a no-op."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise ValueError(f"notebooks folder {notebooks_dir} does not exist")
    found = sorted(p for p in notebooks_dir.glob("*.ipynb") if not p.name.startswith("."))
    if only is None:
        return found
    if isinstance(only, str):
        only = [only]
    wanted = [name.removesuffix(".ipynb") for name in only]
    stems = {p.stem: p for p in found}
    unknown = [name for name in wanted if name not in stems]
    if unknown:
        raise ValueError(
            f"--only: no notebook named {', '.join(unknown)} in {notebooks_dir}; "
            f"available: {', '.join(stems) or '(none)'}"
        )
    return [p for p in found if p.stem in wanted]


def parse_parameters(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON is used as such (2, 0.5, true, [..])."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"parameter {pair!r} must look like name=value (name a Python identifier)")
        if key == "output_dir":
            raise ValueError("output_dir is set by reproduce (<results>/<notebook>); use --results")
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    return parameters


def plan_parameters(notebooks: Sequence[Path], parameters: dict[str, Any], *,
                    check_values: bool = True) -> dict[str, dict[str, Any]]:
    """The parameters to give each notebook: those of ``parameters`` it has.

    Refuses, before anything runs, a name that no selected notebook has (listing their real
    parameters) and, with ``check_values``, a value the notebook's spec refuses (ParameterError).
    """
    declared = {nb.stem: notebook_parameters(nb) for nb in notebooks}
    known = sorted(set().union(*declared.values()) - set(SET_BY_RUNNER)) if declared else []
    for name in parameters:
        if name not in known:
            whose = (f"notebook {notebooks[0].stem} has" if len(notebooks) == 1
                     else f"none of the {len(notebooks)} selected notebooks has")
            raise ParameterError(f"unknown parameter {name}: {whose} no parameter of that name"
                                 f"{close_matches(name, known)}; its parameters: {', '.join(known) or '(none)'}")
    plan = {}
    for nb in notebooks:
        given = {k: v for k, v in parameters.items() if k in declared[nb.stem]}
        if check_values and given and nb.stem in SPECS:
            validate(nb.stem, {**declared[nb.stem], **given}, base=nb.parent)
        plan[nb.stem] = given
    return plan


# ---------------------------------------------------------------- failures


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 100 else line[:97] + "..."
    return "(empty cell)"


def _has_error(cell: Any) -> bool:
    if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
        return True
    return cell.get("metadata", {}).get("papermill", {}).get("exception") is True


def failing_cell(input_path: Path, output_path: Path) -> tuple[int | None, str] | None:
    """The failing cell as (1-based position in the *source* notebook, first line of source).

    Found in the executed notebook (the cell with an error output, as papermill marks it), then
    mapped back to the source notebook by cell id, so papermill's injected and error-banner cells
    do not shift the number the reader looks for. None if the executed notebook shows no error.
    """
    try:
        executed = nbformat.read(output_path, as_version=4)
    except (OSError, ValueError):
        return None
    bad = next((c for c in executed.cells if c.cell_type == "code" and _has_error(c)), None)
    if bad is None:
        return None
    position: int | None = None
    try:
        source_nb = nbformat.read(input_path, as_version=4)
        for i, cell in enumerate(source_nb.cells, start=1):
            if bad.get("id") and cell.get("id") == bad.get("id"):
                position = i
                break
        if position is None:
            position = next(
                (i for i, c in enumerate(source_nb.cells, start=1) if c.source == bad.source), None
            )
    except (OSError, ValueError):
        pass
    return position, _first_line(bad.source)


def describe_failure(stem: str, input_path: Path, output_path: Path, exc: BaseException) -> str:
    """One message that names the notebook, the failing cell and the error."""
    ename = getattr(exc, "ename", None)
    if ename is None:  # not a cell error: kernel missing or died, unreadable notebook, ...
        hint = ""
        if type(exc).__name__ == "NoSuchKernel":
            hint = (f"\n  no '{KERNEL}' Jupyter kernel: install one into this environment with "
                    f"`{sys.executable} -m ipykernel install --sys-prefix`")
        return f"notebook {stem} ({input_path}) could not run: {type(exc).__name__}: {exc}{hint}"
    cell = failing_cell(input_path, output_path)
    if cell is None:
        source = getattr(exc, "source", "") or ""
        where = f"a cell (`{_first_line(source)}`)"
    else:
        position, first_line = cell
        if position is not None:
            where = f"cell {position} (`{first_line}`)"
        else:  # not found in the source notebook: papermill's index in the executed copy
            where = f"cell {getattr(exc, 'cell_index', -1) + 1} of the executed notebook (`{first_line}`)"
    evalue = getattr(exc, "evalue", "")
    if ename == ParameterError.__name__:  # a user mistake: its message says it all, on one line
        return f"notebook {stem} refused its parameters: {evalue}"
    return (
        f"notebook {stem} ({input_path}) failed in {where}: {ename}: {evalue}\n"
        f"  the executed notebook with the traceback: {output_path}"
    )


# ---------------------------------------------------------------- running


KERNEL_LOG = "kernel.log"


def _kernel_manager(log_path: Path) -> type:
    """A kernel manager whose kernel writes its own stderr (kernel logging, not cell output) to
    ``log_path``: on Ctrl-C the kernel is shut down mid-cell and logs a ZMQ traceback, which must not
    reach the terminal; the log stays in the results folder for debugging."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with open(log_path, "ab") as log:  # the kernel process keeps its own copy
                await super()._async_launch_kernel(kernel_cmd, **{**kw, "stderr": log})

    return LoggedKernelManager


def _engine_options(log_path: Path) -> dict[str, Any]:
    """Encrypt kernel traffic where pyzmq can (CurveZMQ); it also keeps the kernel's
    "running over TCP without encryption" warning out of the logs. The kernel's stderr goes to
    ``log_path``."""
    import zmq
    from traitlets.config import Config

    options: dict[str, Any] = {"kernel_manager_class": _kernel_manager(log_path)}
    if zmq.has("curve"):
        options["config"] = Config({"KernelManager": {"transport_encryption": "auto"}})
    return options


def run_notebooks(
    notebooks_dir: str | Path | None = None,
    results_root: str | Path | None = None,
    only: Iterable[str] | None = None,
    parameters: dict[str, Any] | None = None,
    *,
    kernel_name: str = KERNEL,
    progress: bool = True,
    check_values: bool = True,
) -> list[NotebookRun]:
    """Execute the selected notebooks in order; stop at the first failure (it is the last run).

    Each notebook's results folder is emptied first, so nothing from an earlier run can pass for
    a result of this one. Ctrl-C stops the run too: the notebook is recorded as interrupted
    (``reproduce-interrupted.txt`` in its folder) and is the last run.
    """
    import papermill as pm  # slow to import; only needed here

    notebooks_dir = Path(notebooks_dir or paths.notebooks_dir()).resolve()
    results_root = Path(results_root or paths.results_dir()).resolve()
    notebooks = select_notebooks(notebooks_dir, only)
    parameters = dict(parameters or {})
    if "output_dir" in parameters:
        raise ValueError("output_dir is set by reproduce (<results>/<notebook>)")
    plan = plan_parameters(notebooks, parameters, check_values=check_values)
    results_root.mkdir(parents=True, exist_ok=True)

    runs: list[NotebookRun] = []
    bar = tqdm(total=len(notebooks), unit="notebook", disable=None if progress else True,
               file=sys.stderr, dynamic_ncols=True)
    say = tqdm.write if progress else (lambda *a, **k: None)
    try:
        for i, notebook in enumerate(notebooks, start=1):
            out_dir = results_root / notebook.stem
            if out_dir.exists():
                shutil.rmtree(out_dir)
            out_dir.mkdir(parents=True)
            output_path = out_dir / f"{notebook.stem}.ipynb"
            bar.set_description(notebook.stem)
            say(f"[{i}/{len(notebooks)}] {notebook.stem} ...")
            start = time.monotonic()
            try:
                pm.execute_notebook(
                    str(notebook), str(output_path),
                    parameters={"output_dir": str(out_dir), **plan[notebook.stem]},
                    kernel_name=kernel_name, language="python", cwd=str(notebooks_dir),
                    progress_bar=False, log_output=False, **_engine_options(out_dir / KERNEL_LOG),
                )
            except KeyboardInterrupt:
                seconds = time.monotonic() - start
                message = (f"notebook {notebook.stem} was interrupted (Ctrl-C) after {seconds:.1f} s; "
                           f"its later cells did not run: {output_path}")
                (out_dir / INTERRUPTED_FILE).write_text(message + "\n", encoding="utf-8")
                runs.append(NotebookRun(notebook.stem, notebook, output_path, False, seconds, message,
                                        interrupted=True))
                say(f"[{i}/{len(notebooks)}] {notebook.stem} INTERRUPTED after {seconds:.1f} s")
                break
            except Exception as exc:  # noqa: BLE001 - any failure stops the run, reported
                seconds = time.monotonic() - start
                message = describe_failure(notebook.stem, notebook, output_path, exc)
                (out_dir / ERROR_FILE).write_text(message + "\n", encoding="utf-8")
                runs.append(NotebookRun(notebook.stem, notebook, output_path, False, seconds, message))
                say(f"[{i}/{len(notebooks)}] {notebook.stem} FAILED after {seconds:.1f} s")
                bar.update()
                break
            finally:
                log = out_dir / KERNEL_LOG
                if log.is_file() and log.stat().st_size == 0:
                    log.unlink()  # the usual case: the kernel had nothing to say
            seconds = time.monotonic() - start
            runs.append(NotebookRun(notebook.stem, notebook, output_path, True, seconds))
            say(f"[{i}/{len(notebooks)}] {notebook.stem} OK in {seconds:.1f} s")
            bar.update()
    finally:
        bar.close()
    return runs


# ---------------------------------------------------------------- the results page


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return ""
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _href(*parts: str) -> str:
    return _e("/".join(quote(p) for p in parts))


_VERDICT_CLASS = {
    "supported": "v-ok", "partly supported": "v-partly",
    "not supported": "v-no", "not testable here": "v-na",
}

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.muted{color:#666;font-size:.9em}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.unit{display:block;white-space:normal;font-size:.8em;color:#666;max-width:9em;margin-left:auto}
.v-ok{background:#d4edda} .v-partly{background:#fff3cd} .v-no{background:#f8d7da} .v-na{background:#e9ecef}
.status-ok{color:#1b7a2f;font-weight:bold} .status-failed{color:#b00020;font-weight:bold}
pre.error{background:#fdecee;border-left:4px solid #b00020;padding:.6em;white-space:pre-wrap}
.charts{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;width:360px} figure img{width:100%;border:1px solid #ddd}
figcaption{font-size:.85em}
"""


def _notebook_dirs(results_root: Path) -> list[Path]:
    return sorted(
        d for d in results_root.iterdir()
        if d.is_dir() and any((d / f).exists()
                              for f in (f"{d.name}.ipynb", METRICS_FILE, ERROR_FILE, INTERRUPTED_FILE))
    )


NOT_RUN = "not run by reproduce"


def _cells_not_run(executed: Any) -> int:
    """Code cells with source that never ran (no execution count)."""
    return sum(1 for c in executed.cells
               if c.cell_type == "code" and c.source.strip() and c.get("execution_count") is None)


def _executed_status(directory: Path) -> dict[str, Any]:
    """Status and duration of an executed notebook: OK only if every cell ran.

    papermill's own metadata cannot tell: on Ctrl-C it records no exception, an end time, and
    marks the cells that never ran "completed". So a notebook is "interrupted" if reproduce
    recorded the interruption, if it has no end time, or if any code cell has no execution count.
    """
    path = directory / f"{directory.name}.ipynb"
    if not path.exists():
        status = INTERRUPTED if (directory / INTERRUPTED_FILE).exists() else NOT_RUN
        return {"status": status, "seconds": None, "path": None}
    try:
        executed = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as exc:
        return {"status": f"unreadable executed notebook ({exc})", "seconds": None, "path": path}
    meta = executed.metadata.get("papermill", {})
    if meta.get("exception"):
        status = "FAILED"
    elif (directory / INTERRUPTED_FILE).exists() or not meta.get("end_time") or _cells_not_run(executed):
        status = INTERRUPTED
    else:
        status = "OK"
    return {"status": status, "seconds": meta.get("duration"), "path": path}


def _not_judged_reason(stem: str, status: str) -> str | None:
    """Why the verdicts of a notebook with this status are not judged; None if they are."""
    if status in ("OK", NOT_RUN):
        return None
    if status == INTERRUPTED:
        return f"not judged: notebook {stem} was interrupted before every cell ran; run it again"
    if status == "FAILED":
        return f"not judged: notebook {stem} failed; fix the error and run it again"
    return f"not judged: notebook {stem} has an {status}; run it again"


def _claims_html(table: pd.DataFrame) -> str:
    head = ("<tr><th>claim</th><th>study</th><th>the source says</th><th>figure given</th>"
            "<th>verdict</th><th>measured</th><th>value</th><th>95% CI</th><th>n</th>"
            "<th>reason</th><th>notebook</th></tr>")
    rows = []
    for r in table.itertuples(index=False):
        ci = f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if _fmt(r.ci_low) or _fmt(r.ci_high) else ""
        value = (f"{_e(_fmt(r.value))}<span class=\"unit\">{_e(r.unit)}</span>" if _fmt(r.value) else "")
        notebook = f'<a href="#{_e(r.notebook)}">{_e(r.notebook)}</a>' if r.notebook else ""
        rows.append(
            f"<tr><td><code>{_e(r.claim_id)}</code></td><td>{_e(r.study)}</td><td>{_e(r.claim)}</td>"
            f"<td>{_e(r.figure)}</td><td class=\"{_VERDICT_CLASS[r.verdict]}\">{_e(r.verdict)}</td>"
            f"<td>{_e(r.measured)}</td><td class=\"num\">{value}</td>"
            f"<td class=\"num\">{_e(ci)}</td><td class=\"num\">{_e(_fmt(r.n))}</td>"
            f"<td>{_e(r.reason)}</td><td>{notebook}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _section_html(directory: Path, metrics: dict[str, Any] | None) -> str:
    stem = directory.name
    st = _executed_status(directory)
    css = {"OK": "status-ok", "FAILED": "status-failed", INTERRUPTED: "status-failed"}.get(st["status"], "muted")
    took = f" in {st['seconds']:.1f} s" if isinstance(st["seconds"], (int, float)) else ""
    parts = [f'<h2 id="{_e(stem)}">{_e(stem)} <span class="{css}">{_e(st["status"])}</span>'
             f'<span class="muted">{_e(took)}</span></h2>']
    if st["path"] is not None:
        parts.append(f'<p>Executed notebook: <a href="{_href(stem, st["path"].name)}">'
                     f'{_e(st["path"].name)}</a></p>')
    error_file = directory / ERROR_FILE
    if (directory / INTERRUPTED_FILE).exists():
        parts.append(f'<pre class="error">{_e((directory / INTERRUPTED_FILE).read_text(encoding="utf-8").strip())}'
                     "</pre>")
    if _not_judged_reason(stem, st["status"]) and metrics is not None and metrics["verdicts"]:
        parts.append(f'<p class="status-failed">{_e(_not_judged_reason(stem, st["status"]))} '
                     "(its verdicts are left out of the claims table).</p>")
    if error_file.exists():
        parts.append(f'<pre class="error">{_e(error_file.read_text(encoding="utf-8").strip())}</pre>')
    elif st["status"] == "FAILED":
        cell = failing_cell(st["path"], st["path"])
        where = f"cell `{cell[1]}`" if cell else "a cell"
        parts.append(f'<pre class="error">This notebook failed in {_e(where)}; '
                     f"the executed notebook shows the traceback.</pre>")
    if metrics is None:
        parts.append('<p class="muted">No metrics.json: the notebook did not finish or did not '
                      "call StudyOutput.write().</p>")
        chart_names = sorted(p.stem for p in directory.glob("*.png"))
        table_names = sorted(p.stem for p in directory.glob("*.csv"))
    else:
        parts.append(f'<p class="muted">Written {_e(metrics.get("generated_at", "?"))}</p>')
        chart_names = list(metrics["charts"])
        table_names = list(metrics["tables"])
        if metrics["excluded"]:
            rows = "".join(f"<tr><td>{_e(k)}</td><td class=\"num\">{_e(v)}</td></tr>"
                           for k, v in metrics["excluded"].items())
            parts.append("<h3>Excluded from the analysis</h3>"
                         f"<table><tr><th>reason</th><th>count</th></tr>{rows}</table>")
        parts.append(completeness.section_html(metrics["metrics"]))
        if metrics["metrics"]:
            rows = []
            for k, v in metrics["metrics"].items():
                text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                if len(text) > 200:
                    text = text[:197] + "..."
                rows.append(f"<tr><td>{_e(k)}</td><td><code>{_e(text)}</code></td></tr>")
            parts.append("<h3>Metrics</h3><table><tr><th>name</th><th>value</th></tr>"
                         f"{''.join(rows)}</table>")
    if chart_names:
        figures = []
        for name in chart_names:
            links = " · ".join(
                f'<a href="{_href(stem, f"{name}.{ext}")}">{label}</a>'
                for ext, label in (("html", "interactive"), ("png", "PNG"), ("svg", "SVG"))
                if (directory / f"{name}.{ext}").exists()
            )
            figures.append(
                f'<figure><a href="{_href(stem, f"{name}.html")}"><img src="{_href(stem, f"{name}.png")}" '
                f'alt="{_e(name)}" loading="lazy"></a><figcaption><b>{_e(name)}</b> — {links}'
                "</figcaption></figure>"
            )
        parts.append(f'<h3>Charts</h3><div class="charts">{"".join(figures)}</div>')
    if table_names:
        items = "".join(f'<li><a href="{_href(stem, f"{n}.csv")}">{_e(n)}.csv</a></li>'
                        for n in table_names)
        parts.append(f"<h3>Tables</h3><ul>{items}</ul>")
    return "\n".join(parts)


def collect_verdict_table(results_root: str | Path) -> pd.DataFrame:
    """The verdict table of every claim from every ``metrics.json`` under results_root.

    The verdicts of a notebook that did not run every cell (interrupted, failed) are left out: each
    of its claims is listed as "not testable here" with the reason instead.
    """
    verdicts = []
    for m in load_metrics(results_root):
        try:
            found = verdicts_from_dicts(m["verdicts"])
        except ValueError as exc:
            raise ValueError(f"{m['path']}: {exc}") from exc
        directory = Path(m["path"]).parent
        reason = _not_judged_reason(directory.name, _executed_status(directory)["status"])
        if reason is None:  # a local run records no verdict: its study's claims say why
            verdicts.extend(found or reported_not_judged(directory.name, m["metrics"]))
        else:
            claim_ids = dict.fromkeys(v.claim_id for v in found)
            verdicts.extend(Verdict(c, "not testable here", reason, notebook=directory.name) for c in claim_ids)
    return verdict_table(verdicts)


def write_index(results_root: str | Path) -> Path:
    """Write ``index.html`` (self-contained, no JavaScript) and ``claims.csv``; return the page."""
    results_root = Path(results_root)
    results_root.mkdir(parents=True, exist_ok=True)
    metrics_by_dir = {Path(m["path"]).parent.name: m for m in load_metrics(results_root)}
    table = collect_verdict_table(results_root)
    table.to_csv(results_root / CLAIMS_CSV, index=False)

    counts = Counter(table["verdict"])
    summary = ", ".join(f'<span class="{_VERDICT_CLASS[v]}">&nbsp;{_e(v)}: {counts.get(v, 0)}&nbsp;</span>'
                        for v in VERDICTS)
    dirs = _notebook_dirs(results_root)
    sections = [_section_html(d, metrics_by_dir.get(d.name)) for d in dirs]
    overview = []
    for d in dirs:
        st = _executed_status(d)
        took = f"{st['seconds']:.1f} s" if isinstance(st["seconds"], (int, float)) else ""
        n_verdicts = len(metrics_by_dir[d.name]["verdicts"]) if d.name in metrics_by_dir else 0
        if n_verdicts and _not_judged_reason(d.name, st["status"]):
            n_verdicts = f"{n_verdicts} not judged"
        css = {"OK": "status-ok", "FAILED": "status-failed", INTERRUPTED: "status-failed"}.get(st["status"], "muted")
        overview.append(f'<tr><td><a href="#{_e(d.name)}">{_e(d.name)}</a></td>'
                        f'<td class="{css}">{_e(st["status"])}</td><td class="num">{_e(took)}</td>'
                        f'<td class="num">{n_verdicts}</td></tr>')
    overview_html = ("<h2 id=\"notebooks\">Notebooks</h2><table><tr><th>notebook</th><th>status</th>"
                     f"<th>time</th><th>verdicts</th></tr>{''.join(overview)}</table>") if overview else ""
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pullstudy results</title><style>{_CSS}</style></head>
<body>
<h1>pullstudy results</h1>
<p class="muted">Generated {_e(generated)} by <code>python -m pullstudy.reproduce</code>.
Claims table: <a href="{CLAIMS_CSV}">{CLAIMS_CSV}</a></p>
<h2 id="claims">The published claims</h2>
<p>{summary}</p>
{_claims_html(table)}
{how_sure_html(table, results_root)}
{overview_html}
{chr(10).join(sections) if sections else '<p class="muted">No notebook results yet.</p>'}
</body></html>
"""
    index = results_root / INDEX
    index.write_text(page, encoding="utf-8")
    return index


# ---------------------------------------------------------------- command line


def summary(runs: Sequence[NotebookRun], selected: Sequence[Path], table: pd.DataFrame,
            index: Path) -> str:
    """The one-screen report printed at the end of ``make reproduce``."""
    width = max([len(p.stem) for p in selected] + [8])
    lines = [f"pullstudy reproduce: {len(runs)} of {len(selected)} notebook(s) run"]
    done = {r.stem: r for r in runs}
    for p in selected:
        r = done.get(p.stem)
        if r is None:
            lines.append(f"  {'not run':7} {p.stem:{width}}  (stopped at the first failure or interruption)")
        else:
            label = "OK" if r.ok else "INTERRUPTED" if r.interrupted else "FAILED"
            lines.append(f"  {label:7} {p.stem:{width}}  {r.seconds:7.1f} s")
    counts = Counter(table["verdict"])
    lines.append("verdicts (all claims): " + ", ".join(f"{v} {counts.get(v, 0)}" for v in VERDICTS))
    lines.append(f"results page: {index}")
    return "\n".join(lines)


def prepare_results(results_root: Path) -> None:
    """Create the results folder and check it can be written: a bad ``--results`` (a file, a
    read-only place) fails in one line before any notebook runs, not as a traceback after one."""
    if results_root.exists() and not results_root.is_dir():
        raise ValueError(f"--results {results_root} is a file, not a folder: give a folder (or remove the file)")
    try:
        results_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=results_root):
            pass
    except OSError as exc:
        raise ValueError(f"--results {results_root} cannot be written ({exc.strerror or exc}): "
                         "give a folder you can write to") from None


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; Ctrl-C anywhere ends it with one line and exit code 130, no traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): stopped; what finished is in the results folder", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pullstudy.reproduce",
        description="Run every study notebook with papermill and build the results page.",
    )
    parser.add_argument("--results", type=Path, default=None,
                        help="results folder (default: results/, or $PULLSTUDY_RESULTS_DIR)")
    parser.add_argument("--notebooks", type=Path, default=None, help="notebooks folder (default: notebooks/)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                        help="run only these notebooks (file stems, e.g. 01-pull-size-layers)")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="notebook parameter; VALUE is JSON when it parses, else a string")
    parser.add_argument("--kernel", default=KERNEL, help=f"Jupyter kernel name (default {KERNEL})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or per-notebook lines")
    args = parser.parse_args(argv)

    notebooks_dir = Path(args.notebooks or paths.notebooks_dir())
    results_root = Path(args.results or paths.results_dir())
    try:
        parameters = parse_parameters(args.parameter)
        selected = select_notebooks(notebooks_dir, args.only)
        if selected:
            plan_parameters(selected, parameters)  # names and values, before anything is written or run
            prepare_results(results_root)
    except ValueError as exc:  # ParameterError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not selected:
        print(f"error: no notebooks (*.ipynb) in {notebooks_dir}", file=sys.stderr)
        return 2

    try:
        runs = run_notebooks(notebooks_dir, results_root, args.only, parameters,
                             kernel_name=args.kernel, progress=not args.no_progress)
        index = write_index(results_root)
        table = collect_verdict_table(results_root)
    except ValueError as exc:
        print(f"error: cannot build the results page: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.filename or results_root}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(summary(runs, selected, table, index))
    failed = [r for r in runs if not r.ok]
    if failed:
        print(f"\nerror: {failed[0].error}", file=sys.stderr)
        return EXIT_INTERRUPTED if failed[0].interrupted else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The results page: ``index.html`` (one section per notebook, the verdict on every claim) and
``claims.csv``, built from what the notebooks wrote into the results folder.

Separate from the runner (:mod:`pullstudy.report.runner`) so the page can be rebuilt from an
existing results folder without running anything; it reads, never executes.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import pandas as pd

from pullstudy.studies import completeness
from pullstudy.studies.claims import (VERDICTS, Verdict, verdict_table, with_reported_not_judged,
                                      verdicts_from_dicts)
from .output import METRICS_FILE, load_metrics
from pullstudy.studies.uncertainty_figures import how_sure_html
INDEX = "index.html"
CLAIMS_CSV = "claims.csv"
ERROR_FILE = "reproduce-error.txt"
INTERRUPTED_FILE = "reproduce-interrupted.txt"
INTERRUPTED = "interrupted"


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


# ---------------------------------------------------------------- running


KERNEL_LOG = "kernel.log"


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
            verdicts.extend(with_reported_not_judged(directory.name, m["metrics"], found))
        else:
            claim_ids = dict.fromkeys(v.claim_id for v in found)
            verdicts.extend(Verdict(c, "not testable here", reason, notebook=directory.name) for c in claim_ids)
    return verdict_table(verdicts)


def prepare() -> None:
    """Start what building the page needs: the chart engine (vl-convert's JavaScript runtime, ~0.5 s of
    CPU on its first drawing in a process) and the offline report's imports. The runner has a worker with
    no notebook left to run do this while the last ones finish, instead of after them (issue 16). The
    drawing has no gradient, so the page's charts number theirs as without it."""
    import vl_convert

    from . import offline_report  # noqa: F401 - imported for the page, not used here

    vl_convert.vegalite_to_svg({"data": {"values": [{"x": 0}]}, "mark": "point",
                                "encoding": {"x": {"field": "x", "type": "quantitative"}}})


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
    from . import offline_report
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pullstudy results</title><style>{_CSS}</style></head>
<body>
<h1>pullstudy results</h1>
<p class="muted">Generated {_e(generated)} by <code>python -m pullstudy.report.runner</code>.
Claims table: <a href="{CLAIMS_CSV}">{CLAIMS_CSV}</a></p>
<h2 id="claims">The published claims</h2>
<p>{summary}</p>
{_claims_html(table)}
{how_sure_html(table, results_root)}
{overview_html}
{offline_report.section_html(results_root)}
{chr(10).join(sections) if sections else '<p class="muted">No notebook results yet.</p>'}
</body></html>
"""
    index = results_root / INDEX
    index.write_text(page, encoding="utf-8")
    return index

"""The parts of results/index.html a reviewer needs offline: each executed notebook as HTML, the data's
identity (version, DOI, checksums) and how to cite it.

Why offline: a reviewer opens the report from an artifact, often without network, and a page that loads
scripts from a CDN shows blank charts or leaks that it was opened. Each executed notebook is rendered by
nbconvert (template ``basic``, wrapped in a page of our own) with no JavaScript: Altair outputs, which
load vega from a CDN, become the SVG of their own spec (vl-convert); widget and JavaScript outputs are
dropped for their text form; any remaining ``<script>`` is removed. A chart whose spec cannot be read is
replaced by a sentence pointing to the PNG/SVG files the notebook saved, never by a blank.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import quote

import nbformat
import vl_convert
from nbconvert import HTMLExporter

from . import paper
from pullstudy import paths
from pullstudy.studies import charts
from pullstudy.data.bundle import default_version
from pullstudy.data.fetch import FETCH_REPORT, DataConfigError, load_fetch_report, load_manifest

_SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.S | re.I)
_DROP = ("application/javascript", "application/vnd.jupyter.widget-view+json",
         "application/vnd.jupyter.widget-state+json")
_PAGE_CSS = ("body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;"
             "padding:0 1em;color:#222} pre{background:#f6f6f6;padding:.5em;overflow-x:auto} "
             ".jp-InputPrompt,.jp-OutputPrompt{display:none} table{border-collapse:collapse} "
             "td,th{border:1px solid #ddd;padding:.2em .4em} svg{max-width:100%;height:auto}")


def _e(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def altair_spec(html_text: str) -> dict | None:
    """The Vega-Lite spec inside Altair's HTML output: the first argument of its closing ``})(spec, opts)``."""
    at = html_text.rfind("})(")
    if at < 0 or "vega" not in html_text:
        return None
    try:
        spec, _ = json.JSONDecoder().raw_decode(html_text, at + 3)
    except ValueError:
        return None
    return spec if isinstance(spec, dict) and ("$schema" in spec or "mark" in spec or "layer" in spec) else None


def saved_drawings(folder: Path) -> dict[str, str]:
    """The SVG that ``save_chart`` drew of each chart saved in ``folder``, by the chart's spec (canonical JSON).

    A chart a notebook saved is also shown in it; its saved SVG is what drawing the shown spec again
    would give (the same spec, the same vl-convert; the gradient ids aside, which the results page
    numbers itself: :func:`number_gradients`), so the page uses it instead of drawing again (issue 16:
    drawing was most of rendering a page). A chart saved as HTML without its SVG, or whose HTML holds no
    spec, is simply not offered."""
    found = {}
    for html_file in sorted(folder.glob("*.html")):
        svg = html_file.with_suffix(".svg")
        if html_file.stem == folder.name or not svg.is_file():
            continue
        try:
            text = html_file.read_text(encoding="utf-8")
            at = text.rfind("const spec = ")
            spec, _ = json.JSONDecoder().raw_decode(text, at + len("const spec = ")) if at >= 0 else (None, 0)
            if isinstance(spec, dict):
                found.setdefault(json.dumps(spec, sort_keys=True), svg.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return found


def offline_outputs(nb, drawings: dict[str, str] | None = None, svgs: list[str] | None = None) -> tuple[int, int]:
    """Make every output readable without JavaScript, in place; return (charts drawn, charts not drawn).

    ``drawings``: SVGs already drawn, by canonical spec (:func:`saved_drawings`), used instead of drawing.
    ``svgs``: a list to collect the SVGs in, each output then holding only its :func:`chart_placeholder`."""
    drawings = drawings or {}
    drawn = failed = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not data:
                continue
            for key in _DROP:
                data.pop(key, None)
            text = data.get("text/html")
            text = "".join(text) if isinstance(text, list) else text
            if text and ("vega-embed" in text or "vegaEmbed" in text):
                spec = altair_spec(text)
                svg = drawings.get(json.dumps(spec, sort_keys=True)) if spec else None
                try:
                    svg = svg or (vl_convert.vegalite_to_svg(spec) if spec else None)
                except Exception:  # vl-convert raises ValueError and its own errors on a bad spec
                    svg = None
                if svg:
                    if svgs is not None:
                        svgs.append(svg)
                        svg = chart_placeholder(len(svgs) - 1)
                    data["text/html"] = f'<div class="chart">{svg}</div>'
                    drawn += 1
                else:
                    data["text/html"] = ("<p><em>This chart could not be drawn offline; the notebook's folder has "
                                         "it as PNG and SVG.</em></p>")
                    failed += 1
            elif text:
                data["text/html"] = _SCRIPT.sub("", text)
    return drawn, failed


def _render_key(ipynb: Path) -> str:
    import hashlib

    import vl_convert

    h = hashlib.sha256(ipynb.read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(vl_convert.__version__.encode())
    return h.hexdigest()


def render_notebook(ipynb: Path) -> Path:
    """``<folder>/<stem>.html`` beside the executed notebook: nbconvert, no JavaScript, no outside request.

    Rendering (nbconvert, every chart drawn to SVG) is ~1 s a notebook and the page is rebuilt on every
    ``make reproduce``, also when no notebook ran (issue 16): a page whose executed notebook, this module
    and vl-convert are unchanged since it was written is kept, its key in ``<results>/.reproduce-cache/``.
    """
    target = ipynb.with_suffix(".html")
    stamp = ipynb.parent.parent / ".reproduce-cache" / f"render-{ipynb.stem}.key"
    key = _render_key(ipynb)
    try:
        if target.is_file() and stamp.read_text(encoding="utf-8") == key:
            return target
    except OSError:
        pass
    rendered = _render(ipynb, target)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key, encoding="utf-8")
    except OSError:  # no cache, same page
        pass
    return rendered


def number_gradients(page: Path, first: int) -> int:
    """Number the SVG gradients of a notebook page from ``first`` on, in drawing order; return the next number.

    Vega numbers gradients across every chart drawn in the process, so a page's ids depend on what was
    drawn before it: pages drawn as their notebooks finish (in any order, while others run) or kept from
    an earlier run would differ from pages drawn one after the other. Numbered here in notebook order,
    every page reads as if all were drawn in one go, in name order, whatever happened (issue 16)."""
    text = page.read_text(encoding="utf-8")
    numbered, count = charts.number_gradients(text, first)
    if numbered != text:
        page.write_text(numbered, encoding="utf-8")
    return first + count


def chart_placeholder(i: int) -> str:
    return f"<!--pullstudy-chart-{i}-->"


def _render(ipynb: Path, target: Path) -> Path:
    """The page. The charts' SVGs go in after nbconvert: its HTML exporter parses and re-serialises the
    whole page with BeautifulSoup, which for SVGs of thousands of elements was most of a page's time
    (issue 16), and would only rewrite them (``<path/>`` as ``<path></path>``)."""
    nb = nbformat.read(ipynb, as_version=4)
    svgs: list[str] = []
    offline_outputs(nb, saved_drawings(ipynb.parent), svgs)
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
    body = _SCRIPT.sub("", body)
    for i, svg in enumerate(svgs):  # each placeholder once, in order; a chart's SVG holds no script
        body = body.replace(chart_placeholder(i), _SCRIPT.sub("", svg), 1)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(ipynb.stem)}</title>'
            f"<style>{_PAGE_CSS}</style></head><body>\n<p><a href=\"../index.html\">results</a> · "
            f'<a href="{_e(quote(ipynb.name))}">{_e(ipynb.name)}</a></p>\n{body}\n</body></html>\n')
    target.write_text(page, encoding="utf-8")
    return target


def _data_rows(raw: Path, data_dir: Path) -> list[tuple[str, str]]:
    rows = [("data version", default_version())]
    ident = paper.data_identity(raw)
    if ident.get("doi"):
        rows.append(("data DOI", f'<a href="https://doi.org/{_e(ident["doi"])}">{_e(ident["doi"])}</a> '
                                 f'({_e(ident["how"])})'))
    else:
        rows.append(("data DOI", "none yet: <code>make archive</code>, then <code>make deposit</code>"))
    if ident.get("sha256"):
        rows.append(("data bundle", f'<code>{_e(ident["bundle"])}</code>, SHA-256 <code>{_e(ident["sha256"])}</code>'))
    try:
        manifest = load_manifest(data_dir / "manifest.json")
        for name, src in sorted(manifest.sources.items()):
            rows.append((f"source {name}", f'{_e(src.get("repository", ""))} at commit <code>{_e(src["commit"])}</code>'))
        report = load_fetch_report(raw) or {"status": {}}
        have = sum(1 for s in report["status"].values() if s in ("verified", "from-mirror", "downloaded"))
        rows.append(("files", f"{have} of {len(manifest.files)} manifest files here, each verified by its git blob "
                              f"id ({FETCH_REPORT}); the rest are listed there with the reason"))
    except DataConfigError as exc:
        rows.append(("files", _e(exc)))
    return [(k, v) for k, v in rows]


def section_html(results_root: Path, *, raw: Path | None = None, data_dir: Path | None = None) -> str:
    """The "Notebooks as pages", "Data" and "How to cite" sections of results/index.html; renders each
    executed notebook (``<nb>/<nb>.html``) on the way."""
    results_root = Path(results_root)
    raw = Path(raw) if raw else paths.raw_dir()
    data_dir = Path(data_dir) if data_dir else paths.data_dir()
    pages = []
    gradients = 0
    for ipynb in sorted(results_root.glob("*/*.ipynb")):
        if ipynb.stem != ipynb.parent.name:
            continue
        try:
            page = render_notebook(ipynb)
            gradients = number_gradients(page, gradients)
        except (OSError, ValueError) as exc:  # an unreadable executed notebook: said, not hidden
            pages.append(f"<li>{_e(ipynb.parent.name)}: not rendered ({_e(exc)})</li>")
            continue
        href = "/".join(quote(p) for p in page.relative_to(results_root).parts)
        pages.append(f'<li><a href="{_e(href)}">{_e(ipynb.parent.name)}</a></li>')
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in _data_rows(raw, data_dir))
    bib = paper.references_bib(paper.data_identity(raw))
    bib_link = ' (<a href="paper/references.bib">paper/references.bib</a>)' if (results_root / "paper" / "references.bib").exists() else ""
    return (f'<h2 id="notebook-pages">The notebooks, as pages</h2>'
            f'<p class="muted">Each executed notebook rendered without JavaScript.</p><ul>{"".join(pages)}</ul>\n'
            f'<h2 id="data">The data</h2><table>{rows}</table>\n'
            f'<h2 id="cite">How to cite</h2><p>BibTeX{bib_link}:</p><pre>{_e(bib)}</pre>')

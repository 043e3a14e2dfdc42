"""One house style for every Altair chart, and one way to save a result chart.

Every figure of every notebook looks the same and is saved the same way (PNG for papers, SVG for
editing, self-contained interactive HTML for exploring), so results are comparable across studies.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import altair as alt

THEME = "pullstudy"
WIDTH = 560
HEIGHT = 320
FONT = "'Helvetica Neue', Helvetica, Arial, 'DejaVu Sans', sans-serif"

#: The cluster sizes of the upstream studies (nodes), and 1 for this machine (the local backend);
#: a sequential scheme, so bigger reads darker.
CLUSTER_SIZES: tuple[int, ...] = (1, 4, 8, 16, 32, 64, 128, 256)
#: ColorBrewer YlGnBu (sequential) without its near-white class; 1 node (a single machine) in orange.
CLUSTER_SIZE_COLORS: tuple[str, ...] = (
    "#fd8d3c", "#c7e9b4", "#7fcdbb", "#41b6c4", "#1d91c0", "#225ea8", "#253494", "#081d58",
)
CLUSTER_SIZE_SCALE = alt.Scale(
    type="ordinal", domain=list(CLUSTER_SIZES[1:]), range=list(CLUSTER_SIZE_COLORS[1:])
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _theme() -> alt.theme.ThemeConfig:
    return {
        "config": {
            "font": FONT,
            "view": {"continuousWidth": WIDTH, "continuousHeight": HEIGHT, "stroke": None},
            "title": {"anchor": "start", "fontSize": 16, "subtitleFontSize": 13, "offset": 10},
            "axis": {"labelFontSize": 12, "titleFontSize": 13, "titleFontWeight": "normal",
                     "grid": True, "gridOpacity": 0.5},
            "legend": {"labelFontSize": 12, "titleFontSize": 13, "titleFontWeight": "normal"},
            "header": {"labelFontSize": 13, "titleFontSize": 13},
            "text": {"fontSize": 12},
        }
    }


def apply_theme() -> str:
    """Register and enable the house theme (idempotent); also lift the 5000-row limit."""
    alt.theme.register(THEME, enable=True)(_theme)
    alt.data_transformers.disable_max_rows()
    return THEME


def cluster_color(field: str = "cluster_nodes", title: str = "Cluster size (nodes)",
                  present=None) -> alt.Color:
    """Colour by cluster size with the shared scale, so 64 nodes is the same blue in every chart.

    ``present`` (the sizes in the data) narrows the legend to them; sizes outside the upstream
    range (a local run on one machine) still get their fixed colour.
    """
    if present is None:
        return alt.Color(f"{field}:O", scale=CLUSTER_SIZE_SCALE, title=title)
    sizes = sorted({int(v) for v in present})
    colours = dict(zip(CLUSTER_SIZES, CLUSTER_SIZE_COLORS))
    scale = alt.Scale(type="ordinal", domain=sizes, range=[colours.get(v, "#636363") for v in sizes])
    return alt.Color(f"{field}:O", scale=scale, title=title)


def _has_text(title: Any) -> bool:
    if hasattr(title, "to_dict"):  # alt.Title / TitleParams
        title = title.to_dict()
    if isinstance(title, str):
        return bool(title.strip())
    if isinstance(title, (list, tuple)):
        return any(_has_text(t) for t in title)
    if isinstance(title, dict):
        return _has_text(title.get("text"))
    return False  # Undefined, None


def has_title(chart: alt.TopLevelMixin) -> bool:
    """Whether a chart shows a title: its own, or (for a layer chart) one of its layers'."""
    if _has_text(getattr(chart, "title", None)):
        return True
    layers = getattr(chart, "layer", None)
    return isinstance(layers, list) and any(has_title(layer) for layer in layers)


def save_chart(chart: alt.TopLevelMixin, directory: str | Path, name: str) -> dict[str, Path]:
    """Write ``<name>.png`` (2x), ``<name>.svg`` and self-contained ``<name>.html``.

    The HTML inlines Vega, so it opens offline and in an archive years later. A chart without a
    title is refused: a result figure must say what it shows.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"chart name {name!r} must be a plain file name (letters, digits, '.', '_', '-'), "
            "without extension or folder"
        )
    if not isinstance(chart, alt.TopLevelMixin):
        raise TypeError(f"chart {name!r}: expected an Altair chart, got {type(chart).__name__}")
    if not has_title(chart):
        raise ValueError(
            f"chart {name!r} has no title; every result chart needs one: "
            "alt.Chart(data, title='...') or chart.properties(title='...')"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {fmt: directory / f"{name}.{fmt}" for fmt in ("png", "svg", "html")}
    # What chart.save does three times, once (issue 16: saving was most of a notebook's time): the spec
    # is built and validated once, drawn once as SVG, and the PNG rasterised from that SVG, which is what
    # vl-convert's vegalite_to_png does inside (byte-identical: tests/test_charts_output.py).
    from altair.utils.save import save

    with alt.data_transformers.enable("default"), alt.data_transformers.disable_max_rows():
        spec = chart.to_dict(context={"pre_transform": False})  # as altair.utils.save.save builds it
    built = _Built(spec)
    versions = {"vega_version": alt.VEGA_VERSION, "vegaembed_version": alt.VEGAEMBED_VERSION,
                "vegalite_version": alt.VEGALITE_VERSION}
    svg, png = _drawings(built, versions, paths["svg"])
    paths["svg"].write_text(svg, encoding="utf-8")
    paths["png"].write_bytes(png)
    with _cached_javascript_bundle():
        save(built, paths["html"], format="html", inline=True, **versions)
    return paths


GRADIENT_ID = re.compile(r'(?<=id="gradient_)\d+|(?<=url\(#gradient_)\d+')
_gradients_numbered = [0]  # the gradient ids this process has given out, in the order Vega gives them


def number_gradients(svg: str, first: int) -> tuple[str, int]:
    """``svg`` with its gradient ids numbered from ``first`` on, in their order; and how many it has."""
    ids = sorted({int(m) for m in GRADIENT_ID.findall(svg)})
    wanted = {old: first + i for i, old in enumerate(ids)}
    if any(old != new for old, new in wanted.items()):
        svg = GRADIENT_ID.sub(lambda m: str(wanted[int(m.group())]), svg)
    return svg, len(ids)


def chart_cache_dir() -> Path | None:
    """Where drawings of charts are kept between runs (``PULLSTUDY_CHART_CACHE``; the runner sets it to
    ``<results>/.reproduce-cache/charts``; set but empty: none kept); None: none kept (a notebook opened in
    JupyterLab)."""
    folder = os.environ.get("PULLSTUDY_CHART_CACHE")
    return Path(folder) if folder else None


CHART_CACHE_BYTES = 256 * 2**20


def _drawings(built: "_Built", versions: dict, svg_path: Path) -> tuple[str, bytes]:
    """The chart's SVG and PNG: drawn by vl-convert, or the drawings of the same spec from an earlier run.

    Why a cache: re-running a study after a change elsewhere (every notebook runs again when the library
    changes) drew every chart again, the largest part of a notebook's time (issue 16), though a drawing
    is a function of the spec and the renderer alone. The key is the whole spec (data included) with the
    Vega versions, vl-convert's version and this module's source. Vega numbers gradients (continuous
    legends) across every drawing in the process, so the SVG is kept with its ids from 0 and numbered as
    Vega would have here (the process's own count, :func:`number_gradients`); the PNG does not depend on
    ids. A cache that cannot be read or written only means drawing; it is bounded (oldest entries go).
    """
    import hashlib

    import vl_convert
    from altair.utils.save import save

    folder = chart_cache_dir()
    key = hashlib.sha256(json.dumps([built.to_dict(), versions, vl_convert.__version__, alt.renderers.options],
                                    sort_keys=True,
                                    default=str).encode() + Path(__file__).read_bytes()).hexdigest()
    svg = png = None
    if folder is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            svg = (folder / f"{key}.svg").read_text(encoding="utf-8")
            png = (folder / f"{key}.png").read_bytes()
            for f in (folder / f"{key}.svg", folder / f"{key}.png"):
                os.utime(f)  # used: last to go
    if svg is None or png is None:
        save(built, svg_path, format="svg", **versions)  # altair's own way to the SVG (its options)
        drawn = svg_path.read_text(encoding="utf-8")
        svg, _ = number_gradients(drawn, 0)
        png = vl_convert.svg_to_png(drawn, scale=2, ppi=72)  # altair: scale_factor=2, 72 ppi
        if folder is not None:
            _keep(folder, key, svg, png)
    svg, count = number_gradients(svg, _gradients_numbered[0])
    _gradients_numbered[0] += count
    return svg, png


class _Built:
    """A chart's spec, built once, in the shape altair.utils.save.save reads (``to_dict``)."""

    def __init__(self, spec: dict) -> None:
        self._spec = spec

    def to_dict(self, *args, **kwargs) -> dict:
        return self._spec  # not copied: saving reads it only (the outputs equal chart.save's, tested)


def bundle_cache_dir() -> Path:
    """Where the Vega JavaScript bundle is kept: one per environment (``PULLSTUDY_VEGA_CACHE`` overrides)."""
    return Path(os.environ.get("PULLSTUDY_VEGA_CACHE") or Path(sys.prefix) / "share" / "pullstudy" / "vega-bundle")


@contextlib.contextmanager
def _cached_javascript_bundle():
    """Serve ``vl_convert.javascript_bundle`` from a file while a chart is saved as inline HTML.

    Why: altair asks vl-convert to rebuild the Vega + Vega-Lite + vega-embed bundle (~1.3 s) for the
    first inline HTML chart in every kernel, though it depends only on the vl-convert version and the
    Vega-Lite version asked for. The file is keyed by both, written atomically (notebooks run
    concurrently), and holds exactly what vl-convert returned, so the HTML is byte-identical
    (tests/test_charts_output.py). An unwritable cache folder only means no cache.
    """
    import vl_convert

    original = vl_convert.javascript_bundle

    def cached(snippet=None, vl_version=None):
        if snippet is not None:  # a custom snippet is not what altair's inline template asks for
            return original(snippet, vl_version=vl_version)
        key = f"vl-convert-{vl_convert.__version__}-vega-lite-{vl_version or 'default'}.js"
        path = bundle_cache_dir() / key
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            pass
        bundle = original(vl_version=vl_version)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bundle-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(bundle)
            os.replace(tmp, path)
        return bundle

    vl_convert.javascript_bundle = cached
    try:
        yield
    finally:
        vl_convert.javascript_bundle = original


def _keep(folder: Path, key: str, svg: str, png: bytes) -> None:
    """Store a drawing (atomically: notebooks run at once) and keep the folder under CHART_CACHE_BYTES."""
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        for suffix, data in ((".png", png), (".svg", svg.encode("utf-8"))):  # the SVG last: it marks an entry
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".chart-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / f"{key}{suffix}")
        entries: dict[str, list] = {}  # key -> [last used, bytes, files]: an entry goes as a whole
        for f in folder.iterdir():
            if f.suffix in (".svg", ".png") and not f.name.startswith("."):
                st = f.stat()
                entry = entries.setdefault(f.stem, [0.0, 0, []])
                entry[0], entry[1] = max(entry[0], st.st_mtime), entry[1] + st.st_size
                entry[2].append(f)
        total = sum(size for _, size, _ in entries.values())
        for _, size, files in sorted(entries.values(), key=lambda e: e[0]):
            if total <= CHART_CACHE_BYTES:
                break
            for f in files:
                f.unlink(missing_ok=True)
            total -= size

"""Charts are saved in every format with the house rules; metrics.json survives a round trip."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import pytest

from pullstudy.studies import charts
from pullstudy.studies.claims import Verdict
from pullstudy.report.output import StudyOutput, json_safe, load_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"size_gb": [1.2, 4.8, 19.0], "pull_s": [10.0, 31.5, 118.0],
                         "cluster_nodes": [4, 64, 256]})


def test_theme_is_registered_and_enabled(frame: pd.DataFrame) -> None:
    assert charts.apply_theme() == "pullstudy"
    assert alt.theme.active == "pullstudy"
    config = alt.Chart(frame).mark_point().encode(x="size_gb").to_dict()["config"]
    assert config["view"]["continuousWidth"] == charts.WIDTH
    assert config["title"]["anchor"] == "start"


def test_cluster_color_uses_the_shared_ordinal_scale() -> None:
    spec = charts.cluster_color().to_dict()
    assert spec["field"] == "cluster_nodes" and spec["type"] == "ordinal"
    assert spec["scale"]["domain"] == [4, 8, 16, 32, 64, 128, 256]
    assert len(spec["scale"]["range"]) == 7
    assert charts.cluster_color("nodes", "N").to_dict()["title"] == "N"


def test_save_chart_writes_png_svg_html(tmp_path: Path, frame: pd.DataFrame) -> None:
    chart = alt.Chart(frame, title="Pull time by size").mark_point().encode(
        x="size_gb:Q", y="pull_s:Q", color=charts.cluster_color())
    paths = charts.save_chart(chart, tmp_path / "new" / "dir", "pull")
    assert set(paths) == {"png", "svg", "html"}
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    svg = paths["svg"].read_text()
    assert "<svg" in svg and "Pull time by size" in svg
    page = paths["html"].read_text()
    assert "<html" in page and "vega" in page.lower() and "Pull time by size" in page


@pytest.mark.parametrize("title", [None, "", "   ", alt.Title("")])
def test_untitled_chart_refused(tmp_path: Path, frame: pd.DataFrame, title: object) -> None:
    chart = alt.Chart(frame).mark_point().encode(x="size_gb:Q")
    if title is not None:
        chart = chart.properties(title=title)
    with pytest.raises(ValueError, match="no title"):
        charts.save_chart(chart, tmp_path, "untitled")
    assert list(tmp_path.iterdir()) == []


def test_layer_title_counts_and_bad_name_refused(tmp_path: Path, frame: pd.DataFrame) -> None:
    base = alt.Chart(frame).encode(x="size_gb:Q", y="pull_s:Q")
    assert charts.has_title(base.mark_line() + base.mark_point().properties(title="T"))
    assert not charts.has_title(alt.hconcat(base.mark_line(), base.mark_point()))
    with pytest.raises(ValueError, match="plain file name"):
        charts.save_chart(base.mark_point().properties(title="T"), tmp_path, "../escape")


@dataclass
class _Summary:
    median: float

    def as_dict(self) -> dict:
        return {"median": self.median, "kind": "summary"}


def test_metrics_round_trip(tmp_path: Path, frame: pd.DataFrame) -> None:
    out = StudyOutput("01-pull-size-layers", tmp_path / "01")
    chart = alt.Chart(frame, title="t").mark_point().encode(x="size_gb:Q")
    assert out.chart(chart, "scatter") is chart
    assert out.table(frame, "records") is frame
    out.metric("median_s", np.float64(12.5))
    out.metric("count", np.int64(7))
    out.metric("missing", float("nan"))
    out.metric("nested", {"a": [np.float32(1.5), np.nan, np.bool_(True)], "b": np.array([1, 2])})
    out.metric("summary", _Summary(3.0))
    out.metric("when", pd.Timestamp("2024-05-01T10:00:00Z"))
    v = out.verdict(Verdict("size-growth", "supported", "slope > 0", value=np.float64(6.1), n=9))
    assert v.notebook == "01-pull-size-layers"
    out.verdict(Verdict("size-growth", "supported", "re-run of the cell", value=6.2, n=9))
    out.verdict(Verdict("layers-no-effect", "partly supported", "r", notebook="other"))
    out.excluded("cache hits", np.int64(3))
    out.excluded("no timing in event", 0)
    out.chart(chart, "scatter")  # re-running a cell replaces, never duplicates
    path = out.write()

    assert path == tmp_path / "01" / "metrics.json"
    text = path.read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["notebook"] == "01-pull-size-layers"
    assert data["generated_at"].endswith("+00:00")
    assert data["metrics"] == {
        "median_s": 12.5, "count": 7, "missing": None,
        "nested": {"a": [1.5, None, True], "b": [1, 2]},
        "summary": {"median": 3.0, "kind": "summary"}, "when": "2024-05-01T10:00:00+00:00",
    }
    assert [(v["claim_id"], v["reason"], v["notebook"]) for v in data["verdicts"]] == [
        ("size-growth", "re-run of the cell", "01-pull-size-layers"),
        ("layers-no-effect", "r", "other"),
    ]
    assert data["excluded"] == {"cache hits": 3, "no timing in event": 0}
    assert data["charts"] == ["scatter"] and data["tables"] == ["records"]
    assert pd.read_csv(tmp_path / "01" / "records.csv").equals(frame)
    assert (tmp_path / "01" / "scatter.png").stat().st_size > 0

    loaded = load_metrics(tmp_path)
    assert len(loaded) == 1 and loaded[0]["metrics"]["median_s"] == 12.5


def test_bad_inputs_refused(tmp_path: Path) -> None:
    out = StudyOutput("x", tmp_path / "x")
    with pytest.raises(TypeError, match="metric 'obj'"):
        out.metric("obj", object())
    with pytest.raises(ValueError, match="count"):
        out.excluded("negative", -1)
    with pytest.raises(ValueError, match="reason"):
        out.excluded("", 1)
    with pytest.raises(TypeError, match="DataFrame"):
        out.table([1, 2], "t")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Verdict"):
        out.verdict({"claim_id": "size-growth"})  # type: ignore[arg-type]
    assert json_safe(np.float64("inf")) is None and math.isclose(json_safe(np.float16(0.5)), 0.5)


def test_broken_metrics_json_raises_naming_the_path(tmp_path: Path) -> None:
    StudyOutput("ok", tmp_path / "01-ok").write()
    broken = tmp_path / "02-broken" / "metrics.json"
    broken.parent.mkdir()
    broken.write_text('{"notebook": "02-broken", "metrics": {')
    with pytest.raises(ValueError, match="02-broken/metrics.json"):
        load_metrics(tmp_path)
    broken.write_text('{"notebook": "02-broken"}')
    with pytest.raises(ValueError, match=r"02-broken/metrics.json.*'metrics'"):
        load_metrics(tmp_path)


def _ledger(shares: dict[tuple[str, int, str], tuple[int, int]]) -> pd.DataFrame:
    rows = [{"run": r, "cluster_nodes": n, "image_key": k, "layers": 9, "size_bytes": 1,
             "expected": exp, "observed_pulled": seen, "cache_hits": 0, "share": seen / exp,
             "complete": seen / exp >= 0.8} for (r, n, k), (seen, exp) in shares.items()]
    return pd.DataFrame(rows)


def test_verdict_gets_the_completeness_caveat_only_when_cells_fall_below(tmp_path: Path) -> None:
    out = StudyOutput("07-cluster-scale", tmp_path / "07")
    plain = out.verdict(Verdict("scale-variation", "supported", "no ledger yet"))
    assert plain.reason == "no ledger yet"
    out.record_completeness(_ledger({("a", 4, "x"): (4, 4), ("a", 4, "y"): (3, 4)}))
    v = out.verdict(Verdict("scale-variation", "supported", "spread grows."))
    assert v.reason == ("spread grows; the runs this notebook read have 1 of 2 cells below 80% complete "
                        "(Pulled events observed / pods the harness created; by run a: 1 of 2); "
                        "least complete: a at 4 nodes, y: 3 of 4 pods")
    # the claim's own cells, when a notebook names them: all complete, so no caveat
    ok = out.verdict(Verdict("size-growth", "supported", "slope > 0"),
                     cells=out.completeness_ledger.iloc[:1])
    assert ok.reason == "slope > 0"
    # a second ledger (another load) adds its runs; a stricter threshold is a parameter
    out.record_completeness(_ledger({("b", 8, "x"): (8, 8)}), threshold=0.9)
    assert set(out.completeness_ledger["run"]) == {"a", "b"}
    strict = out.verdict(Verdict("layers-no-effect", "partly supported", "r"))
    assert "have 1 of 3 cells below 90% complete" in strict.reason
    assert out.verdict(Verdict("size-growth", "supported", "s"), runs=["b"]).reason == "s"


def test_median_tables_are_flagged_in_the_csv(tmp_path: Path) -> None:
    out = StudyOutput("01-pull-size-layers", tmp_path / "01")
    out.record_completeness(_ledger({("a", 4, "x"): (4, 4), ("a", 8, "x"): (3, 8)}))
    medians = pd.DataFrame({"cluster_nodes": [4, 8, 16], "median": [1.0, 2.0, 3.0]})  # one run: unambiguous
    assert out.table(medians, "medians") is medians  # the notebook's frame is left as it was
    written = pd.read_csv(tmp_path / "01" / "medians.csv")
    assert written["completeness"].tolist()[:2] == [1.0, 0.375] and math.isnan(written["completeness"][2])
    assert written["incomplete"].tolist() == [False, True, False]
    other = pd.DataFrame({"cluster_nodes": [4], "pulls": [3]})
    out.table(other, "counts")  # not a median table: written as it is
    assert list(pd.read_csv(tmp_path / "01" / "counts.csv").columns) == ["cluster_nodes", "pulls"]
    out.record_completeness(_ledger({("b", 8, "x"): (8, 8)}))  # two runs, a table without a run column
    out.table(medians, "medians")
    written = pd.read_csv(tmp_path / "01" / "medians.csv", keep_default_na=False)
    assert {"completeness[a]", "completeness[b]"} <= set(written.columns) and "incomplete" not in written
    assert written["incomplete_in"].tolist() == ["", "a", ""]


def test_inline_html_from_the_cached_bundle_is_byte_identical(tmp_path: Path, frame: pd.DataFrame,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The Vega bundle is built once per environment (keyed by the vl-convert version), not per kernel;
    the HTML written from the cache is byte for byte what altair writes without it."""
    import vl_convert

    cache = tmp_path / "cache"
    monkeypatch.setenv("PULLSTUDY_VEGA_CACHE", str(cache))
    chart = alt.Chart(frame, title="Pull time by size").mark_point().encode(x="size_gb:Q", y="pull_s:Q")
    chart.save(tmp_path / "plain.html", format="html", inline=True)  # altair alone
    first = charts.save_chart(chart, tmp_path / "a", "pull")["html"].read_bytes()  # fills the cache
    [entry] = list(cache.iterdir())
    assert vl_convert.__version__ in entry.name
    second = charts.save_chart(chart, tmp_path / "b", "pull")["html"].read_bytes()  # served from it
    assert first == second == (tmp_path / "plain.html").read_bytes()
    assert vl_convert.javascript_bundle.__name__ != "cached"  # the patch does not outlive the save


def test_save_chart_writes_what_chart_save_writes(tmp_path: Path, frame: pd.DataFrame) -> None:
    """Issue 16: save_chart builds the spec once and rasterises the PNG from its own SVG; every file must be
    byte for byte what altair's chart.save writes for that format (a layered chart with inline data too)."""
    base = alt.Chart(frame, title="Pull time by size").encode(
        x=alt.X("size_gb:Q", title="size (GB)"), y=alt.Y("pull_s:Q", title="pull (s)"), color=charts.cluster_color())
    for i, chart in enumerate([base.mark_point(), base.mark_line() + base.mark_point(filled=True, size=80)]):
        ours = charts.save_chart(chart, tmp_path / f"ours{i}", "c")
        plain = tmp_path / f"plain{i}"
        plain.mkdir()
        chart.save(plain / "c.png", format="png", scale_factor=2)
        chart.save(plain / "c.svg", format="svg")
        chart.save(plain / "c.html", format="html", inline=True)
        for fmt in ("png", "svg", "html"):
            assert ours[fmt].read_bytes() == (plain / f"c.{fmt}").read_bytes(), fmt


def _gradient_chart(values: list[float], title: str) -> alt.Chart:
    """A chart with a continuous colour legend, which Vega draws with a gradient (numbered per process)."""
    frame = pd.DataFrame({"x": range(len(values)), "v": values})
    return alt.Chart(frame, title=title).mark_rect().encode(x="x:O", color=alt.Color("v:Q", title="value (s)"))


_SAVE_TWO = """
import sys, altair as alt, pandas as pd
from pathlib import Path
from pullstudy.studies import charts
sys.path.insert(0, {tests!r})
from test_charts_output import _gradient_chart
out = Path(sys.argv[1])
charts.save_chart(_gradient_chart([1, 5, 9], "first"), out, "a")
charts.save_chart(_gradient_chart([2, 4, 8, 16], "second"), out, "b")
"""


@pytest.mark.slow
def test_cached_drawings_are_the_drawings(tmp_path: Path) -> None:
    """Issue 16: charts whose spec is unchanged are not drawn again. In fresh processes (as notebook kernels
    are), two gradient charts saved without a cache, into an empty cache, from it, and from a cache holding
    only one of them, give the same files byte for byte: gradient ids follow the process's drawings."""
    import os
    import shutil
    import subprocess
    import sys

    script = _SAVE_TWO.format(tests=str(Path(__file__).parent))

    def run(out: Path, cache: Path | None) -> dict[str, bytes]:
        env = {k: v for k, v in os.environ.items() if k != "PULLSTUDY_CHART_CACHE"}
        if cache is not None:
            env["PULLSTUDY_CHART_CACHE"] = str(cache)
        subprocess.run([sys.executable, "-c", script, str(out)], env=env, check=True)
        return {f.name: f.read_bytes() for f in sorted(out.iterdir())}

    plain = run(tmp_path / "plain", None)
    assert b'id="gradient_0"' in plain["a.svg"] and b'id="gradient_1"' in plain["b.svg"]
    cache = tmp_path / "cache"
    assert run(tmp_path / "filling", cache) == plain
    assert len(list(cache.glob("*.svg"))) == 2
    assert run(tmp_path / "from-cache", cache) == plain
    entries = {title: f for f in cache.glob("*.svg") for title in ("first", "second") if f">{title}<" in f.read_text()}
    assert sorted(entries) == ["first", "second"]
    for title in entries:  # only the first chart cached (Vega's count then lags), then only the second
        partial = tmp_path / f"only-{title}"
        partial.mkdir()
        shutil.copy(entries[title], partial)
        shutil.copy(entries[title].with_suffix(".png"), partial)
        assert run(tmp_path / f"mixed-{title}", partial) == plain


def test_chart_cache_hits_skip_drawing_and_misses_draw(tmp_path: Path, frame: pd.DataFrame,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import vl_convert

    monkeypatch.setenv("PULLSTUDY_CHART_CACHE", str(tmp_path / "cache"))
    drawn = []
    real = vl_convert.vegalite_to_svg
    monkeypatch.setattr(vl_convert, "vegalite_to_svg", lambda spec, *a, **k: drawn.append(1) or real(spec, *a, **k))
    chart = alt.Chart(frame, title="Pull time by size").mark_point().encode(x="size_gb:Q", y="pull_s:Q")
    first = charts.save_chart(chart, tmp_path / "one", "c")
    second = charts.save_chart(chart, tmp_path / "two", "c")
    assert len(drawn) == 1  # the second save was served from the cache
    for fmt in ("png", "svg", "html"):
        assert first[fmt].read_bytes() == second[fmt].read_bytes()
    changed = alt.Chart(frame.assign(pull_s=frame["pull_s"] * 2), title="Pull time by size").mark_point().encode(
        x="size_gb:Q", y="pull_s:Q")
    charts.save_chart(changed, tmp_path / "three", "c")
    assert len(drawn) == 2  # other data, another drawing
    for png in (tmp_path / "cache").glob("*.png"):
        png.unlink()  # an entry without its PNG is drawn again, not an error
    charts.save_chart(chart, tmp_path / "four", "c")
    assert len(drawn) == 3 and (tmp_path / "four" / "c.png").read_bytes() == first["png"].read_bytes()


def test_chart_cache_stays_under_its_bound(tmp_path: Path, frame: pd.DataFrame,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PULLSTUDY_CHART_CACHE", str(cache))
    sizes = []
    for i in range(3):
        chart = alt.Chart(frame.assign(pull_s=frame["pull_s"] + i), title=f"chart {i}").mark_point().encode(
            x="size_gb:Q", y="pull_s:Q")
        charts.save_chart(chart, tmp_path / f"c{i}", "c")
        sizes.append(sum(f.stat().st_size for f in cache.iterdir()))
    monkeypatch.setattr(charts, "CHART_CACHE_BYTES", sizes[0] + 1)  # room for about one entry
    charts.save_chart(alt.Chart(frame, title="last").mark_point().encode(x="size_gb:Q"), tmp_path / "c3", "c")
    assert sum(f.stat().st_size for f in cache.iterdir()) <= sizes[0] + 1
    assert len(list(cache.glob("*.svg"))) == 1  # only the newest entry is left

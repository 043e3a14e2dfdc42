"""Charts of study 07 (pull completion spread against cluster size), in the house style.

Each function takes a table from :mod:`pullstudy.studies.scale` (or the pulls behind it) and returns an Altair
chart with a title, units in the axis titles and tooltips, one panel per run; saving is
``StudyOutput.chart``'s job. Cluster size is always coloured with the shared scale.
"""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

from .charts import cluster_color
from .pulls import TIME_LABELS
from .scale import SIZE_BUILT, SIZE_TRANSFERRED, timestamp_resolution

PANEL_WIDTH = 230
PANEL_HEIGHT = 200
COLUMNS = 3
SPREAD_LABELS = {
    "pulled_range_s": "Pulled spread, max − min (s)",
    "pulled_iqr_s": "Pulled spread, IQR (s)",
    "node_range_matched_s": "Node-count-matched spread (s)",
    "sched_pulled_range_s": "Scheduled → Pulled spread (s)",
    "image_wall_s": "First start → last Pulled (s)",
}


def _nodes_axis(df: pd.DataFrame, title: str = "Cluster size (nodes, log scale)") -> alt.X:
    sizes = sorted(int(n) for n in df["cluster_nodes"].dropna().unique())
    return alt.X("cluster_nodes:Q", scale=alt.Scale(type="log", base=2, nice=False, padding=14),
                 axis=alt.Axis(values=sizes, format="d"), title=title)


def _facet(chart, runs: list[str]):
    return chart.properties(width=PANEL_WIDTH, height=PANEL_HEIGHT).facet(
        facet=alt.Facet("run:N", title=None, sort=runs, header=alt.Header(labelFontWeight="bold")),
        columns=min(COLUMNS, len(runs)), spacing={"row": 28, "column": 18})


def _run_order(df: pd.DataFrame, runs: list[str] | None) -> list[str]:
    """Panels in the order the notebook lists its runs (else first appearance), present runs only."""
    present = list(dict.fromkeys(df["run"].astype(str)))
    return [r for r in runs if r in present] if runs else present


def _log_ticks(values: pd.Series) -> list[float]:
    """1-2-5 ticks covering the data, so a log axis is labelled without a thicket of grid lines."""
    v = values[values > 0].astype(float)
    lo, hi = float(v.min()), float(v.max())
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5)]
    inside = [t for t in ticks if lo / 2 <= t <= hi * 2]
    if sum(lo <= t <= hi for t in inside) < 2:  # a narrow range (e.g. four app images of 0.3-0.5 GB)
        inside = sorted(set(inside) | {float(f"{v:.2g}") for v in np.geomspace(lo, hi, 3)})
    return inside or ticks


def _rule(data: pd.DataFrame, y: float, color: str) -> alt.Chart:
    """A dashed horizontal reference line in every panel (from the panel's own data, as facets need)."""
    return alt.Chart(data).transform_aggregate(n="count()", groupby=["run"]).mark_rule(
        strokeDash=[4, 4], color=color).encode(y=alt.datum(y))


def _size_title(table: pd.DataFrame, suffix: str = "") -> str:
    """What "image size" means in this table: built (from the tag), transferred (Pulled message), or both."""
    sources = set(table["size_source"]) if "size_source" in table else {SIZE_BUILT}
    if sources <= {SIZE_BUILT}:
        what = "uncompressed, built"
    elif sources <= {SIZE_TRANSFERRED}:
        what = "as transferred"
    else:
        what = "built where the tag encodes it, else as transferred"
    return f"Image size (GB, {what}{suffix})"


def _plain(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Only the columns a chart uses, in JSON-friendly dtypes (no Int64/pd.NA, no timestamps)."""
    d = table[columns].copy()
    for c in d.columns:
        if str(d[c].dtype) == "Int64" and not d[c].isna().any():
            d[c] = d[c].astype("int64")
        elif str(d[c].dtype) in ("Int64", "Float64"):
            d[c] = d[c].astype(float)
        elif str(d[c].dtype) == "string":
            d[c] = d[c].astype(object)
    return d


def spread_by_cluster_size(table: pd.DataFrame, value: str = "pulled_range_s", *, resolution: float = 1.0,
                           runs: list[str] | None = None,
                           title: str = "Spread of pull completion across pods, by cluster size") -> alt.FacetChart:
    """One line per image (darker: larger image) across cluster sizes; points coloured by cluster size."""
    data = _plain(table, ["run", "cluster_nodes", "cluster_instance", "image_key", "size_gb", "pulls", "nodes",
                          value])
    data["series"] = data["image_key"] + " #" + data["cluster_instance"].astype(str)
    base = alt.Chart(data).encode(x=_nodes_axis(data), y=alt.Y(f"{value}:Q", title=SPREAD_LABELS.get(value, value)))
    tooltip = ["run:N", "image_key:N", "cluster_nodes:O", "cluster_instance:O", "pulls:Q", "nodes:Q",
               alt.Tooltip("size_gb:Q", format=".2f", title=_size_title(table)),
               alt.Tooltip(f"{value}:Q", format=".2f", title="spread (s)")]
    lines = base.mark_line(strokeWidth=1.2, opacity=0.7).encode(
        detail="series:N", stroke=alt.Stroke("size_gb:Q", scale=alt.Scale(scheme="greys", type="log"),
                                             title=_size_title(table)))
    points = base.mark_point(filled=True, size=45, opacity=0.9).encode(color=cluster_color(), tooltip=tooltip)
    floor = _rule(data, resolution, "firebrick")
    subtitle = ["one line per image (darker: larger image)",
                f"red dashes: timestamp resolution ({resolution:g} s); spreads at or below it are not resolved"]
    return _facet(alt.layer(floor, lines, points), _run_order(data, runs)).properties(
        title=alt.Title(title, subtitle=subtitle))


def spread_by_image_size(table: pd.DataFrame, value: str = "pulled_range_s", *, runs: list[str] | None = None,
                         title: str = "Spread of pull completion across pods, by image size") -> alt.FacetChart:
    """Spread against image size, one line per cluster size (and cluster instance, layer count)."""
    data = _plain(table, ["run", "cluster_nodes", "cluster_instance", "image_key", "size_gb", "layers", "pulls",
                          value])
    layers = data["layers"].astype("Int64")
    data["series"] = (data["cluster_nodes"].astype(int).astype(str) + " #" + data["cluster_instance"].astype(str)
                      + [f" {n} layers" if pd.notna(n) else "" for n in layers])
    chart = alt.Chart(data).mark_line(point=alt.OverlayMarkDef(filled=True, size=35), strokeWidth=1.3).encode(
        x=alt.X("size_gb:Q", scale=alt.Scale(type="log", nice=False, padding=8),
                title=_size_title(table, ", log scale"),
                axis=alt.Axis(values=_log_ticks(data["size_gb"]), format="~g")),
        y=alt.Y(f"{value}:Q", title=SPREAD_LABELS.get(value, value)),
        color=cluster_color(), detail="series:N",
        tooltip=["run:N", "image_key:N", "cluster_nodes:O", "cluster_instance:O", "pulls:Q",
                 alt.Tooltip("size_gb:Q", format=".2f", title=_size_title(table)),
                 alt.Tooltip(f"{value}:Q", format=".2f", title="spread (s)")])
    subtitle = ("one line per cluster (and per layer count where a run built two); transferred: the bytes the "
                "kubelet's Pulled message reports, for images whose tag encodes no size")
    return _facet(chart, _run_order(data, runs)).properties(title=alt.Title(title, subtitle=subtitle))


def scheduled_to_pulled(pulls: pd.DataFrame, *, runs: list[str] | None = None,
                        title: str = "Scheduled → Pulled per pod, by cluster size") -> alt.FacetChart:
    """Box plots of every pod's Scheduled -> Pulled time (log scale); pods with no Scheduled event are left out."""
    d = pulls.assign(sched_pulled_s=(pulls["pulled_at"] - pulls["scheduled_at"]).dt.total_seconds())
    missing = int(d["sched_pulled_s"].isna().sum())
    d = d.dropna(subset=["sched_pulled_s"])
    not_positive = int((d["sched_pulled_s"] <= 0).sum())
    d = d[d["sched_pulled_s"] > 0]
    data = _plain(d, ["run", "cluster_nodes", "image_key", "node", "sched_pulled_s"])
    chart = alt.Chart(data).mark_boxplot(size=22, extent=1.5, outliers={"size": 10}, median={"color": "black"}).encode(
        x=alt.X("cluster_nodes:O", title="Cluster size (nodes)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("sched_pulled_s:Q", scale=alt.Scale(type="log"), title="Scheduled → Pulled (s, log)",
                axis=alt.Axis(values=_log_ticks(data["sched_pulled_s"]), format="~g")),
        color=cluster_color(),
        tooltip=["run:N", "cluster_nodes:O", "image_key:N", "node:N",
                 alt.Tooltip("sched_pulled_s:Q", format=".1f", title="Scheduled → Pulled (s)")])
    resolution = max(timestamp_resolution(pulls["pulled_at"]), timestamp_resolution(pulls["scheduled_at"]))
    subtitle = [f"{len(data)} pods, all images of each run; timestamps resolve {resolution:g} s",
                f"left out: {missing} pods without a Scheduled event, {not_positive} at 0 s (same second)"]
    return _facet(chart, _run_order(data, runs or list(dict.fromkeys(pulls["run"])))).properties(
        title=alt.Title(title, subtitle=subtitle))


def pull_time_by_cluster_size(table: pd.DataFrame, time: str = "pull_wait_s", *, runs: list[str] | None = None,
                              title: str = "Median pull time per image, by cluster size") -> alt.FacetChart:
    """Each image's median pull time relative to its own median over all sizes: flat lines mean no growth."""
    med = f"{time}_median"
    data = _plain(table, ["run", "cluster_nodes", "cluster_instance", "image_key", "size_gb", "pulls", med])
    data["relative"] = data[med] / data.groupby(["run", "image_key"])[med].transform("median")
    data = data[data["relative"] > 0]
    data["series"] = data["image_key"] + " #" + data["cluster_instance"].astype(str)
    base = alt.Chart(data).encode(
        x=_nodes_axis(data),
        y=alt.Y("relative:Q", scale=alt.Scale(type="log"), title="Relative median pull time (log)",
                axis=alt.Axis(values=_log_ticks(data["relative"]), format="~g")))
    lines = base.mark_line(strokeWidth=1, opacity=0.35, color="gray").encode(detail="series:N")
    points = base.mark_point(filled=True, size=40, opacity=0.85).encode(
        color=cluster_color(),
        tooltip=["run:N", "image_key:N", "cluster_nodes:O", "cluster_instance:O", "pulls:Q",
                 alt.Tooltip("size_gb:Q", format=".2f", title=_size_title(table)),
                 alt.Tooltip(f"{med}:Q", format=".2f", title=f"median {TIME_LABELS[time]}"),
                 alt.Tooltip("relative:Q", format=".2f", title="relative to the image's median")])
    one = _rule(data, 1.0, "black")
    subtitle = [f"{TIME_LABELS[time]}: each image's median at a cluster size ÷ its median over all sizes",
                "1 = usual; a line rising to the right would mean slower pulls in larger clusters"]
    return _facet(alt.layer(one, lines, points), _run_order(data, runs)).properties(
        title=alt.Title(title, subtitle=subtitle))


def experiment_span(spans: pd.DataFrame, *, runs: list[str] | None = None,
                    title: str = "Experiment span, by cluster size") -> alt.FacetChart:
    """Each experiment's span split into the images' median pull times (summed) and everything else."""
    d = _plain(spans, ["run", "cluster_nodes", "cluster_instance", "images", "pulls", "span_s", "pull_time_sum_s",
                       "other_s", "starts_estimated"])
    several = d.groupby(["run", "cluster_nodes"])["cluster_instance"].transform("nunique") > 1
    d["cluster"] = d["cluster_nodes"].astype(int).astype(str) + [f" #{i}" if s else "" for i, s in
                                                                  zip(d["cluster_instance"], several)]
    long = d.melt(id_vars=["run", "cluster", "cluster_nodes", "cluster_instance", "images", "pulls", "span_s",
                           "starts_estimated"],
                  value_vars=["pull_time_sum_s", "other_s"], var_name="part", value_name="seconds")
    parts = {"pull_time_sum_s": "pulling (sum of image medians)", "other_s": "everything else"}
    long["part"] = long["part"].map(parts)
    long["minutes"] = long["seconds"] / 60
    order = d.sort_values(["cluster_nodes", "cluster_instance"])["cluster"].drop_duplicates().tolist()
    x = alt.X("cluster:N", sort=order, title="Cluster size (nodes)",
              axis=alt.Axis(labelAngle=0))
    bars = alt.Chart(long).mark_bar(size=26).encode(
        x=x, y=alt.Y("minutes:Q", stack=True, title="Span (min)"),
        color=alt.Color("part:N", title="Part of the span", scale=alt.Scale(range=["#225ea8", "#bdbdbd"]),
                        sort=list(parts.values()), legend=alt.Legend(labelLimit=320)),
        order=alt.Order("part:N", sort="descending"),
        tooltip=["run:N", "cluster:N", "images:Q", "pulls:Q", "part:N",
                 alt.Tooltip("minutes:Q", format=".1f", title="this part (min)"),
                 alt.Tooltip("span_s:Q", format=".0f", title="span (s)"),
                 alt.Tooltip("starts_estimated:Q", title="pod starts estimated")])
    # Facets need one data set, so the labels come from the same long table (one row per bar).
    text = alt.Chart(long).transform_filter(alt.datum.part == parts["pull_time_sum_s"]).transform_calculate(
        span_min="datum.span_s / 60", label="datum.images + ' img'").mark_text(
        dy=-7, fontSize=11, color="#444").encode(x=x, y=alt.Y("span_min:Q"), text="label:N")
    subtitle = ["first pod start → last Pulled; blue: the images' median pull times added up, grey: the rest "
                "(scheduling, start-up, waiting for the slowest node)",
                "labels: images pulled; #1, #2: separate clusters of one size"]
    facet = _facet(alt.layer(bars, text), _run_order(d, runs)).resolve_scale(x="independent")
    return facet.properties(title=alt.Title(title, subtitle=subtitle))

"""Charts of study 07 (pull completion spread against cluster size), in the house style.

Each function takes a table from :mod:`pullstudy.scale` (or the pulls behind it) and returns an Altair
chart with a title, units in the axis titles and tooltips, one panel per run; saving is
``StudyOutput.chart``'s job. Cluster size is always coloured with the shared scale.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .charts import cluster_color
from .pulls import TIME_LABELS

PANEL_WIDTH = 230
PANEL_HEIGHT = 200
COLUMNS = 3
SPREAD_LABELS = {
    "pulled_range_s": "Spread of Pulled times, max − min (s)",
    "pulled_iqr_s": "Spread of Pulled times, IQR (s)",
    "node_range_matched_s": "Expected spread across as few nodes as the smallest cluster used (s)",
    "sched_pulled_range_s": "Spread of Scheduled → Pulled, max − min (s)",
    "image_wall_s": "First pod start → last Pulled (s)",
}


def _nodes_axis(df: pd.DataFrame, title: str = "Cluster size (nodes, log scale)") -> alt.X:
    sizes = sorted(int(n) for n in df["cluster_nodes"].dropna().unique())
    return alt.X("cluster_nodes:Q", scale=alt.Scale(type="log", base=2, nice=False, padding=14),
                 axis=alt.Axis(values=sizes, format="d"), title=title)


def _facet(chart, runs: list[str]):
    return chart.properties(width=PANEL_WIDTH, height=PANEL_HEIGHT).facet(
        facet=alt.Facet("run:N", title=None, sort=runs, header=alt.Header(labelFontWeight="bold")),
        columns=min(COLUMNS, len(runs)))


def _rule(data: pd.DataFrame, y: float, color: str) -> alt.Chart:
    """A dashed horizontal reference line in every panel (from the panel's own data, as facets need)."""
    return alt.Chart(data).transform_aggregate(n="count()", groupby=["run"]).mark_rule(
        strokeDash=[4, 4], color=color).encode(y=alt.datum(y))


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
                           title: str = "Spread of pull completion across pods, by cluster size") -> alt.FacetChart:
    """One line per image (darker: larger image) across cluster sizes; points coloured by cluster size."""
    data = _plain(table, ["run", "cluster_nodes", "cluster_instance", "image_key", "size_gb", "pulls", "nodes",
                          value])
    runs = list(dict.fromkeys(data["run"]))
    data["series"] = data["image_key"] + " #" + data["cluster_instance"].astype(str)
    base = alt.Chart(data).encode(x=_nodes_axis(data), y=alt.Y(f"{value}:Q", title=SPREAD_LABELS.get(value, value)))
    tooltip = ["run:N", "image_key:N", "cluster_nodes:O", "cluster_instance:O", "pulls:Q", "nodes:Q",
               alt.Tooltip("size_gb:Q", format=".2f", title="image size (GB)"),
               alt.Tooltip(f"{value}:Q", format=".2f", title="spread (s)")]
    lines = base.mark_line(strokeWidth=1.2, opacity=0.6).encode(
        detail="series:N", color=alt.Color("size_gb:Q", scale=alt.Scale(scheme="greys", type="log"),
                                           title="Image size (GB)"))
    points = base.mark_point(filled=True, size=45, opacity=0.85).encode(color=cluster_color(), tooltip=tooltip)
    floor = _rule(data, resolution, "firebrick")
    layered = alt.layer(floor, lines, points).resolve_scale(color="independent")
    subtitle = (f"one line per image; dashed: timestamp resolution ({resolution:g} s), spreads at or below "
                "it are not resolved")
    return _facet(layered, runs).properties(title=alt.Title(title, subtitle=subtitle))


def spread_by_image_size(table: pd.DataFrame, value: str = "pulled_range_s", *,
                         title: str = "Spread of pull completion across pods, by image size") -> alt.FacetChart:
    """Spread against image size, one line per cluster size (and cluster instance)."""
    data = _plain(table, ["run", "cluster_nodes", "cluster_instance", "image_key", "size_gb", "layers", "pulls",
                          value])
    runs = list(dict.fromkeys(data["run"]))
    data["series"] = data["cluster_nodes"].astype(int).astype(str) + " #" + data["cluster_instance"].astype(str) \
        + " " + data["layers"].astype("Int64").astype(str) + " layers"
    chart = alt.Chart(data).mark_line(point=alt.OverlayMarkDef(filled=True, size=35), strokeWidth=1.3).encode(
        x=alt.X("size_gb:Q", scale=alt.Scale(type="log", nice=False, padding=8),
                title="Image size (uncompressed, GB, log scale)"),
        y=alt.Y(f"{value}:Q", title=SPREAD_LABELS.get(value, value)),
        color=cluster_color(), detail="series:N",
        tooltip=["run:N", "image_key:N", "cluster_nodes:O", "cluster_instance:O", "pulls:Q",
                 alt.Tooltip("size_gb:Q", format=".2f", title="image size (GB)"),
                 alt.Tooltip(f"{value}:Q", format=".2f", title="spread (s)")])
    subtitle = "larger images take longer to pull, and their completion times spread further"
    return _facet(chart, runs).properties(title=alt.Title(title, subtitle=subtitle))


def scheduled_to_pulled(pulls: pd.DataFrame, *,
                        title: str = "Scheduled → Pulled per pod, by cluster size") -> alt.FacetChart:
    """Box plots of every pod's Scheduled -> Pulled time (log scale); pods with no Scheduled event are left out."""
    d = pulls.assign(sched_pulled_s=(pulls["pulled_at"] - pulls["scheduled_at"]).dt.total_seconds())
    missing = int(d["sched_pulled_s"].isna().sum())
    d = d.dropna(subset=["sched_pulled_s"])
    d = d[d["sched_pulled_s"] > 0]
    data = _plain(d, ["run", "cluster_nodes", "image_key", "node", "sched_pulled_s"])
    runs = list(dict.fromkeys(pulls["run"]))
    chart = alt.Chart(data).mark_boxplot(size=22, extent=1.5, outliers={"size": 10}, median={"color": "black"}).encode(
        x=alt.X("cluster_nodes:O", title="Cluster size (nodes)"),
        y=alt.Y("sched_pulled_s:Q", scale=alt.Scale(type="log"), title="Scheduled → Pulled (s, log scale)"),
        color=cluster_color(),
        tooltip=["run:N", "cluster_nodes:O", "image_key:N", "node:N",
                 alt.Tooltip("sched_pulled_s:Q", format=".1f", title="Scheduled → Pulled (s)")])
    subtitle = (f"{len(data)} pods, every image; {missing} pods without a Scheduled event left out; "
                "1 s timestamp resolution")
    return _facet(chart, runs).properties(title=alt.Title(title, subtitle=subtitle))


def pull_time_by_cluster_size(table: pd.DataFrame, time: str = "pull_wait_s", *,
                              title: str = "Median pull time per image, by cluster size") -> alt.FacetChart:
    """Each image's median pull time relative to its own median over all sizes: flat lines mean no growth."""
    med = f"{time}_median"
    data = _plain(table, ["run", "cluster_nodes", "cluster_instance", "image_key", "size_gb", "pulls", med])
    data["relative"] = data[med] / data.groupby(["run", "image_key"])[med].transform("median")
    data = data[data["relative"] > 0]
    data["series"] = data["image_key"] + " #" + data["cluster_instance"].astype(str)
    runs = list(dict.fromkeys(data["run"]))
    base = alt.Chart(data).encode(
        x=_nodes_axis(data),
        y=alt.Y("relative:Q", scale=alt.Scale(type="log"),
                title=f"Median {TIME_LABELS[time]} ÷ image's median (log)"))
    lines = base.mark_line(strokeWidth=1, opacity=0.35, color="gray").encode(detail="series:N")
    points = base.mark_point(filled=True, size=40, opacity=0.85).encode(
        color=cluster_color(),
        tooltip=["run:N", "image_key:N", "cluster_nodes:O", "cluster_instance:O", "pulls:Q",
                 alt.Tooltip("size_gb:Q", format=".2f", title="image size (GB)"),
                 alt.Tooltip(f"{med}:Q", format=".2f", title="median pull time (s)"),
                 alt.Tooltip("relative:Q", format=".2f", title="relative to image's median")])
    one = _rule(data, 1.0, "black")
    subtitle = "1 = the image's usual pull time in this run; a line rising to the right would mean slower pulls"
    return _facet(alt.layer(one, lines, points), runs).properties(title=alt.Title(title, subtitle=subtitle))


def experiment_span(spans: pd.DataFrame, *,
                    title: str = "Experiment span, by cluster size") -> alt.FacetChart:
    """Each experiment's span split into the images' median pull times (summed) and everything else."""
    d = _plain(spans, ["run", "cluster_nodes", "cluster_instance", "images", "pulls", "span_s", "pull_time_sum_s",
                       "other_s", "starts_estimated"])
    d["cluster"] = d["cluster_nodes"].astype(int).astype(str) + " nodes" + d["cluster_instance"].map(
        lambda i: "" if i == 1 else f" (#{i})")
    long = d.melt(id_vars=["run", "cluster", "cluster_nodes", "images", "pulls", "span_s", "starts_estimated"],
                  value_vars=["pull_time_sum_s", "other_s"], var_name="part", value_name="seconds")
    long["part"] = long["part"].map({"pull_time_sum_s": "pulling (sum of image medians)",
                                     "other_s": "everything else"})
    long["minutes"] = long["seconds"] / 60
    runs = list(dict.fromkeys(d["run"]))
    order = d.sort_values(["cluster_nodes", "cluster_instance"])["cluster"].drop_duplicates().tolist()
    chart = alt.Chart(long).mark_bar(size=24).encode(
        x=alt.X("cluster:N", sort=order, title="Cluster size (nodes)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("minutes:Q", stack=True, title="Span, first pod start → last Pulled (min)"),
        color=alt.Color("part:N", title="Part of the span", scale=alt.Scale(range=["#225ea8", "#bdbdbd"]),
                        sort=["pulling (sum of image medians)", "everything else"]),
        order=alt.Order("part:N", sort="descending"),
        tooltip=["run:N", "cluster:N", "images:Q", "pulls:Q", "part:N",
                 alt.Tooltip("minutes:Q", format=".1f", title="part (min)"),
                 alt.Tooltip("span_s:Q", format=".0f", title="span (s)"), "starts_estimated:Q"])
    subtitle = "a cluster size with several clusters (#2) ran the experiment again; compare spans with equal image counts"
    return _facet(chart, runs).properties(title=alt.Title(title, subtitle=subtitle))

"""Charts of pull records, in the house style, shared by the pull-time notebooks.

Each function takes a tidy table (records or a summary of them) and returns an Altair chart with a
title, axis titles with units, and tooltips; saving is ``StudyOutput.chart``'s job.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .charts import cluster_color
from .pulls import TIME_LABELS
from pullstudy.records import GB, image_key


LOG_SIZE = alt.Scale(type="log", nice=False, padding=12)
LOG_TIME = alt.Scale(type="log", nice=False, padding=8)


def _size_label(size_bytes: pd.Series) -> pd.Series:
    gb = size_bytes.astype(float) / GB
    return gb.map(lambda v: f"{v * 1000:.0f} MB" if v < 0.1 else f"{v:.2f} GB" if v < 10 else f"{v:.1f} GB")


def _size_order(df: pd.DataFrame) -> list[str]:
    sizes = df[["size_bytes"]].drop_duplicates().sort_values("size_bytes")
    return _size_label(sizes["size_bytes"]).tolist()


def pull_time_by_size(df: pd.DataFrame, time: str = "pull_wait_s", *, log: bool = False,
                      title: str = "Pull time by image size") -> alt.Chart:
    """Box plots of every pull at each image size, side by side per cluster size."""
    data = df.assign(size_label=_size_label(df["size_bytes"]),
                     cluster_nodes=df["cluster_nodes"].astype(int), layers=df["layers"].astype(int))
    data = data[["size_label", "size_gb", "cluster_nodes", time, "node", "layers"]]
    scale = alt.Scale(type="log") if log else alt.Scale(zero=True)
    subtitle = f"{len(data)} pulls; boxes span the quartiles, whiskers 1.5 IQR"
    return alt.Chart(data, title=alt.Title(title + (" (log scale)" if log else ""), subtitle=subtitle)).mark_boxplot(
        size=12, extent=1.5, outliers={"size": 8}, median={"color": "black"}
    ).encode(
        x=alt.X("size_label:N", sort=_size_order(df), title="Image size (uncompressed, GB)",
                axis=alt.Axis(labelAngle=-40)),
        xOffset=alt.XOffset("cluster_nodes:O"),
        y=alt.Y(f"{time}:Q", scale=scale, title=TIME_LABELS[time].capitalize()),
        color=cluster_color(present=data["cluster_nodes"]),
        tooltip=["size_label:N", "cluster_nodes:O", alt.Tooltip(f"{time}:Q", format=".1f"), "node:N"],
    )


def medians_by_layers(summary: pd.DataFrame, time: str = "pull_wait_s", *,
                      title: str = "Median pull time: few vs many layers") -> alt.LayerChart:
    """Medians with 95% CIs against size (log-log), one line per layer count."""
    data = summary.assign(size_gb=summary["size_bytes"].astype(float) / GB,
                          layers=summary["layers"].astype(int).astype(str) + " layers")
    med, lo, hi = f"{time}_median", f"{time}_ci_low", f"{time}_ci_high"
    base = alt.Chart(data, title=alt.Title(title, subtitle="points: medians; bars: bootstrap 95% CI")).encode(
        x=alt.X("size_gb:Q", scale=LOG_SIZE, title="Image size (uncompressed, GB, log scale)"),
        color=alt.Color("layers:N", title="Layers", scale=alt.Scale(scheme="set1")),
    )
    y_title = f"Median {TIME_LABELS[time]} (log scale)"
    points = base.mark_line(point=True).encode(
        y=alt.Y(f"{med}:Q", scale=LOG_TIME, title=y_title),
        tooltip=["layers:N", alt.Tooltip("size_gb:Q", format=".3f", title="size (GB)"), "n:Q",
                 alt.Tooltip(f"{med}:Q", format=".2f", title="median (s)"),
                 alt.Tooltip(f"{lo}:Q", format=".2f", title="CI low (s)"),
                 alt.Tooltip(f"{hi}:Q", format=".2f", title="CI high (s)")],
    )
    bars = base.mark_errorbar(ticks=True).encode(y=alt.Y(f"{lo}:Q", scale=LOG_TIME, title=y_title),
                                                 y2=alt.Y2(f"{hi}:Q"))
    return alt.layer(bars, points)


def layer_difference(diff: pd.DataFrame, *, bound_s: float | None = None,
                     title: str = "Extra pull time of many layers, by image size") -> alt.LayerChart:
    """The median difference (many − few layers) with its CI at each size, and the claimed bound."""
    few, many = int(diff["layers_few"].iloc[0]), int(diff["layers_many"].iloc[0])
    data = diff.assign(size_gb=diff["size_bytes"].astype(float) / GB)
    base = alt.Chart(data, title=alt.Title(title, subtitle=f"median({many} layers) − median({few} layers), "
                                                           "bootstrap 95% CI"))
    x = alt.X("size_gb:Q", scale=LOG_SIZE, title="Image size (uncompressed, GB, log scale)")
    bars = base.mark_errorbar(ticks=True).encode(x=x, y=alt.Y("ci_low:Q", title="Difference in pull time (s)"),
                                                 y2="ci_high:Q")
    points = base.mark_point(filled=True, size=50).encode(
        x=x, y="difference_s:Q",
        tooltip=[alt.Tooltip("size_gb:Q", format=".3f", title="size (GB)"),
                 alt.Tooltip("difference_s:Q", format=".2f", title="difference (s)"),
                 alt.Tooltip("ci_low:Q", format=".2f"), alt.Tooltip("ci_high:Q", format=".2f"),
                 alt.Tooltip("ratio:Q", format=".2f", title="ratio many/few"), "n_few:Q", "n_many:Q"])
    rules = [0.0] + ([bound_s] if bound_s is not None else [])
    ref = alt.Chart(pd.DataFrame({"y": rules, "what": ["no difference"] + (["claimed bound"] if bound_s else [])})) \
        .mark_rule(strokeDash=[4, 4], color="gray").encode(y="y:Q", tooltip=["what:N", "y:Q"])
    return alt.layer(ref, bars, points)


def both_figures(df: pd.DataFrame, *, title: str = "The kubelet's two pull times, pull by pull") -> alt.LayerChart:
    """Each pull's time without (x) and with (y) the wait in the node's pull queue; on the line: no wait."""
    data = df.assign(layers=df["layers"].astype(int).astype(str) + " layers",
                     size_label=_size_label(df["size_bytes"]))[["pull_s", "pull_wait_s", "layers", "size_label", "node"]]
    waited = int((data["pull_wait_s"] > data["pull_s"] + 0.5).sum())
    subtitle = f"{len(data)} pulls; {waited} waited more than 0.5 s for another pull on the same node"
    lo, hi = float(data[["pull_s", "pull_wait_s"]].min().min()), float(data[["pull_s", "pull_wait_s"]].max().max())
    diagonal = alt.Chart(pd.DataFrame({"x": [lo, hi]})).mark_line(strokeDash=[4, 4], color="gray").encode(
        x="x:Q", y="x:Q")
    points = alt.Chart(data).mark_point(opacity=0.6, size=20).encode(
        x=alt.X("pull_s:Q", scale=LOG_TIME, title="Pull time (s, log scale)"),
        y=alt.Y("pull_wait_s:Q", scale=LOG_TIME, title="Pull time including waiting (s, log scale)"),
        color=alt.Color("layers:N", title="Layers", scale=alt.Scale(scheme="set1")),
        tooltip=["size_label:N", "layers:N", "node:N", alt.Tooltip("pull_s:Q", format=".2f"),
                 alt.Tooltip("pull_wait_s:Q", format=".2f")],
    )
    return alt.layer(diagonal, points, title=alt.Title(title, subtitle=subtitle))


def _image_label(df: pd.DataFrame) -> pd.Series:
    """Size label for synthetic images, the image name for real ones."""
    sized = df["size_bytes"].notna()
    labels = df["image_key"].astype(str).copy()
    labels[sized] = _size_label(df.loc[sized, "size_bytes"])
    return labels


def _image_order(df: pd.DataFrame) -> list[str]:
    first = df.assign(label=_image_label(df)).sort_values(["size_bytes", "image_key"], na_position="last")
    return list(dict.fromkeys(first["label"]))


def comparison_boxplot(c, *, log: bool = True, title: str | None = None) -> alt.Chart:
    """Both runs' pull-time distributions at each image, side by side."""
    time = c.time
    data = c.pulls.assign(image_label=_image_label(c.pulls),
                          run=c.pulls["arm"].map({"baseline": f"baseline: {c.baseline}",
                                                  "treatment": f"treatment: {c.treatment}"}))
    data = data[["image_label", "run", time, "cluster_nodes", "node"]].assign(
        cluster_nodes=lambda d: d["cluster_nodes"].astype(int))
    scale = alt.Scale(type="log") if log else alt.Scale(zero=True)
    subtitle = f"{len(data)} pulls; boxes span the quartiles, whiskers 1.5 IQR"
    return alt.Chart(data, title=alt.Title(title or f"Pull time: {c.treatment} vs {c.baseline}",
                                           subtitle=subtitle)).mark_boxplot(
        size=14, extent=1.5, outliers={"size": 8}, median={"color": "black"}
    ).encode(
        x=alt.X("image_label:N", sort=_image_order(c.pulls), title="Image (uncompressed size)",
                axis=alt.Axis(labelAngle=-40)),
        xOffset=alt.XOffset("run:N"),
        y=alt.Y(f"{time}:Q", scale=scale, title=TIME_LABELS[time].capitalize() + (" (log scale)" if log else "")),
        color=alt.Color("run:N", title="Run", scale=alt.Scale(scheme="set1"), legend=alt.Legend(labelLimit=420)),
        tooltip=["image_label:N", "run:N", "cluster_nodes:O", "node:N", alt.Tooltip(f"{time}:Q", format=".2f")],
    ).properties(width=max(360, 70 * data["image_label"].nunique()))


def speedup_chart(c, *, log: bool | None = None, title: str | None = None) -> alt.LayerChart:
    """Speedup (ratio of medians) per image and cluster size with 95% CIs; the band is ±margin."""
    per = c.per_image_cluster.assign(image_label=_image_label(c.per_image_cluster),
                                     cluster_nodes=lambda d: d["cluster_nodes"].astype(int))
    overall = c.per_image.assign(image_label=_image_label(c.per_image))
    log = bool(per["ci_high"].max() / max(per["ci_low"].min(), 1e-9) > 20) if log is None else log
    scale = alt.Scale(type="log" if log else "linear", zero=False)
    x = alt.X("image_label:N", sort=_image_order(c.per_image), title="Image (uncompressed size)",
              axis=alt.Axis(labelAngle=-40))
    y_title = "Speedup: median baseline / median treatment" + (" (log scale)" if log else "")
    band = alt.Chart(pd.DataFrame({"lo": [1 / (1 + c.margin)], "hi": [1 + c.margin]})).mark_rect(
        opacity=0.15, color="gray").encode(y=alt.Y("lo:Q", scale=scale), y2="hi:Q")
    one = alt.Chart(pd.DataFrame({"y": [1.0]})).mark_rule(color="gray", strokeDash=[4, 4]).encode(y="y:Q")
    tooltip = ["image_label:N", alt.Tooltip("speedup:Q", format=".3g"), alt.Tooltip("ci_low:Q", format=".3g"),
               alt.Tooltip("ci_high:Q", format=".3g"), "n_baseline:Q", "n_treatment:Q"]
    bars = alt.Chart(per).mark_errorbar(ticks=True).encode(
        x=x, xOffset=alt.XOffset("cluster_nodes:O"), y=alt.Y("ci_low:Q", scale=scale, title=y_title),
        y2="ci_high:Q", color=cluster_color(present=per["cluster_nodes"]))
    points = alt.Chart(per).mark_point(filled=True, size=40).encode(
        x=x, xOffset=alt.XOffset("cluster_nodes:O"), y=alt.Y("speedup:Q", scale=scale),
        color=cluster_color(present=per["cluster_nodes"]),
        tooltip=["cluster_nodes:O"] + tooltip)
    pooled = alt.Chart(overall).mark_tick(color="black", thickness=2, size=30).encode(
        x=x, y=alt.Y("speedup:Q", scale=scale), tooltip=tooltip)
    o = c.overall
    subtitle = [f"baseline: {c.baseline}; treatment: {c.treatment}",
                f"points: per cluster size with 95% CI; black ticks: all cluster sizes; shaded: ±{c.margin:.0%}. "
                f"Overall {o.ratio:.3g}x [{o.ci_low:.3g}, {o.ci_high:.3g}]"]
    return alt.layer(band, one, bars, points, pooled).properties(
        width=max(300, 80 * c.per_image["image_key"].nunique()),
        title=alt.Title(title or f"Speedup of {c.treatment} over {c.baseline}", subtitle=subtitle))


def _two_arm_stacks(data: pd.DataFrame, x: alt.X, x_field: str, baseline: str, treatment: str, second: str,
                    y_title: str) -> alt.Chart:
    """Bars of ``seconds`` stacked pull + ``second`` part, the two arms side by side at each x."""
    order = [f"{baseline}: pull", f"{baseline}: {second}", f"{treatment}: pull", f"{treatment}: {second}"]
    colors = ["#b2182b", "#f4a582", "#2166ac", "#92c5de"]
    return alt.Chart(data).mark_bar().encode(
        x=x, xOffset=alt.XOffset("arm:N", sort=[baseline, treatment]),
        y=alt.Y("sum(seconds):Q", title=y_title),
        color=alt.Color("part:N", sort=order, scale=alt.Scale(domain=order, range=colors), title=""),
        order=alt.Order("part:N", sort="ascending"),
        tooltip=[x_field, "part:N",
                 alt.Tooltip("sum(seconds):Q", format=".2f", title="seconds")],
    )


def time_to_work_chart(table: pd.DataFrame, *, baseline: str = "without streaming", treatment: str = "with streaming",
                       title: str = "Time to useful work: pull + run, with and without image streaming"
                       ) -> alt.FacetChart:
    """Stacked pull and run time per app and cluster size, the two runs side by side.

    Lazy pulling can move cost from the pull into the run; only the whole bar says what the user waited.
    """
    rows = table[table["scope"] == "cluster"]
    long = []
    for arm, side in ((baseline, "baseline"), (treatment, "treatment")):
        for part, col in (("pull", f"pull_wait_s_{side}"), ("run", f"wall_s_{side}")):
            long.append(pd.DataFrame({"app": rows["app"], "cluster_nodes": rows["cluster_nodes"].astype(int),
                                      "arm": arm, "part": f"{arm}: {part}", "seconds": rows[col].astype(float)}))
    x = alt.X("cluster_nodes:O", title="Cluster size (nodes)")
    bars = _two_arm_stacks(pd.concat(long, ignore_index=True), x, "cluster_nodes:O", baseline, treatment, "run",
                           "Median pull time + application wall time (s)")
    return bars.properties(width=220, height=260).facet(
        facet=alt.Facet("app:N", title=None), columns=2,
        title=alt.Title(title, subtitle="one application run per cluster size; medians of the pulls"))


def pull_and_read_chart(records: pd.DataFrame, *, field: str = "snapshotter", baseline: str = "overlayfs",
                        treatment: str = "stargz", title: str = "Where the time goes: pull, then read every file"
                        ) -> alt.Chart:
    """Median pull and read seconds per image of a local run, eager and lazy side by side.

    A lazy pull is quick because the bytes are not fetched yet; the read shows where they went.
    """
    rows = records[records[field].isin([baseline, treatment])]
    rows = rows.assign(image_key=image_key(rows))
    medians = (rows.groupby([field, "image_key", "size_bytes", "layers"], as_index=False)
               .agg(pull=("pull_s", "median"), read=("read_s", "median"), n=("pull_s", "size")))
    medians["image_label"] = _image_label(medians)
    long = medians.melt(id_vars=[field, "image_label", "n"], value_vars=["pull", "read"], var_name="what",
                        value_name="seconds").assign(arm=lambda d: d[field],
                                                     part=lambda d: d[field] + ": " + d["what"])
    x = alt.X("image_label:N", sort=_image_order(medians), title="Image (uncompressed size)",
              axis=alt.Axis(labelAngle=-40))
    bars = _two_arm_stacks(long, x, "image_label:N", baseline, treatment, "read",
                           "Median seconds: pull + read every file")
    return bars.properties(width=max(260, 120 * medians["image_label"].nunique()), height=280,
                           title=alt.Title(title, subtitle=f"{len(rows)} pulls; {field} {baseline} (eager) vs "
                                                           f"{treatment} (lazy), medians per image"))


def app_start_chart(table: pd.DataFrame, *, title: str = "Time to useful work of real application images: "
                                                          "pull, create, run to ready") -> alt.Chart:
    """Median pull, create and run (to the ready line) per application image, eager and lazy side by side.

    ``table`` is :func:`pullstudy.studies.local_apps.hellobench_table`. Only the whole bar is what a user
    waits for: a lazy pull is short, and the bytes it skipped are fetched while the container runs.
    """
    long = []
    for arm, side in (("overlayfs (eager)", "eager"), ("stargz (lazy)", "lazy")):
        for part in ("pull", "create", "run"):
            long.append(pd.DataFrame({"app": table["app"], "arm": arm, "part": f"{side}: {part}",
                                      "seconds": table[f"{part}_s_{side}"].astype(float)}))
    data = pd.concat(long, ignore_index=True)
    order = [f"{s}: {p}" for s in ("eager", "lazy") for p in ("pull", "create", "run")]
    colors = ["#b2182b", "#d6604d", "#f4a582", "#2166ac", "#4393c3", "#92c5de"]
    n = int(table["n_eager"].sum() + table["n_lazy"].sum())
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("app:N", sort=list(table["app"]), title="Application image", axis=alt.Axis(labelAngle=-30)),
        xOffset=alt.XOffset("arm:N", sort=["overlayfs (eager)", "stargz (lazy)"]),
        y=alt.Y("sum(seconds):Q", title="Median seconds: pull + create + run to ready"),
        color=alt.Color("part:N", sort=order, scale=alt.Scale(domain=order, range=colors), title=""),
        order=alt.Order("part:N", sort="ascending"),
        tooltip=["app:N", "part:N", alt.Tooltip("sum(seconds):Q", format=".2f", title="seconds")],
    ).properties(width=max(260, 110 * len(table)), height=280,
                 title=alt.Title(title, subtitle=f"{n} cold starts on this machine; medians per image"))

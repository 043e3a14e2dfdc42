"""Charts of the layer-similarity study: clustered heatmaps, layer sizes, bytes saved by sharing."""

from __future__ import annotations

import os

import altair as alt
import pandas as pd

from .similarity import cluster_order


MEASURE_TEXT = {"digest": "layer digests", "content": "build-step content (config history)"}


def short_names(images: list[str]) -> dict[str, str]:
    """Image names without the registry path they all share, so heatmap labels stay readable."""
    prefix = os.path.commonprefix([i.rsplit(":", 1)[0] for i in images]) if len(images) > 1 else ""
    prefix = prefix[: prefix.rfind("/") + 1]
    return {i: i[len(prefix):] for i in images}


#: The most images a heatmap is drawn for: n² cells, so 300 images are 90,000 marks (~4,200 px a side);
#: a set of 100,000 images would be 10¹⁰, which no renderer draws. Larger sets get their summaries only
#: (``similarity.summary_from_incidence``, in bounded memory) and are listed as skipped (issue 16).
MAX_HEATMAP_IMAGES = 300


def heatmap(matrix: pd.DataFrame, order: list[str], *, title: str, measure: str) -> alt.Chart:
    """A Jaccard matrix as a heatmap in clustering order, with the pair and the score on hover."""
    if len(matrix) > MAX_HEATMAP_IMAGES:
        raise ValueError(f"heatmap {title!r}: {len(matrix)} images is more than the {MAX_HEATMAP_IMAGES} a heatmap "
                         "can draw (n² cells); report its summary instead")
    names = short_names(list(matrix.index))
    long = matrix.rename_axis(index="a", columns="b").stack().rename("score").reset_index()
    long["image_a"], long["image_b"] = long["a"].map(names), long["b"].map(names)
    sort = [names[i] for i in order]
    n = len(order)
    cell = max(14, min(36, 520 // max(n, 1)))
    label = "" if n <= 16 else " (labels omitted above 40 images)"
    axis = alt.Axis(labelLimit=260) if n <= 40 else alt.Axis(labels=False, ticks=False)
    return alt.Chart(long, title=alt.Title(title, subtitle=f"{n} images, ordered by hierarchical clustering; "
                                                            f"{measure}{label}")).mark_rect().encode(
        x=alt.X("image_b:N", sort=sort, title=None, axis=alt.Axis(labelAngle=-50, labelLimit=260) if n <= 40 else axis),
        y=alt.Y("image_a:N", sort=sort, title=None, axis=axis),
        color=alt.Color("score:Q", scale=alt.Scale(scheme="viridis", domain=[0, 1]), title="Jaccard"),
        tooltip=[alt.Tooltip("image_a:N", title="image"), alt.Tooltip("image_b:N", title="and image"),
                 alt.Tooltip("score:Q", format=".3f", title="Jaccard")],
    ).properties(width=cell * n, height=cell * n)


def layer_size_histogram(sizes: pd.DataFrame, *, title: str = "Sizes of the unique layers") -> alt.Chart:
    """Unique layers by size (log bins), one colour per set; empty layers cannot be drawn on a log axis."""
    data = sizes[sizes["size"] > 0]
    dropped = int((sizes["size"] <= 0).sum())
    return alt.Chart(data, title=alt.Title(title, subtitle=f"{len(data)} unique layers"
                                                           + (f"; {dropped} empty layers not shown" if dropped else ""))
                     ).mark_bar(opacity=0.8).encode(
        x=alt.X("log_bytes:Q", bin=alt.Bin(step=0.5), title="Layer size (bytes, log scale)",
                axis=alt.Axis(values=list(range(0, 12)), labelExpr="format(pow(10, datum.value), '.0s') + 'B'")),
        y=alt.Y("count():Q", title="Unique layers", stack=True),
        color=alt.Color("set:N", title="Container set"),
        tooltip=["set:N", "count():Q"],
    ).transform_calculate(log_bytes="log(datum.size) / LN10")


def bytes_saved(stats: pd.DataFrame, *, title: str = "What a node pulls for a whole set") -> alt.Chart:
    """Bytes without sharing (every layer of every image) and with it (each unique layer once)."""
    long = stats.melt(id_vars=["set"], value_vars=["bytes_without_sharing", "bytes_with_sharing"],
                      var_name="how", value_name="bytes")
    long["GB"] = long["bytes"] / 1e9
    long["how"] = long["how"].map({"bytes_without_sharing": "every layer of every image",
                                   "bytes_with_sharing": "each unique layer once"})
    return alt.Chart(long, title=alt.Title(title, subtitle="compressed layer bytes as the manifests list them")
                     ).mark_bar().encode(
        y=alt.Y("set:N", title=None),
        yOffset=alt.YOffset("how:N"),
        x=alt.X("GB:Q", title="Bytes to pull (GB)"),
        color=alt.Color("how:N", title=None, scale=alt.Scale(scheme="set2"), legend=alt.Legend(labelLimit=320)),
        tooltip=["set:N", "how:N", alt.Tooltip("GB:Q", format=".2f")],
    )


def matrix_charts(summaries, loaded, out) -> list:
    """The clustered heatmap of every set under every measure, recorded in ``out`` (``heatmap-<set>-<measure>``)."""
    slugs = {s.label: s.slug for s in loaded}
    drawable = {k: m for k, m in summaries.matrices.items() if len(m) <= MAX_HEATMAP_IMAGES}
    too_big = len(summaries.matrices) - len(drawable)
    if too_big:  # counted, not dropped silently; recorded only when it happens, so small sets' outputs stay as they were
        out.excluded(f"heatmaps not drawn: more than {MAX_HEATMAP_IMAGES} images", too_big)
    return [out.chart(heatmap(matrix, cluster_order(matrix), title=f"Jaccard similarity of {label}: {measure}",
                              measure=MEASURE_TEXT[measure]), f"heatmap-{slugs[label]}-{measure}")
            for (label, measure), matrix in drawable.items()]


def union_chart(union: pd.DataFrame, loaded) -> alt.Chart:
    """The build-step similarity across all sets (``heatmap-all-content``)."""
    return heatmap(union, cluster_order(union), title="Build-step similarity across all sets",
                   measure="build-step content; sets: " + ", ".join(s.label for s in loaded))

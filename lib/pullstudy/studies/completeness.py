"""How much of each run's event record survived: pods the harness created against Pulled events kept.

The upstream events were captured by kubernetes-event-exporter, which loses events by design
(events older than ``maxEventAgeSeconds`` are dropped, it is throttled, updates are ignored), and
some archived runs miss whole stretches (the 16-node ``pulling-test`` runs). A median over the pulls
that happened to be recorded is only as good as the share of pulls that were recorded, so every
analysis that reads events also states, per run x cluster size x image, how many pulls should exist
and how many were seen, and every verdict says when it rests on cells below a threshold.

How many pulls should exist: the upstream harness (``run-experiment.py`` with ``job-template.yaml``)
runs one Kubernetes Job per image of the study file with ``completions`` = ``parallelism`` = the
node count, and the application harness (``run-streaming-experiment.py``) one Flux MiniCluster of
``size`` = the node count per image listed under that node count. So each image of the study file is
expected on ``cluster_nodes`` pods, and each pod leaves one ``Pulled`` event: a timed pull, or a
cache hit ("already present on machine") when two pods of a Job land on the same node.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Iterable

import altair as alt
import pandas as pd

from pullstudy.data import catalog
from pullstudy.records import decode_tag, image_key, ref_key
from pullstudy.paths import raw_dir

DEFAULT_THRESHOLD = 0.8
COLUMNS = ["run", "cluster_nodes", "image_key", "layers", "size_bytes", "expected", "observed_pulled",
           "cache_hits", "share", "complete"]


def _keys(images: list[str]) -> list[str]:
    """The image keys of :func:`pullstudy.records.image_key` (registry-independent) for references."""
    return [ref_key(i) for i in images]


def expected_images(run: catalog.Run, cluster_nodes: int, raw: Path | None = None) -> list[str]:
    """Image references the harness pulled at one cluster size, from the run's study file.

    Two study formats exist upstream: ``{"uri": ..., "tags": [...]}`` (the same images at every
    size) and ``{"<nodes>": [{"image": ...}, ...]}`` (the applications, chosen per size).
    A missing or unreadable study file is an error naming the file and the remedy.
    """
    path = (raw or raw_dir()) / run.source / run.study_file
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the study file of {run.id} ({exc}); run `make data`") from None
    if isinstance(doc, dict) and "tags" in doc and "uri" in doc:
        return [f"{doc['uri']}:{tag}" for tag in doc["tags"]]
    if isinstance(doc, dict):
        jobs = doc.get(str(cluster_nodes), [])
        return [job["image"] for job in jobs if isinstance(job, dict) and "image" in job]
    raise ValueError(f"{path}: study file of {run.id} is neither {{uri, tags}} nor {{nodes: [jobs]}}")


def ledger(run: str | catalog.Run, records: pd.DataFrame, cluster_nodes: Iterable[int], *,
           threshold: float = DEFAULT_THRESHOLD, raw: str | Path | None = None) -> pd.DataFrame:
    """One row per cluster size x image of the study file: pods expected, Pulled events observed.

    ``records`` are the run's pull records as parsed (system pods included; only the study's images
    count). ``observed_pulled`` counts timed pulls, ``cache_hits`` the "already present" events;
    ``share`` = (observed_pulled + cache_hits) / expected, every pod accounted for. A share above 1
    means more Pulled events than pods (a job repeated in the same cluster); it is kept, not capped,
    so the anomaly shows. ``complete`` is share >= threshold.
    """
    check_threshold(threshold)
    run = catalog.get(run) if isinstance(run, str) else run
    raw_path = Path(raw) if raw else None
    rows = []
    rec = records[records["run"] == run.id] if "run" in records and len(records) else records
    counts = pd.DataFrame({"cluster_nodes": rec["cluster_nodes"].astype(int), "image_key": image_key(rec),
                           "cache_hit": rec["cache_hit"].astype(bool)}) if len(rec) else None
    counts = (counts.groupby(["cluster_nodes", "image_key"])["cache_hit"].agg(["size", "sum"])
              if counts is not None else pd.DataFrame(columns=["size", "sum"]))
    for n in sorted({int(x) for x in cluster_nodes}):
        for key in dict.fromkeys(_keys(expected_images(run, n, raw_path))):
            seen, hits = (int(v) for v in counts.loc[(n, key)]) if (n, key) in counts.index else (0, 0)
            layers, size = decode_tag(key if "-layers-size-" in key else None)
            rows.append({"run": run.id, "cluster_nodes": n, "image_key": key, "layers": layers,
                         "size_bytes": size, "expected": n, "observed_pulled": seen - hits,
                         "cache_hits": hits})
    df = pd.DataFrame(rows, columns=COLUMNS[:-2])
    df["layers"] = df["layers"].astype("Int64")
    df["size_bytes"] = df["size_bytes"].astype("Int64")
    df["share"] = (df["observed_pulled"] + df["cache_hits"]) / df["expected"]
    df["complete"] = df["share"] >= threshold
    return df[COLUMNS]


def check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"completeness threshold must be a share in (0, 1], e.g. 0.8; got {threshold!r}")


def overall_share(ledger_df: pd.DataFrame) -> dict[str, float | None]:
    """Per run, the share of expected pulls observed; surplus events in one cell never fill another."""
    out: dict[str, float | None] = {}
    for run_id, g in ledger_df.groupby("run", sort=False):
        seen = (g["observed_pulled"] + g["cache_hits"]).clip(upper=g["expected"]).sum()
        out[str(run_id)] = float(seen / g["expected"].sum()) if g["expected"].sum() else None
    return out


def caveat(ledger_df: pd.DataFrame | None, threshold: float = DEFAULT_THRESHOLD, *, limit: int = 5,
           scope: str | None = None) -> str:
    """The sentence a verdict needs when cells it rests on are below the threshold, else "".

    ``ledger_df`` holds the cells the claim rests on. With ``scope`` (e.g. "the runs this notebook
    read") the cells are only known to be among those the notebook read, and the text says so
    instead of claiming the verdict rests on all of them. Counts are given per run, and the least
    complete cells (up to ``limit``) are named so a reader can find them in the table.
    """
    check_threshold(threshold)
    if ledger_df is None or ledger_df.empty:
        return ""
    low = ledger_df[ledger_df["share"] < threshold].sort_values(["share", "run", "cluster_nodes"])
    if low.empty:
        return ""
    per_run = ", ".join(f"{run}: {int((g['share'] < threshold).sum())} of {len(g)}"
                        for run, g in ledger_df.groupby("run", sort=True))
    named = "; ".join(f"{r.run} at {r.cluster_nodes} nodes, {r.image_key}: "
                      f"{r.observed_pulled + r.cache_hits} of {r.expected} pods"
                      for r in low.head(limit).itertuples())
    more = f"; and {len(low) - limit} more" if len(low) > limit else ""
    head = f"{scope} have" if scope else "rests on"
    return (f"{head} {len(low)} of {len(ledger_df)} cells below {threshold:.0%} complete "
            f"(Pulled events observed / pods the harness created; by run {per_run}); least complete: "
            f"{named}{more}")


def flag_table(df: pd.DataFrame, ledger_df: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """A summary table with the completeness of the cells behind each row, or the table unchanged.

    Rows are matched to ledger cells on the key columns both share (run, cluster_nodes, image_key,
    layers, size_bytes); a row gets the lowest share among its cells (``completeness``) and
    ``incomplete`` when that is below the threshold. A table without a ``run`` column while the
    ledger holds several runs is ambiguous: it gets one ``completeness[<run>]`` column per run and
    ``incomplete_in`` naming the runs whose cells are below the threshold, never a guess.
    Tables sharing no cluster size with the ledger are returned as they are.
    """
    keys = [c for c in ("run", "cluster_nodes", "image_key", "layers", "size_bytes")
            if c in df.columns and c in ledger_df.columns]
    if "cluster_nodes" not in keys or ledger_df.empty or "completeness" in df.columns:
        return df
    runs = sorted(ledger_df["run"].unique())
    per_run = "run" not in keys and len(runs) > 1
    by = keys + (["run"] if per_run else [])
    worst = ledger_df.groupby(by, as_index=False)["share"].min()
    try:
        worst = worst.astype({k: df[k].dtype for k in keys})
    except (ValueError, TypeError):  # key columns of incompatible types: nothing to match on
        return df
    if not per_run:
        merged = df.merge(worst.rename(columns={"share": "completeness"}), on=keys, how="left")
        merged["incomplete"] = merged["completeness"] < threshold
        return merged
    wide = worst.pivot_table(index=keys, columns="run", values="share", aggfunc="min").reset_index()
    wide.columns = [c if c in keys else f"completeness[{c}]" for c in wide.columns]
    merged = df.merge(wide, on=keys, how="left")
    cols = [f"completeness[{r}]" for r in runs if f"completeness[{r}]" in merged.columns]
    merged["incomplete_in"] = [", ".join(c[len("completeness["):-1] for c in cols if row[c] < threshold)
                               for _, row in merged[cols].iterrows()]
    return merged


def chart(ledger_df: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> alt.LayerChart:
    """Share of expected pulls observed, one row per run and cluster size, one circle per share.

    Images with the same share are drawn as one circle sized by how many they are, so a stretch of
    missing events (many images at a low share) stands out; the dashed line is the threshold.
    """
    df = ledger_df.assign(share_pct=(100 * ledger_df["share"]).round(1),
                          cell=ledger_df["run"] + " · " + ledger_df["cluster_nodes"].astype(str) + " nodes")
    groups = (df.groupby(["cell", "run", "cluster_nodes", "share_pct", "complete"], as_index=False)
                .agg(images=("image_key", "size"), expected=("expected", "first")))
    order = df.sort_values(["run", "cluster_nodes"])["cell"].unique().tolist()
    circles = alt.Chart(groups).mark_circle(opacity=0.8).encode(
        x=alt.X("share_pct:Q", title="Expected pulls observed (% of the pods the harness created)",
                scale=alt.Scale(domainMin=0)),
        y=alt.Y("cell:N", title="Run · cluster size", sort=order),
        size=alt.Size("images:Q", title="Images", scale=alt.Scale(range=[40, 600])),
        color=alt.Color("complete:N", title=f"≥ {threshold:.0%} observed",
                        scale=alt.Scale(domain=[True, False], range=["#2b8cbe", "#e34a33"])),
        tooltip=["run", "cluster_nodes", alt.Tooltip("share_pct:Q", title="observed (%)"),
                 alt.Tooltip("images:Q", title="images"), alt.Tooltip("expected:Q", title="pods per image")],
    )
    rule = alt.Chart(pd.DataFrame({"threshold_pct": [100 * threshold]})).mark_rule(
        strokeDash=[4, 3], color="#636363").encode(x="threshold_pct:Q")
    return alt.layer(rule, circles).properties(
        height=max(120, 28 * len(order)),
        title=alt.Title("Completeness of the event record: Pulled events observed per image",
                        subtitle=f"pods expected per image = cluster size (one per Job completion); "
                                 f"dashed line: threshold {threshold:.0%}; above 100%: a job repeated "
                                 "in the same cluster"))


def record(out, loaded: dict[str, Any], cluster_nodes: Iterable[int] | None, *,
           threshold: float | None = None) -> pd.DataFrame | None:
    """Compute the ledger of every loaded run and record it in ``out`` (a pullstudy.report.output.StudyOutput).

    ``loaded`` maps run ids to their ParseResult. Only cluster sizes with at least one event file on
    this machine are accounted for (files not here are already reported as unavailable). Runs not in
    the catalog (recorded elsewhere, no study file) are counted as skipped with the reason.
    """
    if out is None:
        return None
    threshold = out.completeness_threshold if threshold is None else threshold
    wanted = set(cluster_nodes) if cluster_nodes is not None else None
    frames, skipped = [], {}
    for run_id, result in loaded.items():
        try:
            run = catalog.get(run_id)
            sizes = [n for n in run.node_counts if (wanted is None or n in wanted)
                     and any((raw_dir() / run.source / f.path).is_file() for f in run.files_of("events", [n]))]
            if not sizes:
                skipped[run_id] = "no event file of the chosen cluster sizes on this machine (run `make data`)"
                continue
            frames.append(ledger(run, result.records, sizes, threshold=threshold))
        except (KeyError, ValueError) as exc:
            skipped[run_id] = str(exc).strip("'\"")
    if skipped:
        out.metric("completeness_skipped", skipped)
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    out.record_completeness(table, threshold)
    out.table(table, "completeness")
    out.chart(chart(table, threshold), "completeness")
    out.metric("completeness", overall_share(table))
    out.metric("completeness_threshold", threshold)
    return table


def section_html(metrics: dict[str, Any]) -> str:
    """The results page's lines on one notebook: overall share of expected pulls observed per run."""
    shares = metrics.get("completeness")
    if not isinstance(shares, dict) or not shares:
        return ""
    threshold = metrics.get("completeness_threshold", DEFAULT_THRESHOLD)
    rows = "".join(
        f'<tr><td>{html.escape(str(run))}</td><td class="num">'
        f'{"n/a" if share is None else f"{100 * share:.1f}%"}</td></tr>'
        for run, share in shares.items())
    return ("<h3>Completeness of the event record</h3>"
            f"<p class=\"muted\">Share of expected pulls (pods the harness created) with a Pulled event; "
            f"cells below {100 * threshold:.0f}% are named in the verdicts (table: completeness.csv).</p>"
            f"<table><tr><th>run</th><th>expected pulls observed</th></tr>{rows}</table>")

"""Study 07: does the spread of pull completion across nodes grow with cluster size?

The claim (``scale-variation``): larger clusters show more variation in pull-event timestamps across
nodes, and experiments take longer with cluster size -- not because pulls themselves get slower.
Everything here is computed from the tidy pull records; nothing knows run ids, tags or node counts.

Two facts about the data shape every figure below:

* core/v1 event timestamps (``firstTimestamp``) have 1 s resolution, so a Pulled spread of 0 s means
  "under a second" and 1 s means "somewhere under 2 s". The resolution is read off the data
  (:func:`timestamp_resolution`); spreads at or below it are flagged and floored at it, never read finer.
* the range (max - min) of n values grows with n even when nothing else changes, simply because more
  draws reach further into the tails. ``node_range_matched_s`` is the expected range across a random
  subset of nodes as small as the smallest cluster's, so growth beyond sampling shows up separately.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps

from pullstudy import stats
from .claims import Verdict
from pullstudy.studies.clusters import cluster_instances

CLAIM = "scale-variation"
KEYS = ["run", "cluster_nodes", "cluster_instance", "image_key"]
RUN_KEYS = ["run", "cluster_nodes", "cluster_instance"]


# --------------------------------------------------------------------------- precision


def timestamp_resolution(times: pd.Series) -> float:
    """Seconds resolution of a timestamp column: 1.0 if every value is a whole second, else 1e-6."""
    t = pd.to_datetime(times.dropna(), utc=True)
    if t.empty:
        return 1.0
    return 1.0 if bool((t.dt.microsecond == 0).all() and (t.dt.nanosecond == 0).all()) else 1e-6


def floored(values: pd.Series | np.ndarray, resolution: float) -> np.ndarray:
    """Spreads at or below the clock's resolution are indistinguishable: floor them at it (for logs)."""
    return np.maximum(np.asarray(values, dtype=float), resolution)


# --------------------------------------------------------------------------- per image


def pod_start(pulls: pd.DataFrame, time: str = "pull_wait_s") -> tuple[pd.Series, pd.Series]:
    """When each pod's pull began, and whether that is an estimate.

    Scheduled if recorded, else Pulling, else Pulled minus the kubelet's own pull time (events of
    deleted pods and expired events are missing in some archived runs).
    """
    recorded = pulls["scheduled_at"].fillna(pulls["pulling_at"])
    estimate = pulls["pulled_at"] - pd.to_timedelta(pulls[time], unit="s")
    return recorded.fillna(estimate), recorded.isna()


def expected_subset_range(values: np.ndarray, m: int) -> float:
    """Exact expected range (max - min) of m values drawn without replacement from ``values``.

    From the order statistics: the i-th smallest of n is the subset's maximum with probability
    C(i-1, m-1) / C(n, m). No resampling, so no seed.
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if m < 2 or n < m:
        return math.nan
    i = np.arange(1, n + 1)
    total = special.comb(n, m)
    p_max = special.comb(i - 1, m - 1) / total
    p_min = special.comb(n - i, m - 1) / total
    return float(x @ p_max - x @ p_min)


def _seconds(delta: pd.Series) -> pd.Series:
    return delta.dt.total_seconds()


def spread_table(pulls: pd.DataFrame, time: str = "pull_wait_s") -> pd.DataFrame:
    """Per run x cluster size x cluster instance x image: how far apart the pods finished pulling.

    ``pulled_range_s``/``pulled_iqr_s``: spread of the Pulled timestamps across the pods;
    ``node_range_matched_s``: the expected range across as few randomly chosen nodes as any cluster
    size of this run used for this image (each node's time: the median of its pods');
    ``sched_pulled_*``: Scheduled -> Pulled per pod (pods with no Scheduled event are counted in
    ``sched_missing``, not guessed); ``image_wall_s``: first pod start (see :func:`pod_start`) to the
    last Pulled; ``coverage``: pods recorded per node of the cluster (below 1 where events were lost);
    the medians of both kubelet pull times.
    """
    if pulls.empty:
        raise ValueError("no pulls to summarise")
    df = pulls.copy()
    df["cluster_instance"] = cluster_instances(df)
    df["sched_pulled_s"] = _seconds(df["pulled_at"] - df["scheduled_at"])
    start, _ = pod_start(df, time)
    df["start_at"] = start
    resolution = timestamp_resolution(df["pulled_at"])
    if "image_size_reported" not in df:
        df["image_size_reported"] = np.nan
    g = df.groupby(KEYS, sort=True, dropna=False)
    t = g.agg(size_bytes=("size_bytes", "first"), layers=("layers", "first"),
              image_size_reported=("image_size_reported", "median"), pulls=("pulled_at", "size"),
              nodes=("node", "nunique"), pulled_first=("pulled_at", "min"), pulled_last=("pulled_at", "max"),
              start_first=("start_at", "min"), sched_missing=("sched_pulled_s", lambda s: int(s.isna().sum())),
              sched_pulled_median_s=("sched_pulled_s", "median"), sched_pulled_min_s=("sched_pulled_s", "min"),
              sched_pulled_max_s=("sched_pulled_s", "max"), pull_s_median=("pull_s", "median"),
              pull_wait_s_median=("pull_wait_s", "median")).reset_index()
    q = g["pulled_at"].quantile([0.25, 0.75]).unstack()
    t["pulled_range_s"] = _seconds(t["pulled_last"] - t["pulled_first"])
    t["pulled_iqr_s"] = _seconds(q[0.75] - q[0.25]).to_numpy()
    t["sched_pulled_range_s"] = t["sched_pulled_max_s"] - t["sched_pulled_min_s"]
    t["image_wall_s"] = _seconds(t["pulled_last"] - t["start_first"])
    t["coverage"] = t["pulls"] / t["cluster_nodes"].astype(float)
    t["resolution_s"] = resolution
    t["spread_resolved"] = t["pulled_range_s"] > resolution
    # Per node, the median of its pods' Pulled times (several pods of one image may share a node).
    df["pulled_s"] = _seconds(df["pulled_at"] - df.groupby(KEYS, dropna=False)["pulled_at"].transform("min"))
    per_node = df.groupby([*KEYS, "node"], dropna=False)["pulled_s"].median()
    node_times = {k: v.to_numpy() for k, v in per_node.groupby(level=list(range(len(KEYS))), dropna=False)}
    m = t.groupby(["run", "image_key"])["nodes"].transform("min")
    t["matched_nodes"] = m
    t["node_range_matched_s"] = [expected_subset_range(node_times[tuple(k)], int(mm))
                                 for k, mm in zip(t[KEYS].itertuples(index=False), m)]
    t["size_gb"], t["size_source"] = image_size_gb(t)
    return t.drop(columns=["start_first"])


SIZE_BUILT = "built (tag)"
SIZE_TRANSFERRED = "transferred (Pulled message)"


def image_size_gb(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each row's image size in GB and where it came from.

    A synthetic image's tag encodes its built (uncompressed) size; an application image's tag encodes
    none, but it is still an image: its size is the bytes the kubelet's Pulled message reports
    (``Image size:``), which is the transferred (compressed) size and is labelled so.
    """
    built = table["size_bytes"].astype("Float64")
    reported = table["image_size_reported"].astype("Float64") if "image_size_reported" in table else built * pd.NA
    size = built.fillna(reported).astype(float) / 1e9
    source = pd.Series(np.where(built.notna(), SIZE_BUILT, np.where(reported.notna(), SIZE_TRANSFERRED, "unknown")),
                       index=table.index)
    return size, source


def coverage(runs: list, pulls: pd.DataFrame, cluster_nodes: list[int] | None = None) -> dict:
    """The cluster sizes the catalog lists for the chosen runs, those the pulls cover, and the rest."""
    listed = sorted({int(n) for r in runs for n in r.node_counts if cluster_nodes is None or n in cluster_nodes})
    covered = sorted(int(n) for n in pulls["cluster_nodes"].dropna().unique())
    return {"listed": listed, "covered": covered, "unavailable": [n for n in listed if n not in covered]}


def coverage_markdown(sizes: dict) -> str:
    """What the notebook says about :func:`coverage`: which sizes are analysed, which are not here."""
    covered, missing = sizes["covered"], sizes["unavailable"]
    span = f" — a {covered[-1] / covered[0]:g}× range" if len(covered) > 1 else " — one size only"
    return (f"**Cluster sizes analysed:** {', '.join(map(str, covered))} nodes{span}. "
            + (f"**Listed in the catalog but not available here:** {', '.join(map(str, missing))} nodes; "
               "nothing below speaks for them." if missing else "Every listed size is available."))


def size_markdown(table: pd.DataFrame) -> str:
    """Say which images' sizes are built sizes and which are the transferred bytes of the Pulled message."""
    by_source = table.drop_duplicates(["run", "image_key"]).groupby("size_source")["image_key"].nunique()
    parts = [f"{n} image(s): {source}" for source, n in by_source.items()]
    note = (" An image whose tag encodes no size is grouped by its name and tag; where a size is needed, the "
            "bytes the kubelet reports pulling (`Image size:`, compressed) stand in, labelled *transferred*."
            if SIZE_TRANSFERRED in by_source.index else "")
    return "**Image sizes:** " + "; ".join(parts) + "." + note


def cluster_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per run x cluster size x instance: images, pods, distinct nodes, coverage, unresolved spreads."""
    return (table.groupby(["run", "cluster_nodes", "cluster_instance"])
                 .agg(images=("image_key", "nunique"), pods=("pulls", "sum"),
                      pods_per_image=("pulls", "median"), distinct_nodes_per_image=("nodes", "median"),
                      coverage_min=("coverage", "min"), coverage_median=("coverage", "median"),
                      pods_without_scheduled=("sched_missing", "sum"),
                      spreads_unresolved=("spread_resolved", lambda s: int((~s).sum())))
                 .reset_index())


def cluster_notes(clusters: pd.DataFrame) -> str:
    """Markdown notes on :func:`cluster_table`: nodes used per image, incomplete events, re-run clusters."""
    incomplete = clusters[clusters["coverage_min"] < 1]
    several = clusters.groupby(["run", "cluster_nodes"])["cluster_instance"].transform("nunique") > 1
    lines = ["* Distinct nodes used per image (median over images and clusters): "
             + ", ".join(f"{int(n)} nodes → {g['distinct_nodes_per_image'].median():g}"
                         for n, g in clusters.groupby("cluster_nodes")) + "."]
    if len(incomplete):
        lines.append("* Clusters whose events are incomplete for some image (coverage < 1): "
                     + "; ".join(f"{r.run} at {r.cluster_nodes} nodes (coverage down to {r.coverage_min:.2f}, "
                                 f"{r.pods_without_scheduled} pods without a Scheduled event)"
                                 for r in incomplete.itertuples()) + ". Missing pods can only shrink a max − min range.")
    if several.any():
        lines.append("* Several clusters of one size: " + "; ".join(
            f"{r.run} at {r.cluster_nodes} nodes, cluster #{r.cluster_instance}: {r.images} images"
            for r in clusters[several].itertuples()) + ".")
    return "\n".join(lines)


def span_table(pulls: pd.DataFrame, time: str = "pull_wait_s") -> pd.DataFrame:
    """Per run x cluster size x instance: the experiment's span, from the first pod's start to the last Pulled.

    ``pull_time_sum_s`` adds each image's median pull time: the span if the images ran back to back and
    nothing but pulling took time; ``other_s`` is the rest (scheduling, container start, job turnover,
    waiting for the slowest node). ``starts_estimated`` counts pods whose start had to be estimated.
    """
    df = pulls.copy()
    df["cluster_instance"] = cluster_instances(df)
    df["start_at"], df["start_estimated"] = pod_start(df, time)
    g = df.groupby(RUN_KEYS, sort=True)
    t = g.agg(images=("image_key", "nunique"), pulls=("pulled_at", "size"), first_start=("start_at", "min"),
              last_pulled=("pulled_at", "max"), starts_estimated=("start_estimated", "sum")).reset_index()
    t["span_s"] = _seconds(t["last_pulled"] - t["first_start"])
    medians = df.groupby([*RUN_KEYS, "image_key"])[time].median().groupby(RUN_KEYS).sum()
    t["pull_time_sum_s"] = medians.to_numpy()
    t["other_s"] = t["span_s"] - t["pull_time_sum_s"]
    t["starts_estimated"] = t["starts_estimated"].astype(int)
    return t


# --------------------------------------------------------------------------- growth with cluster size


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """``scipy.stats.spearmanr(x, y).statistic`` for two 1-D samples without NaN: the Pearson correlation of
    their average ranks, computed as spearmanr does (rankdata per column, then corrcoef), without its checks."""
    ranked = np.column_stack((sps.rankdata(x), sps.rankdata(y)))
    return float(np.corrcoef(ranked, rowvar=False)[1, 0])


def stratified_log_slope(table: pd.DataFrame, value: str, *, strata: tuple[str, ...] = ("run", "image_key"),
                         resolution: float = 1.0, n_boot: int = 2000, seed: int = 0) -> dict:
    """Slope b of log(value) on log(nodes) within strata (value ~ nodes^b), with a stratum bootstrap CI.

    Each stratum (an image within a run) is its own baseline, so large and small images compare only
    with themselves. Values are floored at ``resolution``; a stratum with fewer than two cluster sizes,
    or whose values are all at or below the resolution, says nothing and is counted as dropped.
    Resampling whole strata keeps an image's cluster sizes together.
    """
    d = table.dropna(subset=[value])
    nodes = d["cluster_nodes"].to_numpy(dtype=float)
    xs, ys = np.log(nodes), np.log(floored(d[value], resolution))
    resolved = (d[value] > resolution).to_numpy(dtype=bool)
    sxy, sxx, rhos, dropped = [], [], [], {"one cluster size": 0, "all at or below the resolution": 0}
    # Each stratum by its positions in float arrays (issue 16: per-stratum pandas selections were most of
    # this function's time); the same sums, and Spearman's rho as scipy's spearmanr computes it.
    for positions in d.groupby(list(strata), sort=True).indices.values():
        if np.unique(nodes[positions]).size < 2:
            dropped["one cluster size"] += 1
            continue
        if not resolved[positions].any():
            dropped["all at or below the resolution"] += 1
            continue
        sx, sy = xs[positions], ys[positions]
        x, y = sx - sx.mean(), sy - sy.mean()
        sxy.append(float(x @ y))
        sxx.append(float(x @ x))
        rhos.append(_spearman(sx, sy) if np.unique(sy).size > 1 else 0.0)
    k = len(sxy)
    out = {"strata": k, "dropped": dropped, "slope": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "rho_median": math.nan, "strata_rho_positive": 0, "strata_rho_negative": 0}
    if k == 0:
        return out
    a, b = np.asarray(sxy), np.asarray(sxx)
    weights = np.random.default_rng(seed).multinomial(k, np.full(k, 1.0 / k), size=n_boot)
    boot = (weights @ a) / (weights @ b)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    r = np.asarray(rhos, dtype=float)
    out.update(slope=float(a.sum() / b.sum()), ci_low=float(lo), ci_high=float(hi),
               rho_median=float(np.nanmedian(r)), strata_rho_positive=int((r > 0).sum()),
               strata_rho_negative=int((r < 0).sum()))
    return out


def relative_pull_time(pulls: pd.DataFrame, time: str = "pull_wait_s") -> pd.Series:
    """Each pull's time over the median of the same image in the same run (all cluster sizes).

    Comparing raw pulls between cluster sizes would mix images of 48 MB and 19 GB in different
    proportions wherever events were lost; relative to its own image, every pull is comparable.
    """
    med = pulls.groupby(["run", "image_key"])[time].transform("median")
    return pulls[time] / med


def pull_time_ratio(pulls: pd.DataFrame, time: str = "pull_wait_s", *, margin: float = 0.10,
                    n_boot: int = 2000, seed: int = 0) -> tuple[stats.EquivalenceResult, int, int]:
    """Median relative pull time at the largest over the smallest cluster size, with a 90% CI (TOST).

    Returns the result and the two cluster sizes. Pulls with a zero time cannot form a ratio and
    are left out (the kubelet reports 0 s only for sub-resolution pulls).
    """
    rel = relative_pull_time(pulls, time)
    ok = rel > 0
    sizes = sorted(pulls.loc[ok, "cluster_nodes"].dropna().astype(int).unique())
    small, large = sizes[0], sizes[-1]
    nodes = pulls["cluster_nodes"]
    res = stats.equivalence_test_log_ratio(rel[ok & (nodes == large)], rel[ok & (nodes == small)],
                                           margin=margin, n_boot=n_boot, seed=seed)
    return res, int(small), int(large)


MEASURES = ("pulled_range_s", "pulled_iqr_s", "node_range_matched_s", "sched_pulled_range_s", "image_wall_s")


def growth_table(table: pd.DataFrame, measures: tuple[str, ...] = MEASURES, *, n_boot: int = 2000,
                 seed: int = 0) -> pd.DataFrame:
    """The stratified log-log slope of every spread measure, over all runs and per run.

    Also over all runs restricted to images whose Pulled spread is resolved at every cluster size, so
    a reader can see whether the floor at the timestamp resolution drives the result.
    """
    resolution = float(table["resolution_s"].max())
    resolved_everywhere = table.groupby(["run", "image_key"])["spread_resolved"].transform("all")
    scopes = [("all runs", table), ("all runs, spread resolved at every size", table[resolved_everywhere])]
    scopes += [(run, g) for run, g in table.groupby("run", sort=False)]
    rows = []
    for scope, part in scopes:
        for measure in measures:
            r = stratified_log_slope(part, measure, resolution=resolution, n_boot=n_boot, seed=seed)
            rows.append({"scope": scope, "measure": measure, "slope": r["slope"], "ci_low": r["ci_low"],
                         "ci_high": r["ci_high"], "per_doubling": 2 ** r["slope"], "strata": r["strata"],
                         "strata_dropped": sum(r["dropped"].values()), "rho_median": r["rho_median"],
                         "strata_rho_positive": r["strata_rho_positive"],
                         "strata_rho_negative": r["strata_rho_negative"]})
    return pd.DataFrame(rows)


def pull_time_ratios(pulls: pd.DataFrame, time: str = "pull_wait_s", *, margin: float = 0.10,
                     n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Median relative pull time, largest over smallest cluster size, over all runs and per run (90% CI)."""
    rows = []
    for scope, part in [("all runs", pulls), *pulls.groupby("run", sort=False)]:
        if part["cluster_nodes"].nunique() < 2:
            continue
        eq, small, large = pull_time_ratio(part, time, margin=margin, n_boot=n_boot, seed=seed)
        rows.append({"scope": scope, "smallest_nodes": small, "largest_nodes": large, "ratio": eq.ratio,
                     "ci90_low": eq.ci_low, "ci90_high": eq.ci_high, "n_largest": eq.n_baseline,
                     "n_smallest": eq.n_treatment, "margin": margin, "equivalent": eq.equivalent,
                     "not_slower": eq.ci_high < 1 + margin})
    return pd.DataFrame(rows)


def span_ratios(pulls: pd.DataFrame, time: str = "pull_wait_s") -> pd.Series:
    """Per run: experiment span at its largest over its smallest cluster size.

    Only clusters that pulled every image of the run count (a partial attempt is shorter for that
    reason alone); several such clusters of one size are averaged.
    """
    spans = span_table(pulls, time)
    spans = spans[spans["images"] == spans.groupby("run")["images"].transform("max")]
    ratios = {}
    for run, g in spans.groupby("run"):
        by_size = g.groupby("cluster_nodes")["span_s"].mean().sort_index()
        if len(by_size) > 1:
            ratios[run] = by_size.iloc[-1] / by_size.iloc[0]
    return pd.Series(ratios, dtype=float)


def _sizes_text(sizes: list[int]) -> str:
    return ", ".join(str(s) for s in sizes) if sizes else "none"


def verdict_scale_variation(table: pd.DataFrame, pulls: pd.DataFrame, *, spread: str = "pulled_range_s",
                            time: str = "pull_wait_s", listed_sizes: list[int] | None = None,
                            margin: float = 0.10, n_boot: int = 2000, seed: int = 0) -> Verdict:
    """Claim scale-variation, from the per-image table (:func:`spread_table`) and the pulls behind it.

    Three checks: (1) the spread of Pulled timestamps grows with cluster size (stratified log-log
    slope, 95% CI above 0); (2) each image's wall time (first pod start to last Pulled) grows the same
    way; (3) pull time itself does not grow: the 90% CI of median relative pull time, largest over
    smallest cluster size, stays below 1 + ``margin`` (one-sided, the upper half of the TOST).
    All three: supported. Spread CI entirely at or below 0: not supported. Spread or wall time grows
    but not everything holds: partly supported. No detectable growth: not supported.
    Fewer than 3 cluster sizes: not testable.
    """
    sizes = sorted(int(s) for s in table["cluster_nodes"].dropna().unique())
    listed = sorted(set(int(s) for s in (listed_sizes or [])) - set(sizes))
    coverage = (f"cluster sizes covered: {_sizes_text(sizes)} nodes"
                + (f" (a {sizes[-1] / sizes[0]:g}x range only)" if len(sizes) > 1 else "")
                + (f"; listed in the catalog but not available here: {_sizes_text(listed)}" if listed else ""))
    if len(sizes) < 3:
        return Verdict(CLAIM, "not testable here",
                       f"fewer than 3 cluster sizes in the data; {coverage}", n=int(table["pulls"].sum()))
    resolution = float(table["resolution_s"].max())
    sl = stratified_log_slope(table, spread, resolution=resolution, n_boot=n_boot, seed=seed)
    if sl["strata"] == 0:
        return Verdict(CLAIM, "not testable here", f"no image has a resolved spread at two cluster sizes "
                       f"(dropped: {sl['dropped']}); {coverage}", n=int(table["pulls"].sum()))
    matched = stratified_log_slope(table, "node_range_matched_s", resolution=resolution, n_boot=n_boot, seed=seed)
    wall = stratified_log_slope(table, "image_wall_s", resolution=resolution, n_boot=n_boot, seed=seed)
    eq, small, large = pull_time_ratio(pulls, time, margin=margin, n_boot=n_boot, seed=seed)
    grows, no_growth = sl["ci_low"] > 0, sl["ci_high"] <= 0
    wall_grows = wall["ci_low"] > 0
    pull_flat = eq.ci_high < 1 + margin
    pull_grows = eq.ci_low > 1 + margin
    factor = 2 ** sl["slope"]
    measured = (f"{spread}: x{factor:.2f} per doubling of nodes (log-log slope {sl['slope']:.2f} "
                f"[{sl['ci_low']:.2f}, {sl['ci_high']:.2f}], {sl['strata']} run x image strata, median "
                f"within-stratum Spearman rho {sl['rho_median']:.2f}); node-count-matched range slope "
                f"{matched['slope']:.2f} [{matched['ci_low']:.2f}, {matched['ci_high']:.2f}]; image wall time slope "
                f"{wall['slope']:.2f} [{wall['ci_low']:.2f}, {wall['ci_high']:.2f}]; median relative {time} "
                f"{large} vs {small} nodes: {eq.ratio:.3f} [{eq.ci_low:.3f}, {eq.ci_high:.3f}] (90% CI, "
                f"n={eq.n_baseline} vs {eq.n_treatment})")
    parts = [f"spread {'grows' if grows else 'does not grow' if no_growth else 'shows no detectable growth'} "
             f"with cluster size (slope CI [{sl['ci_low']:.2f}, {sl['ci_high']:.2f}])"]
    if grows:
        m_ci = f"node-count-matched slope CI [{matched['ci_low']:.3f}, {matched['ci_high']:.3f}]"
        if matched["ci_low"] > 0:
            parts.append(f"more than drawing from more nodes alone would give ({m_ci})")
        elif matched["ci_high"] <= 0:
            parts.append(f"but none of it beyond what drawing from more nodes gives ({m_ci})")
        else:
            parts.append(f"but not detectably beyond what drawing from more nodes gives ({m_ci}): more nodes reach "
                         "further into the tails, per-node variation may not grow at all")
    wall_trend = "grows" if wall_grows else "shrinks" if wall["ci_high"] < 0 else "shows no detectable change"
    parts.append(f"per-image wall time (first pod start to last Pulled) {wall_trend} "
                 f"(slope CI [{wall['ci_low']:.3f}, {wall['ci_high']:.3f}])")
    parts.append(f"pull time {'does not grow by more than ' + format(margin, '.0%') if pull_flat else 'grows by more than ' + format(margin, '.0%') if pull_grows else 'may grow: the CI reaches past +' + format(margin, '.0%')} "
                 f"from {small} to {large} nodes (ratio {eq.ratio:.3f}, 90% CI [{eq.ci_low:.3f}, {eq.ci_high:.3f}])")
    spans = span_ratios(pulls, time)
    if len(spans):
        parts.append(f"experiment span, {large} vs {small} nodes within each run (clusters with all of the run's "
                     f"images): median ratio {spans.median():.2f} over {len(spans)} runs "
                     f"(from {spans.min():.2f} to {spans.max():.2f})")
    dropped = {k: v for k, v in sl["dropped"].items() if v}
    if dropped:
        parts.append("strata left out: " + ", ".join(f"{v} ({k})" for k, v in dropped.items()))
    parts.append(f"timestamps resolve {resolution:g} s; {coverage}")
    if no_growth:
        verdict = "not supported"
    elif grows and wall_grows and pull_flat:
        verdict = "supported"
    elif grows or wall_grows:
        verdict = "partly supported"
    else:
        verdict = "not supported"
    return Verdict(CLAIM, verdict, "; ".join(parts), measured=measured, value=sl["slope"],
                   ci_low=sl["ci_low"], ci_high=sl["ci_high"], unit=f"log-log slope of {spread} on nodes",
                   n=int(table["pulls"].sum()))


# --------------------------------------------------------------------------- the study of notebook 07

SPREAD_CSV_COLUMNS = ["run", "cluster_nodes", "cluster_instance", "image_key", "size_bytes", "layers",
                      "image_size_reported", "size_gb", "size_source", "pulls", "nodes", "coverage", "pulled_first",
                      "pulled_last", "pulled_range_s", "pulled_iqr_s", "matched_nodes", "node_range_matched_s",
                      "sched_missing", "sched_pulled_median_s", "sched_pulled_min_s", "sched_pulled_max_s",
                      "sched_pulled_range_s", "image_wall_s", "pull_s_median", "pull_wait_s_median", "resolution_s",
                      "spread_resolved"]


class ScaleInput:
    """Study 07's pulls: every study image of the chosen runs (sized or not), with cluster instances.

    ``availability`` is the event files here per run and cluster size; ``sizes`` the sizes the catalog
    lists, those covered and the rest (also recorded as ``cluster_sizes_<key>``).
    """

    def __init__(self, runs: list[str], cluster_nodes, time: str, out):
        from pullstudy import sources
        from .pulls import load_for_analysis

        selected = [sources.run_entry(r) for r in runs]
        availability = sources.availability(list(runs)).query("kind == 'events'")
        # Runs recorded on a live cluster (kube/<name>) are analysed beside the archive's, but the claim
        # concerns the upstream GKE runs: with one among them the verdict is reported, not judged.
        recorded = [r for r in runs if sources.is_recorded(r)]
        self.judged = not recorded
        if recorded:
            out.metric("recorded_run", recorded[0])
        self.availability = availability.pivot_table(
            index="run", columns="cluster_nodes", values="available", aggfunc="sum", fill_value=0
        ).rename_axis(columns="event files here, by cluster size (nodes)")
        # Every study image counts, whether or not its tag encodes a size (application images do not).
        pulls_by_run, self.report = load_for_analysis(runs, cluster_nodes, time, out, require_size=False)
        self.records = pd.concat(pulls_by_run.values(), ignore_index=True)
        self.records["cluster_instance"] = cluster_instances(self.records)
        self.sizes = coverage(selected, self.records, cluster_nodes)
        self.listed = self.sizes["listed"]
        for key, value in self.sizes.items():
            out.metric(f"cluster_sizes_{key}", value)


def load_study(runs: list[str], cluster_nodes, time: str, out) -> ScaleInput:
    return ScaleInput(runs, cluster_nodes, time, out)


def record_spread(table: pd.DataFrame, out) -> float:
    """Write ``spread-by-image`` and the timestamp resolution (metric); returns the resolution in seconds."""
    out.table(table[SPREAD_CSV_COLUMNS], "spread-by-image")
    return out.metric("timestamp_resolution_s", float(table["resolution_s"].max()))


def spread_summary(table: pd.DataFrame, time: str) -> pd.DataFrame:
    """Medians per run, cluster size and cluster of the spreads, the wall time and the pull time."""
    return (table.groupby(["run", "cluster_nodes", "cluster_instance"])
            [["pulled_range_s", "pulled_iqr_s", "node_range_matched_s", "sched_pulled_median_s", "image_wall_s",
              f"{time}_median"]].median().round(2)
            .rename(columns=lambda c: f"median {c}"))


def judge(table: pd.DataFrame, pulls: pd.DataFrame, *, listed: list[int], time: str, n_boot: int, seed: int,
          out, judged: bool = True) -> Verdict:
    """Claim ``scale-variation`` with its slope (``spread_slope``) and what was not testable; recorded in
    ``out`` as a verdict only when ``judged`` (no recorded run among the runs, :class:`ScaleInput`)."""
    verdict = verdict_scale_variation(table, pulls, spread="pulled_range_s", time=time,
                                      listed_sizes=listed, n_boot=n_boot, seed=seed)
    if judged:
        verdict = out.verdict(verdict)
    out.metric("not_testable", {verdict.claim_id: verdict.reason} if verdict.verdict == "not testable here" else {})
    out.metric("spread_slope", {"value": verdict.value, "ci_low": verdict.ci_low, "ci_high": verdict.ci_high,
                                "n": verdict.n, "unit": verdict.unit})
    return verdict

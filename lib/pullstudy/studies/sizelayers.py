"""Study 01: how pull time grows with image size and layer count, and the verdicts on its claims.

The verdicts are computed from the records passed in; the thresholds they use are the claims' own
figures (claims.md) and are stated in each verdict's reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import rules
from pullstudy import stats
from .claims import Verdict
from .pulls import replicate_units
from pullstudy.records import GB

NOT_TESTABLE = "not testable here"
MIN_SIZES = 3  # a trend needs at least three sizes (verdict_size_growth refuses fewer too)


def encoded_size_only(df: pd.DataFrame, run: str, out=None) -> pd.DataFrame:
    """The pulls whose tag encodes built size and layer count; the others counted as an exclusion.

    Study 01 loads every study-image pull (an application run's images encode neither), so that a
    run without synthetic images is reported part by part instead of refused as a whole.
    """
    missing = df["size_bytes"].isna() | df["layers"].isna()
    if out is not None and missing.any():
        out.excluded(f"{run}: image tag does not encode layers and size", int(missing.sum()))
    return df[~missing].reset_index(drop=True)


def untestable_parts(by_size: pd.DataFrame, by_layers: pd.DataFrame, size_run: str,
                     layers_run: str) -> dict[str, str]:
    """Which parts of study 01 these runs cannot answer, and why (empty when all can be done).

    Keys: the claim ids ``size-growth`` and ``layers-no-effect``, and ``model`` (the pull-time model,
    the two kubelet figures by layer count and the bytes transferred, which need built sizes).
    A part that is missing here is done; the notebook shows each reason and metrics.json keeps it.
    """
    reasons = {}
    sizes = by_size["size_bytes"].nunique()
    if sizes < MIN_SIZES:
        reasons["size-growth"] = (f"{size_run} has {sizes} image size(s) encoded in its tags, a trend needs at "
                                  f"least {MIN_SIZES}" + (" (its images, e.g. applications, do not encode a "
                                                          "built size)" if sizes == 0 else ""))
    counts = sorted(int(n) for n in by_layers["layers"].dropna().unique())
    if not counts:
        reasons["layers-no-effect"] = f"the images of {layers_run} do not encode a layer count in their tags"
    elif len(counts) == 1:
        reasons["layers-no-effect"] = (f"{layers_run} pulled images of one layer count only ({counts[0]}): "
                                       "nothing to compare")
    else:
        few = set(by_layers.loc[by_layers["layers"] == counts[0], "size_bytes"])
        many = set(by_layers.loc[by_layers["layers"] == counts[-1], "size_bytes"])
        if not few & many:
            reasons["layers-no-effect"] = (f"{layers_run} has no image size built with both {counts[0]} and "
                                           f"{counts[-1]} layers")
    if by_layers["size_bytes"].nunique() < 2:
        reasons["model"] = f"{layers_run} has fewer than 2 image sizes encoded in its tags: no size to fit against"
    return reasons


def not_testable(claim_id: str, reason: str, n: int | None = None) -> Verdict:
    """The verdict on a claim these runs cannot check, with the reason (the claim table shows it)."""
    return Verdict(claim_id, NOT_TESTABLE, f"not testable with this run: {reason}", n=n)


def verdict_line(label: str, v: Verdict) -> str:
    """One Markdown line for a verdict: the measurement, or why there is none."""
    if v.verdict == NOT_TESTABLE:
        return f"**{label}: not testable with this run.** {v.reason.removeprefix('not testable with this run: ')}."
    return f"**{label}:** {v.measured}. {v.reason}."


def model_lines(models: pd.DataFrame) -> list[str]:
    """The fitted models (from :func:`fit_models`) as Markdown bullets; a regime that failed says why."""
    lines = []
    for m in models.itertuples(index=False):
        if pd.isna(getattr(m, "throughput_mb_s", np.nan)):
            lines.append(f"* **{m.regime}, {m.bytes}**: not fitted ({getattr(m, 'error', 'no fit')})")
            continue
        layer_part = (f"{m.per_layer_ms:.1f} ms per layer [{m.per_layer_ms_ci_low:.1f}, {m.per_layer_ms_ci_high:.1f}], "
                      if pd.notna(getattr(m, "per_layer_ms", np.nan)) else "")
        lines.append(f"* **{m.regime}, {m.bytes}** (n={int(m.n)}, R²={m.r_squared:.3f}): fixed {m.fixed_s:.2f} s "
                     f"[{m.fixed_s_ci_low:.2f}, {m.fixed_s_ci_high:.2f}], {layer_part}"
                     f"{m.throughput_mb_s:.3g} MB/s [{m.throughput_mb_s_ci_low:.3g}, {m.throughput_mb_s_ci_high:.3g}]")
    return lines


def layer_difference(df: pd.DataFrame, time: str = "pull_wait_s", *, by: tuple[str, ...] = ("size_bytes",),
                     n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Median of the most-layered minus the least-layered image at each size, with a bootstrap CI."""
    few, many = int(df["layers"].min()), int(df["layers"].max())
    if few == many:
        raise ValueError(f"only one layer count ({few}) in the records: nothing to compare")
    rows = []
    for key, g in df.groupby(list(by)):
        key = key if isinstance(key, tuple) else (key,)
        d = stats.bootstrap_median_difference_ci(g.loc[g["layers"] == many, time], g.loc[g["layers"] == few, time],
                                                 n_boot=n_boot, seed=seed)
        row = dict(zip(by, key))
        row.update(layers_few=few, layers_many=many, n_few=d.n_b, n_many=d.n_a, difference_s=d.difference,
                   ci_low=d.ci_low, ci_high=d.ci_high)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["median_few_s"] = [df.loc[(df["layers"] == few) & _match(df, by, r), time].median() for _, r in out.iterrows()]
    out["ratio"] = (out["median_few_s"] + out["difference_s"]) / out["median_few_s"]
    out.attrs["median_over_sizes"] = median_difference_over_sizes(df, time, by=by, n_boot=n_boot, seed=seed)
    return out


def median_difference_over_sizes(df: pd.DataFrame, time: str = "pull_wait_s", *, by: tuple[str, ...] = ("size_bytes",),
                                 n_boot: int = 2000, seed: int = 0) -> dict:
    """The central estimate of the layer effect: the median over sizes of (many - few layers), cluster-level CI.

    Few- and many-layer images were pulled in the same clusters, so clusters are drawn once per
    resample for both (:func:`pullstudy.stats.cluster_bootstrap_group_medians`).
    """
    few, many = int(df["layers"].min()), int(df["layers"].max())
    data = df.assign(cluster_id=replicate_units(df))
    groups, point, boot, k = stats.cluster_bootstrap_group_medians(data, time, group=[*by, "layers"], n_boot=n_boot,
                                                                   seed=seed)
    index = {g: i for i, g in enumerate(groups)}
    diffs, boots = [], []
    for key in sorted({g[:-1] for g in groups}):
        if key + (many,) in index and key + (few,) in index:
            i, j = index[key + (many,)], index[key + (few,)]
            diffs.append(point[i] - point[j])
            boots.append(boot[:, i] - boot[:, j])
    if not diffs:
        return {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "clusters": k, "sizes": 0}
    with np.errstate(all="ignore"):
        dist = np.nanmedian(np.column_stack(boots), axis=1)
    low, high = stats.interval_of(dist)
    return {"estimate": float(np.median(diffs)), "ci_low": low, "ci_high": high, "clusters": k, "sizes": len(diffs)}


def _match(df: pd.DataFrame, by, row) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for col in by:
        mask &= df[col] == row[col]
    return mask


def verdict_size_growth(df: pd.DataFrame, time: str = "pull_wait_s", *, claimed_s: float = 120.0,
                        tolerance: float = 0.25, n_boot: int = 2000, seed: int = 0) -> Verdict:
    """Claim size-growth (rule ``trend``): pull time grows with size; the largest image took about `claimed_s`.

    The trend: the log-log slope of the median pull time on the image size, with a cluster-level
    interval (clusters resampled, then pulls within them; every size was pulled in the same
    clusters). The figure: the largest image's median, with its cluster-level interval, against
    ``claimed_s`` ± ``tolerance`` (the source says "about"). Supported when the slope's interval
    lies above 0 and the figure is consistent; partly when only the slope holds.
    """
    sizes = sorted(df["size_bytes"].dropna().unique())
    if len(sizes) < MIN_SIZES:
        return Verdict("size-growth", "not testable here", f"only {len(sizes)} image sizes in the data")
    data = df.assign(cluster_id=replicate_units(df))
    groups, point, boot, k = stats.cluster_bootstrap_group_medians(data, time, group="size_bytes", n_boot=n_boot,
                                                                   seed=seed)
    x = np.log(np.asarray(groups, float))
    xc = x - x.mean()

    def slope(medians):
        return (np.log(medians) - np.log(medians).mean()) @ xc / (xc @ xc)

    with np.errstate(all="ignore"):
        dist = np.array([slope(row) for row in boot])
    s_low, s_high = stats.interval_of(dist)
    est = float(slope(point))
    l_low, l_high = stats.interval_of(boot[:, -1])
    largest = point[-1]
    lo, hi = claimed_s * (1 - tolerance), claimed_s * (1 + tolerance)
    figure_ok = l_low <= hi and l_high >= lo
    rho, p = sps.spearmanr(df["size_bytes"].astype(float), df[time])
    size_gb = groups[-1] / GB
    n_largest = int(df["size_bytes"].eq(groups[-1]).sum())
    measured = (f"log-log slope of the median pull time on size {est:.2f} [{s_low:.2f}, {s_high:.2f}] "
                f"(cluster-level 95% CI, {k} clusters{'; one cluster: within-cluster variation only' if k < 2 else ''}) "
                f"over {len(groups)} sizes; largest image ({size_gb:.1f} GB): median {largest:.1f} s "
                f"[{l_low:.1f}, {l_high:.1f}], n={n_largest}; Spearman rho={rho:.2f} over {len(df)} pulls")
    verdict, why = rules.decide_trend(s_low, s_high, sub_claims={
        f"the largest image's median is consistent with 'about {claimed_s:.0f} s' ({lo:.0f}-{hi:.0f} s)": figure_ok})
    scope = f"cluster-level 95% CIs, {k} cluster{'s' if k != 1 else ''}" + ("" if k > 1 else ", within-cluster only")
    return Verdict("size-growth", verdict, f"{why} ({scope})", measured=measured, value=largest, ci_low=l_low,
                   ci_high=l_high, unit="s", n=n_largest, clusters=str(k))


def verdict_layers_no_effect(diff: pd.DataFrame, *, bound_s: float = 10.0) -> Verdict:
    """Claim layers-no-effect (rule ``bound``): at most ~`bound_s` slower with many layers.

    The central estimate is the median over sizes of (many - few layers) with its cluster-level
    interval (``diff.attrs["median_over_sizes"]``, from :func:`layer_difference`): supported when
    its upper end is at most the bound, not supported when its lower end exceeds it, partly
    supported in between. How many sizes' own intervals lie inside or beyond the bound is
    reported, but a single size never decides.
    """
    if diff.empty:
        return Verdict("layers-no-effect", "not testable here", "no sizes with both layer counts")
    few, many = int(diff["layers_few"].iloc[0]), int(diff["layers_many"].iloc[0])
    central = diff.attrs.get("median_over_sizes") or median_of_size_cis(diff)
    detectable = diff[(diff["ci_low"] > 0) | (diff["ci_high"] < 0)]
    within = diff[(diff["ci_low"] >= -bound_s) & (diff["ci_high"] <= bound_s)]
    beyond = diff[(diff["ci_low"] > bound_s) | (diff["ci_high"] < -bound_s)]
    worst = diff.loc[diff["difference_s"].abs().idxmax()]
    small = diff[diff["size_bytes"] <= diff["size_bytes"].median()]
    k = central.get("clusters")
    effect = rules.Effect(central["estimate"], central["ci_low"], central["ci_high"])
    measured = (f"{many} vs {few} layers: median over {len(diff)} sizes of the difference "
                f"{effect.estimate:+.1f} s [{effect.ci_low:+.1f}, {effect.ci_high:+.1f}]"
                + (f" (cluster-level 95% CI, {k} clusters)" if k else "")
                + f"; per size: CI excludes 0 at {len(detectable)}, inside ±{bound_s:.0f} s at {len(within)}, "
                f"beyond it at {len(beyond)}; largest difference {worst['difference_s']:+.1f} s at "
                f"{worst['size_bytes'] / GB:.2f} GB; on the smaller half of the images {many} layers take "
                f"{small['ratio'].median():.1f}x the time of {few}")
    verdict, why = rules.decide_bound(effect, bound_s)
    why += f" (median over {len(diff)} sizes" + (f", cluster-level 95% CI, {k} clusters)" if k else ")")
    return Verdict("layers-no-effect", verdict, why, measured=measured, value=effect.estimate,
                   ci_low=effect.ci_low, ci_high=effect.ci_high, unit="s (median difference over sizes)",
                   n=int(diff["n_few"].sum() + diff["n_many"].sum()), clusters=str(k) if k else "")


def median_of_size_cis(diff: pd.DataFrame) -> dict:
    """Fallback central estimate for a table without resamples: medians of the per-size estimates and limits.

    Conservative only in spirit (no cluster resampling); used for tables built by hand.
    """
    return {"estimate": float(diff["difference_s"].median()), "ci_low": float(diff["ci_low"].median()),
            "ci_high": float(diff["ci_high"].median()), "clusters": None}


def fit_models(df: pd.DataFrame, *, split_bytes: float | None = 1e9, time: str = "pull_wait_s",
               n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The pull-time model over all sizes and, if split_bytes is given, below and above it.

    One straight line rarely fits 48 MB and 19 GB alike (page cache absorbs small writes; large ones
    wait for the disk), so the regimes are fitted separately as well, each against both the built
    size and the bytes the runtime reported transferring.
    """
    regimes = {"all sizes": df}
    if split_bytes:
        regimes[f"< {split_bytes / GB:g} GB"] = df[df["size_bytes"] < split_bytes]
        regimes[f">= {split_bytes / GB:g} GB"] = df[df["size_bytes"] >= split_bytes]
    layers = "layers" if df["layers"].nunique() > 1 else None
    rows = []
    for regime, part in regimes.items():
        for size_col, basis in (("size_bytes", "uncompressed (built)"), ("image_size_reported", "as transferred")):
            row = {"regime": regime, "bytes": basis}
            try:
                row.update(stats.fit_pull_model(part, time=time, layers=layers, size=size_col,
                                                n_boot=n_boot, seed=seed).as_dict())
            except ValueError as exc:
                row["error"] = str(exc)
            rows.append(row)
    out = pd.DataFrame(rows)
    for col in [c for c in out.columns if c.endswith("_ci")]:
        out[[f"{col[:-3]}_ci_low", f"{col[:-3]}_ci_high"]] = pd.DataFrame(
            [v if isinstance(v, (list, tuple)) else (np.nan, np.nan) for v in out[col]], index=out.index)
        out = out.drop(columns=col)
    return out


# --------------------------------------------------------------------------- the study of notebook 01

class SizeLayersStudy:
    """Study 01 from its parameters: the size run and the layers run, from the archive or measured here.

    Built by :func:`study`. The archive gives two catalog runs (with ``backend="kube"`` either may be a run
    recorded on a live cluster, ``kube/<name>``); the local source one grid measured on this machine, which
    serves as both. Verdicts are recorded only for archived runs: a local or recorded run is reported, not judged.
    """

    def __init__(self, backend: str, params, out):
        from pullstudy.sources import BACKENDS

        self.params, self.out, self.backend = dict(params), out, backend
        time = self.params["time_column"]
        self.availability, recorded = None, []
        if backend in ("archive", "kube"):  # kube: either run may be one recorded on a live cluster (kube/<name>)
            from pullstudy import sources
            from .pulls import load_for_analysis

            self.size_run, self.layers_run = self.params["size_run"], self.params["layers_run"]
            self.availability = sources.availability([self.size_run, self.layers_run]).query("kind == 'events'")
            self.pulls, self.report = load_for_analysis([self.size_run, self.layers_run],
                                                        self.params["cluster_nodes"], time, out, require_size=False)
            self.by_size = encoded_size_only(self.pulls[self.size_run], self.size_run, out)
            self.by_layers = encoded_size_only(self.pulls[self.layers_run], self.layers_run, out)
            self.all_layers_pulls = self.pulls[self.layers_run]
            recorded = [r for r in (self.size_run, self.layers_run) if sources.is_recorded(r)]
            if recorded:
                out.metric("recorded_run", recorded[0])
        elif backend == "local":  # the same analysis of a grid measured on this machine (cold pulls)
            from pullstudy.sources.local.source import LocalSource

            loaded = LocalSource("01-pull-size-layers", self.params.get("local_grid")).load(time=time)
            out.metric("local_run", loaded.local_run)
            self.report = loaded.report
            self.by_size = self.by_layers = self.all_layers_pulls = loaded.records
            self.size_run = self.layers_run = loaded.source
        else:
            raise ValueError(f"backend={backend!r} is not a known source; choose one of {', '.join(BACKENDS)}")
        # The claims concern the upstream GKE runs: a run measured here or recorded on another cluster is
        # reported, not judged.
        self.judged = backend != "local" and not recorded
        self.untestable = out.metric("not_testable", untestable_parts(self.by_size, self.by_layers, self.size_run,
                                                                      self.layers_run))

    def overview(self) -> list:
        from IPython.display import Markdown

        shown = [] if self.availability is None else [self.availability]
        shown.append(Markdown(self.report))
        if self.untestable:
            shown.append(Markdown("**Not testable with these runs** (the rest is done):\n\n"
                                  + "\n".join(f"* `{part}`: {reason}" for part, reason in self.untestable.items())))
        return shown

    def _judge(self, v: Verdict, run: str) -> Verdict:
        if self.judged:  # see __init__: only archived runs are judged
            self.out.verdict(v, runs=[run])
        return v

    def size_verdict(self) -> Verdict:
        """Claim ``size-growth`` on the size run, and the largest image's median (metric ``largest_image``)."""
        p = self.params
        v = (not_testable("size-growth", self.untestable["size-growth"], n=len(self.by_size))
             if "size-growth" in self.untestable else
             verdict_size_growth(self.by_size, p["time_column"], n_boot=p["n_boot"], seed=p["seed"]))
        self._judge(v, self.size_run)
        self.out.metric("largest_image", {"median_s": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high, "n": v.n})
        return v

    def layer_difference(self) -> pd.DataFrame | None:
        """Many minus few layers, per size (``layer-difference``); None when the runs cannot say."""
        if "layers-no-effect" in self.untestable:
            return None
        p = self.params
        return self.out.table(layer_difference(self.by_layers, p["time_column"], n_boot=p["n_boot"], seed=p["seed"]),
                              "layer-difference")

    def layers_verdict(self, difference: pd.DataFrame | None) -> Verdict:
        """Claim ``layers-no-effect`` from :meth:`layer_difference` against the claim's own bound."""
        if difference is None:
            v = not_testable("layers-no-effect", self.untestable["layers-no-effect"], n=len(self.by_layers))
        else:
            v = verdict_layers_no_effect(difference, bound_s=self.params["layers_bound_s"])
            self.out.metric("layer_difference_median_over_sizes_s", float(difference["difference_s"].median()))
        return self._judge(v, self.layers_run)

    def queue_wait(self) -> pd.DataFrame:
        """pull_wait_s − pull_s over every pull of the layers run: the wait in the node's pull queue."""
        w = self.all_layers_pulls
        waited = (w["pull_wait_s"] - w["pull_s"]).describe(percentiles=[0.5, 0.9, 0.99])
        self.out.metric("queue_wait_s", waited.to_dict())
        return waited.round(3).to_frame("pull_wait_s − pull_s (s)")


def study(backend: str, params, out) -> SizeLayersStudy:
    """Study 01's runs loaded from the chosen source, with what they cannot answer (see :class:`SizeLayersStudy`)."""
    return SizeLayersStudy(backend, params, out)

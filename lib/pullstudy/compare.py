"""Compare a baseline run with a treatment run: per image, per cluster size and overall.

Used by the registry, local-SSD and image-streaming notebooks alike: the runs are parameters, so any
pair of catalog runs (or recorded runs) is compared by the same code. The speedup is
median(baseline) / median(treatment): above 1 the treatment pulls faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import stats
from .claims import Verdict
from .pulls import GB


class ComparisonError(ValueError):
    """Two runs that cannot be compared (no image in common)."""


@dataclass
class Comparison:
    baseline: str
    treatment: str
    time: str
    pulls: pd.DataFrame  # the common images' pulls of both runs, with an `arm` column
    per_image: pd.DataFrame
    per_image_cluster: pd.DataFrame
    overall: stats.GeomeanRatioCI
    overall_by_cluster: pd.DataFrame
    only_in: dict[str, list[str]]  # images one run has and the other lacks, by run
    margin: float


def _image_rows(groups, keys: list[str], time: str, margin: float, n_boot: int, seed: int) -> pd.DataFrame:
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        base, treat = g.loc[g["arm"] == "baseline"], g.loc[g["arm"] == "treatment"]
        if base.empty or treat.empty:
            continue
        r = stats.bootstrap_ratio_of_medians_ci(base[time], treat[time], n_boot=n_boot, seed=seed)
        eq = stats.equivalence_test_log_ratio(base[time], treat[time], margin=margin, n_boot=n_boot, seed=seed)
        row = dict(zip(keys, key))
        row.update(size_bytes=g["size_bytes"].iloc[0], layers=g["layers"].iloc[0],
                   n_baseline=r.n_baseline, n_treatment=r.n_treatment)
        for fig in ("pull_wait_s", "pull_s"):
            row[f"baseline_{fig}_median"] = base[fig].median()
            row[f"treatment_{fig}_median"] = treat[fig].median()
        row.update(speedup=r.ratio, ci_low=r.ci_low, ci_high=r.ci_high,
                   saved_s=base[time].median() - treat[time].median(),
                   baseline_iqr_s=base[time].quantile(0.75) - base[time].quantile(0.25),
                   treatment_iqr_s=treat[time].quantile(0.75) - treat[time].quantile(0.25),
                   equivalent=eq.equivalent)
        rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        out["size_gb"] = out["size_bytes"].astype("Float64") / GB
    return out


def compare_runs(baseline_pulls: pd.DataFrame, treatment_pulls: pd.DataFrame, *, baseline: str, treatment: str,
                 time: str = "pull_wait_s", margin: float = 0.10, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Speedups of the treatment over the baseline for the images both runs pulled."""
    keys_b, keys_t = set(baseline_pulls["image_key"]), set(treatment_pulls["image_key"])
    common = keys_b & keys_t
    if not common:
        raise ComparisonError(
            f"runs {baseline} and {treatment} have no image in common (baseline: {sorted(keys_b)[:3]}..., "
            f"treatment: {sorted(keys_t)[:3]}...): they cannot be compared; choose runs of the same image set")
    both = pd.concat([baseline_pulls.assign(arm="baseline"), treatment_pulls.assign(arm="treatment")],
                     ignore_index=True)
    both = both[both["image_key"].isin(common)].copy()
    order = both.groupby("image_key")["size_bytes"].first().sort_values(na_position="last").index
    per_image = _image_rows(both.groupby("image_key", sort=False), ["image_key"], time, margin, n_boot, seed)
    per_image = per_image.set_index("image_key").loc[[k for k in order if k in set(per_image["image_key"])]] \
        .reset_index()
    per_cluster = _image_rows(both.groupby(["cluster_nodes", "image_key"]), ["cluster_nodes", "image_key"], time,
                              margin, n_boot, seed)

    def groups_of(df):
        return [(g.loc[g["arm"] == "baseline", time], g.loc[g["arm"] == "treatment", time])
                for _, g in df.groupby("image_key")]

    overall = stats.bootstrap_geomean_ratio_ci(groups_of(both), n_boot=n_boot, margin=margin, seed=seed)
    by_cluster = []
    for nodes, g in both.groupby("cluster_nodes"):
        o = stats.bootstrap_geomean_ratio_ci(groups_of(g), n_boot=n_boot, margin=margin, seed=seed)
        by_cluster.append({"cluster_nodes": nodes, "images": o.groups, "speedup": o.ratio, "ci_low": o.ci_low,
                           "ci_high": o.ci_high, "equivalent": o.equivalent})
    return Comparison(baseline, treatment, time, both, per_image, per_cluster, overall, pd.DataFrame(by_cluster),
                      {baseline: sorted(keys_b - common), treatment: sorted(keys_t - common)}, margin)


def overall_text(c: Comparison) -> str:
    o = c.overall
    return (f"{c.treatment} vs {c.baseline}: speedup {o.ratio:.3g}x [{o.ci_low:.3g}, {o.ci_high:.3g}] "
            f"(geometric mean over {o.groups} images of the ratio of medians, {c.time}); per image "
            f"{c.per_image['speedup'].min():.3g}x to {c.per_image['speedup'].max():.3g}x")


def verdict_no_difference(c: Comparison, claim_id: str, *, transferred_fraction: float | None = None,
                          min_fraction: float = 0.05) -> Verdict:
    """A "made no difference" claim: supported only by shown equivalence within the margin.

    ``transferred_fraction`` (bytes the runtime reported pulling / bytes the image holds): when it is
    tiny, the experiment barely used the network, so equal pull times cannot speak for the network
    and the verdict is at most "partly supported".
    """
    o, m = c.overall, c.margin
    n_eq = int(c.per_image["equivalent"].sum())
    lo_b, hi_b = 1 / (1 + m), 1 + m
    measured = overall_text(c) + f"; equivalent within ±{m:.0%} for {n_eq} of {len(c.per_image)} images"
    if o.ci_high < lo_b or o.ci_low > hi_b:
        verdict, why = "not supported", f"the overall speedup's CI lies entirely outside ±{m:.0%}"
    elif not o.equivalent:
        verdict = "partly supported"
        why = (f"no large difference, but equivalence within ±{m:.0%} is not shown "
               f"({(1 - 2 * 0.05):.0%} CI {o.equivalence_ci[0]:.3g}-{o.equivalence_ci[1]:.3g})")
    else:
        verdict = "supported"
        why = f"overall equivalent within ±{m:.0%} ({(1 - 2 * 0.05):.0%} CI {o.equivalence_ci[0]:.3g}-" \
              f"{o.equivalence_ci[1]:.3g})"
    if transferred_fraction is not None and transferred_fraction < min_fraction and verdict == "supported":
        verdict = "partly supported"
        why += (f"; but the images transferred only {transferred_fraction:.2%} of their size over the network, "
                "so this experiment could not show whether the registry's location matters for real images")
    return Verdict(claim_id, verdict, why, measured=measured, value=o.ratio, ci_low=o.ci_low, ci_high=o.ci_high,
                   unit="x", n=int(c.per_image["n_baseline"].sum() + c.per_image["n_treatment"].sum()))


def verdict_speedup(c: Comparison, claim_id: str, claimed: tuple[float, float], *, note: str = "") -> Verdict:
    """A "made it faster by about X" claim: a real speedup, and the claimed figure among the measured ones.

    Supported when the overall CI lies above 1 and the claimed range overlaps the range spanned by
    the per-image CIs; partly supported when faster but by a different amount; not supported when
    no speedup is shown.
    """
    o = c.overall
    low, high = float(c.per_image["ci_low"].min()), float(c.per_image["ci_high"].max())
    claim_txt = f"{claimed[0]:g}x" if claimed[0] == claimed[1] else f"{claimed[0]:g}-{claimed[1]:g}x"
    largest = c.per_image.dropna(subset=["size_bytes"]).sort_values("size_bytes").tail(1)
    measured = overall_text(c)
    if len(largest):
        r = largest.iloc[0]
        measured += (f"; largest image ({r['size_bytes'] / GB:.1f} GB) {r['speedup']:.3g}x "
                     f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}], {r['saved_s']:.0f} s faster; IQR "
                     f"{r['baseline_iqr_s']:.1f} s -> {r['treatment_iqr_s']:.1f} s")
    if not o.ci_low > 1:
        verdict, why = "not supported", f"no speedup shown: the overall CI reaches {o.ci_low:.3g}x"
    elif claimed[0] <= high and claimed[1] >= low:
        verdict, why = "supported", (f"faster, and the claimed {claim_txt} lies within the measured per-image "
                                     f"range {low:.3g}-{high:.3g}x (95% CIs)")
    else:
        verdict, why = "partly supported", (f"faster, but by {low:.3g}-{high:.3g}x (per-image 95% CIs), "
                                            f"not the claimed {claim_txt}")
    if note:
        why += f"; {note}"
    return Verdict(claim_id, verdict, why, measured=measured, value=o.ratio, ci_low=o.ci_low, ci_high=o.ci_high,
                   unit="x", n=int(c.per_image["n_baseline"].sum() + c.per_image["n_treatment"].sum()))


def transferred_fraction(pulls: pd.DataFrame) -> float:
    """Median over images of the reported (transferred) bytes as a fraction of the built size."""
    per_image = pulls.groupby("image_key").agg(reported=("image_size_reported", "median"),
                                              built=("size_bytes", "first"))
    per_image = per_image.dropna()
    if per_image.empty:
        return float("nan")
    return float(np.median(per_image["reported"].astype(float) / per_image["built"].astype(float)))


def run_comparison(baseline: str, treatment: str, cluster_nodes, *, time: str = "pull_wait_s", margin: float = 0.10,
                   n_boot: int = 2000, seed: int = 0, out=None, require_size: bool = False) -> tuple[Comparison, str]:
    """Load two catalog runs, compare them, and record the standard tables in ``out``.

    The part every comparison notebook shares; what is particular to a study stays in its notebook.
    Returns the comparison and a Markdown account of the data read and excluded.
    """
    from .pulls import load_for_analysis

    pulls, report = load_for_analysis([baseline, treatment], cluster_nodes, time, out, require_size=require_size)
    c = compare_runs(pulls[baseline], pulls[treatment], baseline=baseline, treatment=treatment, time=time,
                     margin=margin, n_boot=n_boot, seed=seed)
    for run, missing in c.only_in.items():
        if missing:
            report += f"\n* images only in **{run}**, left out of the comparison: {', '.join(missing)}"
    if out is not None:
        out.table(c.per_image, "speedup-per-image")
        out.table(c.per_image_cluster, "speedup-per-image-cluster")
        out.table(c.overall_by_cluster, "speedup-by-cluster")
        out.metric("overall_speedup", {"ratio": c.overall.ratio, "ci_low": c.overall.ci_low,
                                       "ci_high": c.overall.ci_high, "images": c.overall.groups,
                                       "equivalent_within_margin": c.overall.equivalent, "margin": margin})
    return c, report

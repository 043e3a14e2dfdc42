"""Compare a baseline run with a treatment run: per image, per cluster size and overall.

Used by the registry, local-SSD and image-streaming notebooks alike: the runs are parameters, so any
pair of catalog runs (or recorded runs) is compared by the same code. The speedup is
median(baseline) / median(treatment): above 1 the treatment pulls faster.

Two intervals stand beside every speedup. The *within-run* interval resamples pulls, as if every
pull were independent. The *cluster-level* interval resamples the clusters first (each cluster size
of an archived run was created and deleted on its own; a local run's repetitions play that part)
and then pulls within them: pulls in one cluster share its disks, network and moment in time, so
this is the interval re-running would have to respect, and the one the verdicts use. Next to both
stands the noise floor: how far two archived runs of the same nominal conditions came apart
(:mod:`pullstudy.studies.noise`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import noise, rules
from pullstudy import stats
from .claims import CLAIMS, Verdict
from .pulls import load_sources, replicate_units
from pullstudy.records import GB
from pullstudy.sources.interface import RecordSource
from pullstudy.sources.archive.source import ArchiveSource


class ComparisonError(ValueError):
    """Two runs that cannot be compared (no image in common, or a run compared with itself)."""


@dataclass
class Comparison:
    baseline: str
    treatment: str
    time: str
    pulls: pd.DataFrame  # the common images' pulls of both runs, with `arm` and `cluster_id` columns
    per_image: pd.DataFrame
    per_image_cluster: pd.DataFrame
    overall: stats.GeomeanRatioCI  # within-run interval
    overall_by_cluster: pd.DataFrame
    only_in: dict[str, list[str]]  # images one run has and the other lacks, by run
    margin: float
    overall_cluster: stats.GeomeanRatioCI | None = None  # cluster-level interval (the verdicts use it)
    typical: tuple[float, float, float] = (np.nan, np.nan, np.nan)  # median per-image speedup, cluster CI
    clusters: dict[str, int] = field(default_factory=dict)
    floor: rules.NoiseFloor | None = None
    nulls: pd.DataFrame | None = None  # the null comparisons behind the floor
    replications: list["Comparison"] = field(default_factory=list)  # the same change in other rounds
    replications_missing: list[str] = field(default_factory=list)  # ... that could not be compared here, why

    def effect(self) -> rules.Effect:
        """The overall speedup as the verdict rules see it."""
        o, w = self.overall_cluster or self.overall, self.overall
        k = (self.clusters.get("baseline", 0), self.clusters.get("treatment", 0))
        return rules.Effect(o.ratio, o.ci_low, o.ci_high, w.ci_low, w.ci_high, k, self.floor, self.floor_note())

    def floor_note(self) -> str:
        """Why no floor stands beside this comparison (empty when one does)."""
        if self.floor is not None or self.nulls is None:
            return ""
        if self.nulls.empty:
            return "the catalog holds no re-run of either arm's conditions"
        pairs = ", ".join(f"{r.treatment} vs {r.baseline}" for r in self.nulls.itertuples())
        return f"re-runs of these conditions are catalogued ({pairs}) but could not be compared here"

    def typical_effect(self) -> rules.Effect:
        est, lo, hi = self.typical
        return rules.Effect(est, lo, hi, clusters=(self.clusters.get("baseline", 0),
                                                   self.clusters.get("treatment", 0)), floor=self.floor)


def _median(x: np.ndarray) -> float:
    """pandas' Series.median on a float array: the median of the values that are not NaN (NaN if none)."""
    x = x[~np.isnan(x)]
    return float(np.median(x)) if x.size else np.nan


def _iqr(x: np.ndarray) -> float:
    """Series.quantile(0.75) - Series.quantile(0.25) (linear interpolation, NaNs skipped)."""
    x = x[~np.isnan(x)]
    if not x.size:
        return np.nan
    high, low = np.quantile(x, [0.75, 0.25])
    return float(high - low)


def _image_rows(frame: pd.DataFrame, keys: list[str], time: str, margin: float, n_boot: int, seed: int,
                sort: bool = True) -> pd.DataFrame:
    """One row per group of ``keys`` with both arms: the speedup with its CI, the equivalence test, both
    timing figures' medians. The groups' rows are taken by position from float arrays made once (issue
    16: per-group pandas selections were most of a comparison's time); the figures are pandas' own."""
    arrays = {c: frame[c].to_numpy(dtype=float, na_value=np.nan) for c in {time, "pull_wait_s", "pull_s"}}
    is_base = (frame["arm"] == "baseline").to_numpy()
    size, layers = frame["size_bytes"].array, frame["layers"].array
    rows = []
    for key, positions in frame.groupby(keys, sort=sort).indices.items():
        key = key if isinstance(key, tuple) else (key,)
        base_at, treat_at = positions[is_base[positions]], positions[~is_base[positions]]
        if not base_at.size or not treat_at.size:
            continue
        base, treat = arrays[time][base_at], arrays[time][treat_at]
        r = stats.bootstrap_ratio_of_medians_ci(base, treat, n_boot=n_boot, seed=seed)
        eq = stats.equivalence_test_log_ratio(base, treat, margin=margin, n_boot=n_boot, seed=seed)
        row = dict(zip(keys, key))
        row.update(size_bytes=size[positions[0]], layers=layers[positions[0]],
                   n_baseline=r.n_baseline, n_treatment=r.n_treatment)
        for fig in ("pull_wait_s", "pull_s"):
            row[f"baseline_{fig}_median"] = _median(arrays[fig][base_at])
            row[f"treatment_{fig}_median"] = _median(arrays[fig][treat_at])
        row.update(speedup=r.ratio, ci_low=r.ci_low, ci_high=r.ci_high,
                   saved_s=_median(base) - _median(treat),
                   baseline_iqr_s=_iqr(base), treatment_iqr_s=_iqr(treat),
                   equivalent=eq.equivalent)
        rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        out["size_gb"] = out["size_bytes"].astype("Float64") / GB
    return out


def compare_runs(baseline_pulls: pd.DataFrame, treatment_pulls: pd.DataFrame, *, baseline: str, treatment: str,
                 time: str = "pull_wait_s", margin: float = 0.10, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Speedups of the treatment over the baseline for the images both runs pulled."""
    if baseline == treatment:
        raise ComparisonError(f"baseline and treatment are the same ({baseline!r}): a run compared with itself "
                              "says nothing; choose two different runs")
    keys_b, keys_t = set(baseline_pulls["image_key"]), set(treatment_pulls["image_key"])
    common = keys_b & keys_t
    if not common:
        raise ComparisonError(
            f"runs {baseline} and {treatment} have no image in common (baseline: {sorted(keys_b)[:3]}..., "
            f"treatment: {sorted(keys_t)[:3]}...): they cannot be compared; choose runs of the same image set")
    both = pd.concat([baseline_pulls.assign(arm="baseline"), treatment_pulls.assign(arm="treatment")],
                     ignore_index=True)
    both = both[both["image_key"].isin(common)].copy()
    both["cluster_id"] = both["arm"] + ": " + replicate_units(both)
    order = both.groupby("image_key")["size_bytes"].first().sort_values(na_position="last").index
    per_image = _image_rows(both, ["image_key"], time, margin, n_boot, seed, sort=False)
    per_image = per_image.set_index("image_key").loc[[k for k in order if k in set(per_image["image_key"])]] \
        .reset_index()
    per_cluster = _image_rows(both, ["cluster_nodes", "image_key"], time, margin, n_boot, seed)

    values = both[time].to_numpy(dtype=float, na_value=np.nan)
    is_base = (both["arm"] == "baseline").to_numpy()

    def groups_of(df):  # (baseline, treatment) times per image, by position (as in _image_rows)
        at = both.index.get_indexer(df.index)
        groups = []
        for positions in df.groupby("image_key").indices.values():
            rows = at[positions]
            groups.append((values[rows[is_base[rows]]], values[rows[~is_base[rows]]]))
        return groups

    overall = stats.bootstrap_geomean_ratio_ci(groups_of(both), n_boot=n_boot, margin=margin, seed=seed)
    cb = stats.cluster_bootstrap_log_ratios(both, time, n_boot=n_boot, seed=seed)
    overall_cluster = stats.cluster_geomean_ratio_ci(cb, margin=margin)
    cis = stats.cluster_group_ratio_cis(cb).rename(columns={"group": "image_key"})
    per_image = per_image.merge(cis[["image_key", "cluster_ci_low", "cluster_ci_high"]], on="image_key", how="left")
    by_cluster = []
    for nodes, g in both.groupby("cluster_nodes"):
        o = stats.bootstrap_geomean_ratio_ci(groups_of(g), n_boot=n_boot, margin=margin, seed=seed)
        by_cluster.append({"cluster_nodes": nodes, "images": o.groups, "speedup": o.ratio, "ci_low": o.ci_low,
                           "ci_high": o.ci_high, "equivalent": o.equivalent})
    return Comparison(baseline, treatment, time, both, per_image, per_cluster, overall, pd.DataFrame(by_cluster),
                      {baseline: sorted(keys_b - common), treatment: sorted(keys_t - common)}, margin,
                      overall_cluster=overall_cluster, typical=stats.cluster_median_of_ratios_ci(cb),
                      clusters=cb.clusters)


def overall_text(c: Comparison) -> str:
    o = c.overall
    text = (f"{c.treatment} vs {c.baseline}: speedup {o.ratio:.3g}x (geometric mean over {o.groups} images of the "
            f"ratio of medians, {c.time})")
    if c.overall_cluster is not None:
        text += "; " + c.effect().text()
    else:
        text += f" [{o.ci_low:.3g}, {o.ci_high:.3g}]"
    return text + (f"; per image {c.per_image['speedup'].min():.3g}x to {c.per_image['speedup'].max():.3g}x")


def _n(c: Comparison) -> int:
    return int(c.per_image["n_baseline"].sum() + c.per_image["n_treatment"].sum())


def _verdict(claim_id: str, c: Comparison, verdict: str, why: str, measured: str) -> Verdict:
    e = c.effect()
    return Verdict(claim_id, verdict, why, measured=measured, value=e.estimate, ci_low=e.ci_low, ci_high=e.ci_high,
                   unit="x", n=_n(c), within_ci_low=e.within_low, within_ci_high=e.within_high,
                   clusters=f"{e.clusters[0]}+{e.clusters[1]}", noise_floor=e.floor.factor if e.floor else None)


def _across_rounds(claim_id: str, c: Comparison, decide) -> Verdict:
    """Apply ``decide(comparison) -> (verdict, why)`` to the comparison and each replication; combine."""
    verdict, why = decide(c)
    if c.replications:  # each round with its intervals; the floors once, at the end
        rounds = [(f"{c.treatment} vs {c.baseline}", verdict, f"{why}; {c.effect().text(with_floor=False)}")]
        floors = set()
        for r in c.replications:
            v, w = decide(r)
            rounds.append((f"{r.treatment} vs {r.baseline}", v, f"{w}; {r.effect().text(with_floor=False)}"))
        verdict, why = rules.combine_rounds(rounds)
        for comp in (c, *c.replications):
            e = comp.effect()
            floors.add(e.floor.text() if e.floor else f"{comp.treatment} vs {comp.baseline}: "
                       f"{e.floor_note or 'no re-run of these conditions is archived'}, so its noise floor is unknown")
        why += "; " + "; ".join(sorted(floors))
        return _verdict(claim_id, c, verdict, why, overall_text(c))
    why = f"{why}; {c.effect().text()}"
    if c.replications_missing:
        why += ("; the same change in another round could not be compared here, so this rests on one round: "
                + "; ".join(c.replications_missing))
    elif c.nulls is not None:
        why += "; no other round of the archive tested this change"
    return _verdict(claim_id, c, verdict, why, overall_text(c))


def verdict_no_difference(c: Comparison, claim_id: str, *, transferred_fraction: float | None = None,
                          min_fraction: float = 0.05) -> Verdict:
    """A "made no difference" claim: rule ``equivalence`` of :mod:`pullstudy.studies.rules`, in every round.

    ``transferred_fraction`` (bytes the runtime reported pulling / bytes the image holds): when it is
    tiny, the experiment barely used the network, so equal pull times cannot speak for the network
    and the verdict is at most "partly supported".
    """
    def decide(comp: Comparison) -> tuple[str, str]:
        o = comp.overall_cluster or comp.overall
        verdict, why = rules.decide_equivalence(comp.effect(), o.equivalence_ci, comp.margin)
        n_eq = int(comp.per_image["equivalent"].sum())
        return verdict, why + f"; equivalent within ±{comp.margin:.0%} for {n_eq} of {len(comp.per_image)} images"

    v = _across_rounds(claim_id, c, decide)
    if transferred_fraction is not None and transferred_fraction < min_fraction and v.verdict == "supported":
        v.verdict = "partly supported"
        v.reason += (f"; but the images transferred only {transferred_fraction:.2%} of their size over the network, "
                     "so this experiment could not show whether the registry's location matters for real images")
    return v


def verdict_speedup(c: Comparison, claim_id: str, claimed: float, *, note: str = "") -> Verdict:
    """A "made it about F times faster" claim: rule ``factor`` on the overall speedup, in every round."""
    rounding = CLAIMS[claim_id].rounding

    def decide(comp: Comparison) -> tuple[str, str]:
        return rules.decide_factor(comp.effect(), claimed, rounding=rounding)

    v = _across_rounds(claim_id, c, decide)
    largest = c.per_image.dropna(subset=["size_bytes"]).sort_values("size_bytes").tail(1)
    if len(largest):
        r = largest.iloc[0]
        v.measured += (f"; largest image ({r['size_bytes'] / GB:.1f} GB) {r['speedup']:.3g}x "
                       f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}], {r['saved_s']:.0f} s faster; IQR "
                       f"{r['baseline_iqr_s']:.1f} s -> {r['treatment_iqr_s']:.1f} s")
    if note:
        v.reason += f"; {note}"
    return v


def verdict_speedup_range(c: Comparison, claim_id: str, claimed: tuple[float, float], *, note: str = "") -> Verdict:
    """A "F1-F2 times faster across images" claim: rule ``range`` (the typical image), in every round."""
    low, high = claimed

    def decide(comp: Comparison) -> tuple[str, str]:
        sp = comp.per_image["speedup"].astype(float)
        share = float(((sp >= low) & (sp <= high)).mean()) if len(sp) else 0.0
        return rules.decide_range(comp.effect(), comp.typical_effect(), share, len(sp), (low, high))

    v = _across_rounds(claim_id, c, decide)
    if note:
        v.reason += f"; {note}"
    return v


def transferred_fraction(pulls: pd.DataFrame) -> float:
    """Median over images of the reported (transferred) bytes as a fraction of the built size."""
    per_image = pulls.groupby("image_key").agg(reported=("image_size_reported", "median"),
                                              built=("size_bytes", "first"))
    per_image = per_image.dropna()
    if per_image.empty:
        return float("nan")
    return float(np.median(per_image["reported"].astype(float) / per_image["built"].astype(float)))


def transfer_text(transfer: pd.DataFrame, fraction: float, c: Comparison) -> str:
    """What the bytes transferred say about a registry comparison, in a sentence or two for the notebook.

    Where the images encode no built size (application images), the share of it transferred cannot
    be computed, and the text says so instead of failing.
    """
    sized = transfer.dropna(subset=["size_bytes", "image_size_reported"])
    if sized.empty:
        moved = transfer["image_size_reported"].dropna()
        return ("These images' tags encode no built size, so the share of it that crossed the network cannot be "
                "computed" + (f"; the runtime reported {moved.median() / 1e6:.1f} MB per image (median)"
                              if len(moved) else "") + ".")
    largest = sized.sort_values("size_bytes").iloc[-1]
    slowest = c.per_image["baseline_pull_wait_s_median"].max()
    return (f"The largest image, built to **{largest.size_bytes / 1e9:.1f} GB**, transferred "
            f"**{largest.image_size_reported / 1e6:.1f} MB** ({largest.compression_ratio:.0f}x compression); over all "
            f"images the median pull moved **{fraction:.2%}** of the image's size over the network. At even 100 MB/s "
            f"that is {largest.image_size_reported / 100e6:.2f} s of a {slowest:.0f} s pull. Where that fraction is "
            "tiny the time is spent decompressing and writing, and a closer registry cannot show; with "
            "incompressible content (the local backend's `random` images) the bytes really travel.")


def _compare_sources(baseline: RecordSource, treatment: RecordSource, cluster_nodes, *, time: str, margin: float,
                     n_boot: int, seed: int, require_size: bool, out=None) -> tuple[Comparison, str]:
    pulls, report = load_sources([baseline, treatment], cluster_nodes, time, out, require_size=require_size,
                                 progress=out is not None)
    c = compare_runs(pulls[baseline.id], pulls[treatment.id], baseline=baseline.label, treatment=treatment.label,
                     time=time, margin=margin, n_boot=n_boot, seed=seed)
    return c, report


def null_comparisons(baseline: str, treatment: str, cluster_nodes, *, time: str = "pull_wait_s",
                     margin: float = 0.10, n_boot: int = 2000, seed: int = 0,
                     require_size: bool = False) -> pd.DataFrame:
    """The same-condition pairs that apply to a comparison, compared with the same code (computed, not typed).

    A pair whose data is not here, or that shares no image at these cluster sizes, is listed with
    its reason and does not count towards the floor.
    """
    rows = []
    for a, b in noise.applicable_pairs(baseline, treatment):
        row = {"baseline": a, "treatment": b}
        try:
            c, _ = _compare_sources(ArchiveSource(a), ArchiveSource(b), cluster_nodes, time=time, margin=margin,
                                    n_boot=n_boot, seed=seed, require_size=require_size)
        except (ComparisonError, RuntimeError) as exc:
            row.update(speedup=np.nan, status=f"not compared: {exc}")
        else:
            e = c.effect()
            row.update(images=c.overall.groups, speedup=e.estimate, ci_low=e.ci_low, ci_high=e.ci_high,
                       within_ci_low=e.within_low, within_ci_high=e.within_high,
                       clusters=f"{e.clusters[0]}+{e.clusters[1]}", status="compared")
        rows.append(row)
    columns = ["baseline", "treatment", "images", "speedup", "ci_low", "ci_high", "within_ci_low", "within_ci_high",
               "clusters", "status"]
    return pd.DataFrame(rows, columns=columns)


def run_comparison(baseline: str, treatment: str, cluster_nodes, *, time: str = "pull_wait_s", margin: float = 0.10,
                   n_boot: int = 2000, seed: int = 0, out=None, require_size: bool = False,
                   with_floor: bool = True) -> tuple[Comparison, str]:
    """Load two catalog runs, compare them, put them next to re-runs, and record the standard tables in ``out``.

    The part every comparison notebook shares. Besides the comparison itself: the null comparisons
    of the archive's same-condition pairs (the noise floor) and the same change in the other round
    (replications), each computed with the same code. Returns the comparison and a Markdown account
    of the data read and excluded.
    """
    c, report = _compare_sources(ArchiveSource(baseline), ArchiveSource(treatment), cluster_nodes, time=time,
                                 margin=margin, n_boot=n_boot, seed=seed, require_size=require_size, out=out)
    for run, missing in c.only_in.items():
        if missing:
            report += f"\n* images only in **{run}**, left out of the comparison: {', '.join(missing)}"
    if with_floor:
        report += "\n" + attach_reruns(c, cluster_nodes, require_size=require_size, n_boot=n_boot, seed=seed)
    if out is not None:
        record(c, out)
    return c, report


def attach_reruns(c: Comparison, cluster_nodes, *, require_size: bool = False, n_boot: int = 2000,
                  seed: int = 0, replicate: bool = True, _nulls: dict | None = None) -> str:
    """Put an archived comparison next to re-runs: its null comparisons (the floor) and its replications.

    Returns Markdown lines for the notebook's account of the data. A replication usually has the same
    same-condition pairs as the comparison it replicates: their null comparisons are computed once for
    this call and its replications (``_nulls``, by pairs and options; issue 16: 8 of the 15 comparisons
    of notebook 02 were repeats), each getting its own copy of the table.
    """
    opts = dict(time=c.time, margin=c.margin, n_boot=n_boot, seed=seed, require_size=require_size)
    _nulls = {} if _nulls is None else _nulls
    key = (tuple(noise.applicable_pairs(c.baseline, c.treatment)), repr(cluster_nodes), tuple(sorted(opts.items())))
    if key not in _nulls:
        _nulls[key] = null_comparisons(c.baseline, c.treatment, cluster_nodes, **opts)
    c.nulls = _nulls[key].copy()
    c.floor = noise.floor_from(c.nulls[c.nulls["status"] == "compared"])
    lines = []
    for a, b in (noise.replications(c.baseline, c.treatment) if replicate else []):
        try:
            r, _ = _compare_sources(ArchiveSource(a), ArchiveSource(b), cluster_nodes, **opts)
        except (ComparisonError, RuntimeError) as exc:
            lines.append(f"* the same change in another round, **{b} vs {a}**, could not be compared: {exc}")
            c.replications_missing.append(f"{b} vs {a} ({str(exc).split(';')[0]})")
            continue
        attach_reruns(r, cluster_nodes, require_size=require_size, n_boot=n_boot, seed=seed, replicate=False,
                      _nulls=_nulls)
        c.replications.append(r)
        lines.append(f"* the same change in another round: **{b} vs {a}**, {r.effect().text()}")
    lines.append("* " + (c.floor.text() if c.floor else f"{c.floor_note()}: the noise floor is unknown"))
    return "\n".join(lines)


def rounds_table(c: Comparison) -> pd.DataFrame:
    """The comparison and its replications in other rounds, with both intervals and the floor: one row each."""
    rows = []
    for comp, role in [(c, "this comparison"), *[(r, "replication") for r in c.replications]]:
        e = comp.effect()
        rows.append({"comparison": f"{comp.treatment} vs {comp.baseline}", "role": role,
                     "images": comp.overall.groups, "speedup": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high,
                     "within_ci_low": e.within_low, "within_ci_high": e.within_high,
                     "clusters": f"{e.clusters[0]}+{e.clusters[1]}",
                     "noise_floor": e.floor.factor if e.floor else np.nan})
    for r in (c.nulls.itertuples() if c.nulls is not None else []):
        if r.status == "compared":
            rows.append({"comparison": f"{r.treatment} vs {r.baseline}", "role": "null (same conditions)",
                         "images": r.images, "speedup": r.speedup, "ci_low": r.ci_low, "ci_high": r.ci_high,
                         "within_ci_low": r.within_ci_low, "within_ci_high": r.within_ci_high,
                         "clusters": r.clusters, "noise_floor": np.nan})
    return pd.DataFrame(rows)


def record(c: Comparison, out) -> None:
    """The standard tables and metrics of a comparison, in a StudyOutput."""
    out.table(c.per_image, "speedup-per-image")
    out.table(c.per_image_cluster, "speedup-per-image-cluster")
    out.table(c.overall_by_cluster, "speedup-by-cluster")
    e = c.effect()
    out.metric("overall_speedup", {"ratio": c.overall.ratio, "ci_low": e.ci_low, "ci_high": e.ci_high,
                                   "within_ci_low": e.within_low, "within_ci_high": e.within_high,
                                   "clusters": c.clusters, "images": c.overall.groups,
                                   "equivalent_within_margin": (c.overall_cluster or c.overall).equivalent,
                                   "margin": c.margin})
    if c.nulls is not None:
        out.table(c.nulls, "null-comparisons")
        out.metric("noise_floor", {"factor": c.floor.factor if c.floor else None,
                                   "pairs": list(c.floor.pairs) if c.floor else []})

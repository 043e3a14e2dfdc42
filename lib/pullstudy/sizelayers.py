"""Study 01: how pull time grows with image size and layer count, and the verdicts on its claims.

The verdicts are computed from the records passed in; the thresholds they use are the claims' own
figures (claims.md) and are stated in each verdict's reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import stats
from .claims import Verdict
from .pulls import GB

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
    return out


def _match(df: pd.DataFrame, by, row) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for col in by:
        mask &= df[col] == row[col]
    return mask


def verdict_size_growth(df: pd.DataFrame, time: str = "pull_wait_s", *, claimed_s: float = 120.0,
                        tolerance: float = 0.25, n_boot: int = 2000, seed: int = 0) -> Verdict:
    """Claim size-growth: pull time grows with size; the largest image took about `claimed_s`."""
    medians = df.groupby("size_bytes")[time].median().sort_index()
    if len(medians) < 3:
        return Verdict("size-growth", "not testable here", f"only {len(medians)} image sizes in the data")
    rho, p = sps.spearmanr(df["size_bytes"].astype(float), df[time])
    monotonic = bool(np.all(np.diff(medians.to_numpy()) > 0))
    largest = df[df["size_bytes"] == medians.index[-1]][time]
    ci = stats.bootstrap_median_ci(largest, n_boot=n_boot, seed=seed)
    lo, hi = claimed_s * (1 - tolerance), claimed_s * (1 + tolerance)
    figure_ok = ci.ci_low <= hi and ci.ci_high >= lo
    grows = monotonic and rho > 0.8 and p < 0.001
    size_gb = medians.index[-1] / GB
    measured = (f"largest image ({size_gb:.1f} GB): median {ci.median:.1f} s [{ci.ci_low:.1f}, {ci.ci_high:.1f}], "
                f"n={ci.n}; Spearman rho={rho:.2f} over {len(df)} pulls")
    if grows and figure_ok:
        verdict, why = "supported", (f"medians rise at every one of {len(medians)} sizes (rho={rho:.2f}, p={p:.1e}) "
                                     f"and the largest image's CI overlaps 'about 2 minutes' ({lo:.0f}-{hi:.0f} s)")
    elif grows:
        verdict, why = "partly supported", (f"pull time grows with size (rho={rho:.2f}) but the largest image's "
                                            f"median CI lies outside {lo:.0f}-{hi:.0f} s")
    else:
        verdict, why = "not supported", (f"medians are not increasing with size at every step "
                                         f"(monotonic={monotonic}, rho={rho:.2f}, p={p:.1e})")
    return Verdict("size-growth", verdict, why, measured=measured, value=ci.median, ci_low=ci.ci_low,
                   ci_high=ci.ci_high, unit="s", n=ci.n)


def verdict_layers_no_effect(diff: pd.DataFrame, *, bound_s: float = 10.0) -> Verdict:
    """Claim layers-no-effect: layers don't seem to matter, at most ~`bound_s` slower for many layers.

    "No effect" is not read from an absence of evidence: the claimed bound is tested as an equivalence
    margin (every size's CI of the difference inside +-bound_s). Within the bound and no difference
    detectable at most sizes: supported. Within the bound but a real difference: partly supported.
    A size whose whole CI lies beyond the bound: not supported. Otherwise too uncertain to tell.
    """
    if diff.empty:
        return Verdict("layers-no-effect", "not testable here", "no sizes with both layer counts")
    few, many = int(diff["layers_few"].iloc[0]), int(diff["layers_many"].iloc[0])
    detectable = diff[(diff["ci_low"] > 0) | (diff["ci_high"] < 0)]
    within = diff[(diff["ci_low"] >= -bound_s) & (diff["ci_high"] <= bound_s)]
    beyond = diff[(diff["ci_low"] > bound_s) | (diff["ci_high"] < -bound_s)]
    worst = diff.loc[diff["difference_s"].abs().idxmax()]
    typical = float(diff["difference_s"].median())
    small = diff[diff["size_bytes"] <= diff["size_bytes"].median()]
    measured = (f"{many} vs {few} layers: median difference {typical:+.1f} s over {len(diff)} sizes "
                f"(largest {worst['difference_s']:+.1f} s [{worst['ci_low']:.1f}, {worst['ci_high']:.1f}] at "
                f"{worst['size_bytes'] / GB:.2f} GB); CI excludes 0 at {len(detectable)} of {len(diff)} sizes, "
                f"inside +-{bound_s:.0f} s at {len(within)}")
    matters = len(detectable) * 2 > len(diff)
    parts = []
    if matters:
        parts.append(f"layers do matter: {many} layers add {typical:.1f} s (median over sizes), detectable at "
                     f"{len(detectable)} of {len(diff)} sizes and {small['ratio'].median():.1f}x the pull time of "
                     f"the smaller half of the images")
    if len(beyond):
        parts.append(f"at {len(beyond)} sizes the whole CI lies beyond the claimed {bound_s:.0f} s")
    elif len(within) < len(diff):
        parts.append(f"the claimed bound of {bound_s:.0f} s holds at {len(within)} sizes; at "
                     f"{len(diff) - len(within)} the CI is too wide to tell")
    else:
        parts.append(f"every size's CI lies inside the claimed +-{bound_s:.0f} s")
    if len(beyond):
        verdict = "not supported"
    elif matters or len(within) < len(diff):
        verdict = "partly supported"
    else:
        verdict = "supported"
        parts.insert(0, "no difference detectable at most sizes")
    why = "; ".join(parts)
    # The value tested against the bound is the largest difference; its CI is that size's own.
    return Verdict("layers-no-effect", verdict, why, measured=measured, value=float(worst["difference_s"]),
                   ci_low=float(worst["ci_low"]), ci_high=float(worst["ci_high"]), unit="s (largest difference)",
                   n=int(diff["n_few"].sum() + diff["n_many"].sum()))


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

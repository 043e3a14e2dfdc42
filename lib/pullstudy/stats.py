"""Statistics behind the pull-time notebooks: bootstrap medians, contrasts, equivalence, a pull-time model.

Pull times are skewed and have outliers (retries, throttled registries), so the notebooks report
medians with percentile-bootstrap intervals rather than means with normal-theory intervals.

Reproducibility rules that every function here follows:

* all randomness comes from ``np.random.default_rng(seed)``, so same inputs + same seed give
  identical output;
* each sample (or, for the model, each table of rows) is sorted before resampling, so the result
  depends only on the data, not on the row order in which a CSV or a ``groupby`` delivered it;
* every resample is drawn at once as one ``(n_boot, n)`` index array (vectorized, no Python loops).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DifferenceCI",
    "EquivalenceResult",
    "MedianCI",
    "PullModel",
    "RatioCI",
    "bootstrap_median_ci",
    "bootstrap_median_difference_ci",
    "bootstrap_ratio_of_medians_ci",
    "equivalence_test_log_ratio",
    "fit_pull_model",
    "median_table",
]

FloatArray = NDArray[np.float64]
NAN = float("nan")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MedianCI:
    """Median with a percentile-bootstrap interval; ``n`` is the number of non-NaN values."""

    median: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class DifferenceCI:
    """median(a) - median(b), with a bootstrap interval from resampling a and b independently."""

    difference: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int


@dataclass(frozen=True)
class RatioCI:
    """Speedup median(baseline) / median(treatment); > 1 means the treatment pulls faster."""

    ratio: float
    ci_low: float
    ci_high: float
    n_baseline: int
    n_treatment: int


@dataclass(frozen=True)
class EquivalenceResult:
    """Bootstrap TOST on the log ratio of medians; the interval is reported on the ratio scale."""

    ratio: float
    ci_low: float
    ci_high: float
    margin: float
    equivalent: bool
    n_baseline: int
    n_treatment: int


# --------------------------------------------------------------------------- helpers


def _check_bootstrap_args(n_boot: int, confidence: float) -> None:
    """Fail early: a silent n_boot=0 or confidence=95 would produce meaningless intervals."""
    if not isinstance(n_boot, numbers.Integral) or isinstance(n_boot, bool) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def _sample(values: ArrayLike, name: str = "values") -> FloatArray:
    """1-D float sample without NaNs, sorted so results do not depend on input order."""
    if isinstance(values, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        # Nullable dtypes (Float64, Int64) hold pd.NA, which np.asarray cannot turn into a float.
        arr = values.to_numpy(dtype=float, na_value=np.nan)
    else:
        arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return np.sort(arr[~np.isnan(arr)])


def _require_positive(x: FloatArray, name: str) -> None:
    """Ratios and log ratios of medians only make sense for positive durations."""
    if x.size and np.any(x <= 0):
        raise ValueError(f"{name} must contain only positive pull times to form a ratio of medians")


def _bootstrap_medians(x: FloatArray, n_boot: int, rng: np.random.Generator) -> FloatArray:
    """Medians of n_boot resamples, drawn as one (n_boot, n) index array."""
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    return np.median(x[idx], axis=1)


def _percentile_interval(boot: FloatArray, confidence: float) -> tuple[float, float]:
    """Equal-tailed percentile interval of a bootstrap distribution."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return float(low), float(high)


def _positive_ratio_bootstrap(
    baseline: ArrayLike, treatment: ArrayLike, n_boot: int, seed: int
) -> tuple[FloatArray, FloatArray, float, FloatArray | None]:
    """Shared core of the ratio CI and the equivalence test, so both see the same resamples."""
    base = _sample(baseline, "baseline")
    treat = _sample(treatment, "treatment")
    _require_positive(base, "baseline")
    _require_positive(treat, "treatment")
    if base.size == 0 or treat.size == 0:
        return base, treat, NAN, None
    key = (base.tobytes(), treat.tobytes(), n_boot, seed)
    boot = _RATIO_BOOTS.get(key)
    if boot is None:
        rng = np.random.default_rng(seed)
        boot = _bootstrap_medians(base, n_boot, rng) / _bootstrap_medians(treat, n_boot, rng)
        boot.flags.writeable = False  # shared by the callers of the same samples
        _RATIO_BOOTS[key] = boot
        while len(_RATIO_BOOTS) > 16:
            del _RATIO_BOOTS[next(iter(_RATIO_BOOTS))]
    return base, treat, float(np.median(base) / np.median(treat)), boot


# The last few bootstrap distributions, by the exact samples, resample count and seed: the ratio CI and the
# equivalence test of one comparison ask for the same one in turn (issue 16: a third of the calls of a
# comparison notebook). A pure function of its key, so the result is the same, computed once.
_RATIO_BOOTS: dict = {}


# --------------------------------------------------------------------------- medians


def bootstrap_median_ci(
    values: ArrayLike, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> MedianCI:
    """Median with a percentile-bootstrap CI; robust to the long right tail of pull times.

    NaNs (failed or missing pulls) are dropped first; an empty sample gives NaNs with n=0.
    """
    _check_bootstrap_args(n_boot, confidence)
    x = _sample(values)
    if x.size == 0:
        return MedianCI(NAN, NAN, NAN, 0)
    boot = _bootstrap_medians(x, n_boot, np.random.default_rng(seed))
    low, high = _percentile_interval(boot, confidence)
    return MedianCI(float(np.median(x)), low, high, int(x.size))


def median_table(
    df: pd.DataFrame,
    by: str | Sequence[str],
    value: str,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Tidy per-group medians with CIs, ready to plot or print in a notebook.

    Every group is bootstrapped with the same ``seed``, so a group's row does not change when
    other groups are added, removed or reordered. Rows with a missing group key form their own
    group (they are not silently dropped).
    """
    _check_bootstrap_args(n_boot, confidence)
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [*keys, value] if c not in df.columns]
    if missing:
        raise ValueError(f"columns not in the frame: {missing}")
    columns = [*keys, "n", "median", "ci_low", "ci_high"]
    rows = []
    for key, group in df.groupby(keys, sort=True, dropna=False, observed=True):
        ci = bootstrap_median_ci(group[value], n_boot=n_boot, confidence=confidence, seed=seed)
        rows.append([*key, ci.n, ci.median, ci.ci_low, ci.ci_high])
    table = pd.DataFrame(rows, columns=columns)
    table = table.astype({"n": "int64", "median": float, "ci_low": float, "ci_high": float})
    return table.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)


# --------------------------------------------------------------------------- two-sample contrasts


def bootstrap_median_difference_ci(
    a: ArrayLike, b: ArrayLike, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> DifferenceCI:
    """median(a) - median(b) in seconds, for reporting absolute savings with uncertainty.

    The two samples come from independent runs, so they are resampled independently.
    """
    _check_bootstrap_args(n_boot, confidence)
    xa, xb = _sample(a, "a"), _sample(b, "b")
    if xa.size == 0 or xb.size == 0:
        return DifferenceCI(NAN, NAN, NAN, int(xa.size), int(xb.size))
    rng = np.random.default_rng(seed)
    boot = _bootstrap_medians(xa, n_boot, rng) - _bootstrap_medians(xb, n_boot, rng)
    low, high = _percentile_interval(boot, confidence)
    diff = float(np.median(xa) - np.median(xb))
    return DifferenceCI(diff, low, high, int(xa.size), int(xb.size))


def bootstrap_ratio_of_medians_ci(
    baseline: ArrayLike,
    treatment: ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RatioCI:
    """Speedup median(baseline) / median(treatment): scale-free, so comparable across images.

    Values must be positive (they are durations); NaNs are dropped; an empty side gives NaNs.
    """
    _check_bootstrap_args(n_boot, confidence)
    base, treat, ratio, boot = _positive_ratio_bootstrap(baseline, treatment, n_boot, seed)
    if boot is None:
        return RatioCI(NAN, NAN, NAN, int(base.size), int(treat.size))
    low, high = _percentile_interval(boot, confidence)
    return RatioCI(ratio, low, high, int(base.size), int(treat.size))


@dataclass(frozen=True)
class GeomeanRatioCI:
    """Geometric mean over groups of per-group ratios of medians, with its bootstrap CI."""

    ratio: float
    ci_low: float
    ci_high: float
    groups: int
    equivalent: bool | None  # within +-margin at level alpha (a (1 - 2 alpha) CI), None if no margin given
    equivalence_ci: tuple[float, float] | None


def bootstrap_geomean_ratio_ci(
    groups: Sequence[tuple[ArrayLike, ArrayLike]],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    margin: float | None = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> GeomeanRatioCI:
    """One overall speedup across images of very different sizes, each image weighing the same.

    Pooling all pulls would let the slowest images dominate; the geometric mean of per-image
    ratios of medians does not. Each group's two samples are resampled independently within the
    group (a stratified bootstrap). With ``margin``, also the equivalence verdict of the overall
    ratio (two one-sided tests via the (1 - 2 alpha) bootstrap CI of its log).
    """
    _check_bootstrap_args(n_boot, confidence)
    logs, points = [], []
    for i, (baseline, treatment) in enumerate(groups):
        base, treat, ratio, boot = _positive_ratio_bootstrap(baseline, treatment, n_boot, seed + i)
        if boot is None:
            continue
        logs.append(np.log(boot))
        points.append(np.log(ratio))
    if not logs:
        return GeomeanRatioCI(NAN, NAN, NAN, 0, None, None)
    mean_log = np.mean(np.vstack(logs), axis=0)
    return _geomean_result(mean_log, float(np.mean(points)), len(logs), confidence, margin, alpha)


def _geomean_result(mean_log: FloatArray, point_log: float, groups: int, confidence: float,
                    margin: float | None, alpha: float) -> GeomeanRatioCI:
    """The geometric-mean result from the bootstrap distribution of its log, with the TOST verdict."""
    low, high = _percentile_interval(mean_log, confidence)
    equivalent = eq_ci = None
    if margin is not None:
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        eq_low, eq_high = _percentile_interval(mean_log, 1 - 2 * alpha)
        bound = math.log1p(margin)
        equivalent = bool(-bound < eq_low and eq_high < bound)
        eq_ci = (math.exp(eq_low), math.exp(eq_high))
    return GeomeanRatioCI(float(math.exp(point_log)), math.exp(low), math.exp(high), groups, equivalent, eq_ci)


def equivalence_test_log_ratio(
    baseline: ArrayLike,
    treatment: ArrayLike,
    *,
    margin: float = 0.10,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> EquivalenceResult:
    """Claim "no practical difference" only with positive evidence, not from a non-significant test.

    Two one-sided tests at level ``alpha`` on log(median(baseline) / median(treatment)) against
    the bounds +-log(1 + margin), done by the bootstrap: the medians are declared equivalent when
    the (1 - 2*alpha) percentile interval of the log ratio lies strictly inside the bounds, i.e.
    the ratio is within (1/(1+margin), 1+margin). Small or noisy samples give wide intervals and
    therefore ``equivalent=False``. An empty side gives NaNs and ``equivalent=False``.
    """
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin!r}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be strictly between 0 and 0.5, got {alpha!r}")
    _check_bootstrap_args(n_boot, 1.0 - 2.0 * alpha)
    base, treat, ratio, boot = _positive_ratio_bootstrap(baseline, treatment, n_boot, seed)
    n_base, n_treat = int(base.size), int(treat.size)
    if boot is None:
        return EquivalenceResult(NAN, NAN, NAN, float(margin), False, n_base, n_treat)
    log_low, log_high = _percentile_interval(np.log(boot), 1.0 - 2.0 * alpha)
    bound = math.log1p(margin)
    equivalent = bool(-bound < log_low and log_high < bound)
    return EquivalenceResult(
        ratio, math.exp(log_low), math.exp(log_high), float(margin), equivalent, n_base, n_treat
    )


# --------------------------------------------------------------------------- pull-time model


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class PullModel:
    """pull time = fixed_s + per-layer cost * layers + bytes / throughput, fitted by OLS.

    CIs are percentile intervals from a case-resampling bootstrap of rows. ``n_boot_used`` counts
    the resamples in which all coefficients were identifiable (e.g. not all one layer count);
    the others are left out of the intervals. Without a layer term the per_layer_ms fields are NaN.
    """

    n: int
    fixed_s: float
    fixed_s_ci: tuple[float, float]
    per_layer_ms: float
    per_layer_ms_ci: tuple[float, float]
    throughput_mb_s: float
    throughput_mb_s_ci: tuple[float, float]
    seconds_per_gb: float
    seconds_per_gb_ci: tuple[float, float]
    r_squared: float
    size_column: str
    n_boot_used: int

    def predict(self, layers: ArrayLike | None, size_bytes: ArrayLike) -> np.ndarray:
        """Expected pull time in seconds; ``layers`` may be None for a model fitted without it."""
        size = np.asarray(size_bytes, dtype=float)
        base = self.fixed_s + self.seconds_per_gb * 1e-9 * size
        if math.isnan(self.per_layer_ms):
            return np.asarray(base, dtype=float)
        if layers is None:
            raise ValueError("this model has a per-layer term: pass the layer counts")
        return np.asarray(base + self.per_layer_ms * 1e-3 * np.asarray(layers, dtype=float))

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-safe values for results files; inf and NaN become None (JSON has neither)."""
        out: dict[str, object] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str):
                out[field.name] = value
            elif isinstance(value, tuple):
                out[field.name] = [_json_float(v) for v in value]
            elif isinstance(value, numbers.Integral):
                out[field.name] = int(value)
            else:
                out[field.name] = _json_float(value)
        return out


def _model_rows(df: pd.DataFrame, columns: list[str]) -> FloatArray:
    """Finite rows of the model columns, sorted so the fit does not depend on row order."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"columns not in the frame: {missing}")
    data = df[columns].to_numpy(dtype=float, na_value=np.nan)
    data = data[np.isfinite(data).all(axis=1)]
    return data[np.lexsort(data.T[::-1])]


def _check_identifiable(design: FloatArray, names: list[str], hint: str) -> None:
    """Refuse a fit whose coefficients the data cannot separate, and say which one and why."""
    layers_col = names.index("layers") if "layers" in names else None
    if layers_col is not None and np.ptp(design[:, layers_col]) == 0:
        raise ValueError(
            "rank-deficient design: the per-layer cost cannot be identified because every row "
            f"has {design[0, layers_col]:g} layers. {hint}"
        )
    if np.ptp(design[:, -1]) == 0:
        raise ValueError(
            "rank-deficient design: the throughput (bytes slope) cannot be identified because "
            f"every row has the same size ({design[0, -1]:g} bytes)"
        )
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError(
            "rank-deficient design: size is an exact linear function of the layer count, so the "
            f"per-layer and per-byte costs cannot be separated. {hint}"
        )


def _batched_lstsq(design: FloatArray, y: FloatArray, idx: NDArray[np.intp]) -> FloatArray:
    """OLS on every resample at once via a batched SVD; rank-deficient resamples are dropped."""
    xb, yb = design[idx], y[idx]  # (B, n, p), (B, n)
    u, s, vt = np.linalg.svd(xb, full_matrices=False)
    eps = np.finfo(float).eps * max(design.shape)
    ok = s[:, -1] > s[:, 0] * eps
    u, s, vt, yb = u[ok], s[ok], vt[ok], yb[ok]
    w = np.einsum("bnp,bn->bp", u, yb) / s
    return np.einsum("bqp,bq->bp", vt, w)


def _interval(boot: FloatArray, confidence: float) -> tuple[float, float]:
    return _percentile_interval(boot, confidence) if boot.size else (NAN, NAN)


def _throughput(slope: float) -> float:
    """Decimal MB/s from seconds per byte; a non-positive slope means no measurable cost: inf."""
    return 1e-6 / slope if slope > 0 else math.inf


def fit_pull_model(
    df: pd.DataFrame,
    *,
    time: str = "pull_wait_s",
    layers: str | None = "layers",
    size: str = "size_bytes",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PullModel:
    """Split pull time into a fixed cost, a per-layer cost and a bandwidth term.

    Ordinary least squares of ``time`` on [1, layers, size]; rows with a NaN (or inf) in any of
    these columns are dropped. Pass ``layers=None`` to fit time = fixed + bytes / throughput when
    the layer count does not vary. Raises ValueError for fewer than 4 usable rows or a design the
    data cannot identify.
    """
    _check_bootstrap_args(n_boot, confidence)
    columns = [time, *([layers] if layers is not None else []), size]
    data = _model_rows(df, columns)
    n = data.shape[0]
    if n < 4:
        raise ValueError(f"need at least 4 rows with finite {columns}, got {n}")
    y = data[:, 0]
    design = np.column_stack([np.ones(n), data[:, 1:]])
    names = ["fixed", *(["layers"] if layers is not None else []), "size"]
    hint = "Pass layers=None to fit without the per-layer term."
    _check_identifiable(design, names, hint)

    # Bytes are ~1e9 and layers ~10: scale columns so the SVD sees a well-conditioned matrix.
    scale = np.abs(design).max(axis=0)
    scaled = design / scale
    coef = np.linalg.lstsq(scaled, y, rcond=None)[0] / scale
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = _batched_lstsq(scaled, y, idx) / scale

    residual = y - design @ coef
    total = np.sum((y - y.mean()) ** 2)
    r_squared = float(1.0 - residual @ residual / total) if total > 0 else NAN

    slope_low, slope_high = _interval(boot[:, -1], confidence)
    if layers is not None:
        per_layer_ms = float(coef[1] * 1e3)
        per_layer_ms_ci = _interval(boot[:, 1] * 1e3, confidence)
    else:
        per_layer_ms, per_layer_ms_ci = NAN, (NAN, NAN)
    return PullModel(
        n=n,
        fixed_s=float(coef[0]),
        fixed_s_ci=_interval(boot[:, 0], confidence),
        per_layer_ms=per_layer_ms,
        per_layer_ms_ci=per_layer_ms_ci,
        throughput_mb_s=_throughput(float(coef[-1])),
        throughput_mb_s_ci=(
            (_throughput(slope_high), _throughput(slope_low)) if boot.size else (NAN, NAN)
        ),
        seconds_per_gb=float(coef[-1] * 1e9),
        seconds_per_gb_ci=(slope_low * 1e9, slope_high * 1e9),
        r_squared=r_squared,
        size_column=size,
        n_boot_used=int(boot.shape[0]),
    )


# --------------------------------------------------------------------------- cluster-level intervals


@dataclass(frozen=True)
class ClusterBootstrap:
    """Bootstrap log ratios per group when clusters, not pulls, are the unit of replication.

    ``boot`` has shape (n_boot, groups): one row per resample, NaN where a resample left a group
    without pulls on one side. ``clusters`` counts the cluster instances behind each arm; with one
    cluster on a side nothing at the top level can vary, so the interval then covers within-cluster
    variation only (``within_only``).
    """

    groups: list
    point: FloatArray  # log ratio of medians per group, from the data as it is
    boot: FloatArray
    clusters: dict[str, int]

    @property
    def within_only(self) -> bool:
        return min(self.clusters.values(), default=0) < 2


def _cluster_medians(values: list[FloatArray], pick: NDArray[np.intp], rng: np.random.Generator) -> FloatArray:
    """Medians of two-stage resamples: the clusters in ``pick`` (n_boot, k), then pulls within each.

    Clusters differ in size, so each cluster's values sit in one padded row; a pull index is drawn
    in [0, size) of the chosen cluster and padding is masked out before the median.
    """
    n_boot, k = pick.shape
    lengths = np.array([v.size for v in values])
    width = max(int(lengths.max()), 1)
    padded = np.full((len(values), width), np.nan)
    for i, v in enumerate(values):
        padded[i, :v.size] = v
    chosen_len = lengths[pick]  # (n_boot, k)
    draw = (rng.random((n_boot, k, width)) * np.maximum(chosen_len, 1)[..., None]).astype(np.intp)
    vals = padded[pick[..., None], draw]
    vals = np.where(np.arange(width)[None, None, :] < chosen_len[..., None], vals, np.nan)
    return _row_nanmedians(vals.reshape(n_boot, -1))


def _row_nanmedians(rows: FloatArray) -> FloatArray:
    """``np.nanmedian(rows, axis=1)`` (NaN for a row of NaNs, without the warning), from one sort: the
    middle value, or the mean of the two middle values, of each row's non-NaN values (NaNs sort last).
    np.nanmedian takes numpy.ma's path for rows this short, several times slower (issue 16); the
    values are the same (tests/test_stats.py)."""
    out = np.full(rows.shape[0], np.nan)
    count = rows.shape[1] - np.isnan(rows).sum(axis=1)
    has = count > 0
    if has.any():
        ordered = np.sort(rows[has], axis=1)
        n, at = count[has], np.arange(int(has.sum()))
        out[has] = (ordered[at, (n - 1) // 2] + ordered[at, n // 2]) / 2
    return out


def cluster_bootstrap_log_ratios(
    df: pd.DataFrame,
    value: str,
    *,
    group: str = "image_key",
    cluster: str = "cluster_id",
    arm: str = "arm",
    arms: tuple[str, str] = ("baseline", "treatment"),
    n_boot: int = 2000,
    seed: int = 0,
) -> ClusterBootstrap:
    """Hierarchical bootstrap of log(median(baseline) / median(treatment)) for every group at once.

    Pulls in one cluster share its disks, network path and moment in time, so resampling pulls as if
    independent understates what re-running the experiment would vary. Each arm's clusters are
    resampled with replacement first — once per resample for all groups, because a cluster's
    conditions affect every image pulled in it — and then each group's pulls within the chosen
    clusters. Groups missing from an arm are left out.
    """
    _check_bootstrap_args(n_boot, 0.95)
    data = df[[group, cluster, arm, value]].dropna(subset=[value])
    if (data[value] <= 0).any():
        raise ValueError(f"{value} must contain only positive pull times to form a ratio of medians")
    rng = np.random.default_rng(seed)
    present = [g for g, d in data.groupby(group, sort=True) if set(arms) <= set(d[arm])]
    picks, cluster_ids = {}, {}
    for side in arms:
        ids = sorted(data.loc[data[arm] == side, cluster].unique().tolist(), key=str)
        cluster_ids[side] = ids
        picks[side] = rng.integers(0, max(len(ids), 1), size=(n_boot, max(len(ids), 1)))
    point = np.full(len(present), np.nan)
    boot = np.full((n_boot, len(present)), np.nan)
    for j, g in enumerate(present):
        sub = data[data[group] == g]
        medians, boots = {}, {}
        for side in arms:
            s = sub[sub[arm] == side]
            by_cluster = [np.sort(s.loc[s[cluster] == c, value].to_numpy(float)) for c in cluster_ids[side]]
            medians[side] = float(np.median(s[value].to_numpy(float)))
            boots[side] = _cluster_medians(by_cluster, picks[side], rng)
        point[j] = math.log(medians[arms[0]] / medians[arms[1]])
        boot[:, j] = np.log(boots[arms[0]] / boots[arms[1]])
    return ClusterBootstrap(present, point, boot, {side: len(ids) for side, ids in cluster_ids.items()})


def cluster_geomean_ratio_ci(
    cb: ClusterBootstrap, *, confidence: float = 0.95, margin: float | None = None, alpha: float = 0.05
) -> GeomeanRatioCI:
    """The geometric mean over groups of the ratios of medians, with its cluster-level interval."""
    if not cb.groups:
        return GeomeanRatioCI(NAN, NAN, NAN, 0, None, None)
    with np.errstate(all="ignore"):
        mean_log = np.nanmean(cb.boot, axis=1)
    mean_log = mean_log[np.isfinite(mean_log)]
    return _geomean_result(mean_log, float(np.mean(cb.point)), len(cb.groups), confidence, margin, alpha)


def cluster_group_ratio_cis(cb: ClusterBootstrap, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per group: the ratio of medians with its cluster-level interval (NaN where undefined)."""
    rows = []
    for j, g in enumerate(cb.groups):
        col = cb.boot[:, j]
        col = col[np.isfinite(col)]
        low, high = _percentile_interval(col, confidence) if col.size else (NAN, NAN)
        rows.append({"group": g, "ratio": math.exp(cb.point[j]), "cluster_ci_low": math.exp(low),
                     "cluster_ci_high": math.exp(high)})
    return pd.DataFrame(rows, columns=["group", "ratio", "cluster_ci_low", "cluster_ci_high"])


def cluster_median_of_ratios_ci(cb: ClusterBootstrap, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """The median over groups of the per-group ratios, with its cluster-level interval.

    The central estimate for a claim about a range over images: a typical image, not an extreme one.
    """
    if not cb.groups:
        return NAN, NAN, NAN
    with np.errstate(all="ignore"):
        med = np.nanmedian(cb.boot, axis=1)
    med = med[np.isfinite(med)]
    low, high = _percentile_interval(med, confidence)
    return float(math.exp(np.median(cb.point))), math.exp(low), math.exp(high)


def cluster_bootstrap_group_medians(
    df: pd.DataFrame, value: str, *, group: str | Sequence[str], cluster: str = "cluster_id",
    n_boot: int = 2000, seed: int = 0,
) -> tuple[list, FloatArray, FloatArray, int]:
    """Per-group medians under the two-stage (clusters, then pulls) bootstrap, clusters shared by all groups.

    For contrasts between groups measured in the same clusters (few vs many layers, small vs large
    images): one draw of clusters per resample serves every group, so what a cluster shares cancels
    as it would on re-running. Returns (groups, point medians, boot (n_boot, groups), clusters).
    """
    _check_bootstrap_args(n_boot, 0.95)
    keys = [group] if isinstance(group, str) else list(group)
    data = df[[*keys, cluster, value]].dropna(subset=[value])
    ids = sorted(data[cluster].unique().tolist(), key=str)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, max(len(ids), 1), size=(n_boot, max(len(ids), 1)))
    groups, point, boots = [], [], []
    for key, g in data.groupby(keys, sort=True):
        by_cluster = [np.sort(g.loc[g[cluster] == c, value].to_numpy(float)) for c in ids]
        groups.append(key[0] if isinstance(key, tuple) and len(keys) == 1 else key)
        point.append(float(np.median(g[value].to_numpy(float))))
        boots.append(_cluster_medians(by_cluster, pick, rng))
    boot = np.column_stack(boots) if boots else np.empty((n_boot, 0))
    return groups, np.asarray(point, float), boot, len(ids)


def interval_of(boot: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a bootstrap distribution, NaN resamples left out."""
    b = np.asarray(boot, float)
    b = b[np.isfinite(b)]
    return _percentile_interval(b, confidence) if b.size else (NAN, NAN)

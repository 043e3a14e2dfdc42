"""Real application images run on this machine, eager against lazy: the HelloBench-style comparison.

For each application image (:mod:`pullstudy.images.apps`) and snapshotter, every cold start is timed in
three parts, as stargz's hello-bench and SOCI's benchmark do: ``pull_s``, ``create_s`` and ``run_s``
(from starting the container to its ready line); their sum is the time to useful work. Beside the
times, the fraction of the pulled image's blob bytes the registry actually sent (``fraction_read``):
1 for an eager pull, what the container read (and the tables of contents) for a lazy one.

Speedups are ratios of medians eager/lazy with bootstrap 95% CIs over the cold starts (the within-run
interval: one machine, one run). Local results are reported, not judged against the cloud claims:
another machine, another network and another lazy snapshotter (stargz, not GKE image streaming).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from pullstudy import stats
from pullstudy.images import apps as catalogue
from .claims import Verdict

PARTS = ("pull_s", "create_s", "run_s")
EAGER, LAZY = "overlayfs", "stargz"
TABLE_COLUMNS = (["app", "image_mb", "blob_mb_eager", "blob_mb_lazy", "n_eager", "n_lazy"]
                 + [f"{m}_{side}" for m in (*PARTS, "ttuw_s") for side in ("eager", "lazy")]
                 + ["fraction_read_eager", "fraction_read_lazy"]
                 + [f"{m}_speedup{x}" for m in ("pull", "ttuw") for x in ("", "_ci_low", "_ci_high")])
NOT_JUDGED = ("local measurement, reported, not judged against the published figure: this machine, a "
              "{link} link and the stargz snapshotter, not GKE image streaming on a cloud cluster")


def is_apps_run(records: pd.DataFrame) -> bool:
    return "workload" in records and bool((records["workload"] == "apps").any())


def ready_starts(records: pd.DataFrame) -> tuple[pd.DataFrame, Counter]:
    """The cold starts that reached their ready line, with ``ttuw_s``; the others counted with their reason."""
    df = records[records["workload"] == "apps"]
    excluded = Counter()
    for status, count in df.loc[df["run_status"] != "ready", "run_status"].value_counts().items():
        what = {"timeout": "did not print its ready line before its timeout (stopped)",
                "exited": "exited before printing its ready line"}.get(status, status)
        excluded[f"application container {what}"] = int(count)
    df = df[df["run_status"] == "ready"].copy()
    df["ttuw_s"] = df["pull_s"] + df["create_s"] + df["run_s"]
    return df, excluded


def _ratio(base, treat, n_boot: int, seed: int) -> tuple[float, float, float]:
    r = stats.bootstrap_ratio_of_medians_ci(np.asarray(base, float), np.asarray(treat, float), n_boot=n_boot,
                                            seed=seed)
    if min(r.n_baseline, r.n_treatment) < 2:
        return r.ratio, math.nan, math.nan
    return r.ratio, r.ci_low, r.ci_high


def hellobench_table(records: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per application image: median pull, create, run and time to useful work, eager and lazy, the
    fraction of the image read, and the speedups eager/lazy of pull and time to useful work with CIs.

    ``image_mb``: the image's layers uncompressed (what the container sees); ``blob_mb_*``: the blobs
    a pull could fetch (gzip for eager, eStargz for lazy, which compresses per chunk and is larger).
    """
    df, _ = ready_starts(records)
    rows = []
    for app in [a for a in catalogue.CATALOGUE if a in set(df["content"])] + \
               sorted(set(df["content"]) - set(catalogue.CATALOGUE)):
        sides = {s: df[(df["content"] == app) & (df["snapshotter"] == s)] for s in (EAGER, LAZY)}
        row = {"app": app, "image_mb": float(df.loc[df["content"] == app, "size_bytes"].iloc[0]) / 1e6,
               "n_eager": len(sides[EAGER]), "n_lazy": len(sides[LAZY])}
        for m in (*PARTS, "ttuw_s"):
            for side, key in (("eager", EAGER), ("lazy", LAZY)):
                row[f"{m}_{side}"] = float(sides[key][m].median()) if len(sides[key]) else math.nan
        for side, key in (("eager", EAGER), ("lazy", LAZY)):
            row[f"blob_mb_{side}"] = float(sides[key]["image_blob_bytes"].median()) / 1e6 if len(sides[key]) else math.nan
            row[f"fraction_read_{side}"] = float(sides[key]["fraction_read"].median()) if len(sides[key]) else math.nan
        for name, col in (("pull", "pull_s"), ("ttuw", "ttuw_s")):
            row[f"{name}_speedup"], row[f"{name}_speedup_ci_low"], row[f"{name}_speedup_ci_high"] = \
                _ratio(sides[EAGER][col], sides[LAZY][col], n_boot, seed)
        rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for col in ("n_eager", "n_lazy"):
        table[col] = table[col].astype("int64")
    return table


def summary_text(table: pd.DataFrame) -> str:
    """One line per image: eager vs lazy pull, time to useful work, and how much of the image was read."""
    lines = []
    for r in table.itertuples():
        lines.append(f"* **{r.app}** ({r.image_mb:.0f} MB): pull {r.pull_s_eager:.2f} s eager vs "
                     f"{r.pull_s_lazy:.2f} s lazy ({_x(r.pull_speedup, r.pull_speedup_ci_low, r.pull_speedup_ci_high)}); "
                     f"time to useful work {r.ttuw_s_eager:.2f} s vs {r.ttuw_s_lazy:.2f} s "
                     f"({_x(r.ttuw_speedup, r.ttuw_speedup_ci_low, r.ttuw_speedup_ci_high)}); lazily read "
                     f"{_pct(r.fraction_read_lazy)} of the image (n={r.n_eager}+{r.n_lazy})")
    return "\n".join(lines) or "(no application container reached its ready line)"


def _x(v, low, high) -> str:
    if not math.isfinite(v):
        return "no ratio"
    ci = f", 95% CI {low:.2f}-{high:.2f}" if math.isfinite(low) else ", no CI (one start a side)"
    return f"{v:.2f}x{ci}"


def _pct(v) -> str:
    return f"{v:.0%}" if math.isfinite(v) else "?"


def _link(records: pd.DataFrame) -> str:
    rates = records["link_mbit_measured"].dropna()
    return f"{rates.median():.0f} Mbit/s" if len(rates) else "loopback"


def claim_rows(records: pd.DataFrame, table: pd.DataFrame, notebook: str = "") -> list[Verdict]:
    """The ``streaming-ml`` and ``soci-example`` rows from the local data: reported, not judged.

    ``streaming-ml``: the ML image (``apps.ML_APP``): its pull speedup, with the time to useful work
    and the fraction read beside it. ``soci-example``: SOCI's example image is not built here; the
    rows report what the local images show for the same question (pull and start, lazy vs eager).
    """
    reason = NOT_JUDGED.format(link=_link(records))
    ml = table[table["app"] == catalogue.ML_APP]
    if ml.empty or not math.isfinite(float(ml.iloc[0]["pull_speedup"])):
        ml_row = Verdict("streaming-ml", "not testable here",
                         f"the local run has no ready start of the ML image {catalogue.ML_APP!r} under both snapshotters "
                         f"(add it to the grid's apps); {reason}", notebook=notebook)
    else:
        r = ml.iloc[0]
        ml_row = Verdict(
            "streaming-ml", "not testable here", reason,
            measured=(f"{r.app} ({r.image_mb:.0f} MB, python3-torch): pull {r.pull_s_eager:.1f} s eager -> "
                      f"{r.pull_s_lazy:.1f} s lazy, {_x(r.pull_speedup, r.pull_speedup_ci_low, r.pull_speedup_ci_high)}; "
                      f"time to useful work (pull + create + train to ready) {r.ttuw_s_eager:.1f} s -> "
                      f"{r.ttuw_s_lazy:.1f} s, {_x(r.ttuw_speedup, r.ttuw_speedup_ci_low, r.ttuw_speedup_ci_high)}; "
                      f"lazily read {_pct(r.fraction_read_lazy)} of the image; n={r.n_eager}+{r.n_lazy} cold starts"),
            value=float(r.pull_speedup), ci_low=_finite(r.pull_speedup_ci_low), ci_high=_finite(r.pull_speedup_ci_high),
            unit="x (median eager / lazy pull)", n=int(r.n_eager + r.n_lazy), notebook=notebook)
    both = table[np.isfinite(table["ttuw_speedup"].astype(float))]
    if both.empty:
        soci = Verdict("soci-example", "not testable here",
                       f"SOCI's example image is not built here and no local image has ready starts under both "
                       f"snapshotters; {reason}", notebook=notebook)
    else:
        geo_pull = float(np.exp(np.log(both["pull_speedup"].astype(float)).mean()))
        geo_ttuw = float(np.exp(np.log(both["ttuw_speedup"].astype(float)).mean()))
        per = "; ".join(f"{r.app} pull {r.pull_speedup:.2f}x, start {r.ttuw_speedup:.2f}x" for r in both.itertuples())
        soci = Verdict("soci-example", "not testable here",
                       f"SOCI's example image itself is not built here: the local application images answer the same "
                       f"question (a lazy pull and start against an eager one); {reason}",
                       measured=(f"{len(both)} local application images, geometric mean: pull {geo_pull:.2f}x, time "
                                 f"to useful work {geo_ttuw:.2f}x ({per})"),
                       value=geo_ttuw, unit="x (time to useful work, eager / lazy, geometric mean)",
                       n=int(both["n_eager"].sum() + both["n_lazy"].sum()), notebook=notebook)
    return [ml_row, soci]


def _finite(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None

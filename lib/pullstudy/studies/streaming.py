"""Image streaming and time to useful work: the application wall times beside the kubelet pull
times of the same image and cluster size, with and without streaming, and the verdict.

Under lazy pulling the kubelet's pull time measures a remote mount, not the transfer, so the
cost can move into the application's run; pull time alone would overstate the gain. The logs
are parsed by :mod:`pullstudy.parsers.app_logs`.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from pullstudy.data import catalog
from . import rules
from pullstudy import stats
from .claims import CLAIMS, Verdict
from pullstudy.records import image_key
from pullstudy.parsers.app_logs import app_name
from pullstudy.sources.archive.source import load_app_runs


# --------------------------------------------------------------------------- the comparison

SIDES = ("baseline", "treatment")
TABLE_COLUMNS = (["scope", "app", "image_key", "cluster_nodes"]
                 + [f"{m}_{side}" for m in ("n_pulls", "pull_s", "pull_wait_s", "n_logs", "wall_s", "n_ttuw", "ttuw_s")
                    for side in SIDES]
                 + ["ttuw_unit"]
                 + [f"{m}_speedup{x}" for m in ("pull", "pull_wait", "ttuw") for x in ("", "_ci_low", "_ci_high")])


def _side_pulls(pull_records_by_run: Mapping[str, pd.DataFrame], run: str) -> pd.DataFrame:
    if run not in pull_records_by_run:
        raise KeyError(f"no pull records for run {run!r}; load it with pulls.load_for_analysis([...], None, "
                       "'pull_wait_s', require_size=False)")
    df = pull_records_by_run[run]
    if "image_key" not in df:
        df = df.assign(image_key=image_key(df))
    return df[["image_key", "cluster_nodes", "pull_s", "pull_wait_s"]].assign(
        image_key=lambda d: d["image_key"].astype("string"),
        cluster_nodes=lambda d: d["cluster_nodes"].astype("Int64"))


def _side_walls(app_runs: pd.DataFrame, run: str, wall: str) -> pd.DataFrame:
    """One wall time per usable log of the run that names its image."""
    df = app_runs[(app_runs["run"] == run) & app_runs["image_key"].notna() & app_runs[wall].notna()]
    return pd.DataFrame({"image_key": df["image_key"].astype("string"),
                         "cluster_nodes": df["cluster_nodes"].astype("Int64"), "wall_s": df[wall].astype(float)})


def _ratio(base, treat, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Ratio of medians with its CI; no CI from a side of one value (nothing to resample)."""
    r = stats.bootstrap_ratio_of_medians_ci(np.asarray(base, float), np.asarray(treat, float),
                                            n_boot=n_boot, seed=seed)
    if min(r.n_baseline, r.n_treatment) < 2:
        return r.ratio, math.nan, math.nan
    return r.ratio, r.ci_low, r.ci_high


def _median(values) -> float:
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    return float(np.median(v)) if v.size else math.nan


def _row(scope, app, key, nodes, pulls: dict, walls: dict, ttuw: dict, unit: str, n_boot: int, seed: int) -> dict:
    row = {"scope": scope, "app": app, "image_key": key, "cluster_nodes": nodes}
    for side in SIDES:
        p = pulls[side]
        row[f"n_pulls_{side}"] = len(p)
        row[f"pull_s_{side}"] = _median(p["pull_s"])
        row[f"pull_wait_s_{side}"] = _median(p["pull_wait_s"])
        row[f"n_logs_{side}"] = len(walls[side])
        row[f"wall_s_{side}"] = _median(walls[side])
        row[f"n_ttuw_{side}"] = int(np.isfinite(np.asarray(ttuw[side], float)).sum())
        row[f"ttuw_s_{side}"] = _median(ttuw[side])
    row["ttuw_unit"] = unit
    for name, base, treat in (("pull", pulls["baseline"]["pull_s"], pulls["treatment"]["pull_s"]),
                              ("pull_wait", pulls["baseline"]["pull_wait_s"], pulls["treatment"]["pull_wait_s"]),
                              ("ttuw", ttuw["baseline"], ttuw["treatment"])):
        row[f"{name}_speedup"], row[f"{name}_speedup_ci_low"], row[f"{name}_speedup_ci_high"] = \
            _ratio(base, treat, n_boot, seed)
    return row


def streaming_apps_table(pull_records_by_run: Mapping[str, pd.DataFrame], app_runs: pd.DataFrame,
                         baseline_run: str, treatment_run: str, *, wall: str = "fluxstart_s",
                         n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Pull time, wall time and time to useful work without (baseline) and with (treatment) streaming.

    One row per app and cluster size (``scope="cluster"``), per app over the cluster sizes where both
    runs have pulls of it (``"app"``) and over all apps (``"all"``). Speedups are ratios of medians
    baseline/treatment with bootstrap 95% CIs (none when a side has a single value).

    Time to useful work (ttuw) = kubelet pull time including waiting + the app's ``wall`` time
    (``fluxstart_s``: the whole Flux instance, where lazily fetched bytes are paid for; or
    ``fluxsubmit_s``: the job alone). Its unit is one application run: in a cluster row, the median
    pull of that cluster + each log's wall time (``ttuw_unit="run"``; upstream ran each app once per
    cluster, so n=1 and no CI); in an overall row, one value per cluster size (``"cluster"``), so
    that sizes weigh the same on both sides although the runs lost different numbers of pull events.
    Logs whose image could not be named are not compared; ``table.attrs["unmatched_logs"]`` lists them.
    """
    if wall not in app_runs.columns:
        raise KeyError(f"wall time column {wall!r} is not in the app runs; use 'fluxstart_s' or 'fluxsubmit_s'")
    pulls = {"baseline": _side_pulls(pull_records_by_run, baseline_run),
             "treatment": _side_pulls(pull_records_by_run, treatment_run)}
    walls = {"baseline": _side_walls(app_runs, baseline_run, wall),
             "treatment": _side_walls(app_runs, treatment_run, wall)}
    cells = sorted({tuple(x) for d in [*pulls.values(), *walls.values()]
                    for x in d[["image_key", "cluster_nodes"]].itertuples(index=False)})
    rows, units = [], []  # units: the cells both runs pulled in, for the overall rows
    for key, nodes in cells:
        cp, cw, tt = {}, {}, {}
        for side in SIDES:
            p, w = pulls[side], walls[side]
            cp[side] = p[(p["image_key"] == key) & (p["cluster_nodes"] == nodes)]
            cw[side] = w.loc[(w["image_key"] == key) & (w["cluster_nodes"] == nodes), "wall_s"].to_numpy(float)
            tt[side] = _median(cp[side]["pull_wait_s"]) + cw[side]
        rows.append(_row("cluster", app_name(key), key, nodes, cp, cw, tt, "run", n_boot, seed))
        if all(len(cp[s]) for s in SIDES):
            units.append((key, cp, cw, {s: _median(cp[s]["pull_wait_s"]) + _median(cw[s]) for s in SIDES}))

    def pooled(scope: str, app: str, key, chosen: list) -> dict:
        timed = [u for u in chosen if all(math.isfinite(u[3][s]) for s in SIDES)]
        cp = {s: pd.concat([u[1][s] for u in chosen]) for s in SIDES}
        cw = {s: np.concatenate([u[2][s] for u in chosen]) for s in SIDES}
        tt = {s: np.array([u[3][s] for u in timed], float) for s in SIDES}
        return _row(scope, app, key, pd.NA, cp, cw, tt, "cluster", n_boot, seed)

    for key in sorted({u[0] for u in units}):
        rows.append(pooled("app", app_name(key), key, [u for u in units if u[0] == key]))
    if units:
        rows.append(pooled("all", "all apps", pd.NA, units))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table["cluster_nodes"] = table["cluster_nodes"].astype("Int64")
    for col in ("scope", "app", "image_key", "ttuw_unit"):
        table[col] = table[col].astype("string")
    for col in TABLE_COLUMNS:
        if col.startswith("n_"):
            table[col] = table[col].astype("int64")
    ours = app_runs[app_runs["run"].isin([baseline_run, treatment_run])]
    table.attrs.update(baseline=baseline_run, treatment=treatment_run, wall=wall,
                       unmatched_logs=ours.loc[ours["image_key"].isna(), "source"].tolist())
    return table


# --------------------------------------------------------------------------- the verdict


def verdict_streaming_apps(table: pd.DataFrame, *, claimed: float = 15.0, comparison=None,
                           notebook: str = "") -> Verdict:
    """Verdict on claim ``streaming-apps``: rule ``factor`` of :mod:`pullstudy.studies.rules` on the pull time.

    The claim is about pull time; time to useful work says whether the gain reaches the user.
    With ``comparison`` (a :class:`pullstudy.studies.compare.Comparison` of the two runs' app pulls, with its
    re-runs attached) the pull-time effect is its geometric mean over apps with the cluster-level
    interval and the noise floor, and every round that tested the change must agree; without it,
    the table's pooled row (within-run interval only). Then time to useful work: where it was
    measured and is not consistent with the claim, the verdict is at most partly supported (the
    cost moved into the run).

    * not testable here — fewer than two pulls of the app images in either run.
    """
    overall = table[table["scope"] == "all"]
    if overall.empty or min(overall.iloc[0]["n_pulls_baseline"], overall.iloc[0]["n_pulls_treatment"]) < 2:
        return Verdict("streaming-apps", "not testable here",
                       "fewer than two pulls of the application images in the baseline or the treatment run "
                       "(load both runs; their event files may be unavailable here)", notebook=notebook)
    row = overall.iloc[0]
    ratio, low, high = (float(row[f"pull_wait_speedup{s}"]) for s in ("", "_ci_low", "_ci_high"))
    apps = table[(table["scope"] == "app") & np.isfinite(table["pull_wait_speedup"].astype(float))]
    geo = float(np.exp(np.log(apps["pull_wait_speedup"].astype(float)).mean())) if len(apps) else math.nan
    per_app = ", ".join(f"{a} {r:.1f}x" for a, r in zip(apps["app"], apps["pull_wait_speedup"]))
    t, tl, th = (float(row[f"ttuw_speedup{s}"]) for s in ("", "_ci_low", "_ci_high"))
    ttuw_known = math.isfinite(t)
    measured = (f"pull time (including waiting), pooled: {ratio:.1f}x faster (95% CI {low:.1f}-{high:.1f}; median "
                f"{row['pull_wait_s_baseline']:.1f} s -> {row['pull_wait_s_treatment']:.2f} s, "
                f"n={row['n_pulls_baseline']}+{row['n_pulls_treatment']} pulls; per app: {per_app}; "
                f"geometric mean {geo:.1f}x); ")
    measured += (f"time to useful work (pull + {table.attrs.get('wall', 'wall time')}) {t:.2f}x "
                 f"(95% CI {tl:.2f}-{th:.2f}, n={row['n_ttuw_baseline']}+{row['n_ttuw_treatment']} clusters)"
                 if ttuw_known else "time to useful work not measured (no app log matched the pulls)")
    rounding = CLAIMS["streaming-apps"].rounding
    if comparison is not None:
        effect = comparison.effect()
        rounds = [(comparison, f"{comparison.treatment} vs {comparison.baseline}")]
        rounds += [(r, f"{r.treatment} vs {r.baseline}") for r in comparison.replications]
        decided = []
        for comp, name in rounds:
            v, why = rules.decide_factor(comp.effect(), claimed, rounding=rounding)
            decided.append((name, v, f"pull time: {why}; {comp.effect().text()}"))
        verdict, reason = rules.combine_rounds(decided) if len(decided) > 1 else (decided[0][1], decided[0][2])
        extra = dict(within_ci_low=effect.within_low, within_ci_high=effect.within_high,
                     clusters=f"{effect.clusters[0]}+{effect.clusters[1]}",
                     noise_floor=effect.floor.factor if effect.floor else None)
    else:
        effect = rules.Effect(ratio, low, high)
        verdict, reason = rules.decide_factor(effect, claimed, rounding=rounding)
        reason = f"pull time: {reason} (within-run interval only: no cluster-level comparison given)"
        extra = {}
    if ttuw_known:
        ttuw_ok = tl <= claimed <= th or abs(math.log(t / claimed)) <= math.log1p(rounding)
        reason += (f"; time to useful work {t:.2f}x (CI {tl:.2f}-{th:.2f}) is "
                   + ("consistent with the claim" if ttuw_ok else
                      f"not consistent with the claimed {claimed:g}x: the gain does not survive once the application runs"))
        if not ttuw_ok and verdict == "supported":
            verdict = "partly supported"
    else:
        reason += "; time to useful work not measured, so whether the cost moved into the run is unknown"
    return Verdict("streaming-apps", verdict, reason, measured=measured, value=effect.estimate,
                   ci_low=effect.ci_low, ci_high=effect.ci_high, unit="x (median without / with)",
                   n=int(row["n_pulls_baseline"] + row["n_pulls_treatment"]), notebook=notebook, **extra)


# --------------------------------------------------------------------------- the study of notebook 04

APP_COLUMNS = ["scope", "app", "pull_wait_s_baseline", "pull_wait_s_treatment", "pull_wait_speedup",
               "pull_wait_speedup_ci_low", "pull_wait_speedup_ci_high", "wall_s_baseline", "wall_s_treatment",
               "ttuw_s_baseline", "ttuw_s_treatment", "ttuw_speedup", "ttuw_speedup_ci_low", "ttuw_speedup_ci_high"]
NO_APP_RUNS = ("The application runs exist only in the archive (backend `{backend}` {measures}): this section, and "
               "the verdicts on the application claims, need `backend=\"archive\"`"
               " (or, on this machine, `backend=\"local\"` with `workload=\"apps\"`).")
_MEASURES = {"local": "measured synthetic images here", "kube": "compares the images a live cluster pulled"}


def _md(text: str):
    from IPython.display import Markdown  # only notebooks display; the library runs without IPython

    return Markdown(text)


class StreamingAppsStudy:
    """Application images with and without streaming: pull time, wall time, time to useful work, verdicts.

    Built by :func:`study`; each method is one section of notebook 04 and returns what it shows. The
    application runs exist only in the archive: with another backend every section says so instead.
    """

    def __init__(self, backend: str, params: Mapping, out):
        self.backend, self.params, self.out = backend, dict(params), out
        self.available = backend == "archive"
        # local mode with workload="apps": real application images measured here stand in this section
        self.local_apps = backend == "local" and self.params.get("workload") == "apps"
        self.base, self.treat = self.params.get("apps_baseline_run"), self.params.get("apps_treatment_run")
        self.nodes = self.params.get("apps_cluster_nodes")
        self.report, self.pulls, self.app_runs, self.table = "", {}, None, None
        self.local_table, self.local_records = None, None
        if self.available:
            self._load()
        elif self.local_apps:
            self._load_local()

    def _load_local(self) -> None:
        from pullstudy import sources
        from . import local_apps

        baseline, _ = sources.arms("local", self.out.notebook, self.params)
        loaded = baseline.load(None, time="pull_s")
        self.local_records, self.report = loaded.run_records, loaded.report
        _, excluded = local_apps.ready_starts(self.local_records)
        for reason, count in excluded.items():
            self.out.excluded(reason, count)
        self.excluded_text = ("; ".join(f"{r}: {c}" for r, c in excluded.items())
                              or "every container printed its ready line")
        self.local_table = self.out.table(local_apps.hellobench_table(self.local_records, n_boot=self.params["n_boot"],
                                                                      seed=self.params["seed"]), "app-starts")

    def _load(self) -> None:
        from .pulls import load_for_analysis

        p, out = self.params, self.out
        self.pulls, self.report = load_for_analysis([self.base, self.treat], self.nodes, p["time_column"], out,
                                                    require_size=False)
        self.app_runs, log_skips, missing_logs = load_app_runs([self.base, self.treat], self.nodes)
        for reason, count in log_skips.items():
            out.excluded(f"application log: {reason}", count)
        out.metric("unavailable_app_logs", missing_logs)
        self.logs_text = (f"{len(self.app_runs)} application logs parsed; skipped: "
                          + (", ".join(f"{r} ({c})" for r, c in log_skips.items()) or "none")
                          + (f"; **{len(missing_logs)} log(s) unavailable here**" if missing_logs else ""))
        self.table = out.table(streaming_apps_table(self.pulls, self.app_runs, self.base, self.treat,
                                                    wall=p["wall_time"], n_boot=p["n_boot"], seed=p["seed"]),
                               "streaming-apps")

    def _absent(self) -> list:
        return [_md(NO_APP_RUNS.format(backend=self.backend, measures=_MEASURES.get(self.backend, "")))]

    def overview(self) -> list:
        """What was read and left out of the application runs' events and logs."""
        if self.local_apps:
            return [_md(self.report), _md(f"Cold starts left out: {self.excluded_text}.")]
        return [_md(self.report), _md(self.logs_text)] if self.available else self._absent()

    def per_app(self) -> list:
        """Per application (and pooled): pull time, wall time and time to useful work, with speedups."""
        if self.local_apps:  # HelloBench-style: eager vs lazy pull, create, run, time to useful work, fraction read
            from .local_apps import summary_text

            return [_md(summary_text(self.local_table)), self.local_table.round(3)]
        if not self.available:
            return self._absent()
        return [self.table[self.table["scope"] != "cluster"][APP_COLUMNS].round(2)]

    def chart(self) -> list:
        from .figures import app_start_chart, time_to_work_chart

        if self.local_apps:
            return [self.out.chart(app_start_chart(self.local_table), "app-time-to-useful-work")]
        return [self.out.chart(time_to_work_chart(self.table), "time-to-useful-work")] if self.available else []

    def verdict(self) -> list:
        """Claim ``streaming-apps``: the pull-time effect over apps with its cluster-level interval, floor, other round."""
        from . import compare

        if self.local_apps:
            return [_md("**streaming-apps**: local measurement (reported, not judged: not a verdict on the upstream "
                        "claim, which concerns spack-built images on GKE); the images above are this machine's.")]
        if not self.available:
            return self._absent()
        p = self.params
        comparison = compare.compare_runs(self.pulls[self.base], self.pulls[self.treat], baseline=self.base,
                                          treatment=self.treat, time=p["time_column"], margin=p["equivalence_margin"],
                                          n_boot=p["n_boot"], seed=p["seed"])
        reruns = compare.attach_reruns(comparison, self.nodes, n_boot=p["n_boot"], seed=p["seed"])
        from .noise import judge_pair

        v = verdict_streaming_apps(self.table, claimed=p["apps_claimed_speedup"], comparison=comparison)
        v = self.out.verdict(judge_pair(v, CLAIMS["streaming-apps"].condition, self.base, self.treat),
                             runs=[self.base, self.treat])
        return [_md(reruns), _md(f"**streaming-apps: {v.verdict}** — {v.reason}.")]

    def claims_without_data(self) -> list:
        """Claims on images no archived run pulled (``streaming-ml``, ``soci-example``): not testable here;
        in local mode with the application images, what the local data shows (reported, not judged)."""
        if self.local_apps:
            from .local_apps import claim_rows

            shown = []
            for v in claim_rows(self.local_records, self.local_table, notebook=self.out.notebook):
                v = self.out.verdict(v, runs=[])
                shown.append(_md(f"**{v.claim_id}: {v.verdict}** — {v.measured or 'no measurement'}. Why: {v.reason}."))
            return shown
        if not self.available:
            return self._absent()
        archived = {r.id for r in catalog.load()}
        shown = []
        for claim in ("streaming-ml", "soci-example"):
            v = self.out.verdict(Verdict(claim, "not testable here", f"no run of this image is archived (the "
                                                                     f"catalog's {len(archived)} runs hold none)"),
                                 runs=[])
            shown.append(_md(f"**{claim}: {v.verdict}** — {v.reason}."))
        return shown


def study(backend: str, params: Mapping, out) -> StreamingAppsStudy:
    """The application-image part of notebook 04, from its parameters (``apps_*``, ``wall_time``)."""
    return StreamingAppsStudy(backend, params, out)


__all__ = ["streaming_apps_table", "verdict_streaming_apps"]

"""Application logs of the Flux Operator runs, and what image streaming did to time to useful work.

Under lazy pulling (GKE image streaming) the kubelet's pull time measures a remote mount, not the
transfer: the bytes are fetched when the application first reads them, so the cost can move into the
application's run. Pull time alone then overstates the gain. Each archived app run left one log per
application run whose last lines are GNU ``time`` figures::

    FLUXTIME fluxsubmit wall time 0:26.68     (the job itself: flux submit --watch)
    FLUXTIME fluxstart wall time 0:37.96      (the whole Flux instance: broker start, job, shutdown)

This module turns those logs into a tidy table (one row per log) and sets the wall times beside the
kubelet pull times of the same image and cluster size, with and without streaming.

Nothing is dropped silently: a log without usable FLUXTIME lines is a counted skip under its reason;
a file that is not a text log at all raises :class:`AppLogError` naming it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from . import catalog, rules, stats
from .sources.archive import ArchiveSource
from .claims import CLAIMS, Verdict
from .rawfiles import read_raw_bytes
from .events import DurationError, parse_go_duration
from .paths import raw_dir
from .records import image_key, ref_key

APP_RUN_COLUMNS = ["run", "cluster_nodes", "app", "image_key", "image", "fluxsubmit_s", "fluxstart_s",
                   "broker_quorum_s", "broker_run_s", "source"]

# Skip reasons, so callers and tests name them the same way.
EMPTY = "empty log file"
NO_FLUXTIME = "no FLUXTIME line (the run did not finish, or was not timed)"
TRUNCATED = "truncated log (ends before the fluxstart FLUXTIME line, or inside a line)"
NO_SUBMIT = "no fluxsubmit FLUXTIME line"
BAD_FORMAT = "FLUXTIME value in an unknown time format"
REPEATED = "FLUXTIME line repeated (ambiguous which run it times)"


class AppLogError(ValueError):
    """A file that is not a text log (binary content, broken gzip stream)."""


class SkippedLog(Exception):
    """A text log that carries no usable timing; ``reason`` is one of the skip reasons above."""

    def __init__(self, reason: str, path: str | Path):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


# --------------------------------------------------------------------------- one log

# GNU time %E: [hours:]minutes:seconds; the seconds carry hundredths ("0:26.68", "7:49.33", "1:02:03").
_ELAPSED = re.compile(r"^(?:(?P<h>\d+):(?P<hm>[0-5]\d):(?P<hs>[0-5]\d(?:\.\d+)?)|(?P<m>\d+):(?P<s>[0-5]\d\.\d+))$")
_FLUXTIME = re.compile(r"^FLUXTIME (?P<what>\S+) wall time (?P<value>.*?)\s*$")
# Rank 0's state transitions, e.g. "broker.info[0]: quorum-full: quorum->run 8.29626s".
_BROKER = re.compile(r"^broker\.info\[0\]: [\w-]+: (?P<transition>\w+->\w+) (?P<duration>\S+)\s*$")
_LOG_NAME = re.compile(r"^(?P<stem>.+?)(?:-(?P<hash>[0-9a-f]{8}))?\.log(?:\.gz)?$")


def parse_elapsed(text: str) -> float:
    """Seconds in a GNU time ``%E`` value: ``0:26.68``, ``7:49.33``, ``1:02:03`` or ``1:02:03.5``."""
    m = _ELAPSED.match(text.strip())
    if not m:
        raise ValueError(f"not a GNU time %E value ([h:]mm:ss.ss): {text!r}")
    if m["h"] is not None:
        return int(m["h"]) * 3600 + int(m["hm"]) * 60 + float(m["hs"])
    return int(m["m"]) * 60 + float(m["s"])


def _sanitized(ref: str) -> str:
    """The Flux Operator's log file name for an image: every non-alphanumeric character becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9]", "_", ref)


def app_name(image_key: str) -> str:
    """Short app name from an image key: the last dash-separated word of the repository name.

    ``ensemble-amg2023:spack-skylake`` -> ``amg2023``.
    """
    return image_key.split(":", 1)[0].rsplit("-", 1)[-1]


def _identify(stem: str, images: Iterable[str]) -> tuple[str | None, str | None]:
    """(image reference, image key) of a log from its file name and the run's study images.

    The exact image is known when the name is the sanitized reference; when the same repository and tag
    were served by another registry (the name ends in the sanitized ``repository:tag``), only the key is.
    """
    images = list(images)
    for ref in images:
        if _sanitized(ref) == stem:
            return ref, ref_key(ref)
    keys = sorted({ref_key(ref) for ref in images if stem.endswith("_" + _sanitized(ref_key(ref)))},
                  key=len, reverse=True)
    if len(keys) == 1 or (len(keys) > 1 and len(keys[0]) > len(keys[1])):
        return None, keys[0]
    return None, None


def _read_text(path: Path) -> str:
    return read_raw_bytes(path, "an application log", AppLogError).decode("utf-8", errors="replace")


def parse_app_log(path: str | Path, *, run: str | None = None, cluster_nodes: int | None = None,
                  images: Iterable[str] = (), label_root: str | Path | None = None) -> dict:
    """One application log -> one record (a dict with APP_RUN_COLUMNS).

    ``images`` are the references the run pulled (its study file), used to name the image the log
    belongs to. Raises :class:`SkippedLog` (with a reason) for a log without usable FLUXTIME figures
    and :class:`AppLogError` for a file that is not a text log.
    """
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise SkippedLog(EMPTY, path)
    lines = text.splitlines()
    found: dict[str, list[str]] = {}
    broker: dict[str, str] = {}
    for line in lines:
        m = _FLUXTIME.match(line)
        if m:
            found.setdefault(m["what"], []).append(m["value"])
            continue
        b = _BROKER.match(line)
        if b:
            broker.setdefault(b["transition"], b["duration"])
    if not found:
        raise SkippedLog(NO_FLUXTIME, path)
    cut_inside_a_line = not text.endswith("\n") and bool(_FLUXTIME.match(lines[-1]))
    if "fluxstart" not in found or cut_inside_a_line:
        raise SkippedLog(TRUNCATED, path)
    if "fluxsubmit" not in found:
        raise SkippedLog(NO_SUBMIT, path)
    if len(found["fluxsubmit"]) > 1 or len(found["fluxstart"]) > 1:
        raise SkippedLog(REPEATED, path)
    try:
        submit, start = parse_elapsed(found["fluxsubmit"][0]), parse_elapsed(found["fluxstart"][0])
    except ValueError:
        raise SkippedLog(BAD_FORMAT, path) from None
    m = _LOG_NAME.match(path.name)
    stem = m["stem"] if m else path.stem
    image, key = _identify(stem, images)
    return {
        "run": run, "cluster_nodes": cluster_nodes, "app": app_name(key) if key else stem,
        "image_key": key, "image": image, "fluxsubmit_s": submit, "fluxstart_s": start,
        "broker_quorum_s": _broker_seconds(broker, "quorum->run"),
        "broker_run_s": _broker_seconds(broker, "run->cleanup"),
        "source": str(path.relative_to(label_root)) if label_root else str(path),
    }


def _broker_seconds(broker: dict[str, str], transition: str) -> float:
    """A broker transition's own timing (a cross-check of FLUXTIME); NaN when absent or unreadable."""
    try:
        return parse_go_duration(broker[transition])
    except (KeyError, DurationError):
        return math.nan


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=APP_RUN_COLUMNS)
    df["cluster_nodes"] = pd.array(df["cluster_nodes"].tolist(), dtype="Int64")
    for col in ("run", "app", "image_key", "image", "source"):
        df[col] = df[col].astype("string")
    for col in ("fluxsubmit_s", "fluxstart_s", "broker_quorum_s", "broker_run_s"):
        df[col] = df[col].astype("float64")
    return df


def parse_app_logs(paths: Iterable[str | Path], **context) -> tuple[pd.DataFrame, Counter]:
    """Several logs -> (records, skipped reasons counted); ``context`` as for :func:`parse_app_log`."""
    rows, skipped = [], Counter()
    for path in paths:
        try:
            rows.append(parse_app_log(path, **context))
        except SkippedLog as skip:
            skipped[skip.reason] += 1
    return _frame(rows), skipped


def load_app_runs(run_ids: Iterable[str], cluster_nodes: Iterable[int] | None = None, *,
                  raw: str | Path | None = None, runs: list[catalog.Run] | None = None
                  ) -> tuple[pd.DataFrame, Counter, list[str]]:
    """The catalog's app logs of the given runs, read from data/raw.

    Returns (one row per usable log, skipped logs counted as ``"<run>: <reason>"``, the listed log files
    this machine does not have).
    """
    raw = Path(raw) if raw else raw_dir()
    runs = runs if runs is not None else catalog.load()
    wanted = set(cluster_nodes) if cluster_nodes is not None else None
    frames, skipped, unavailable = [], Counter(), []
    for run_id in dict.fromkeys(run_ids):
        run = catalog.get(run_id, runs)
        images = ArchiveSource(run.id, runs).study_images(raw) or set()
        for n in sorted(run.node_counts):
            if wanted is not None and n not in wanted:
                continue
            files = run.files_of("app-log", [n])
            here = [raw / run.source / f.path for f in files if (raw / run.source / f.path).is_file()]
            unavailable += [f"{run.source}/{f.path}" for f in files if not (raw / run.source / f.path).is_file()]
            df, skips = parse_app_logs(here, run=run.id, cluster_nodes=n, images=images, label_root=raw)
            frames.append(df)
            skipped.update({f"{run.id}: {reason}": c for reason, c in skips.items()})
    df = pd.concat(frames, ignore_index=True) if frames else _frame([])
    return _frame(df.to_dict("records")), skipped, unavailable


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
    """Verdict on claim ``streaming-apps``: rule ``factor`` of :mod:`pullstudy.rules` on the pull time.

    The claim is about pull time; time to useful work says whether the gain reaches the user.
    With ``comparison`` (a :class:`pullstudy.compare.Comparison` of the two runs' app pulls, with its
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


__all__ = ["APP_RUN_COLUMNS", "AppLogError", "SkippedLog", "app_name", "load_app_runs", "parse_app_log",
           "parse_app_logs", "parse_elapsed", "streaming_apps_table", "verdict_streaming_apps"]


# --------------------------------------------------------------------------- the study of notebook 04

APP_COLUMNS = ["scope", "app", "pull_wait_s_baseline", "pull_wait_s_treatment", "pull_wait_speedup",
               "pull_wait_speedup_ci_low", "pull_wait_speedup_ci_high", "wall_s_baseline", "wall_s_treatment",
               "ttuw_s_baseline", "ttuw_s_treatment", "ttuw_speedup", "ttuw_speedup_ci_low", "ttuw_speedup_ci_high"]
NO_APP_RUNS = ("The application runs exist only in the archive (backend `{backend}` measures synthetic images): "
               "this section, and the verdicts on the application claims, need `backend=\"archive\"`.")


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
        self.base, self.treat = self.params.get("apps_baseline_run"), self.params.get("apps_treatment_run")
        self.nodes = self.params.get("apps_cluster_nodes")
        self.report, self.pulls, self.app_runs, self.table = "", {}, None, None
        if self.available:
            self._load()

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
        return [_md(NO_APP_RUNS.format(backend=self.backend))]

    def overview(self) -> list:
        """What was read and left out of the application runs' events and logs."""
        return [_md(self.report), _md(self.logs_text)] if self.available else self._absent()

    def per_app(self) -> list:
        """Per application (and pooled): pull time, wall time and time to useful work, with speedups."""
        if not self.available:
            return self._absent()
        return [self.table[self.table["scope"] != "cluster"][APP_COLUMNS].round(2)]

    def chart(self) -> list:
        from .figures import time_to_work_chart

        return [self.out.chart(time_to_work_chart(self.table), "time-to-useful-work")] if self.available else []

    def verdict(self) -> list:
        """Claim ``streaming-apps``: the pull-time effect over apps with its cluster-level interval, floor, other round."""
        from . import compare

        if not self.available:
            return self._absent()
        p = self.params
        comparison = compare.compare_runs(self.pulls[self.base], self.pulls[self.treat], baseline=self.base,
                                          treatment=self.treat, time=p["time_column"], margin=p["equivalence_margin"],
                                          n_boot=p["n_boot"], seed=p["seed"])
        reruns = compare.attach_reruns(comparison, self.nodes, n_boot=p["n_boot"], seed=p["seed"])
        v = self.out.verdict(verdict_streaming_apps(self.table, claimed=p["apps_claimed_speedup"],
                                                    comparison=comparison), runs=[self.base, self.treat])
        return [_md(reruns), _md(f"**streaming-apps: {v.verdict}** — {v.reason}.")]

    def claims_without_data(self) -> list:
        """Claims on images no archived run pulled (``streaming-ml``, ``soci-example``): not testable here."""
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

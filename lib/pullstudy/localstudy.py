"""A study notebook's local mode: measure a grid on this machine (or reuse the run), then analyse it.

The pull-time notebooks take ``backend="local"`` and a grid; the records of a local run have the
same schema as the archived ones, so the analysis is the same code. Each local run is kept in
``data/runs/<name>/`` with a catalog entry (``run.json``), so it can be listed and analysed again
like an archived run; an existing finished run of the same grid is reused instead of measured again,
an unfinished one (a failed or stopped attempt) is resumed, and only a different grid is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from . import catalog, compare, noise, pulls
from .claims import CLAIMS, LOCAL_RUN_REASON, Verdict
from .backends import local
from .paths import data_dir

MB = 1_000_000

# Default grids of the notebooks' local mode: each finishes in a few minutes on a 2-core machine.
GRIDS = {
    "01-pull-size-layers": {"sizes_bytes": [16 * MB, 64 * MB, 256 * MB], "layers": [1, 16], "contents": ["zeros"],
                            "storage": ["disk"], "links": ["loopback"], "repetitions": 3},
    "02-registry-proximity": {"sizes_bytes": [32 * MB, 128 * MB], "layers": [4], "contents": ["zeros", "random"],
                              "storage": ["disk"], "links": ["loopback", "rate-limited"], "rate_mbit": 100,
                              "repetitions": 5},
    "03-local-ssd": {"sizes_bytes": [64 * MB, 256 * MB], "layers": [4], "contents": ["zeros", "random"],
                     "storage": ["disk", "tmpfs"], "links": ["loopback"], "repetitions": 5},
    # random content behind a 100 Mbit link: what streaming saves, and what it moves into the reads
    "04-image-streaming": {"sizes_bytes": [16 * MB, 64 * MB], "layers": [4], "contents": ["random"],
                           "storage": ["disk"], "links": ["rate-limited"], "rate_mbit": 100,
                           "snapshotters": ["overlayfs", "stargz"], "repetitions": 5},
}


def runs_dir() -> Path:
    """data/runs, or ``PULLSTUDY_RUNS_DIR`` (tests keep their runs out of the project)."""
    return Path(os.environ.get("PULLSTUDY_RUNS_DIR", data_dir() / "runs"))


def local_runs(folder: str | Path | None = None) -> list[catalog.Run]:
    """Every recorded local run, as catalog runs (``local/<name>``), newest first."""
    folder = Path(folder) if folder else runs_dir()
    entries = sorted(folder.glob("*/run.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [local.catalog_entry(p) for p in entries]


def _grid_json(grid: local.LocalGrid) -> dict:
    return json.loads(json.dumps(asdict(grid)))


@dataclass(frozen=True)
class RunPlan:
    """What to do with a run folder for a grid: ``measure`` (afresh), ``resume``, ``reuse`` or ``refuse``."""

    action: str
    reason: str
    records: int = 0  # complete records the folder holds


def plan_run(folder: str | Path, grid: local.LocalGrid, reuse: bool = True) -> RunPlan:
    """Decide from the folder's run.json and records, so a failed attempt never blocks the next one.

    A finished run of the grid is reused; an unfinished one (failed, interrupted, killed) is resumed
    with its complete records, or measured afresh when it recorded nothing; records of another grid
    (or of an unknown one) are never mixed in: refused, naming the remedy.
    """
    folder = Path(folder)
    records = len(local.recorded(folder))
    path = folder / "run.json"
    remedy = "remove the folder, or pass run_dir= for a new one"
    if not path.is_file():
        if records:
            return RunPlan("refuse", f"{folder} holds {records} records but no run.json, so not which grid they "
                                     f"measured: {remedy}", records)
        return RunPlan("measure", "new run")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        doc = {"error": str(exc)}
    theirs, ours = doc.get("grid") if isinstance(doc, dict) else None, _grid_json(grid)
    if theirs != ours:
        if not records:
            return RunPlan("measure", "the earlier attempt in the folder recorded nothing")
        differ = sorted(k for k in ours if not isinstance(theirs, dict) or theirs.get(k) != ours[k])
        return RunPlan("refuse", f"{folder} holds {records} records of a different grid (differs in "
                                 f"{', '.join(differ)}; see its run.json): {remedy}", records)
    if doc.get("status") == "complete":
        if reuse:
            return RunPlan("reuse", "finished run of this grid", records)
        return RunPlan("refuse", f"{folder} holds a finished run of this grid and reuse=False: {remedy}", records)
    if not records:
        return RunPlan("measure", f"the earlier attempt ({doc.get('status')}) recorded nothing")
    return RunPlan("resume", f"the earlier attempt ({doc.get('status')}) recorded {records} of "
                             f"{grid.pulls()} pulls", records)


def run_name(notebook: str, grid: local.LocalGrid) -> str:
    """A readable, grid-specific folder name, so a changed grid never reuses another grid's records.

    It ends in a digest of the whole grid: settings the readable part leaves out (rate, delay,
    where the disk is) also get their own folder.
    """
    sizes = "-".join(f"{s // MB}MB" for s in grid.sizes_bytes)
    layers = "-".join(map(str, grid.layers))
    snapshotters = "" if grid.snapshotters == ("overlayfs",) else "_" + "-".join(grid.snapshotters)
    digest = hashlib.sha256(json.dumps(_grid_json(grid), sort_keys=True).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._-]", "_",
                  f"{notebook}_{sizes}_L{layers}_{'-'.join(grid.contents)}_{'-'.join(grid.storage)}_"
                  f"{'-'.join(grid.links)}{snapshotters}_r{grid.repetitions}_s{grid.seed}_{digest}")


def measure(notebook: str, grid: dict | None = None, *, run_dir: str | Path | None = None, reuse: bool = True,
            progress: bool = True, replicate: int = 1) -> tuple[pd.DataFrame, Path, str]:
    """The local records for a notebook's grid: reused if a finished run of it exists, resumed if an
    unfinished one does (see :func:`plan_run`), else measured now.

    ``replicate`` > 1 names another run of the same grid (``…_rep2``): measured after the first, it
    says how far re-running the whole grid moves the result (:func:`measure_replicates`).
    """
    spec = dict(GRIDS[notebook] if grid is None else grid)
    spec["sizes_bytes"] = [int(s) for s in spec["sizes_bytes"]]
    g = local.LocalGrid(**spec)
    name = run_name(notebook, g) + (f"_rep{replicate}" if replicate > 1 else "")
    folder = Path(run_dir) if run_dir else runs_dir() / name
    plan = plan_run(folder, g, reuse)
    if plan.action == "refuse":
        raise local.LocalRunError(plan.reason)
    if plan.action == "reuse":
        how = f"reused the finished local run in `{folder}`"
    else:
        local.run(g, folder, name=folder.name, progress=progress, resume=True)
        kept = f" (resumed: {plan.reason}, kept)" if plan.action == "resume" else ""
        how = f"measured {g.pulls() - plan.records} cold pulls on this machine into `{folder}`{kept}"
    report = how + _conditions_text(folder)
    return local.load_local_run(folder), folder, report


def measure_replicates(notebook: str, grid: dict | None = None, replicates: int = 2, *, progress: bool = True
                       ) -> tuple[list[pd.DataFrame], list[Path], str]:
    """``replicates`` runs of the same grid, one after the other: the local backend's re-runs.

    Within a run the repetitions are the replicates (the cluster-level interval resamples them);
    between runs, the spread of the same comparison is the local noise floor.
    """
    if not isinstance(replicates, int) or isinstance(replicates, bool) or replicates < 1:
        raise ValueError(f"local_replicates must be a whole number >= 1, got {replicates!r}")
    records, folders, reports = [], [], []
    for k in range(1, replicates + 1):
        r, folder, report = measure(notebook, grid, progress=progress, replicate=k)
        records.append(r)
        folders.append(folder)
        reports.append(f"replicate {k}: {report}" if replicates > 1 else report)
    return records, folders, "\n\n".join(reports)


def reported_not_judged(notebook: str, metrics: dict) -> list[Verdict]:
    """For a notebook that measured locally (its metrics name the ``local_run``): each claim of its study
    as "not testable here", saying that local runs are reported, not judged. Else none."""
    run = metrics.get("local_run")
    if not run:
        return []
    study = notebook.split("-", 1)[0]
    reason = LOCAL_RUN_REASON.format(study=study, run=run)
    return [Verdict(c.id, "not testable here", reason, notebook=notebook) for c in CLAIMS.values() if c.study == study]


def _conditions_text(folder: Path) -> str:
    path = folder / "conditions.json"
    if not path.is_file():
        return ""
    lines = []
    for c in json.loads(path.read_text()):
        state = "available" if c["available"] else f"**unavailable: {c['reason']}**"
        rate = f", link measured {c['link_mbit_measured']:.0f} Mbit/s" if c.get("link_mbit_measured") else ""
        lines.append(f"\n* {c['condition']}: {state}{rate}")
    return "; conditions:" + "".join(lines)


def with_time_to_useful_work(records: pd.DataFrame) -> pd.DataFrame:
    """Adds ``ttuw_s``: the pull plus reading every file once (what a container waits before its data is there)."""
    return records.assign(ttuw_s=records["pull_s"] + records["read_s"])


def condition_pulls(records: pd.DataFrame, time: str = "pull_s", **where) -> pd.DataFrame:
    """The analysable pulls of the records whose columns equal ``where`` (e.g. storage="tmpfs")."""
    mask = pd.Series(True, index=records.index)
    for col, value in where.items():
        mask &= records[col] == value
    selected, _ = pulls.analysable_pulls(records[mask], time)
    return selected


def compare_conditions(records: pd.DataFrame, field: str, baseline: str, treatment: str, *,
                       time: str = "pull_s", margin: float = 0.10, n_boot: int = 2000, seed: int = 0,
                       **where) -> compare.Comparison:
    """A baseline/treatment comparison between two conditions of one local run (e.g. disk vs tmpfs)."""
    base = condition_pulls(records, time, **where, **{field: baseline})
    treat = condition_pulls(records, time, **where, **{field: treatment})
    label = ",".join(f"{k}={v}" for k, v in where.items())
    return compare.compare_runs(base, treat, baseline=f"{field}={baseline}" + (f" ({label})" if label else ""),
                                treatment=f"{field}={treatment}" + (f" ({label})" if label else ""),
                                time=time, margin=margin, n_boot=n_boot, seed=seed)


def compare_with_replicates(records: pd.DataFrame, replicates: list[pd.DataFrame], field: str, baseline: str,
                            treatment: str, *, time: str = "pull_s", margin: float = 0.10, n_boot: int = 2000,
                            seed: int = 0, **where) -> compare.Comparison:
    """The comparison in the first run, the same comparison in each replicate run, and the null comparisons.

    A null comparison sets one condition of the first run against the same condition of a replicate
    run (nothing changed but the time): its spread is the local noise floor, exactly as the
    archive's same-condition pairs are for the cloud runs.
    """
    opts = dict(time=time, margin=margin, n_boot=n_boot, seed=seed)
    comp = compare_conditions(records, field, baseline, treatment, **opts, **where)
    label = ",".join(f"{k}={v}" for k, v in where.items())
    rows = []
    for k, rep in enumerate(replicates, start=2):
        r = compare_conditions(rep, field, baseline, treatment, **opts, **where)
        r.baseline, r.treatment = f"{r.baseline} [replicate {k}]", f"{r.treatment} [replicate {k}]"
        comp.replications.append(r)
        for value in (baseline, treatment):
            name = f"{field}={value}" + (f" ({label})" if label else "")
            null = compare.compare_runs(condition_pulls(records, time, **where, **{field: value}),
                                        condition_pulls(rep, time, **where, **{field: value}),
                                        baseline=f"{name} [replicate 1]", treatment=f"{name} [replicate {k}]", **opts)
            e = null.effect()
            rows.append({"baseline": null.baseline, "treatment": null.treatment, "images": null.overall.groups,
                         "speedup": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high,
                         "within_ci_low": e.within_low, "within_ci_high": e.within_high,
                         "clusters": f"{e.clusters[0]}+{e.clusters[1]}", "status": "compared"})
    if replicates:
        comp.nulls = pd.DataFrame(rows)
        comp.floor = noise.floor_from(comp.nulls)
    return comp


def compare_by_content(records: pd.DataFrame, field: str, baseline: str, treatment: str, *, out=None,
                       time: str = "pull_s", label: str = "", replicates: list[pd.DataFrame] = (),
                       **options) -> dict[str, compare.Comparison]:
    """:func:`compare_with_replicates` per content mode (a zeros and a random image share a tag, not a cost).

    With ``out`` (a StudyOutput) each comparison's per-image table and overall speedup are recorded,
    named with ``label`` and the content mode, and with replicate runs the run-to-run spread.
    """
    result = {}
    for content in records["content"].dropna().unique():
        comp = compare_with_replicates(records, list(replicates), field, baseline, treatment, time=time,
                                       content=content, **options)
        result[str(content)] = comp
        if out is not None:
            out.table(comp.per_image, f"{label}speedup-per-image-{content}")
            e = comp.effect()
            out.metric(f"{label}overall_speedup[{content}]",
                       {"ratio": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high, "images": comp.overall.groups,
                        "within_ci_low": e.within_low, "within_ci_high": e.within_high,
                        "replicates": comp.clusters, "noise_floor": comp.floor.factor if comp.floor else None})
            if comp.nulls is not None:
                out.table(comp.nulls, f"{label}replicate-runs-{content}")
    return result

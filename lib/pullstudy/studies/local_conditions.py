"""A local run analysed: its pulls per condition, the comparison of two conditions with the
replicate runs as the noise floor, per content, and the 'reported, not judged' verdicts.

Measuring (grids, reusing or resuming a run) is the local source's job (``sources/local/``);
this is analysis, so it lives with the studies and imports no backend.
"""
from __future__ import annotations

import pandas as pd

from . import compare, noise
from pullstudy.records import analysable_pulls

def with_time_to_useful_work(records: pd.DataFrame) -> pd.DataFrame:
    """Adds ``ttuw_s``: the pull plus reading every file once (what a container waits before its data is there);
    for an application image (workload apps), the pull plus creating and running the container to its ready
    line (empty when it never got ready)."""
    work = records["pull_s"] + records["read_s"]
    if "run_s" in records and "workload" in records:
        apps = (records["workload"] == "apps").fillna(False).astype(bool)
        work = work.where(~apps, records["pull_s"] + records["create_s"] + records["run_s"])
    return records.assign(ttuw_s=work)


def condition_pulls(records: pd.DataFrame, time: str = "pull_s", **where) -> pd.DataFrame:
    """The analysable pulls of the records whose columns equal ``where`` (e.g. storage="tmpfs")."""
    mask = pd.Series(True, index=records.index)
    for col, value in where.items():
        mask &= records[col] == value
    selected, _ = analysable_pulls(records[mask], time)
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

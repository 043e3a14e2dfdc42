"""From record sources to the pulls an analysis uses, with the account of exclusions; summaries.

Shared by every pull-time notebook, so each says the same things the same way: what was read, what
could not be read, what was left out and why, and medians with bootstrap CIs of both kubelet figures.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from . import completeness
from pullstudy import stats
from pullstudy.sources import source_for
from pullstudy.sources.interface import RecordSource

TIME_LABELS = {
    "pull_wait_s": "pull time including waiting (s)",
    "pull_s": "pull time (s)",
    "ttuw_s": "time to useful work: pull + reading every file (s)",
}


def load_sources(sources: Iterable[RecordSource], cluster_nodes: Iterable[int] | None, time: str, out=None, *,
                 require_size: bool = True, progress: bool = True) -> tuple[dict[str, pd.DataFrame], str]:
    """Load record sources, keep their analysable pulls, and account for everything else.

    With ``out`` (a StudyOutput) the input summary table, the unavailable files, the exclusions
    (failed event captures among them) and what became of every requested cluster size
    (``cluster_sizes[<source>]``: size -> status and reason) are recorded in the results. Returns the
    pulls per source id and a Markdown report for the notebook that names every requested size.
    A source with no usable pulls at the chosen cluster sizes is an error that says what to do.
    """
    nodes = list(cluster_nodes) if cluster_nodes is not None else None
    unique = {s.id: s for s in sources}
    loaded = {sid: s.load(nodes, time=time, require_size=require_size, progress=progress) for sid, s in unique.items()}
    summaries = [r.summary for r in loaded.values() if r.summary is not None]
    if out is not None:
        if summaries:
            out.table(pd.DataFrame(summaries).fillna(0), "input-summary")
        ledgers = {sid: r.ledger for sid, r in loaded.items() if r.ledger is not None}
        if ledgers:
            completeness.record(out, ledgers, nodes)
    pulls, lines = {}, []
    for sid, result in loaded.items():
        pulls[sid] = result.records
        if out is not None:
            if result.local_run is None:
                out.metric(f"unavailable_files[{sid}]", result.unavailable)
                out.metric(f"cluster_sizes[{sid}]", {str(n): v for n, v in result.cluster_sizes.items()})
            for reason, count in result.excluded.items():
                out.excluded(f"{sid}: {reason}", count)
        lines += result.report_lines
        if result.records.empty:
            raise RuntimeError(f"{sid}: no analysable pulls at cluster sizes {nodes} "
                               f"({result.empty_reason or 'nothing read'}); if files are unavailable run `make data`, "
                               "or choose cluster sizes the catalog marks available")
    return pulls, "\n".join(lines)


def load_for_analysis(run_ids: Iterable[str], cluster_nodes: Iterable[int] | None, time: str, out=None, *,
                      require_size: bool = True, progress: bool = True) -> tuple[dict[str, pd.DataFrame], str]:
    """:func:`load_sources` for runs by id (archived, or recorded by the kube backend): the pulls per run and
    the Markdown account."""
    return load_sources([source_for(r) for r in run_ids], cluster_nodes, time, out, require_size=require_size,
                        progress=progress)


def median_summary(df: pd.DataFrame, by: list[str], *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Medians with bootstrap 95% CIs of both kubelet figures, side by side, each with two intervals.

    ``*_ci_low/high`` resample pulls within each group; ``*_cluster_ci_low/high`` resample the
    clusters behind the group first (:func:`replicate_units`), then pulls within them, and
    ``clusters`` says how many there are (with one, both intervals cover within-cluster variation only).
    """
    parts = []
    data = df.assign(cluster_id=replicate_units(df))
    for time in ("pull_wait_s", "pull_s"):
        t = stats.median_table(df, by, time, n_boot=n_boot, seed=seed)
        t = t.rename(columns={c: f"{time}_{c}" for c in ("n", "median", "ci_low", "ci_high")})
        rows = []
        for key, g in data.groupby(by, sort=True, dropna=False):
            groups, _, boot, k = stats.cluster_bootstrap_group_medians(g, time, group=by, n_boot=n_boot, seed=seed)
            low, high = stats.interval_of(boot[:, 0]) if groups else (float("nan"), float("nan"))
            rows.append([*(key if isinstance(key, tuple) else (key,)), low, high, k])
        cl = pd.DataFrame(rows, columns=[*by, f"{time}_cluster_ci_low", f"{time}_cluster_ci_high", "clusters"])
        parts.append(t.merge(cl, on=by, how="left"))
    out = parts[0].merge(parts[1].drop(columns=["clusters"]), on=by)
    return out.rename(columns={"pull_wait_s_n": "n"}).drop(columns=["pull_s_n"])


def transfer_table(df: pd.DataFrame, by: tuple[str, ...] = ("layers", "size_bytes")) -> pd.DataFrame:
    """Built (uncompressed) size against the bytes the runtime reported pulling, per image."""
    t = (df.groupby(list(by), as_index=False, dropna=False)  # images without a built size stay, as NaN
           .agg(image_size_reported=("image_size_reported", "median"), pulls=("pull_wait_s", "size")))
    t["compression_ratio"] = t["size_bytes"] / t["image_size_reported"]
    return t


def replicate_units(pulls: pd.DataFrame) -> pd.Series:
    """The unit of replication of each pull: its cluster instance, or a local run's repetition.

    Each cluster size of an archived run was created and deleted on its own (and a size may hold
    several clusters: :func:`pullstudy.studies.clusters.cluster_instances`); pulls in one cluster share its
    disks and network, so the cluster, not the pull, is what re-running varies.
    """
    from .clusters import cluster_instances

    run = pulls["run"].astype(str) if "run" in pulls.columns else pd.Series("", index=pulls.index)
    if "repetition" in pulls.columns and pulls["repetition"].notna().all():
        return run + " rep " + pulls["repetition"].astype(str)
    if {"source", "node", "pulled_at"} <= set(pulls.columns):
        instance = cluster_instances(pulls)
    else:  # records without provenance (synthetic tables): one cluster per run and size
        instance = pd.Series(1, index=pulls.index)
    nodes = pulls["cluster_nodes"].astype("string").fillna("?") if "cluster_nodes" in pulls.columns else "?"
    return run + " @" + nodes + " #" + instance.astype(str)

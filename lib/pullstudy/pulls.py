"""From pull records to the pulls an analysis uses: selection with counted exclusions, summaries.

Shared by every pull-time notebook, so each says the same things the same way: what was read, what
could not be read, what was left out and why, and medians with bootstrap CIs of both kubelet figures.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import pandas as pd

from . import completeness, stats
from .backends import archive
from .events import split_image

GB = 1e9
TIME_LABELS = {
    "pull_wait_s": "pull time including waiting (s)",
    "pull_s": "pull time (s)",
    "ttuw_s": "time to useful work: pull + reading every file (s)",
}


def image_key(records: pd.DataFrame) -> pd.Series:
    """What makes two runs' images "the same image" whatever registry served them.

    Synthetic images are named by their tag (``9-layers-size-…-bytes``) and live in differently
    named repositories per registry; application images are known by repository name and tag.
    """
    def key(image: str, tag) -> str:
        repo, _ = split_image(image)
        base = repo.rsplit("/", 1)[-1]
        return str(tag) if tag is not None and not pd.isna(tag) and "-layers-size-" in str(tag) else f"{base}:{tag}"
    return pd.Series([key(i, t) for i, t in zip(records["image"], records["tag"])], index=records.index,
                     dtype="string")


def analysable_pulls(records: pd.DataFrame, time: str = "pull_wait_s", *,
                     require_size: bool = True) -> tuple[pd.DataFrame, Counter]:
    """The experiment's own image pulls with a timing figure, and a count of what was left out and why."""
    excluded: Counter = Counter()
    is_study = records["study_image"].astype(bool)
    excluded["not one of the study's images (system pods)"] = int((~is_study).sum())
    df = records[is_study]
    excluded["cache hit (image already present on the node)"] = int(df["cache_hit"].sum())
    df = df[~df["cache_hit"]]
    no_time = df[time].isna()
    excluded[f"no {time} figure in the kubelet message"] = int(no_time.sum())
    df = df[~no_time]
    if require_size:
        no_size = df["size_bytes"].isna()
        excluded["image tag does not encode layers and size"] = int(no_size.sum())
        df = df[~no_size]
    df = df.copy()
    df["size_gb"] = df["size_bytes"].astype("Float64") / GB
    df["image_key"] = image_key(df)
    return df.reset_index(drop=True), Counter({k: v for k, v in excluded.items() if v})


def load_for_analysis(run_ids: Iterable[str], cluster_nodes: Iterable[int] | None, time: str, out=None, *,
                      require_size: bool = True, progress: bool = True) -> tuple[dict[str, pd.DataFrame], str]:
    """Load archived runs, keep the analysable pulls, and account for everything else.

    With ``out`` (a StudyOutput) the input summary table, the unavailable files, the exclusions
    (failed event captures among them) and what became of every requested cluster size
    (``cluster_sizes[<run>]``: size -> status and reason) are recorded in the results. Returns the
    pulls per run and a Markdown report for the notebook that names every requested size.
    A run with no usable pulls at the chosen cluster sizes is an error that says what to do.
    """
    nodes = list(cluster_nodes) if cluster_nodes is not None else None
    loaded = {run_id: archive.load_run(run_id, nodes, progress=progress) for run_id in dict.fromkeys(run_ids)}
    summary = archive.load_summary(loaded)
    if out is not None:
        out.table(summary, "input-summary")
        completeness.record(out, loaded, nodes)
    pulls, lines = {}, []
    for run_id, result in loaded.items():
        pulls[run_id], excluded = analysable_pulls(result.records, time, require_size=require_size)
        failed = Counter(f"event capture failed: {first}" for first in result.capture_failed.values())
        sizes = cluster_size_status(result, pulls[run_id])
        if out is not None:
            out.metric(f"unavailable_files[{run_id}]", result.unavailable)
            out.metric(f"cluster_sizes[{run_id}]", {str(n): v for n, v in sizes.items()})
            for reason, count in (excluded + failed).items():
                out.excluded(f"{run_id}: {reason}", count)
        line = (f"* **{run_id}**: {len(pulls[run_id])} pulls analysed from {len(result.files)} event file(s); "
                "excluded: " + ("; ".join([f"{r} ({c})" for r, c in excluded.items()]
                                          + [f"{r} ({c} file{'s' if c > 1 else ''})" for r, c in failed.items()])
                                or "nothing"))
        if result.unavailable:
            line += (f". **{len(result.unavailable)} event file(s) unavailable here**: "
                     + ", ".join(f"`{p}`" for p in result.unavailable))
        line += ". Cluster sizes: " + "; ".join(
            f"{n} {v['status']}" + (f" ({v['reason']})" if v["reason"] else "") for n, v in sizes.items())
        lines.append(line)
        if pulls[run_id].empty:
            why = "; ".join([f"{r}: {c}" for r, c in (excluded + failed).items()]
                            + [f"size {n}: {v['reason']}" for n, v in sizes.items() if v["status"] == "not analysed"]) \
                or f"{len(result.files)} event files read"
            raise RuntimeError(f"{run_id}: no analysable pulls at cluster sizes {nodes} ({why}); if files are "
                               "unavailable run `make data`, or choose cluster sizes the catalog marks available")
    return pulls, "\n".join(lines)


def cluster_size_status(result, pulls: pd.DataFrame) -> dict[int, dict]:
    """Every requested cluster size of one run: analysed, partly analysed or not analysed, and why.

    Starts from what ``archive.load_run`` found of each size (files missing, capture failed, not in
    the catalog) and adds how many pulls survived the selection, so that no requested size vanishes.
    """
    counts = pulls["cluster_nodes"].astype(int).value_counts().to_dict() if len(pulls) else {}
    out = {}
    for n, found in sorted(result.cluster_sizes.items()):
        pulls_n = int(counts.get(n, 0))
        if found["status"] == "not read":
            status, reason = "not analysed", found["reason"]
        elif pulls_n == 0:
            status = "not analysed"
            reason = "; ".join(filter(None, ["no analysable pulls in its events", found["reason"]]))
        else:
            status = "analysed" if found["status"] == "read" else "partly analysed"
            reason = found["reason"]
        out[n] = {"status": status, "reason": reason, "complete": bool(found["complete"]) and pulls_n > 0,
                  "pulls": pulls_n}
    return out


def median_summary(df: pd.DataFrame, by: list[str], *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Medians with bootstrap 95% CIs of both kubelet figures, side by side."""
    parts = []
    for time in ("pull_wait_s", "pull_s"):
        t = stats.median_table(df, by, time, n_boot=n_boot, seed=seed)
        parts.append(t.rename(columns={c: f"{time}_{c}" for c in ("n", "median", "ci_low", "ci_high")}))
    out = parts[0].merge(parts[1], on=by)
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
    several clusters: :func:`pullstudy.scale.cluster_instances`); pulls in one cluster share its
    disks and network, so the cluster, not the pull, is what re-running varies.
    """
    from .scale import cluster_instances

    run = pulls["run"].astype(str) if "run" in pulls.columns else pd.Series("", index=pulls.index)
    if "repetition" in pulls.columns and pulls["repetition"].notna().all():
        return run + " rep " + pulls["repetition"].astype(str)
    if {"source", "node", "pulled_at"} <= set(pulls.columns):
        instance = cluster_instances(pulls)
    else:  # records without provenance (synthetic tables): one cluster per run and size
        instance = pd.Series(1, index=pulls.index)
    nodes = pulls["cluster_nodes"].astype("string").fillna("?") if "cluster_nodes" in pulls.columns else "?"
    return run + " @" + nodes + " #" + instance.astype(str)

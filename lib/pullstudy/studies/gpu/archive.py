"""Archive layer: the Kubernetes-layer GPU checks on archived node lists of real GPU clusters.

The performance study kept ``kubectl get nodes -o json`` of its GKE, EKS and AKS GPU clusters. They
are not Usernetes, but they show what healthy (and unhealthy) GPU nodes look like and exercise the
same node checks on real objects. The files are the catalog's ``gpu_clusters``; files it lists but
this machine could not fetch are reported as unavailable, with the reason ``make data`` recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from pullstudy.data import catalog
from pullstudy.data.fetch import Manifest, load_fetch_report
from pullstudy.paths import raw_dir
from .checks import ARCHIVE, Check
from .kube import gpus_per_node_check, readiness_check
from .node_objects import NODE_COLUMNS, node_table

NODE_FILE, PROVIDERS, cluster_label = catalog.GPU_NODE_FILE, catalog.GPU_PROVIDERS, catalog.gpu_cluster_label
FILE_COLUMNS = ["key", "cluster", "provider", "path", "available", "reason"]
SUMMARY_COLUMNS = ["cluster", "provider", "nodes", "gpu_nodes", "instance_type", "accelerator", "gpus_per_node",
                   "expected_per_node", "allocatable_gpus", "expected_gpus", "degraded", "degraded_nodes",
                   "not_ready_or_tainted", "node_age_at_snapshot_s", "kubelet", "container_runtime", "gpu_driver",
                   "os_image"]


def archived_node_files(manifest: Manifest | None = None, dest_root: Path | None = None) -> pd.DataFrame:
    """Every archived GPU node list of the catalog: cluster label, provider, available here or why not."""
    dest_root = dest_root or raw_dir()
    clusters = catalog.build_gpu_clusters(manifest) if manifest is not None else catalog.load_gpu_clusters()
    why = load_fetch_report(dest_root).get("detail", {})
    rows = []
    for c in clusters:
        key, path = f"{c['source']}/{c['path']}", dest_root / c["source"] / c["path"]
        available = path.is_file()
        reason = "" if available else why.get(key, "listed in the catalog, not in data/raw (run `make data`)")
        rows.append({"key": key, "cluster": c["id"], "provider": c["provider"], "path": str(path),
                     "available": available, "reason": reason})
    return pd.DataFrame(rows, columns=FILE_COLUMNS).sort_values(["provider", "cluster"], ignore_index=True)


def _wanted(wanted: str | Iterable[str] | None) -> list[str] | None:
    """A single label is one label, not its characters."""
    return None if wanted is None else [wanted] if isinstance(wanted, (str, Path)) else [str(w) for w in wanted]


def select_files(files: pd.DataFrame, wanted: str | Iterable[str] | None) -> pd.DataFrame:
    """The files to analyse: every available one (None), or those named by key, cluster label or path."""
    wanted = _wanted(wanted)
    if wanted is None:
        return files[files["available"]]
    chosen = files[files["key"].isin(wanted) | files["cluster"].isin(wanted) | files["path"].isin(wanted)]
    unknown = set(wanted) - set(chosen["key"]) - set(chosen["cluster"]) - set(chosen["path"])
    if unknown:
        raise ValueError(f"archive_files: {sorted(unknown)} not among the archived GPU node lists: "
                         f"{', '.join(files['cluster'])}")
    return chosen[chosen["available"]]


def selection_note(files: pd.DataFrame, chosen: pd.DataFrame, wanted: str | Iterable[str] | None = None) -> str:
    """One Markdown paragraph: how many node lists are analysed, which are unavailable here, and which
    of those the user asked for by name (so a requested cluster never silently drops out)."""
    unavailable = files[~files["available"]]
    text = (f"**{len(chosen)}** node lists analysed, **{len(unavailable)}** unavailable here"
            + (f" ({', '.join(unavailable['cluster'])})." if len(unavailable) else "."))
    names = _wanted(wanted) or []
    asked = unavailable[unavailable["cluster"].isin(names) | unavailable["key"].isin(names)
                        | unavailable["path"].isin(names)]
    if len(asked):
        text += f"\n\n**Asked for but not available here:** {', '.join(asked['cluster'])}."
    return text


def read_nodes(path: str | Path) -> list[dict[str, Any]]:
    """The Node objects of a ``kubectl get nodes -o json`` file (a List, or a bare list)."""
    doc = json.loads(Path(path).read_text())
    items = doc.get("items") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ValueError(f"{path}: not a node list (no 'items')")
    return items


def cluster_nodes(files: pd.DataFrame) -> pd.DataFrame:
    """One row per node of every selected file, with its cluster label in front."""
    tables = []
    for f in files.itertuples():
        table = node_table(read_nodes(f.path), provider=f.provider)
        table.insert(0, "cluster", f.cluster)
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["cluster", *NODE_COLUMNS])


def _join(values: pd.Series) -> str:
    return ", ".join(sorted({str(v) for v in values.dropna() if str(v)}))


def _span(values: pd.Series) -> str:
    """min–max of the nodes' ages when the list was taken (a list taken seconds after creation shows it)."""
    values = values.dropna()
    return f"{values.min():.0f}–{values.max():.0f}" if len(values) else ""


def cluster_summary(nodes: pd.DataFrame) -> pd.DataFrame:
    """Per cluster: nodes, GPU nodes, GPUs per node (as allocatable), expected, degraded nodes named, versions."""
    rows = []
    for cluster, group in nodes.groupby("cluster", sort=False):
        gpu = group[group["gpu_node"]]
        alloc = gpu["gpu_allocatable"].fillna(0).astype(int)
        counts = alloc.value_counts().sort_index(ascending=False)
        rows.append({
            "cluster": cluster, "provider": group["provider"].iloc[0], "nodes": len(group), "gpu_nodes": len(gpu),
            "instance_type": _join(gpu["instance_type"]), "accelerator": _join(gpu["accelerator"]),
            "gpus_per_node": ", ".join(f"{g} ({n} nodes)" for g, n in counts.items()),
            "expected_per_node": _join(gpu["expected_gpus"]), "allocatable_gpus": int(alloc.sum()),
            "expected_gpus": int(gpu["expected_gpus"].fillna(0).sum()),
            "degraded": int(gpu["degraded"].sum()), "degraded_nodes": ", ".join(gpu.loc[gpu["degraded"], "node"]),
            "not_ready_or_tainted": int((gpu["not_ready"] | gpu["tainted"]).sum()),
            "node_age_at_snapshot_s": _span(group["age_at_snapshot_s"]),
            "kubelet": _join(group["kubelet"]), "container_runtime": _join(group["container_runtime"]),
            "gpu_driver": _join(group["gpu_driver"]) or "not labelled", "os_image": _join(group["os_image"]),
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


DEGRADED_COLUMNS = ["cluster", "node", "instance_type", "gpu_capacity", "gpu_allocatable", "expected_gpus",
                    "expected_source", "problem", "age_at_snapshot_s"]


def degraded_nodes(nodes: pd.DataFrame) -> pd.DataFrame:
    """The degraded GPU nodes by name, with what they advertise, what was expected and from where."""
    return nodes.loc[nodes["degraded"], DEGRADED_COLUMNS].reset_index(drop=True)


def _age_span(frame: pd.DataFrame) -> str:
    ages = frame["age_at_snapshot_s"].dropna()
    return f"{ages.min():.0f}–{ages.max():.0f} s" if len(ages) else "unknown"


def degraded_note(nodes: pd.DataFrame) -> str:
    """Markdown, one bullet per cluster with degraded nodes: how many of its GPU nodes, how old they were
    when the list was taken (next to its healthy GPU nodes' ages: a node listed a minute after it was
    created may simply not have its driver yet), and their names; then the clean node lists."""
    gpu = nodes[nodes["gpu_node"]]
    lines = []
    for cluster, group in gpu[gpu["degraded"]].groupby("cluster", sort=False):
        in_cluster = gpu[gpu["cluster"] == cluster]
        healthy = in_cluster[~in_cluster["degraded"]]
        age = (f"; they were {_age_span(group)} old when the list was taken"
               + (f" (its nodes with GPUs: {_age_span(healthy)})" if len(healthy) else ""))
        lines.append(f"* **{cluster}** — {len(group)} of {len(in_cluster)} GPU nodes degraded{age}: "
                     + ", ".join(f"`{n}`" for n in group["node"]))
    clean = sorted(set(nodes["cluster"]) - set(nodes.loc[nodes["degraded"], "cluster"]))
    if clean:
        lines.append(f"* no degraded node in the other {len(clean)} node lists ({', '.join(clean)})")
    return "\n".join(lines) or "No archived node list analysed."


def other_attachments(summary: pd.DataFrame) -> pd.DataFrame:
    """Clusters whose GPUs per node differ from the most common expectation of their provider: a pool that
    attached fewer GPUs (allowed for its machine type) is shown here, not counted as degraded."""
    columns = ["cluster", "provider", "instance_type", "accelerator", "gpus_per_node", "expected_per_node"]
    if summary.empty:
        return pd.DataFrame(columns=columns)
    usual = summary.groupby("provider")["expected_per_node"].agg(lambda s: s.mode().iloc[0])
    return summary.loc[summary["expected_per_node"] != summary["provider"].map(usual), columns].reset_index(drop=True)


def archive_checks(nodes: pd.DataFrame) -> list[Check]:
    """Two checks per archived cluster: GPUs per node as expected, GPU nodes Ready and untainted."""
    checks = []
    for cluster, group in nodes.groupby("cluster", sort=False):
        checks.append(gpus_per_node_check(group, ARCHIVE, cluster))
        checks.append(readiness_check(group, ARCHIVE, cluster))
    return checks

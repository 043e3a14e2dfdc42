"""Kubernetes Node objects → one tidy row per node: its GPUs against what its instance type has.

Shared by the live Kubernetes layer (nodes from the API server) and the archive (``kubectl get nodes
-o json`` of real GPU clusters), so both are judged by the same code. A GPU node is *degraded* when
its allocatable ``nvidia.com/gpu`` is below its capacity or below the count it should have.

What a node should have comes from up to three sources, and the highest applies (a node can
advertise fewer GPUs than are attached, never more, so the highest credible count is the safe
expectation): the node's own count label; its *peers* -- the most common count advertised by the
nodes of the same instance type and node pool (pools are uniform), which catches the one node of
a pool that lost a GPU even when the instance type is in no table; and the vendor table
:data:`GPU_SPECS`, which also catches a pool that is short as a whole.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

GPU = "nvidia.com/gpu"
INSTANCE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
POOL_LABELS = ("cloud.google.com/gke-nodepool", "eks.amazonaws.com/nodegroup", "kubernetes.azure.com/agentpool")
ACCELERATOR_LABELS = ("cloud.google.com/gke-accelerator", "nvidia.com/gpu.product", "kubernetes.azure.com/accelerator",
                      "accelerator")  # the last two: AKS GPU nodes (value "nvidia")
COUNT_LABELS = ("cloud.google.com/gke-accelerator-count", "nvidia.com/gpu.count")
#: Taints that only keep non-GPU pods off a GPU node: not a problem for a GPU pod that tolerates them.
GPU_TAINTS = (GPU,)


@dataclass(frozen=True)
class GpuSpec:
    """How many GPUs an instance type comes with (several counts: an attachment chosen per node pool)."""

    provider: str
    instance_type: str
    accelerator: str | None  # the accelerator label value it applies to (None: any)
    gpu_model: str
    counts: tuple[int, ...]
    source: str
    note: str


#: The instance types of the performance study's GPU clusters (archived node lists and cluster READMEs).
GPU_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec("AKS", "Standard_ND40rs_v2", None, "NVIDIA V100 (32 GB, NVLink)", (8,),
            "https://learn.microsoft.com/azure/virtual-machines/ndv2-series",
            "NDv2 series: Standard_ND40rs_v2 has 8 V100 32 GB GPUs; the AKS GPU clusters of the performance "
            "study (sizes 4-32, experiments/azure/aks/gpu/*/README.md) used it"),
    GpuSpec("EKS", "p3dn.24xlarge", None, "NVIDIA V100 (32 GB)", (8,),
            "https://aws.amazon.com/ec2/instance-types/p3/",
            "Amazon EC2 P3 instances: p3dn.24xlarge has 8 V100 GPUs"),
    GpuSpec("GKE", "n1-standard-32", "nvidia-tesla-v100", "NVIDIA V100 (16 GB)", (4, 8),
            "https://cloud.google.com/compute/docs/gpus",
            "GPU machine types, N1 + NVIDIA V100: 1 or 2 GPUs allow at most 12 or 24 vCPUs, 4 up to 48, 8 up to 96; "
            "n1-standard-32 (32 vCPUs) therefore takes 4 or 8, chosen per node pool"),
)

NODE_COLUMNS = [
    "node", "provider", "pool", "instance_type", "accelerator", "gpu_node", "gpu_capacity", "gpu_allocatable",
    "expected_gpus", "expected_source", "degraded", "problem", "ready", "not_ready", "taints", "tainted",
    "kubelet", "container_runtime", "kernel", "os_image", "gpu_driver", "cuda", "age_at_snapshot_s",
]


def gpu_spec_table() -> pd.DataFrame:
    """The expected-GPU table as a frame, with its sources (shown and saved by the notebook)."""
    return pd.DataFrame([{"provider": s.provider, "instance_type": s.instance_type,
                          "accelerator_label": s.accelerator or "", "gpu_model": s.gpu_model,
                          "gpus": " or ".join(map(str, s.counts)), "source": s.source, "note": s.note}
                         for s in GPU_SPECS])


def spec_for(instance_type: str | None, accelerator: str | None) -> GpuSpec | None:
    """The table's entry for an instance type; Azure VM sizes match case-insensitively (labels and the
    CLI spell them differently: ``Standard_ND40rs_v2``, ``standard_nd40rs_v2``)."""
    wanted = (instance_type or "").lower()
    for spec in GPU_SPECS:
        if spec.instance_type.lower() == wanted and spec.accelerator in (None, accelerator):
            return spec
    return None


def peer_count(counts: Iterable[int | None]) -> tuple[int | None, str]:
    """The most common GPU count advertised by a group of peer nodes, and how it was found.

    Nodes that advertise no GPU do not vote (they are flagged on their own). At least two nodes
    must advertise a count: a lone node is no evidence about itself. On a tie the larger count
    wins, since a node cannot advertise more GPUs than it has.
    """
    advertised = pd.Series([c for c in counts if c], dtype="Int64")
    if len(advertised) < 2:
        return None, ""
    tally = advertised.value_counts()
    top = tally.max()
    count = int(max(tally[tally == top].index))
    tie = " (a tie: the larger)" if (tally == top).sum() > 1 else ""
    return count, f"{top} of {len(advertised)} peer nodes advertise {count}{tie}"


def _quantity(value: Any) -> int | None:
    """An extended-resource quantity ("8") as an int; None when the node does not advertise it."""
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def _label(labels: dict, keys: Iterable[str]) -> str | None:
    return next((labels[k] for k in keys if labels.get(k)), None)


def _name_prefix(name: str) -> str:
    return name.rsplit("-", 1)[0]


def _assign_pools(rows: list[dict]) -> None:
    """The node pool of each row (pools are uniform in machine and GPUs).

    From the pool label; a node still missing its labels (just joined) joins the pool of labelled
    nodes whose names share its prefix (``gke-<cluster>-<pool>-<hash>-``), else its own prefix.
    """
    by_prefix = {_name_prefix(r["node"]): r["pool"] for r in rows if r["pool"]}
    for row in rows:
        row["pool"] = row["pool"] or by_prefix.get(_name_prefix(row["node"]), _name_prefix(row["node"]))


def _ready(status: dict) -> str:
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return "unknown" if cond is None else ("True" if cond.get("status") == "True" else cond.get("status", "?"))


def _taints(spec: dict) -> list[str]:
    return [f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}" for t in spec.get("taints") or []]


def _blocking(spec: dict) -> bool:
    return any(t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") not in GPU_TAINTS
               for t in spec.get("taints") or [])


def _driver(labels: dict) -> str:
    """The GPU driver as labels say it (GPU feature discovery, or GKE's driver-version setting)."""
    full = labels.get("nvidia.com/cuda.driver-version.full")
    parts = [labels.get(f"nvidia.com/cuda.driver.{p}") for p in ("major", "minor", "rev")]
    if full:
        return full
    if parts[0]:
        return ".".join(p for p in parts if p)
    gke = labels.get("cloud.google.com/gke-gpu-driver-version")
    return f"GKE-installed ({gke})" if gke else ""


def _cuda(labels: dict) -> str:
    full = labels.get("nvidia.com/cuda.runtime-version.full")
    major, minor = labels.get("nvidia.com/cuda.runtime.major"), labels.get("nvidia.com/cuda.runtime.minor")
    return full or (f"{major}.{minor}" if major else "")


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def snapshot_time(nodes: list[dict]) -> dt.datetime | None:
    """When the node list was taken, near enough: the latest condition heartbeat in it."""
    beats = [_time(c.get("lastHeartbeatTime")) for n in nodes for c in n.get("status", {}).get("conditions") or []]
    beats = [b for b in beats if b]
    return max(beats) if beats else None


def _base_row(node: dict, provider: str, snapshot: dt.datetime | None) -> dict[str, Any]:
    meta, spec, status = node.get("metadata", {}), node.get("spec", {}), node.get("status", {})
    labels, info = meta.get("labels") or {}, status.get("nodeInfo") or {}
    created = _time(meta.get("creationTimestamp"))
    ready = _ready(status)
    return {
        "node": meta.get("name", "?"), "provider": provider, "pool": _label(labels, POOL_LABELS),
        "instance_type": _label(labels, INSTANCE_LABELS) or "", "accelerator": _label(labels, ACCELERATOR_LABELS),
        "count_label": _quantity(_label(labels, COUNT_LABELS)),
        "gpu_capacity": _quantity((status.get("capacity") or {}).get(GPU)),
        "gpu_allocatable": _quantity((status.get("allocatable") or {}).get(GPU)),
        "ready": ready, "not_ready": ready != "True", "taints": "; ".join(_taints(spec)), "tainted": _blocking(spec),
        "kubelet": info.get("kubeletVersion", ""), "container_runtime": info.get("containerRuntimeVersion", ""),
        "kernel": info.get("kernelVersion", ""), "os_image": info.get("osImage", ""),
        "gpu_driver": _driver(labels), "cuda": _cuda(labels),
        "age_at_snapshot_s": (snapshot - created).total_seconds() if snapshot and created else None,
    }


def _from_table(spec: GpuSpec | None, pool_max: int) -> tuple[int | None, str]:
    """The table's count: a fixed type's, or for a per-pool attachment the pool's (else the smallest)."""
    if spec is None:
        return None, ""
    if len(spec.counts) == 1:
        return spec.counts[0], f"{spec.instance_type} spec ({spec.source})"
    allowed = " or ".join(map(str, spec.counts))
    if pool_max in spec.counts:
        return pool_max, f"node pool's attachment ({allowed} allowed for {spec.instance_type}; {spec.source})"
    return min(spec.counts), f"at least {min(spec.counts)} ({allowed} allowed for {spec.instance_type}; {spec.source})"


def _expected(row: dict, spec: GpuSpec | None, pool_max: int, peers: tuple[int | None, str]) -> tuple[int | None, str]:
    """The GPUs this node should have, and why: the highest of its count label, its peers and the table."""
    sources = [(row["count_label"], "node label"), (peers[0], f"peers: {peers[1]}"), _from_table(spec, pool_max)]
    sources = [(n, why) for n, why in sources if n is not None]
    if not sources:
        return None, "instance type not in the table and no peer nodes to compare with"
    best = max(n for n, _ in sources)
    return best, "; ".join(why for n, why in sources if n == best)


def _problem(row: dict) -> str:
    cap, alloc, expected = row["gpu_capacity"], row["gpu_allocatable"] or 0, row["expected_gpus"]
    problems = []
    if cap is None:
        problems.append(f"advertises no {GPU}")
    elif alloc < cap:
        problems.append(f"allocatable {alloc} < capacity {cap}")
    if expected is not None and alloc < expected:
        problems.append(f"allocatable {alloc} < expected {expected}")
    return "; ".join(problems)


def node_table(nodes: list[dict], provider: str = "") -> pd.DataFrame:
    """One row per node (see :data:`NODE_COLUMNS`); ``degraded`` names the GPU nodes short of GPUs."""
    snapshot = snapshot_time(nodes)
    rows = [_base_row(n, provider, snapshot) for n in nodes]
    _assign_pools(rows)
    pools: dict[str, dict[str, Any]] = {}
    for row in rows:  # a pool is a GPU pool if any node in it shows a GPU sign (pools are uniform)
        pool = pools.setdefault(row["pool"], {"accelerator": None, "max": 0, "type": row["instance_type"]})
        pool["accelerator"] = pool["accelerator"] or row["accelerator"]
        pool["max"] = max(pool["max"], row["gpu_capacity"] or 0)
    peers: dict[tuple[str, str], list[int | None]] = {}
    for row in rows:  # peers: the same instance type in the same pool
        peers.setdefault((row["instance_type"], row["pool"]), []).append(row["gpu_capacity"])
    peer = {key: peer_count(counts) for key, counts in peers.items()}
    for row in rows:
        pool = pools[row["pool"]]
        accelerator = row["accelerator"] or pool["accelerator"]
        spec = spec_for(row["instance_type"], accelerator)
        row["gpu_node"] = bool(row["gpu_capacity"] or accelerator or spec or row["count_label"] or pool["max"])
        row["own_accelerator"], row["accelerator"] = bool(row["accelerator"]), accelerator or ""
        row["expected_gpus"], row["expected_source"] = \
            _expected(row, spec, pool["max"], peer[(row["instance_type"], row["pool"])]) if row["gpu_node"] \
            else (None, "not a GPU node")
        row["problem"] = _problem(row) if row["gpu_node"] else ""
        if row["problem"] and not row["own_accelerator"] and accelerator:
            row["problem"] += " (its GPU labels not applied yet)"
        row["degraded"] = bool(row["problem"])
    table = pd.DataFrame(rows, columns=NODE_COLUMNS)
    for column in ("gpu_capacity", "gpu_allocatable", "expected_gpus"):
        table[column] = table[column].astype("Int64")
    return table

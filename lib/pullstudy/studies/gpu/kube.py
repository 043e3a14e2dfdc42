"""Kubernetes layer: device plugin, GPUs per node, and a pod that must see its GPUs.

Read through the official ``kubernetes`` client from a kubeconfig *path* (its contents never
leave the client: no token, certificate or server address enters evidence). Objects are turned
into plain JSON dicts first, so the same functions judge live objects and archived ``kubectl get
-o json`` output. The GPU pod is always deleted afterwards, also when it fails or times out; a
dry run only builds its manifest.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .checks import KUBE, Check, failed, passed, skipped, trim
from .host import parse_nvidia_smi_list
from .node_objects import GPU, node_table

PLUGIN = "NVIDIA device plugin ready on every GPU node"
OPERATOR = "plain device plugin, not the GPU Operator"
ALLOC = "nvidia.com/gpu capacity = allocatable = expected"
READY = "GPU nodes Ready and untainted"
POD = "GPU pod sees its GPUs (nvidia-smi -L)"
TRAINING = "PyTorch training job completed its epochs"
CLUSTER_NAMES = (PLUGIN, OPERATOR, ALLOC, READY, POD)
POD_IMAGE = "nvcr.io/nvidia/cuda:12.8.0-base-ubuntu24.04"  # the source's CUDA 12.8 on Ubuntu 24.04
REQUEST_TIMEOUT_S = 15
OPERATOR_DAEMONSETS = ("nvidia-operator-validator", "nvidia-container-toolkit-daemonset", "nvidia-dcgm-exporter")


class KubeUnavailable(Exception):
    """No cluster to ask: no kubeconfig, an unreadable one, or an API server that does not answer."""


# ---------------------------------------------------------------- client access


def plain(obj: Any) -> Any:
    """A kubernetes client model (or a list of them) as the JSON dict ``kubectl -o json`` would give."""
    if isinstance(obj, (dict, list, str, int, float, bool)) or obj is None:
        return obj
    from kubernetes.client import ApiClient
    return ApiClient().sanitize_for_serialization(obj)


def load_api(kubeconfig: str | Path | None):
    """An ApiClient for the kubeconfig at this path; every failure is a KubeUnavailable naming the path only."""
    if not kubeconfig:
        raise KubeUnavailable("no kubeconfig given (parameter kubeconfig)")
    path = Path(kubeconfig).expanduser()
    if not path.is_file():
        raise KubeUnavailable(f"kubeconfig {str(kubeconfig)!r} does not exist")
    from kubernetes import client, config
    try:
        api = config.new_client_from_config(config_file=str(path))
    except Exception as exc:  # noqa: BLE001 - any config problem is a skip; its text may quote the file
        raise KubeUnavailable(f"kubeconfig {str(kubeconfig)!r} could not be loaded ({type(exc).__name__})") from None
    try:
        version = client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, unauthorized: no cluster to check
        raise KubeUnavailable(f"the API server of kubeconfig {str(kubeconfig)!r} did not answer "
                              f"({type(exc).__name__}{_status(exc)})") from None
    return api, getattr(version, "git_version", "?")


def _status(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return f" {status}" if status else ""


# ---------------------------------------------------------------- device plugin


def _containers(ds: dict) -> list[dict]:
    return ds.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []


def is_device_plugin(ds: dict) -> bool:
    name = ds.get("metadata", {}).get("name", "")
    return ("nvidia" in name and "device-plugin" in name) or \
        any("device-plugin" in c.get("image", "") and "nvidia" in c.get("image", "") for c in _containers(ds))


def is_gpu_operator(ds: dict) -> bool:
    meta = ds.get("metadata", {})
    owners = {o.get("kind") for o in meta.get("ownerReferences") or []}
    return (meta.get("namespace") == "gpu-operator" or "ClusterPolicy" in owners
            or (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "gpu-operator"
            or meta.get("name") in OPERATOR_DAEMONSETS)


def _pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod.get("status", {}).get("conditions") or [])


def _owned_by(pod: dict, ds: dict) -> bool:
    meta = ds.get("metadata", {})
    return pod.get("metadata", {}).get("namespace") == meta.get("namespace") and any(
        o.get("kind") == "DaemonSet" and o.get("name") == meta.get("name")
        for o in pod.get("metadata", {}).get("ownerReferences") or [])


def device_plugin_check(daemonsets: list[dict], pods: list[dict], gpu_nodes: list[str]) -> Check:
    """Is a device plugin pod Ready on every GPU node (by its pods; by the DaemonSet's counts if no node is known)?"""
    plugins = [ds for ds in daemonsets if is_device_plugin(ds)]
    if not plugins:
        return failed(KUBE, PLUGIN, "no NVIDIA device plugin DaemonSet in any namespace", "device_plugin")
    ready_on = {p.get("spec", {}).get("nodeName") for ds in plugins for p in pods if _owned_by(p, ds) and _pod_ready(p)}
    described = []
    for ds in plugins:
        meta, status = ds["metadata"], ds.get("status", {})
        images = ", ".join(c.get("image", "?") for c in _containers(ds))
        described.append(f"{meta.get('namespace')}/{meta.get('name')} ({images}): ready "
                         f"{status.get('numberReady', 0)}/{status.get('desiredNumberScheduled', 0)}")
    evidence = "; ".join(described)
    if gpu_nodes:
        missing = sorted(set(gpu_nodes) - ready_on)
        if missing:
            return failed(KUBE, PLUGIN, f"{evidence}; no ready plugin pod on {', '.join(missing)}", "device_plugin")
        return passed(KUBE, PLUGIN, f"{evidence}; a ready pod on each of the {len(gpu_nodes)} GPU nodes")
    if all(ds.get("status", {}).get("numberReady", 0) == ds.get("status", {}).get("desiredNumberScheduled", -1) > 0
           for ds in plugins):
        return passed(KUBE, PLUGIN, f"{evidence}; no node advertises GPUs yet, judged by the DaemonSet's counts")
    return failed(KUBE, PLUGIN, evidence, "device_plugin")


def operator_check(daemonsets: list[dict]) -> Check:
    found = sorted({f"{ds['metadata'].get('namespace')}/{ds['metadata'].get('name')}"
                    for ds in daemonsets if is_gpu_operator(ds)})
    if found:
        return failed(KUBE, OPERATOR, f"GPU Operator components: {', '.join(found)}", "gpu_operator")
    return passed(KUBE, OPERATOR, f"no GPU Operator DaemonSet among {len(daemonsets)} DaemonSets")


# ---------------------------------------------------------------- nodes


def gpus_per_node_check(table: pd.DataFrame, layer: str = KUBE, scope: str = "") -> Check:
    """Every GPU node's allocatable GPUs equal its capacity and its instance type's count; else name the nodes."""
    name = f"{scope}: {ALLOC}" if scope else ALLOC
    gpu = table[table["gpu_node"]]
    if gpu.empty:
        return failed(layer, name, f"no GPU node among {len(table)} nodes (none advertises {GPU})", "device_plugin")
    counts = gpu["gpu_allocatable"].fillna(0).astype(int).value_counts().sort_index(ascending=False)
    per_node = ", ".join(f"{n} nodes × {g} GPUs" for g, n in counts.items())
    degraded = gpu[gpu["degraded"]]
    if degraded.empty:
        return passed(layer, name, f"{len(gpu)} GPU nodes: {per_node} allocatable, as expected")
    named = "; ".join(f"{compact_names(list(g['node']))} ({problem})" for problem, g in degraded.groupby("problem"))
    return failed(layer, name, f"{len(degraded)} of {len(gpu)} GPU nodes degraded ({per_node} allocatable): {named}",
                  "allocatable")


def compact_names(names: list[str]) -> str:
    """Node names short enough to list them all: ``gke-…-pool-2c8d69ed-{0w1c, 11jc}`` for a shared prefix."""
    if len(names) < 2:
        return ", ".join(names)
    prefix = os.path.commonprefix(names)
    prefix = prefix[: prefix.rfind("-") + 1] if "-" in prefix else ""
    if len(prefix) < 8:
        return ", ".join(names)
    return prefix + "{" + ", ".join(n[len(prefix):] for n in names) + "}"


def readiness_check(table: pd.DataFrame, layer: str = KUBE, scope: str = "") -> Check:
    name = f"{scope}: {READY}" if scope else READY
    gpu = table[table["gpu_node"]]
    bad = gpu[gpu["not_ready"] | gpu["tainted"]]
    if gpu.empty:
        return skipped(layer, name, "no GPU node to look at")
    if bad.empty:
        return passed(layer, name, f"all {len(gpu)} GPU nodes Ready, no blocking taint")
    named = "; ".join(f"{r.node} (Ready={r.ready}{', taints ' + r.taints if r.tainted else ''})" for r in bad.itertuples())
    return failed(layer, name, f"{len(bad)} of {len(gpu)} GPU nodes: {named}", "not_ready")


# ---------------------------------------------------------------- the GPU pod


def gpu_pod_manifest(gpus: int = 1, image: str = POD_IMAGE, namespace: str = "default",
                     name: str | None = None, runtime_class: str | None = None) -> dict[str, Any]:
    """A pod that requests ``gpus`` GPUs and lists what it sees; tolerates the usual GPU taint."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": "nvidia-smi", "image": image, "command": ["nvidia-smi", "-L"],
                        "resources": {"limits": {GPU: str(gpus)}}}],
        "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
    }
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name or f"pullstudy-gpu-check-{secrets.token_hex(3)}", "namespace": namespace,
                         "labels": {"app.kubernetes.io/created-by": "pullstudy"}},
            "spec": spec}


def requested_gpus(manifest: dict) -> int:
    return sum(int(c.get("resources", {}).get("limits", {}).get(GPU, 0)) for c in manifest["spec"]["containers"])


def _waiting_reason(pod: dict) -> str:
    """Why a pod is not running yet: unschedulable, image pull, container creation error …"""
    status = pod.get("status", {})
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state", {})
        for key in ("waiting", "terminated"):
            if state.get(key, {}).get("reason"):
                return f"{state[key]['reason']}: {state[key].get('message', '')}"
    return status.get("phase", "unknown")


def pod_result_check(manifest: dict, phase: str, log: str, reason: str) -> Check:
    """Judge a finished (or timed-out) GPU pod from its phase and its ``nvidia-smi -L`` log."""
    wanted = requested_gpus(manifest)
    pod = manifest["metadata"]["name"]
    seen = parse_nvidia_smi_list(log)
    if phase == "Succeeded" and len(seen) >= wanted:
        models = ", ".join(sorted({g["name"] for g in seen}))
        extra = " (more than requested: GPU isolation not enforced)" if len(seen) > wanted else ""
        return passed(KUBE, POD, f"pod {pod} ({wanted} {GPU}) listed {len(seen)} GPUs: {models}{extra}")
    evidence = f"pod {pod} ({wanted} {GPU}): phase {phase}, {len(seen)} GPUs listed; {reason}; log: {log.strip()[:200]}"
    remedy = "device_plugin" if f"Insufficient {GPU}" in reason else "workload"
    return failed(KUBE, POD, evidence, remedy)


def run_gpu_pod(core: Any, manifest: dict, dry_run: bool = False, timeout_s: float = 300.0, poll_s: float = 2.0,
                sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> Check:
    """Create the pod, wait for it to finish, read its log, judge it — and delete it in every case."""
    wanted = requested_gpus(manifest)
    if dry_run:
        return skipped(KUBE, POD, f"dry run: manifest for pod {manifest['metadata']['name']} built "
                                  f"({wanted} {GPU}, image {manifest['spec']['containers'][0]['image']}), not submitted")
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    phase, log, reason = "not created", "", ""
    try:
        core.create_namespaced_pod(namespace=namespace, body=manifest, _request_timeout=REQUEST_TIMEOUT_S)
        deadline = clock() + timeout_s
        while True:
            pod = plain(core.read_namespaced_pod(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT_S))
            phase, reason = pod.get("status", {}).get("phase", "unknown"), _waiting_reason(pod)
            if phase in ("Succeeded", "Failed") or clock() >= deadline:
                break
            sleep(poll_s)
        if phase not in ("Succeeded", "Failed"):
            reason = f"still {phase} after {timeout_s:g} s ({reason})"
        else:
            log = core.read_namespaced_pod_log(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the API's failure is the evidence; cleanup still runs
        reason = f"{reason + '; ' if reason else ''}{type(exc).__name__}{_status(exc)}: {trim(getattr(exc, 'reason', '') or exc, 160)}"
    finally:
        _delete_pod(core, name, namespace)
    return pod_result_check(manifest, phase, log or "", reason)


def _delete_pod(core: Any, name: str, namespace: str) -> None:
    try:
        core.delete_namespaced_pod(name=name, namespace=namespace, grace_period_seconds=0,
                                   _request_timeout=REQUEST_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - a pod that was never created (404) needs no cleanup
        pass


# ---------------------------------------------------------------- training log

_TEST_SET = re.compile(r"^Test set: Average loss", re.M)
_EPOCH = re.compile(r"\bepoch\b\s*[:=#\[(]?\s*(\d+)\s*(?:/|of)?\s*(\d+)?", re.I)


def parse_training_log(text: str) -> dict[str, Any]:
    """A PyTorch training log → epochs completed (and the total when the log says it).

    PyTorch's MNIST example prints a ``Test set: Average loss`` summary after each epoch: those are
    counted. Otherwise every distinct ``Epoch N`` / ``Epoch N/M`` number seen counts as one epoch.
    """
    epochs = [(int(m.group(1)), int(m.group(2)) if m.group(2) else None) for m in _EPOCH.finditer(text)]
    total = max((t for _, t in epochs if t), default=None)
    summaries = len(_TEST_SET.findall(text))
    completed = summaries if summaries else len({n for n, _ in epochs})
    return {"completed": completed, "total": total, "last_epoch": max((n for n, _ in epochs), default=None),
            "basis": "test-set summaries" if summaries else "epoch lines"}


def training_check(text: str | None, expected_epochs: int | None = None) -> Check:
    if text is None:
        return skipped(KUBE, TRAINING, "no training job log given (parameter training_log)")
    parsed = parse_training_log(text)
    want = expected_epochs or parsed["total"] or 1
    evidence = f"{parsed['completed']} epochs completed (by {parsed['basis']}), {want} expected"
    if parsed["completed"] >= want:
        return passed(KUBE, TRAINING, evidence)
    return failed(KUBE, TRAINING, evidence, "workload")


# ---------------------------------------------------------------- the layer


def cluster_checks(core: Any, apps: Any) -> tuple[list[Check], pd.DataFrame]:
    """Device plugin, operator, GPUs per node and readiness, from live objects."""
    nodes = plain(core.list_node(_request_timeout=REQUEST_TIMEOUT_S)).get("items", [])
    daemonsets = plain(apps.list_daemon_set_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT_S)).get("items", [])
    pods = plain(core.list_pod_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT_S)).get("items", [])
    table = node_table(nodes, provider="live")
    gpu_nodes = table.loc[table["gpu_node"], "node"].tolist()
    checks = [device_plugin_check(daemonsets, pods, gpu_nodes), operator_check(daemonsets),
              gpus_per_node_check(table), readiness_check(table)]
    return checks, table


def kube_checks(kubeconfig: str | Path | None, run_workload_pod: bool = False, dry_run: bool = False,
                gpus: int = 1, image: str = POD_IMAGE, namespace: str = "default",
                training_log: str | None = None, expected_epochs: int | None = None,
                pod_timeout_s: float = 300.0) -> tuple[list[Check], pd.DataFrame | None]:
    """The Kubernetes layer (every check a skip with the reason when there is no cluster)."""
    training = training_check(training_log, expected_epochs)
    manifest = gpu_pod_manifest(gpus, image, namespace)
    try:
        api, version = load_api(kubeconfig)
    except KubeUnavailable as exc:
        pod = run_gpu_pod(None, manifest, dry_run=True) if (run_workload_pod and dry_run) else \
            skipped(KUBE, POD, str(exc))
        return [skipped(KUBE, n, str(exc)) for n in CLUSTER_NAMES[:-1]] + [pod, training], None
    from kubernetes import client
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    try:
        checks, table = cluster_checks(core, apps)
    except Exception as exc:  # noqa: BLE001 - lost the cluster midway: skip, with what failed
        reason = f"listing nodes/DaemonSets/pods failed ({type(exc).__name__}{_status(exc)})"
        return [skipped(KUBE, n, reason) for n in CLUSTER_NAMES] + [training], None
    if run_workload_pod:
        pod = run_gpu_pod(core, manifest, dry_run=dry_run, timeout_s=pod_timeout_s)
    else:
        pod = skipped(KUBE, POD, f"not requested (run_workload_pod=False); API server {version} reachable")
    return checks + [pod, training], table

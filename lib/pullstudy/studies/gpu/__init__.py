"""The layered GPU check of study 06: host driver → rootless Docker → Usernetes node → Kubernetes → pod.

GPUs in rootless Usernetes pass through two indirections, and each layer fails in its own way; the
source (claim ``gpu-usernetes``) names a fix for each. Every check returns a :class:`Check` (pass /
fail / skip, the evidence it saw, the remedy for a fail), one module per layer:

* :mod:`.host` — GPUs via NVML (``nvidia-ml-py``), ``nvidia-smi -L`` as the fallback; driver, CUDA.
* :mod:`.runtime` — ``docker info`` (nvidia runtime, rootless), the daemon.json the daemon reads,
  CDI spec, ``no-cgroups``, ``/dev/char`` symlinks, subuid range.
* :mod:`.node` — the same inside the Usernetes node container (``docker exec``), containerd's CDI.
* :mod:`.kube` — device plugin, GPUs per node, a GPU pod (always deleted; dry run), a training log.
* :mod:`.archive` — the node checks on archived node lists of real GPU clusters.
* :mod:`.report` — the report card, its charts, the verdict.

A missing tool, GPU or cluster is a *skip* with the reason, never a crash; kubeconfig contents never
appear anywhere (only the path the user passed).
"""

from __future__ import annotations

from pathlib import Path

from .archive import archive_checks, archived_node_files, cluster_nodes, cluster_summary, select_files
from .checks import LAYERS, LIVE_LAYERS, REMEDY, STATUSES, Check, CommandResult, run_command
from .host import host_checks, parse_nvidia_smi_banner, parse_nvidia_smi_list
from .kube import gpu_pod_manifest, kube_checks, parse_training_log, run_gpu_pod
from .usernetes_node import node_checks, parse_containerd_config
from .node_objects import GPU_SPECS, gpu_spec_table, node_table
from .report import (archive_chart, gpu_usernetes_verdict, report_card, report_card_chart, status_counts,
                     step_status)
from .runtime import parse_cdi_spec, parse_daemon_config, parse_docker_info, parse_subuid, runtime_checks

__all__ = [
    "Check", "CommandResult", "GPU_SPECS", "LAYERS", "LIVE_LAYERS", "REMEDY", "STATUSES",
    "archive_chart", "archive_checks", "archived_node_files", "cluster_nodes", "cluster_summary",
    "archive_section", "gpu_pod_manifest", "gpu_spec_table", "gpu_usernetes_verdict", "host_checks", "kube_checks",
    "live_checks", "live_section", "node_checks",
    "node_table", "parse_cdi_spec", "parse_containerd_config", "parse_daemon_config", "parse_docker_info",
    "parse_nvidia_smi_banner", "parse_nvidia_smi_list", "parse_subuid", "parse_training_log", "report_card",
    "report_card_chart", "run_command", "run_gpu_pod", "runtime_checks", "select_files", "status_counts",
    "step_status",
]


def live_checks(kubeconfig: str | Path | None = None, node_container: str | None = None,
                run_workload_pod: bool = False, dry_run: bool = False, training_log: str | Path | None = None,
                expected_epochs: int | None = None, timeout_s: float = 20.0) -> list[Check]:
    """Every live layer on this machine, host first; what the host reports feeds the upper layers' checks."""
    host, inventory = host_checks(timeout_s=timeout_s)
    expected = inventory.count if inventory else None
    log = Path(training_log).read_text(errors="replace") if training_log else None
    kube, _ = kube_checks(kubeconfig, run_workload_pod=run_workload_pod, dry_run=dry_run,
                          training_log=log, expected_epochs=expected_epochs)
    return (host + runtime_checks(expected, timeout_s=timeout_s)
            + node_checks(node_container, expected, timeout_s=timeout_s) + kube)


def live_section(out, **options) -> tuple[list[Check], "object", str]:
    """The live layers as study 06 records them: the checks, their report card, and a one-line count.

    ``options`` are :func:`live_checks`'s. Records ``live_status_counts`` and ``live_skip_reasons``.
    """
    live = live_checks(**options)
    card = report_card(live)
    skipped = card[card["status"] == "skip"]
    out.metric("live_status_counts", card["status"].value_counts().to_dict())
    out.metric("live_skip_reasons", dict(zip(skipped["layer"] + ": " + skipped["check"], skipped["evidence"])))
    text = f"**{len(card)} live checks:** " + ", ".join(f"{(card['status'] == s).sum()} {s}" for s in STATUSES) + "."
    return live, card, text


def archive_section(out, wanted) -> tuple["object", "object", str]:
    """The archived GPU node lists: every one the manifest lists, the ones chosen, and the selection note.

    Records the lists not available here (an exclusion and ``archive_unavailable``) and the clusters analysed.
    """
    from .archive import selection_note

    files = archived_node_files()
    chosen = select_files(files, wanted)
    unavailable = files[~files["available"]]
    out.excluded("archived GPU node lists listed in data/manifest.json but not available here", len(unavailable))
    out.metric("archive_unavailable", dict(zip(unavailable["cluster"], unavailable["reason"])))
    out.metric("archive_clusters_analysed", chosen["cluster"].tolist())
    return files, chosen, selection_note(files, chosen, wanted)

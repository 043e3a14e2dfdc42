"""What the Kubernetes backend creates on a cluster, rendered as plain manifests, and its plan.

Kept apart from the client code (:mod:`pullstudy.sources.kube.run`) so that a dry run renders every object
and the plan with no cluster and no kubeconfig, and so that the tests can deserialize each manifest
into the official client's models (``V1Job``, ``V1DaemonSet``) and check what matters for the
measurement: one pod per node (required pod anti-affinity on ``kubernetes.io/hostname``), a fresh pull
every time (``imagePullPolicy: Always``), and labels by which everything the run created is deleted.

No manifest carries a secret: no service-account token is mounted (``automountServiceAccountToken:
false``), no ``imagePullSecrets`` are set (a private registry's credentials stay the cluster's own), and
the kubeconfig is only ever named by path.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

MANAGED_BY = "app.kubernetes.io/managed-by"
RUN_LABEL = "pullstudy.io/run"  # every object a run creates carries it: clean-up deletes by it
IMAGE_LABEL = "pullstudy.io/image-index"
REP_LABEL = "pullstudy.io/repetition"
ROLE_LABEL = "pullstudy.io/role"
HOSTNAME = "kubernetes.io/hostname"
JOB_OVERHEAD_S = 15.0  # create, schedule, start, delete one Job: the plan's assumption per Job


class KubeParamError(ValueError):
    """A backend parameter the run cannot use; the message is one line naming it and the remedy."""


@dataclass(frozen=True)
class KubeParams:
    """The Kubernetes backend's parameters (``make run BACKEND=kube RUN_ARGS='-p key=value ...'``).

    ``kubeconfig`` and ``context`` are a path and a name: the file is read only by the official client
    when a run starts, and its content is never copied into a record, a log or an output.
    ``images`` is a list of references, or None for the study file of ``study_run`` (a catalog run), or,
    with ``push_to`` (``host[:port]/repository``, a registry the user names), the synthetic grid ``grid``
    (sizes_bytes x layers x contents; default: the study's local grid) that pullstudy crafts and pushes
    there before the first Job (credentials, if the registry needs them, only from the environment:
    ``PULLSTUDY_REGISTRY_USERNAME`` / ``PULLSTUDY_REGISTRY_PASSWORD``; ``insecure_registry`` for plain HTTP).
    ``nodes``: how many nodes to pull on (one pod per node per image); ``node_selector`` narrows them.
    """

    study: str = "01-pull-size-layers"
    dry_run: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "pullstudy"
    study_run: str | None = None
    images: tuple[str, ...] | None = None
    nodes: int = 4
    node_selector: Mapping[str, str] = field(default_factory=dict)
    repetitions: int = 1
    job_timeout_s: float = 900.0
    api_timeout_s: float = 30.0
    cold_cache: bool = False
    cold_cache_image: str = "registry.k8s.io/build-image/debian-base:bookworm-v1.0.4"
    run_name: str | None = None
    push_to: str | None = None
    grid: Mapping[str, Any] | None = None
    insecure_registry: bool = False

    def digest(self, images: list[str]) -> str:
        """What makes two runs the same run (for resuming): images, nodes, selector, repetitions, cold cache."""
        key = json.dumps([images, self.nodes, dict(self.node_selector), self.repetitions, self.cold_cache,
                          self.namespace], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    def public(self) -> dict:
        """The parameters as recorded in run.json: the kubeconfig by file name only, never its content."""
        d = asdict(self)
        d["kubeconfig"] = Path(self.kubeconfig).name if self.kubeconfig else None
        d["node_selector"] = dict(self.node_selector)
        d["images"] = list(self.images) if self.images else None
        d["grid"] = dict(self.grid) if self.grid else None
        return d


_DEFAULT_STUDY_RUN = {"01-pull-size-layers": "pulling/run1", "02-registry-proximity": "pulling/run1",
                      "03-local-ssd": "pulling/run1", "04-image-streaming": "pulling/run1",
                      "07-cluster-scale": "pulling/run1"}
_BOOL = {"true": True, "false": False, True: True, False: False, 1: True, 0: False}


def parse_params(values: Mapping[str, Any]) -> KubeParams:
    """KubeParams from ``-p key=value`` pairs (already decoded as YAML/JSON by the runner); one-line errors."""
    known = {f for f in KubeParams.__dataclass_fields__}
    values = dict(values)
    values.pop("backend", None)
    unknown = sorted(set(values) - known)
    if unknown:
        raise KubeParamError(f"kube backend: unknown parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("dry_run", "cold_cache", "insecure_registry"):
            if value not in _BOOL:
                raise KubeParamError(f"kube backend: parameter {name}={value!r} must be true or false")
            value = _BOOL[value]
        elif name in ("nodes", "repetitions"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KubeParamError(f"kube backend: parameter {name}={value!r} must be a whole number >= 1")
        elif name in ("job_timeout_s", "api_timeout_s"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise KubeParamError(f"kube backend: parameter {name}={value!r} must be a number of seconds > 0")
            value = float(value)
        elif name == "images":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise KubeParamError(f"kube backend: parameter images={value!r} must be a list of image references")
            value = tuple(value)
        elif name == "node_selector":
            if not isinstance(value, Mapping):
                raise KubeParamError(f"kube backend: parameter node_selector={value!r} must be a mapping "
                                     "label -> value, e.g. '{\"pool\": \"bench\"}'")
            value = {str(k): str(v) for k, v in value.items()}
        elif name == "push_to":
            value = _check_push_to(value)
        elif name == "grid":
            value = _check_grid(value)
        elif name == "namespace":
            if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
                raise KubeParamError(f"kube backend: parameter namespace={value!r} is not a Kubernetes namespace name")
        elif value is not None and not isinstance(value, str):
            raise KubeParamError(f"kube backend: parameter {name}={value!r} must be a string")
        out[name] = value
    p = KubeParams(**out)
    if p.push_to and (p.images or p.study_run):
        raise KubeParamError("kube backend: push_to crafts the grid and pulls it: give it without images= and study_run=")
    if p.grid is not None and not p.push_to:
        raise KubeParamError("kube backend: parameter grid is the grid to craft and push: give push_to=host:port/repository")
    if p.push_to:
        grid_items(p)  # a grid whose contents cannot share one repository is refused now, not after preflight
        return p
    if p.study_run is None and p.images is None:
        p = KubeParams(**{**asdict(p), "study_run": _DEFAULT_STUDY_RUN.get(p.study, "pulling/run1"),
                          "node_selector": dict(p.node_selector)})
    return p


GRID_KEYS = ("sizes_bytes", "layers", "contents")


def _check_push_to(value: Any) -> str:
    from pullstudy.images.oci import FetchError, parse_reference

    if not isinstance(value, str) or "/" not in value or ":" in value.split("/", 1)[1] or "@" in value:
        raise KubeParamError(f"kube backend: parameter push_to={value!r} must be host[:port]/repository (no tag), "
                             "e.g. registry.example.org:5000/pullstudy")
    try:
        parse_reference(value.replace("{content}", "content") + ":x")
    except FetchError:
        raise KubeParamError(f"kube backend: parameter push_to={value!r} is not a valid registry/repository "
                             "(lower case, digits, . _ - and /)") from None
    return value


def _check_grid(value: Any) -> dict:
    from pullstudy.images.crafter import CONTENTS

    if not isinstance(value, Mapping) or set(value) - set(GRID_KEYS):
        raise KubeParamError(f"kube backend: parameter grid={value!r} must be a mapping with keys among "
                             f"{', '.join(GRID_KEYS)}")
    out = {}
    for key, items in value.items():
        items = [items] if not isinstance(items, list) else items
        kind = str if key == "contents" else int
        if not items or not all(isinstance(v, kind) and not isinstance(v, bool) for v in items) or \
                (kind is int and min(items) < 1) or (kind is str and set(items) - set(CONTENTS)):
            allowed = ", ".join(CONTENTS) if kind is str else "whole numbers >= 1"
            raise KubeParamError(f"kube backend: parameter grid.{key}={items!r} must be a list of {allowed}")
        out[key] = list(items)
    return out


def grid_items(p: KubeParams) -> list[tuple[int, int, str, str]]:
    """(layers, size_bytes, content, reference) of the grid to craft and push: ``p.grid``, the rest from the
    study's local grid, so that a cluster and this machine measure the same images."""
    from pullstudy.records import image_tag
    from pullstudy.sources.local.source import GRIDS

    base = GRIDS.get(p.study, GRIDS["01-pull-size-layers"])
    grid = {k: list((p.grid or {}).get(k) or base[k]) for k in GRID_KEYS}
    if len(grid["contents"]) > 1 and "{content}" not in p.push_to:
        raise KubeParamError(f"kube backend: push_to={p.push_to!r} holds one repository but the grid has contents "
                             f"{grid['contents']}: put {{content}} in it, e.g. {p.push_to}-{{content}}")
    return [(layers, size, content, f"{p.push_to.format(content=content)}:{image_tag(layers, size)}")
            for content in grid["contents"] for layers in grid["layers"] for size in grid["sizes_bytes"]]


def study_images(p: KubeParams) -> list[str]:
    """The images to pull: ``images`` as given, the crafted grid (``push_to``), or the study file of
    ``study_run`` (sorted, so runs resume)."""
    if p.images:
        return list(dict.fromkeys(p.images))
    if p.push_to:
        return sorted(ref for *_, ref in grid_items(p))
    from pullstudy.data import catalog
    from pullstudy.sources.archive import runs as archive

    try:
        run = catalog.get(p.study_run)
    except KeyError:
        raise KubeParamError(f"kube backend: parameter study_run={p.study_run!r} is no catalog run; "
                             "give a catalog run id (e.g. 'pulling/run1') or images=[...]") from None
    images = archive.study_images(run)
    if not images:
        raise KubeParamError(f"kube backend: the study file of {p.study_run} ({run.study_file}) is not in "
                             "data/raw: run `make data`, or give images=[...]")
    return sorted(images)


def labels(run: str, **extra: str) -> dict[str, str]:
    return {MANAGED_BY: "pullstudy", RUN_LABEL: run, **extra}


def job_name(run: str, index: int, rep: int) -> str:
    """A valid, unique, short Job name (a DNS label of at most 63 characters, pod names add a suffix)."""
    digest = hashlib.sha256(run.encode()).hexdigest()[:6]
    return f"pull-{digest}-i{index}-r{rep}"


def job_manifest(run: str, image: str, index: int, rep: int, p: KubeParams) -> dict:
    """An Indexed Job pulling ``image`` once on each of ``p.nodes`` distinct nodes.

    completions = parallelism = nodes and a *required* anti-affinity on the hostname against the Job's
    own pods: the scheduler never puts two of them on one node, so each pull is a pull by a different
    kubelet (a pod that cannot be placed stays Pending and the run reports it, rather than pulling twice
    on one node). ``imagePullPolicy: Always`` makes the kubelet ask the registry every time. The
    container runs ``true``: the study measures the pull, not the program. ``backoffLimit: 0`` and
    ``restartPolicy: Never``: a failure is recorded once, not retried into a second pull.
    """
    name = job_name(run, index, rep)
    pod_labels = labels(run, **{IMAGE_LABEL: str(index), REP_LABEL: str(rep), ROLE_LABEL: "pull"})
    affinity = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {RUN_LABEL: run, IMAGE_LABEL: str(index), REP_LABEL: str(rep)}},
        "topologyKey": HOSTNAME}]}}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
        "affinity": affinity,
        "containers": [{"name": "pull", "image": image, "imagePullPolicy": "Always", "command": ["true"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
    }
    if p.node_selector:
        spec["nodeSelector"] = dict(p.node_selector)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": p.namespace, "labels": dict(pod_labels),
                     "annotations": {"pullstudy.io/image": image}},
        "spec": {"completionMode": "Indexed", "completions": p.nodes, "parallelism": p.nodes,
                 "backoffLimit": 0, "activeDeadlineSeconds": int(p.job_timeout_s),
                 "template": {"metadata": {"labels": dict(pod_labels)}, "spec": spec}},
    }


def cold_cache_manifest(run: str, images: list[str], p: KubeParams) -> dict:
    """A DaemonSet that removes the study's images from every selected node, so the next pull is cold.

    Privileges, stated here because this is where they are granted: the pod runs as root and mounts
    the node's containerd socket (``/run/containerd/containerd.sock``) through a hostPath volume, which
    is equivalent to root on the node (it can start or delete any container there). It is therefore
    off by default, created only for the time of one removal and deleted by the run's label; it mounts
    no service-account token. ``cold_cache_image`` must provide ``crictl`` (the default does not by
    itself: point it at an image of your own that does).
    """
    rmi = " ".join(f"'{i}'" for i in images)
    script = (f"crictl --runtime-endpoint unix:///run/containerd/containerd.sock rmi {rmi} || true; "
              "touch /tmp/done; sleep 3600")
    lab = labels(run, **{ROLE_LABEL: "cold-cache"})
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "rmi", "image": p.cold_cache_image, "command": ["sh", "-c", script],
                        "securityContext": {"runAsUser": 0},
                        "readinessProbe": {"exec": {"command": ["cat", "/tmp/done"]}, "periodSeconds": 2},
                        "volumeMounts": [{"name": "containerd", "mountPath": "/run/containerd/containerd.sock"}]}],
        "volumes": [{"name": "containerd", "hostPath": {"path": "/run/containerd/containerd.sock",
                                                         "type": "Socket"}}],
    }
    if p.node_selector:
        spec["nodeSelector"] = dict(p.node_selector)
    name = f"cold-{hashlib.sha256(run.encode()).hexdigest()[:6]}"
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": p.namespace, "labels": dict(lab)},
            "spec": {"selector": {"matchLabels": {RUN_LABEL: run, ROLE_LABEL: "cold-cache"}},
                     "template": {"metadata": {"labels": dict(lab)}, "spec": spec}}}


def plan(run: str, images: list[str], p: KubeParams, pull_s: Mapping[str, float] | None = None) -> dict:
    """Images x nodes x repetitions and the estimated time: the pulls run in parallel across nodes, the
    Jobs one after the other. ``pull_s``: an expected pull time per image (the archive's median), else
    60 s is assumed, and said."""
    pull_s = dict(pull_s or {})
    per_image = [pull_s.get(i, 60.0) + JOB_OVERHEAD_S for i in images]
    jobs = len(images) * p.repetitions
    est = sum(per_image) * p.repetitions + (len(images) * p.repetitions * 30.0 if p.cold_cache else 0.0)
    return {"run": run, "namespace": p.namespace, "images": len(images), "nodes": p.nodes,
            "repetitions": p.repetitions, "jobs": jobs, "pulls": jobs * p.nodes, "estimated_s": round(est),
            "estimate_basis": (f"archived median pull time for {sum(i in pull_s for i in images)} of "
                               f"{len(images)} images, 60 s assumed for the rest, + {JOB_OVERHEAD_S:g} s per Job"
                               + (", + 30 s cold-cache removal per Job" if p.cold_cache else "")),
            "cold_cache": p.cold_cache,
            "push": ({"to": p.push_to, "images": len(images),
                      "bytes": sum(size for _, size, *_ in grid_items(p))} if p.push_to else None)}


def plan_text(pl: dict) -> str:
    m, s = divmod(int(pl["estimated_s"]), 60)
    return (f"kube plan for run {pl['run']} in namespace {pl['namespace']}: {pl['images']} images x "
            f"{pl['nodes']} nodes x {pl['repetitions']} repetitions = {pl['pulls']} pulls in {pl['jobs']} Jobs; "
            f"estimated {m} min {s} s ({pl['estimate_basis']})"
            + (f"; first crafted and pushed to {pl['push']['to']}: {pl['push']['images']} images, "
               f"{pl['push']['bytes'] / 1e6:.0f} MB before compression" if pl.get("push") else ""))


def all_manifests(run: str, images: list[str], p: KubeParams) -> list[dict]:
    out = [job_manifest(run, image, i, rep, p) for rep in range(1, p.repetitions + 1)
           for i, image in enumerate(images)]
    if p.cold_cache:
        out.insert(0, cold_cache_manifest(run, images, p))
    return out

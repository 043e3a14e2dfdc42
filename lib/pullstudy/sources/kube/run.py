"""The Kubernetes backend: run a pull study on a real cluster, record every kubelet event, read it like the archive.

**Not run against a live cluster by this repository's CI.** Its tests drive the official ``kubernetes``
client against a small API server of their own on 127.0.0.1 (``tests/kubeapi.py``) that replays
archived Node and Event objects, with a dropped stream, a 410 Gone, bookmarks and duplicates. Before a
real study, check it on a small cluster (see the README, "Kubernetes backend": a dry run, then
``nodes=2 repetitions=1`` with two small images, and compare the recorded ``events.jsonl`` with
``kubectl get events -n <namespace> -o json``).

How a run goes (:func:`run`):

1. **Preflight** (:func:`preflight`): the nodes, Ready and schedulable, against ``nodes=``; kubelet
   and container-runtime versions; the node list saved as ``nodes.json`` (what ``kubectl get nodes -o
   json`` prints, as the archive has it). Too few nodes or an unreachable API: a one-line refusal.
2. **Recording** (:class:`Recorder`): Events and Pods of the namespace are *listed*, then *watched*
   from the list's ``resourceVersion`` with bookmarks. A dropped stream is resumed from the last
   version seen; a ``410 Gone`` (the version is too old: the client raises it rather than recover) is
   answered by listing again and watching from the new version. Every object is de-duplicated by UID
   and resourceVersion and appended, flushed, as one JSON line: ``events.jsonl`` is in the format the
   archived exporter files have, so :mod:`pullstudy.parsers.kubelet_events` reads a live run and an archived one alike.
3. **The images**: a catalog run's study file, a list, or a grid crafted and pushed by pullstudy to the
   registry the user names (:func:`push_grid`, after the preflight; ``pushed.json``).
   **Per image and repetition**: an Indexed Job, one pod per node (:mod:`.kube_manifests`). The Job is
   deleted only once every one of its pods has its ``Pulled`` (or pull-failure) event, because the
   events of deleted pods can be lost; a Job that times out is reported, then deleted.
4. **Clean and resumable**: Ctrl-C, SIGTERM or an error deletes everything carrying the run's label;
   the events recorded so far are already on disk. A re-run of the same parameters skips the images
   already complete (``progress.json``).
5. **Recorded like a local run**: ``data/runs/<name>/run.json`` is a catalog entry (``kube/<name>``)
   with an environment fingerprint (Kubernetes, kubelet and runtime versions, instance types, registry
   hosts); :class:`KubeSource` reads it as a :class:`pullstudy.sources.interface.RecordSource`; pod phases give
   P50/P90/P99 pull time and pod startup latency per image (``latency.json``, :func:`latency`).

The kubeconfig is only named by its path: its content (tokens, certificates) is read by the client
and never written to a record, a log or an output.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from pullstudy.data import catalog
from pullstudy.sources.archive import runs as archive
from pullstudy.parsers.kubelet_events import parse_events, parse_time
from pullstudy.records import analysable_pulls
from pullstudy.sources.interface import NamedByRunId, SourceResult
from .manifests import (RUN_LABEL, KubeParamError, KubeParams, all_manifests, cold_cache_manifest, grid_items,
                        job_manifest, job_name, parse_params, plan, plan_text, study_images)

EVENTS_FILE = "events.jsonl"
PODS_FILE = "pods.jsonl"
NODES_FILE = "nodes.json"
PUSHED_FILE = "pushed.json"
# A registry's credentials for pushing the crafted grid: only ever from the environment, never a parameter.
REGISTRY_USER_ENV, REGISTRY_PASSWORD_ENV = "PULLSTUDY_REGISTRY_USERNAME", "PULLSTUDY_REGISTRY_PASSWORD"
PULL_DONE = {"Pulled"}
PULL_FAILED = {"Failed", "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InspectFailed"}


class KubeRunError(RuntimeError):
    """A run that cannot start or go on (unreachable API, too few nodes, another run's folder); one line."""


def runs_dir() -> Path:
    from pullstudy.sources.local.source import runs_dir as local_runs_dir

    return local_runs_dir()


# ------------------------------------------------------------------------------- the client


def api_client(p: KubeParams):
    """The official client's ApiClient for ``p.kubeconfig`` / ``p.context``.

    Errors name the file and the context, never what the file holds (a parser's message may quote it).
    """
    from kubernetes import config

    path = p.kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not Path(path).is_file():
        raise KubeParamError(f"kube backend: kubeconfig {path} does not exist: pass -p kubeconfig=/path/to/kubeconfig")
    try:
        return config.new_client_from_config(config_file=path, context=p.context)
    except Exception as exc:  # ConfigException, YAML errors: their text may quote the file
        raise KubeParamError(f"kube backend: kubeconfig {path} (context {p.context or 'current'}) cannot be used "
                             f"({type(exc).__name__}); check it with `kubectl --kubeconfig {path} get nodes`") from None


def _unreachable(client, p: KubeParams, exc: BaseException) -> KubeRunError:
    host = getattr(client.configuration, "host", "?")
    status = getattr(exc, "status", None)
    what = f"HTTP {status}" if status else type(exc).__name__
    return KubeRunError(f"kube backend: the API server {host} (kubeconfig {Path(p.kubeconfig or '~').name}, "
                        f"context {p.context or 'current'}) did not answer ({what}): check the cluster is up "
                        "and the credentials are valid")


def _json(resp) -> dict:
    return json.loads(resp.data)


# ------------------------------------------------------------------------------- preflight


def _ready(node: dict) -> bool:
    conds = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    spec = node.get("spec") or {}
    tainted = any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or [])
    return conds.get("Ready") == "True" and not spec.get("unschedulable") and not tainted


def preflight(client, p: KubeParams, folder: Path, images: list[str]) -> dict:
    """Check the nodes against the request and save them; the environment fingerprint for run.json."""
    from kubernetes import client as k
    import urllib3

    selector = ",".join(f"{a}={b}" for a, b in p.node_selector.items()) or None
    try:
        doc = _json(k.CoreV1Api(client).list_node(label_selector=selector, _preload_content=False,
                                                   _request_timeout=p.api_timeout_s))
        version = _json(k.VersionApi(client).get_code(_preload_content=False, _request_timeout=p.api_timeout_s))
    except (urllib3.exceptions.HTTPError, k.ApiException, OSError) as exc:
        raise _unreachable(client, p, exc) from None
    items = doc.get("items") or []
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NODES_FILE).write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items,
                                                 "metadata": {"resourceVersion": ""}}, indent=1))
    ready = [n for n in items if _ready(n)]
    where = f" matching {selector}" if selector else ""
    if len(ready) < p.nodes:
        raise KubeRunError(f"kube backend: {len(ready)} of {len(items)} nodes{where} are Ready and schedulable, "
                           f"the run asks for nodes={p.nodes}: lower nodes= or add nodes")
    info = [(n.get("status") or {}).get("nodeInfo") or {} for n in ready]
    lab = [(n.get("metadata") or {}).get("labels") or {} for n in ready]
    return {
        "kubernetes": version.get("gitVersion"),
        "kubelet": sorted({i.get("kubeletVersion") for i in info if i.get("kubeletVersion")}),
        "container_runtime": sorted({i.get("containerRuntimeVersion") for i in info if i.get("containerRuntimeVersion")}),
        "os_image": sorted({i.get("osImage") for i in info if i.get("osImage")}),
        "kernel": sorted({i.get("kernelVersion") for i in info if i.get("kernelVersion")}),
        "instance_types": sorted({l.get("node.kubernetes.io/instance-type") for l in lab
                                  if l.get("node.kubernetes.io/instance-type")}),
        "zones": sorted({l.get("topology.kubernetes.io/zone") for l in lab if l.get("topology.kubernetes.io/zone")}),
        "registry_hosts": sorted({archive.image_host(i) for i in images}),
        "nodes_total": len(items), "nodes_ready": len(ready),
    }


# ------------------------------------------------------------------------------- the crafted grid


def push_grid(p: KubeParams, folder: Path, progress: bool = True) -> list[dict]:
    """Craft the grid of ``p`` and push it to ``p.push_to`` with the crafter's streaming push; what was
    pushed (reference, manifest digest, bytes) goes to ``pushed.json``, so a resumed run pushes only the rest."""
    from pullstudy.images.crafter import CraftError, craft_grid
    from pullstudy.images.oci import FetchError

    path = folder / PUSHED_FILE
    done = {d["reference"]: d for d in json.loads(path.read_text())} if path.is_file() else {}
    todo = [item for item in grid_items(p) if item[3] not in done]
    if not todo:
        return list(done.values())
    registry, repository = p.push_to.split("/", 1)
    user, password = os.environ.get(REGISTRY_USER_ENV), os.environ.get(REGISTRY_PASSWORD_ENV)
    try:
        crafted = craft_grid(registry, repository, [(layers, size, content) for layers, size, content, _ in todo],
                             progress=progress, insecure=p.insecure_registry,
                             credentials=(user, password) if user and password else None)
    except (CraftError, FetchError, OSError) as exc:
        raise KubeRunError(f"kube backend: pushing the grid to {p.push_to} failed ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); check the registry is reachable from here"
                           + ("" if user else f" and, if it needs them, set {REGISTRY_USER_ENV} and "
                                             f"{REGISTRY_PASSWORD_ENV}")) from None
    for img in crafted:
        done[img.reference] = {"reference": img.reference, "digest": img.manifest_digest, "layers": img.layers,
                               "size_bytes": img.size_bytes, "content": img.content,
                               "compressed_bytes": img.compressed_bytes, "push_s": round(img.seconds, 3)}
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(path, sorted(done.values(), key=lambda d: d["reference"]))
    return list(done.values())


# ------------------------------------------------------------------------------- recording


@dataclass
class Tracker:
    """Which pods exist and which have their terminal pull event: what decides when a Job may go."""

    pods: dict[str, dict] = field(default_factory=dict)  # uid -> latest pod object
    pulled: set[str] = field(default_factory=set)  # pod uids (or namespace/name) with Pulled or a pull failure
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, ev: dict) -> None:
        inv = ev.get("involvedObject") or {}
        if inv.get("kind") == "Pod" and ev.get("reason") in PULL_DONE | PULL_FAILED:
            with self.lock:
                self.pulled.add(inv.get("uid") or f"{inv.get('namespace')}/{inv.get('name')}")
                self.pulled.add(f"{inv.get('namespace')}/{inv.get('name')}")

    def pod(self, pod: dict) -> None:
        md = pod.get("metadata") or {}
        with self.lock:
            self.pods[md.get("uid")] = pod

    def job_state(self, job: str) -> tuple[int, int]:
        """(pods of the Job seen, of which with their terminal pull event)."""
        with self.lock:
            mine = [q for q in self.pods.values() if ((q.get("metadata") or {}).get("labels") or {}).get("job-name") == job]
            done = sum(1 for q in mine if q["metadata"].get("uid") in self.pulled
                       or f"{q['metadata'].get('namespace')}/{q['metadata'].get('name')}" in self.pulled)
        return len(mine), done


class Recorder:
    """List, then watch, one kind of object of a namespace, appending each new version to a JSON-lines file.

    Nothing is lost between the list and the watch (the watch starts at the list's version), across a
    dropped stream (resumed at the last version seen, bookmarks included) or a 410 Gone (listed again:
    what changed meanwhile is in the new list). Nothing is written twice: (UID, resourceVersion) pairs
    already in the file, from this attempt or an earlier one, are skipped and counted.
    """

    watch_timeout_s = 30  # the server ends each watch after this; the next one resumes (bounded stop time)

    def __init__(self, list_fn: Callable, namespace: str, path: Path, on_object: Callable[[dict], None],
                 request_timeout: float = 60.0) -> None:
        self.list_fn, self.namespace, self.path, self.on_object = list_fn, namespace, path, on_object
        self.request_timeout = request_timeout
        self.stats: Counter = Counter()
        self.seen: set[tuple[str, str]] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        if path.is_file():  # a resumed run: what is on disk is recorded already
            for line in path.read_text().splitlines():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                self.seen.add(self._key(obj))
                on_object(obj)
        self._file = path.open("a", encoding="utf-8")
        self._thread = threading.Thread(target=self._run, name=f"record-{path.name}", daemon=True)

    @staticmethod
    def _key(obj: dict) -> tuple[str, str]:
        md = obj.get("metadata") or {}
        return str(md.get("uid")), str(md.get("resourceVersion"))

    def take(self, obj: dict) -> None:
        key = self._key(obj)
        with self._lock:
            if key in self.seen:
                self.stats["duplicates skipped"] += 1
                return
            self.seen.add(key)
            self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
            self._file.flush()
            self.stats["recorded"] += 1
        self.on_object(obj)

    def list_once(self) -> str:
        doc = _json(self.list_fn(self.namespace, _preload_content=False, _request_timeout=self.request_timeout))
        for item in doc.get("items") or []:
            self.take(item)
        self.stats["lists"] += 1
        return doc["metadata"]["resourceVersion"]

    def _watch(self, rv: str) -> None:
        """Watch from ``rv`` until stopped; return on 410 Gone (the caller lists again)."""
        from kubernetes import client as k, watch
        import urllib3

        while not self.stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(self.list_fn, self.namespace, resource_version=rv, allow_watch_bookmarks=True,
                                   timeout_seconds=self.watch_timeout_s, _request_timeout=self.request_timeout):
                    raw = ev["raw_object"]
                    rv = (raw.get("metadata") or {}).get("resourceVersion") or rv
                    if ev["type"] == "BOOKMARK":
                        self.stats["bookmarks"] += 1
                    else:
                        self.take(raw)
                    if self.stop.is_set():
                        w.stop()
                        break
            except k.ApiException as exc:
                if exc.status == 410:
                    self.stats["410 gone, listed again"] += 1
                    return
                raise
            except (urllib3.exceptions.HTTPError, OSError, ValueError):
                self.stats["dropped streams resumed"] += 1
                time.sleep(0.2)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self._watch(self.list_once())
        except BaseException as exc:  # reported by close(); the main thread decides
            self.error = exc

    def start(self) -> "Recorder":
        self._thread.start()
        return self

    def close(self, final_list: bool = True) -> None:
        """Stop watching; with ``final_list`` list once more so that nothing emitted before now is missed."""
        self.stop.set()
        self._thread.join(timeout=self.watch_timeout_s + self.request_timeout)
        if final_list and self.error is None:
            try:
                self.list_once()
            except Exception as exc:  # the API went away: what was recorded stays recorded
                self.stats[f"final list failed ({type(exc).__name__})"] += 1
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


# ------------------------------------------------------------------------------- a run


def run_label(p: KubeParams, images: list[str]) -> str:
    return f"s{p.study[:2]}-{p.nodes}n-r{p.repetitions}-{p.digest(images)}"


def folder_name(p: KubeParams, images: list[str]) -> str:
    return p.run_name or f"kube_{p.study}_{p.nodes}n_r{p.repetitions}_{p.digest(images)}"


def dry_run(p: KubeParams, out=sys.stdout) -> dict:
    """The plan and every manifest, with no cluster and no kubeconfig read."""
    import yaml

    images = study_images(p)
    label = run_label(p, images)
    pl = plan(label, images, p, _archived_pull_s(p, images))
    print(plan_text(pl), file=out)
    docs = all_manifests(label, images, p)
    print("---\n" + yaml.safe_dump_all(docs, sort_keys=False), file=out, end="")
    return {"plan": pl, "manifests": docs}


def _archived_pull_s(p: KubeParams, images: list[str]) -> dict[str, float]:
    """The archive's median pull time per image at the nearest cluster size, for the plan's estimate."""
    if not p.study_run:
        return {}
    try:
        run = catalog.get(p.study_run)
        size = min(run.node_counts, key=lambda n: abs(n - p.nodes))
        rec = archive.load_run(run, [size]).records
    except Exception:  # an estimate only: no data here means the stated default
        return {}
    rec = rec[rec["study_image"] & ~rec["cache_hit"]]
    return {str(k): float(v) for k, v in rec.groupby("image")["pull_wait_s"].median().dropna().items()}


def _cleanup(client, p: KubeParams, label: str) -> None:
    """Delete everything carrying the run's label (Jobs, their pods, the cold-cache DaemonSet)."""
    from kubernetes import client as k

    sel = f"{RUN_LABEL}={label}"
    for fn in (k.BatchV1Api(client).delete_collection_namespaced_job,
               k.AppsV1Api(client).delete_collection_namespaced_daemon_set,
               k.CoreV1Api(client).delete_collection_namespaced_pod):
        try:
            fn(p.namespace, label_selector=sel, propagation_policy="Background", _request_timeout=p.api_timeout_s)
        except Exception as exc:  # keep deleting the rest; say what could not be deleted
            print(f"kube backend: could not delete {fn.__name__.split('_', 3)[-1]} with {sel} "
                  f"({type(exc).__name__}): delete them with kubectl -n {p.namespace} delete all -l {sel}",
                  file=sys.stderr)


def _cold_cache(client, p: KubeParams, label: str, images: list[str]) -> None:
    from kubernetes import client as k

    apps = k.AppsV1Api(client)
    body = cold_cache_manifest(label, images, p)
    apps.create_namespaced_daemon_set(p.namespace, body, _request_timeout=p.api_timeout_s)
    deadline = time.monotonic() + p.job_timeout_s
    while time.monotonic() < deadline:
        st = apps.read_namespaced_daemon_set_status(body["metadata"]["name"], p.namespace).status
        if st.desired_number_scheduled and st.number_ready == st.desired_number_scheduled:
            break
        time.sleep(1)
    apps.delete_namespaced_daemon_set(body["metadata"]["name"], p.namespace, propagation_policy="Foreground")


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


class _Terminated(KeyboardInterrupt):
    pass


def run(p: KubeParams, *, client=None, progress: bool = True, poll_s: float = 0.2) -> Path:
    """Measure the study on the cluster into ``data/runs/<name>/`` and return the folder (see the module)."""
    from kubernetes import client as k
    from tqdm.auto import tqdm

    images = study_images(p)
    label, name = run_label(p, images), folder_name(p, images)
    folder = runs_dir() / name
    progress_path = folder / "progress.json"
    state = json.loads(progress_path.read_text()) if progress_path.is_file() else {"done": {}, "incomplete": {}}
    if state.get("digest", p.digest(images)) != p.digest(images):
        raise KubeRunError(f"kube backend: {folder} holds a run of other parameters: pass -p run_name=<new name>")
    state["digest"] = p.digest(images)
    client = client or api_client(p)
    fingerprint = preflight(client, p, folder, images)
    if p.push_to:  # after the preflight: a cluster that cannot run the study is refused before any push
        fingerprint["pushed_to"] = p.push_to
        fingerprint["pushed_images"] = len(push_grid(p, folder, progress))
    core, batch = k.CoreV1Api(client), k.BatchV1Api(client)
    _cleanup(client, p, label)  # what an earlier, killed attempt may have left
    tracker = Tracker()
    ev_rec = Recorder(core.list_namespaced_event, p.namespace, folder / EVENTS_FILE, tracker.event, p.api_timeout_s)
    pod_rec = Recorder(core.list_namespaced_pod, p.namespace, folder / PODS_FILE, tracker.pod, p.api_timeout_s)
    started = datetime.now(timezone.utc).isoformat()
    jobs = [(i, rep, image) for rep in range(1, p.repetitions + 1) for i, image in enumerate(images)]
    _write_entry(folder, name, p, images, fingerprint, "running", started, state)
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None

    def on_term(signum, frame):
        raise _Terminated()

    if previous is not None:
        signal.signal(signal.SIGTERM, on_term)
    status = "failed"
    ev_rec.start()
    pod_rec.start()
    try:
        bar = tqdm(jobs, desc=f"kube {name}", unit="job", disable=not progress, position=0)
        for i, rep, image in bar:
            job = job_name(label, i, rep)
            if job in state["done"]:
                continue
            # a bar per image: its pods with their pull event, out of the nodes it pulls on
            image_bar = tqdm(total=p.nodes, desc=f"image {i + 1}/{len(images)} rep {rep}", unit="pod",
                             leave=False, position=1, disable=not progress)
            if p.cold_cache:
                _cold_cache(client, p, label, images)
            batch.create_namespaced_job(p.namespace, job_manifest(label, image, i, rep, p),
                                        _request_timeout=p.api_timeout_s)
            deadline, seen, done = time.monotonic() + p.job_timeout_s, 0, 0
            while time.monotonic() < deadline:
                for r in (ev_rec, pod_rec):
                    if r.error is not None:
                        raise KubeRunError(f"kube backend: recording {r.path.name} failed "
                                           f"({type(r.error).__name__}: {str(r.error)[:200]})")
                seen, done = tracker.job_state(job)
                image_bar.update(min(done, p.nodes) - image_bar.n)
                image_bar.set_postfix_str(f"{seen} pods seen")
                if done >= p.nodes and seen >= p.nodes:
                    break
                time.sleep(poll_s)
            image_bar.close()
            batch.delete_namespaced_job(job, p.namespace, propagation_policy="Background",
                                        _request_timeout=p.api_timeout_s)
            if done >= p.nodes:
                state["done"][job] = image
                state["incomplete"].pop(job, None)
            else:
                state["incomplete"][job] = f"{image}: {done} of {p.nodes} pods had their pull event " \
                                           f"within {p.job_timeout_s:g} s ({seen} pods seen)"
            _write_json(progress_path, state)
        status = "complete" if len(state["done"]) == len(jobs) else "incomplete"
    except KeyboardInterrupt as exc:
        status = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        raise
    finally:
        _cleanup(client, p, label)
        ev_rec.close()
        pod_rec.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        state["recording"] = {"events": dict(ev_rec.stats), "pods": dict(pod_rec.stats)}
        _write_json(progress_path, state)
        _write_entry(folder, name, p, images, fingerprint, status, started, state)
        if status in ("complete", "incomplete"):
            _write_json(folder / "latency.json", latency(folder).to_dict(orient="records"))
    return folder


def _write_entry(folder: Path, name: str, p: KubeParams, images: list[str], fingerprint: dict, status: str,
                 started: str, state: dict) -> None:
    """run.json: a catalog entry (``kube/<name>``) plus the run's status, parameters and fingerprint."""
    _write_json(folder / "study.json", {"nodes": [{"image": i} for i in images]})
    files = [{"path": f, "kind": kind, "cluster_nodes": p.nodes,
              "size": (folder / f).stat().st_size if (folder / f).is_file() else None}
             for f, kind in ((EVENTS_FILE, "events"), (NODES_FILE, "nodes"))]
    hosts = fingerprint.get("registry_hosts") or []
    doc = {
        "id": f"kube/{name}", "source": name, "experiment": "kube", "run": name, "provider": "kubernetes",
        "machine_type": ", ".join(fingerprint.get("instance_types") or []) or "unknown",
        "region": ", ".join(fingerprint.get("zones") or []) or None,
        "registry": ", ".join(hosts) or "unknown", "ephemeral_storage": "unknown", "image_streaming": None,
        "image_content": "unknown", "study_file": "study.json",
        "description": f"{p.study} on a live cluster: {len(images)} images x {p.nodes} nodes x {p.repetitions}",
        "node_counts": [p.nodes], "files": files, "registry_host": hosts[0] if len(hosts) == 1 else None,
        "status": status, "started": started, "finished": datetime.now(timezone.utc).isoformat(),
        "backend": "kube", "parameters": p.public(), "environment": fingerprint,
        "incomplete": state.get("incomplete", {}), "recording": state.get("recording", {}),
    }
    _write_json(folder / "run.json", doc)


# ------------------------------------------------------------------------------- pod phases


def _cond_time(pod: dict, kind: str) -> datetime | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return parse_time(c.get("lastTransitionTime"))
    return None


def pod_phases(folder: str | Path) -> pd.DataFrame:
    """Per pod (last recorded version): created, scheduled, initialized, containers ready (server times)."""
    latest: dict[str, dict] = {}
    path = Path(folder) / PODS_FILE
    for line in path.read_text().splitlines() if path.is_file() else []:
        pod = json.loads(line)
        latest[pod["metadata"]["uid"]] = pod
    rows = []
    for pod in latest.values():
        md = pod["metadata"]
        rows.append({"pod": f"{md.get('namespace')}/{md.get('name')}", "created_at": parse_time(md.get("creationTimestamp")),
                     "scheduled_cond_at": _cond_time(pod, "PodScheduled"),
                     "initialized_at": _cond_time(pod, "Initialized"), "ready_at": _cond_time(pod, "ContainersReady")})
    return pd.DataFrame(rows, columns=["pod", "created_at", "scheduled_cond_at", "initialized_at", "ready_at"])


def latency(folder: str | Path) -> pd.DataFrame:
    """P50/P90/P99 of pull time (the kubelet's Pulled message) and pod startup latency, per image.

    Startup latency is creation to ContainersReady, as kube-burner's ``podLatency`` and ClusterLoader2's
    ``PodStartupLatency`` measure it; for pods whose container exits before it is ever Ready (the
    pull pods run ``true``), the kubelet's Started event stands in, and the table says how many did.
    """
    folder = Path(folder)
    rec = parse_events([folder / EVENTS_FILE], label_root=folder, backend="kube").records
    rec = rec[~rec["cache_hit"]]
    phases = pod_phases(folder)
    df = rec.merge(phases, on="pod", how="left") if len(phases) else rec.assign(created_at=pd.NaT, ready_at=pd.NaT)
    ready = pd.to_datetime(df["ready_at"], utc=True)
    end = ready.fillna(df["started_at"])
    df["startup_s"] = (end - pd.to_datetime(df["created_at"], utc=True)).dt.total_seconds()
    df["startup_from_started_event"] = ready.isna() & df["started_at"].notna()
    rows = []
    for image, g in df.groupby("image"):
        row = {"image": image, "pulls": len(g), "startup_from_started_event": int(g["startup_from_started_event"].sum())}
        for col in ("pull_s", "pull_wait_s", "startup_s"):
            for q in (50, 90, 99):
                row[f"{col}_p{q}"] = float(g[col].quantile(q / 100)) if g[col].notna().any() else None
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- the record source


def kube_runs(folder: str | Path | None = None) -> list[catalog.Run]:
    """Every recorded kube run, as catalog runs (``kube/<name>``)."""
    folder = Path(folder) if folder else runs_dir()
    out = []
    for path in sorted(folder.glob("*/run.json")):
        try:  # another backend's run, or a run.json being written: not a kube run to offer
            if json.loads(path.read_text()).get("backend") == "kube":
                out.append(catalog_entry(path.parent))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def catalog_entry(folder: str | Path) -> catalog.Run:
    import dataclasses

    doc = json.loads((Path(folder) / "run.json").read_text())
    fields = {f.name: doc[f.name] for f in dataclasses.fields(catalog.Run) if f.name in doc}
    fields["files"] = tuple(catalog.RunFile(**f) for f in fields["files"])
    fields["node_counts"] = tuple(fields["node_counts"])
    return catalog.Run(**fields)


@dataclass(frozen=True)
class KubeSource(NamedByRunId):
    """A recorded kube run (``kube/<name>``) as a record source: its events read by the archive's own reader."""

    run_id: str
    kind = "kube"

    def folder(self) -> Path:
        name = self.run_id.split("/", 1)[-1]
        path = runs_dir() / name
        if not (path / "run.json").is_file():
            raise KubeParamError(f"kube backend: no recorded run {self.run_id} ({path}/run.json missing): record "
                                 "one with `make run STUDY=... BACKEND=kube`")
        return path

    def load(self, cluster_nodes=None, *, time: str = "pull_wait_s", require_size: bool = True,
             progress: bool = True) -> SourceResult:
        from pullstudy.sources.archive.source import cluster_size_status

        folder = self.folder()
        entry = catalog_entry(folder)
        doc = json.loads((folder / "run.json").read_text())
        nodes = list(cluster_nodes) if cluster_nodes is not None else None
        result = archive.load_run(entry, nodes, raw=folder.parent, runs=[entry], progress=progress)
        pulls, excluded = analysable_pulls(result.records, time, require_size=require_size)
        sizes = cluster_size_status(result, pulls)
        line = (f"* **{self.run_id}** (recorded on a live cluster, status {doc.get('status')}): {len(pulls)} pulls "
                f"analysed; excluded: " + ("; ".join(f"{r} ({c})" for r, c in excluded.items()) or "nothing"))
        if doc.get("incomplete"):
            line += f"; {len(doc['incomplete'])} Job(s) incomplete: " + "; ".join(doc["incomplete"].values())
        return SourceResult(self.run_id, pulls, excluded, [line], list(result.unavailable), sizes, ledger=result,
                            report=line, empty_reason="" if len(pulls) else "no analysable pulls recorded")

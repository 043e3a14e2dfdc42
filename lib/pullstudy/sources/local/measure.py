"""The local measurement: a real registry and a real containerd on this machine, pulls timed cold.

For each repetition the images x conditions are shuffled (seeded), and every pull starts cold:
containerd is stopped and its whole root and state are deleted (content, snapshots, metadata), as the
SOCI and stargz benchmark suites do. A pull is timed in two steps with the real ``ctr``:

- ``fetch``: ``ctr content fetch --plain-http REF`` (manifest, config and compressed layers into the
  content store: the transfer);
- ``unpack``: ``ctr images pull --plain-http REF`` with the content present (it re-resolves the
  manifest with the registry, finds every blob present, and unpacks the layers into the overlayfs
  snapshotter: the write-out);
- ``pull_s``: from the start of the fetch to the end of the unpack. There is no kubelet and so no
  queue of pulls: ``pull_wait_s`` equals ``pull_s``.

Both commands run with ctr's ``--debug``: without it ctr draws a progress display that holds each
command until its next 100 ms tick (a 4 MB pull then reads 0.11 s + 0.13 s instead of 0.04 s +
0.04 s); with it ctr draws none (its own rule). The times include starting ``ctr`` (~20 ms).

Conditions: storage (containerd's root on a tmpfs or on a disk directory) x registry link (loopback,
or a registry in its own network namespace behind a tbf-shaped veth) x snapshotter (overlayfs, or
stargz for lazy pulling; each snapshotter has its own containerd on the same storage). One registry storage serves
both links: the images are pushed once to the registry on 127.0.0.1 (so pushes are not shaped), and a
second, read-only registry process in the namespace serves the same storage directory, so both links
serve byte-identical images. What this machine cannot provide is written to ``conditions.json`` as
unavailable with the reason and skipped, never simulated.

Cold means cold on the pulling side. The registry's blobs stay in the page cache between pulls (a warm
registry, as a busy real one is); caches are not dropped because that would disturb the whole machine.
``image_size_reported`` is the bytes in containerd's content store after the fetch (manifest, config,
compressed layers), what the kubelet's "Image size" reports. ``link_mbit_measured`` is the shaped
link's rate measured at setup (a timed transfer); loopback is neither shaped nor measured (empty).

Snapshotters: ``overlayfs`` pulls as above. ``stargz`` (lazy pulling, see :mod:`.lazy`) pulls the
eStargz copy of the image with ``ctr-remote image rpull``: ``pull_s`` is that command (manifest, config
and the layers' tables of contents, then remote mounts); there is no separate fetch and unpack, so
``fetch_s`` and ``unpack_s`` are empty. After every pull, under both snapshotters, the image is
mounted read-only and every file read once: ``read_s`` (and ``read_bytes``, which must equal the
image's size). Time to useful work is ``pull_s + read_s``: under overlayfs the files are already on
local storage (just written, so mostly in the page cache); under stargz the reads fetch them.

Workloads. ``synthetic`` (the default) is the above: crafted images, every file read once. ``apps``
measures real application images (:mod:`pullstudy.images.apps`, built from Debian packages, cached):
after each cold pull a container is created and started with ``ctr`` and runc and timed to its ready
line (:mod:`.containers`): ``create_s``, ``run_s``, ``run_status`` (ready, timeout, exited), and the
bytes the registry sent during the whole start, from its access log (``registry_bytes``,
``registry_blob_bytes``), over the pulled image's blob bytes (``image_blob_bytes``): ``fraction_read``.
The stargz snapshotter then runs without background fetch, so that it fetches only what is read.
``read_s`` stays empty: the container's own reads are its run.

Out: ``raw/records.jsonl`` (one complete line per pull, flushed as it happens), ``records.csv`` (the
tidy table), ``conditions.json``, ``run.json`` (a catalog-style entry, see :func:`catalog_entry`).
An unfinished run can be resumed (``run(..., resume=True)``): its complete records stay, only the
pulls it lacks are measured, and run.json says how many were kept (``resumed_with_records``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import socket
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import orjson
import pandas as pd
from tqdm.auto import tqdm

from pullstudy.data import catalog
from pullstudy.images import apps as catalogue
from pullstudy.records import RECORD_COLUMNS, decode_tag, typed_records
from . import containers, stargz
from .lifecycle import (Cleanup, ConditionUnavailable, ScratchDir, ServiceError, Tmpfs, mount, mount_of,
                        require_binary, unmount)
from .containerd import Containerd, DiskFull
from .link import RateLimitedLink
from .registry_process import Registry

SYNTHETIC, APPS = "synthetic", "apps"   # synthetic: crafted images, every file read; apps: real containers
READ_ALL = SYNTHETIC
WORKLOADS = (SYNTHETIC, APPS)
STORAGES = ("disk", "tmpfs")
LINKS = ("loopback", "rate-limited")
CONTENTS = ("zeros", "random", "mixed")
SNAPSHOTTERS = ("overlayfs", stargz.SNAPSHOTTER)
EXTRA_COLUMNS = ["fetch_s", "unpack_s", "read_s", "read_bytes", "repetition", "sequence", "storage", "link",
                 "link_mbit_measured", "containerd_version", "snapshotter", "root_fstype", "root_device",
                 # workload=apps: the container's create and run (to its ready line), what it fetched
                 "workload", "create_s", "run_s", "run_status", "exit_code", "registry_bytes", "registry_blob_bytes",
                 "image_blob_bytes", "fraction_read"]
LOCAL_COLUMNS = RECORD_COLUMNS + EXTRA_COLUMNS
MiB = 1024 * 1024


class LocalRunError(RuntimeError):
    """The run stopped; the message names the image, the condition and what to do."""


@dataclass(frozen=True)
class LocalGrid:
    """What to measure: sizes x layers x contents x storage x links x snapshotters, each ``repetitions`` times."""

    sizes_bytes: tuple[int, ...]
    layers: tuple[int, ...]
    contents: tuple[str, ...] = ("zeros",)
    repetitions: int = 3
    storage: tuple[str, ...] = STORAGES
    links: tuple[str, ...] = ("loopback",)
    rate_mbit: float = 100.0
    seed: int = 0
    delay_ms: float | None = None   # one-way, each direction, on the rate-limited link; needs netem
    tmpfs_size: int | None = None   # bytes; default 3 x the largest image + 256 MiB
    disk_dir: str | None = None     # where "disk" puts containerd's root; default a new dir in /var/tmp
    snapshotters: tuple[str, ...] = ("overlayfs",)  # add "stargz" for lazy pulling
    workload: str = SYNTHETIC       # synthetic: crafted images, every file read; apps: real containers run
    apps: tuple[str, ...] = ()      # workload=apps: images of pullstudy.images.apps (default: all of them)

    def __post_init__(self):
        for name in ("sizes_bytes", "layers", "contents", "storage", "links", "snapshotters", "apps"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple([value] if isinstance(value, (int, str)) else value))
        checks = [(self.contents, CONTENTS, "contents"), (self.storage, STORAGES, "storage"),
                  (self.links, LINKS, "links"), (self.snapshotters, SNAPSHOTTERS, "snapshotters")]
        for values, allowed, what in checks:
            bad = set(values) - set(allowed)
            if bad or not values:
                raise ValueError(f"{what} must be a non-empty subset of {allowed}, got {values}")
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {WORKLOADS}, got {self.workload!r}")
        if self.workload == APPS:
            object.__setattr__(self, "apps", self.apps or catalogue.DEFAULT_APPS)
            for name in self.apps:
                catalogue.get(name)  # an unknown name: ValueError naming the catalogue
        elif self.apps:
            raise ValueError(f"apps={self.apps} needs workload='apps' (the synthetic workload crafts its images)")
        if self.workload == READ_ALL and (not self.sizes_bytes or min(self.sizes_bytes) <= 0 or not self.layers
                                          or min(self.layers) < 1):
            raise ValueError("sizes_bytes must be positive and layers at least 1")
        if self.repetitions < 1:
            raise ValueError("repetitions must be at least 1")

    def images(self) -> list[dict]:
        """Every image of the grid (content, layers, size), each with its own seed; or its application images."""
        if self.workload == APPS:
            return [{"app": name, "content": name} for name in self.apps]
        combos = [(c, n, s) for c in self.contents for n in self.layers for s in self.sizes_bytes]
        return [{"content": c, "layers": n, "size_bytes": s, "seed": self.seed + i} for i, (c, n, s) in enumerate(combos)]

    def pulls(self) -> int:
        return len(self.images()) * len(self.storage) * len(self.links) * len(self.snapshotters) * self.repetitions


@dataclass
class Condition:
    """One storage x link x snapshotter combination, what provides it, and whether this machine could."""

    storage: str
    link: str
    snapshotter: str = "overlayfs"
    available: bool = True
    reason: str | None = None
    details: dict = field(default_factory=dict)
    containerd: Containerd | None = field(default=None, repr=False)
    registry_host: str | None = None
    link_mbit_measured: float | None = None
    registry: Registry | None = field(default=None, repr=False)  # the one serving registry_host (its access log)

    @property
    def name(self) -> str:
        return f"storage={self.storage},link={self.link},snapshotter={self.snapshotter}"

    def to_json(self) -> dict:
        return {"condition": self.name, "storage": self.storage, "link": self.link, "snapshotter": self.snapshotter,
                "available": self.available,
                "reason": self.reason, "link_mbit_measured": self.link_mbit_measured, **self.details}


@dataclass(frozen=True)
class PullTiming:
    fetch_s: float | None  # None: a lazy pull has no separate fetch and unpack
    unpack_s: float | None
    pull_s: float
    fetched_bytes: int
    pulling_at: str
    pulled_at: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def cold_pull(ctd: Containerd, ref: str) -> PullTiming:
    """Wipe containerd, then time fetch (content fetch) and unpack (images pull with content present)."""
    ctd.wipe()
    pulling_at, t0 = _now(), time.perf_counter()
    ctd.ctr("--debug", "content", "fetch", "--plain-http", ref)
    t1 = time.perf_counter()
    ctd.ctr("--debug", "images", "pull", "--plain-http", "--snapshotter", ctd.snapshotter, ref)
    t2 = time.perf_counter()
    return PullTiming(t1 - t0, t2 - t1, t2 - t0, ctd.content_bytes(), pulling_at, _now())


def lazy_pull(ctd: Containerd, ref: str) -> PullTiming:
    """Wipe containerd and the snapshotter's cache, then time ``ctr-remote image rpull`` (a lazy pull)."""
    ctr_remote = require_binary("ctr-remote")
    ctd.wipe()
    pulling_at, t0 = _now(), time.perf_counter()
    ctd.ctr("--debug", "images", "rpull", "--plain-http", ref, binary=ctr_remote)
    t1 = time.perf_counter()
    return PullTiming(None, None, t1 - t0, ctd.content_bytes(), pulling_at, _now())


def top_snapshot(ctd: Containerd) -> str:
    """The committed snapshot no other one builds on: the image's top layer after a cold pull of one image."""
    listing = ctd.ctr("snapshots", "--snapshotter", ctd.snapshotter, "ls").stdout.splitlines()[1:]
    rows = [line.split() for line in listing if line.strip()]
    committed = [r for r in rows if r[-1] == "Committed"]
    parents = {r[1] for r in committed if len(r) == 3}
    tops = [r[0] for r in committed if r[0] not in parents]
    if len(tops) != 1:
        raise ServiceError(f"expected one image in the {ctd.snapshotter} snapshotter after a cold pull, found the "
                           f"tops {tops}")
    return tops[0]


def _read_tree(root: Path) -> int:
    """Read every regular file under ``root`` once, in 1 MiB blocks; the bytes read."""
    total, block = 0, bytearray(MiB)
    view = memoryview(block)
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(view):
                    total += n
    return total


def read_image(ctd: Containerd, key: str = "pullstudy-read") -> tuple[float, int]:
    """Mount the pulled image read-only and read every file once: (seconds, bytes).

    The time runs from creating the view to the last byte read: the work a container does before its
    files are useful. Under a lazy snapshotter the reads fetch the contents from the registry.
    """
    target = ctd.tmp / "read"
    target.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    mounts = json.loads(ctd.ctr("snapshots", "--snapshotter", ctd.snapshotter, "view", "--mounts", key,
                                top_snapshot(ctd)).stdout)
    if len(mounts) != 1:
        raise ServiceError(f"the view of the image has {len(mounts)} mounts; pullstudy mounts exactly one: {mounts}")
    mount(mounts[0]["Type"], mounts[0]["Source"], target, mounts[0].get("Options") or ())
    try:
        nbytes = _read_tree(target)
        seconds = time.perf_counter() - t0
    finally:
        unmount(str(target))
    return seconds, nbytes


def _append(fd: int, record: dict) -> None:
    """One complete line per record, in one write, synced: an interrupted run leaves whole lines only."""
    line = orjson.dumps(record) + b"\n"
    written = os.write(fd, line)
    if written != len(line):  # a short write to a regular file means the disk is full
        os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - written)
        raise LocalRunError("records.jsonl: short write (disk full?); the partial line was removed")
    os.fsync(fd)


def _default_craft() -> Callable:
    try:
        from pullstudy.images import crafter
    except ImportError as exc:
        raise LocalRunError(f"pullstudy.images.crafter is not available ({exc}): pass craft= to run()") from None
    return crafter.craft


def _machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "cpu_model": cpu, "cpus": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version()}


def _craft_all(craft: Callable, registry: Registry, grid: LocalGrid, progress: bool) -> list[dict]:
    """Push every image of the grid; any failure (after the crafter's own retries) stops the run."""
    images = []
    for spec in tqdm(grid.images(), desc="craft", unit="image", disable=not progress):
        repository = f"pullstudy/{spec['content']}"
        what = f"{spec['content']} image of {spec['layers']} layers, {spec['size_bytes']} bytes"
        try:
            crafted = craft(registry.host, repository, layers=spec["layers"], size_bytes=spec["size_bytes"],
                            content=spec["content"], seed=spec["seed"], insecure=True)
        except Exception as exc:
            raise LocalRunError(f"pushing the {what} to {registry.host}/{repository} failed: {exc}; "
                                "no pull was measured, no record written") from exc
        images.append({**spec, "repository": repository, "tag": crafted.tag,
                       "compressed_bytes": getattr(crafted, "compressed_bytes", None)})
    return images


def _provide(stack: ExitStack, grid: LocalGrid, registry: Registry, largest: int) -> list[Condition]:
    """Start what each condition needs; a condition this machine cannot provide is marked, not faked.

    ``largest``: the largest image's bytes (uncompressed), which sizes a tmpfs.
    """
    stores: dict[tuple[str, str], tuple[Containerd | None, str | None, dict]] = {}
    for storage in grid.storage:
        try:
            if storage == "tmpfs":  # overlayfs holds content + snapshots, stargz its cache of fetched chunks
                size = (3 + (stargz.SNAPSHOTTER in grid.snapshotters)) * largest + 256 * MiB
                base = stack.enter_context(Tmpfs(grid.tmpfs_size or size)).path
            else:
                base = stack.enter_context(ScratchDir(grid.disk_dir or "/var/tmp", "pullstudy-disk-")).path
                _, fstype, _ = mount_of(base)
                if fstype in ("tmpfs", "ramfs"):
                    raise ConditionUnavailable(f"the disk directory {base} is on {fstype}: pass disk_dir= on a disk")
        except ConditionUnavailable as exc:
            stores.update({(storage, snap): (None, exc.reason, {}) for snap in grid.snapshotters})
            continue
        for snap in grid.snapshotters:
            try:
                # apps: no background fetch, so that the bytes fetched are what the container read
                remote = stack.enter_context(stargz.StargzSnapshotter(background_fetch=grid.workload != APPS)) \
                    if snap == stargz.SNAPSHOTTER else None
                ctd = stack.enter_context(Containerd(base / f"containerd-{snap}", snapshotter=snap,
                                                     remote_snapshotter=remote))
                details = {"root_fstype": ctd.root_fstype, "root_device": ctd.root_device}
                if remote:
                    details["stargz_snapshotter"] = remote.version
                    details["stargz_background_fetch"] = remote.background_fetch
                stores[(storage, snap)] = (ctd, None, details)
            except ConditionUnavailable as exc:
                stores[(storage, snap)] = (None, exc.reason, {})
    links: dict[str, tuple[str | None, float | None, str | None, dict]] = {}
    serving: dict[str, Registry] = {}
    for link in grid.links:
        if link == "loopback":
            links[link] = (registry.host, None, None, {"registry": registry.url})
            serving[link] = registry
            continue
        try:
            shaped = stack.enter_context(RateLimitedLink(grid.rate_mbit, grid.delay_ms))
            twin = stack.enter_context(Registry(netns=shaped, storage_dir=registry.storage_dir, readonly=True))
            serving[link] = twin
            measured = shaped.measure(min(8 * MiB, max(2 * MiB, int(grid.rate_mbit * 1e6 / 8 * 0.5))))
            links[link] = (twin.host, measured, None, {
                "registry": twin.url, "link_mbit_configured": grid.rate_mbit, "netns": shaped.netns,
                "link_measurements": shaped.measurements, "delay_ms": grid.delay_ms})
        except ConditionUnavailable as exc:
            links[link] = (None, None, exc.reason, {"link_mbit_configured": grid.rate_mbit, "delay_ms": grid.delay_ms})
    conditions = []
    for storage in grid.storage:
        for link in grid.links:
            for snap in grid.snapshotters:
                ctd, s_reason, s_details = stores[(storage, snap)]
                host, measured, l_reason, l_details = links[link]
                reasons = [r for r in (s_reason, l_reason) if r]
                conditions.append(Condition(storage, link, snap, not reasons, "; ".join(reasons) or None,
                                            {**s_details, **l_details}, ctd, host, measured, serving.get(link)))
    return conditions


def _record(name: str, image: dict, cond: Condition, timing: PullTiming, read: tuple[float, int], rep: int,
            seq: int, ref: str, versions: dict) -> dict:
    layers, size = decode_tag(image["tag"])
    ctd = cond.containerd
    return {
        "study": "local", "run": name, "condition": cond.name, "backend": "local", "cluster_nodes": 1,
        "node": socket.gethostname(), "image": ref, "tag": image["tag"], "layers": layers, "size_bytes": size,
        "content": image["content"], "image_size_reported": timing.fetched_bytes,
        "pull_s": timing.pull_s, "pull_wait_s": timing.pull_s, "cache_hit": False,
        "pulling_at": timing.pulling_at, "pulled_at": timing.pulled_at, "started_at": None,
        "source": f"raw/records.jsonl:{seq + 1}", "pod": None, "scheduled_at": None, "study_image": True,
        "fetch_s": timing.fetch_s, "unpack_s": timing.unpack_s, "read_s": read[0], "read_bytes": read[1],
        "repetition": rep, "sequence": seq,
        "storage": cond.storage, "link": cond.link, "link_mbit_measured": cond.link_mbit_measured,
        "containerd_version": versions["containerd"], "snapshotter": ctd.snapshotter,
        "root_fstype": ctd.root_fstype, "root_device": ctd.root_device, "workload": READ_ALL,
    }


def _write_json(path: Path, doc) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)


def grid_json(grid: LocalGrid) -> dict:
    """The grid as run.json records it; the workload fields only when not the default, so that runs
    recorded before they existed keep their names and are reused."""
    return normal_grid(json.loads(json.dumps(asdict(grid))))


def normal_grid(doc):
    """A recorded grid without the workload fields at their defaults (how :func:`grid_json` records it)."""
    if not isinstance(doc, dict):
        return doc
    return {k: v for k, v in doc.items() if not (k == "workload" and v == READ_ALL or k == "apps" and not v)}


def _run_entry(name: str, grid: LocalGrid, machine: dict, versions: dict, conditions: list[Condition],
               status: str, out: Path, **extra) -> dict:
    """A catalog-style entry: the catalog.Run fields, then what a local run adds."""
    storages = sorted({f"{c.storage} ({c.details.get('root_fstype', '?')} {c.details.get('root_device', '?')})"
                       for c in conditions if c.available})
    streaming = any(c.available and c.snapshotter == stargz.SNAPSHOTTER for c in conditions)
    files = [{"path": p, "kind": k, "cluster_nodes": 1, "size": (out / p).stat().st_size if (out / p).exists() else None}
             for p, k in (("raw/records.jsonl", "records"), ("records.csv", "tidy"), ("conditions.json", "conditions"))]
    return {
        "id": f"local/{name}", "source": "local", "experiment": "local", "run": name, "provider": "local",
        "machine_type": f"{machine['hostname']} / {machine['cpu_model']} ({machine['cpus']} CPUs)", "region": None,
        "registry": f"CNCF distribution {versions.get('registry', '?')} on this machine, links: {', '.join(grid.links)}",
        "ephemeral_storage": "; ".join(storages) or "none available", "image_streaming": streaming,
        "image_content": ", ".join(grid.contents), "study_file": "run.json",
        "description": f"local backend: {len(grid.sizes_bytes)} sizes x {len(grid.layers)} layer counts x "
                       f"{len(grid.contents)} contents, {grid.repetitions} cold pulls each, per condition",
        "node_counts": [1], "files": files,
        "status": status, "machine": machine, "versions": versions,
        "conditions": [c.to_json() for c in conditions], "grid": grid_json(grid), **extra,
    }


def _build_apps(registry: Registry, grid: LocalGrid, progress: bool) -> list[dict]:
    """Build (or take from the cache) and push every application image of the grid."""
    images = []
    bar = tqdm(grid.apps, desc="application images", unit="image", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        try:
            built = catalogue.build(name, log=bar.write if progress else None)
            pushed = catalogue.push(built, registry.host)
        except Exception as exc:
            raise LocalRunError(f"building or pushing the application image {name!r} failed: {exc}; "
                                "no pull was measured, no record written") from exc
        app = built.app
        images.append({"app": name, "content": name, "repository": app.repository, "tag": pushed.tag,
                       "layers": len(built.layers), "size_bytes": built.tar_bytes,
                       "compressed_bytes": pushed.compressed_bytes, "blob_bytes": blob_total(registry.host,
                                                                                             app.repository, pushed.tag),
                       "command": list(app.command), "ready": app.ready, "timeout_s": app.timeout_s,
                       "built": built.built, "definition": app.definition_hash})
    return images


def blob_total(host: str, repository: str, tag: str) -> int:
    """Bytes of the image's blobs (config and layers) as the registry holds them: what an eager pull fetches."""
    from .lifecycle import http_session

    with http_session() as session:
        response = session.get(f"http://{host}/v2/{repository}/manifests/{tag}", timeout=30,
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                  "application/vnd.docker.distribution.manifest.v2+json"})
    if response.status_code != 200:
        raise ServiceError(f"the manifest of {host}/{repository}:{tag} is not there (HTTP {response.status_code})")
    manifest = response.json()
    return int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in manifest["layers"])


def _app_pull(name: str, image: dict, cond: Condition, ref: str, lazily: bool, rep: int, seq: int,
              versions: dict) -> dict:
    """A cold pull, then a container of the image started and timed to its ready line, and the bytes it cost."""
    ctd = cond.containerd
    mark = cond.registry.traffic_mark()  # the pull wipes containerd first: cold every time
    timing = (lazy_pull if lazily else cold_pull)(ctd, ref)
    run = containers.run_container(ctd, ref, image["command"], ready=image["ready"], timeout_s=image["timeout_s"])
    traffic = cond.registry.traffic_since(mark)
    record = _record(name, image, cond, timing, (None, None), rep, seq, ref, versions)
    blobs = image["lazy_blob_bytes"] if lazily else image["blob_bytes"]
    record.update(workload=APPS, create_s=run.create_s, run_s=run.run_s, run_status=run.status,
                  exit_code=run.exit_code, registry_bytes=traffic.bytes, registry_blob_bytes=traffic.blob_bytes,
                  image_blob_bytes=blobs, fraction_read=traffic.blob_bytes / blobs if blobs else None)
    if not run.ready:
        record["run_output"] = run.output
    return record


def _pull_key(repetition, condition: str, content: str, tag: str) -> tuple:
    """What identifies one pull of the grid across attempts (the registry's port changes between them)."""
    return int(repetition), str(condition), str(content), str(tag)


def _pull_all(grid: LocalGrid, images: list[dict], available: list[Condition], fd: int, name: str,
              versions: dict, progress: bool, counter: list[int], done: frozenset = frozenset()) -> None:
    """Every repetition: shuffle images x conditions, pull each cold, append its record at once.

    ``done``: the pulls an earlier attempt recorded (:func:`_pull_key`); the shuffle is the same, they are skipped.
    """
    rng = random.Random(grid.seed)
    total = grid.repetitions * len(images) * len(available)
    with tqdm(total=total, initial=min(len(done), total), desc=name, unit="pull", disable=not progress) as bar:
        for rep in range(grid.repetitions):
            plan = [(image, cond) for image in images for cond in available]
            rng.shuffle(plan)
            for image, cond in plan:
                if _pull_key(rep, cond.name, image["content"], image["tag"]) in done:
                    continue
                lazily = cond.snapshotter == stargz.SNAPSHOTTER
                repository = stargz.lazy_repository(image["repository"]) if lazily else image["repository"]
                ref = f"{cond.registry_host}/{repository}:{image['tag']}"
                try:
                    if grid.workload == APPS:
                        record = _app_pull(name, image, cond, ref, lazily, rep, counter[0], versions)
                    else:
                        timing = (lazy_pull if lazily else cold_pull)(cond.containerd, ref)
                        read = read_image(cond.containerd)
                        record = _record(name, image, cond, timing, read, rep, counter[0], ref, versions)
                except DiskFull as exc:
                    raise LocalRunError(f"disk full under condition {cond.name} (containerd root "
                                        f"{cond.containerd.root_dir}, {cond.containerd.root_fstype}) while pulling "
                                        f"{ref}; this pull was not recorded. Free space, or give a larger "
                                        f"tmpfs_size / a disk_dir with room. ({exc})") from exc
                except ServiceError as exc:
                    raise LocalRunError(f"pull of {ref} under condition {cond.name} failed: {exc}") from exc
                _append(fd, record)
                counter[0] += 1
                bar.update()


def recorded(out_dir: str | Path) -> list[dict]:
    """The complete records of a run folder's raw/records.jsonl (none if absent).

    Records are appended one whole line at a time, so only the last line can be torn (a crash mid-write):
    it is not a record. A broken line before it is an error naming the line.
    """
    path = Path(out_dir) / "raw" / "records.jsonl"
    if not path.is_file():
        return []
    lines = path.read_bytes().splitlines(keepends=True)
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = orjson.loads(line) if line.endswith(b"\n") else None
        except orjson.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            if number == len(lines):
                break
            raise LocalRunError(f"{path}:{number}: not a complete record; the file was altered: remove the run folder")
        rows.append(row)
    return rows


def run(grid: LocalGrid, out_dir: str | Path, *, name: str, progress: bool = True,
        craft: Callable | None = None, resume: bool = False) -> Path:
    """Measure the grid on this machine; returns ``out_dir``. ``craft`` defaults to pullstudy.images.crafter.craft.

    run.json's ``status`` ends as complete, failed (with the error) or interrupted (Ctrl-C, SIGTERM).
    ``resume``: ``out_dir`` holds an unfinished attempt at this same grid (the caller checked, see
    sources.local.plan_run): its complete records are kept and only the pulls it lacks are measured.
    """
    out = Path(out_dir)
    records_path = out / "raw" / "records.jsonl"
    kept = recorded(out) if resume else []
    if not resume and records_path.exists() and records_path.stat().st_size:
        raise LocalRunError(f"{records_path} already has records: choose a new out_dir for run {name!r}")
    records_path.parent.mkdir(parents=True, exist_ok=True)
    if resume:  # drop a torn last line; an empty attempt starts afresh
        with open(records_path, "ab+") as f:
            f.seek(0)
            whole = sum(len(line) for line in f.read().splitlines(keepends=True)[:len(kept)])
            f.truncate(whole)
    done = frozenset(_pull_key(r["repetition"], r["condition"], r["content"], r["tag"]) for r in kept)
    craft = craft or _default_craft()
    machine, versions, conditions, counter, started_at = _machine(), {}, [], [len(kept)], _now()
    resumed = {"resumed_with_records": len(kept)} if kept else {}

    def status(state: str, **extra) -> None:
        _write_json(out / "run.json", _run_entry(name, grid, machine, versions, conditions, state, out,
                                                 started_at=started_at, records=counter[0], **resumed, **extra))

    def interrupted() -> None:  # runs first on any exit of the stack; a signal's cleanup runs it too
        if not finished:
            status("interrupted", finished_at=_now(), error="stopped before the end (signal or error)")

    finished = False
    fd = os.open(records_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        with ExitStack() as stack:
            registry = stack.enter_context(Registry())
            versions["registry"] = registry.version
            if grid.workload == APPS:
                images = _build_apps(registry, grid, progress)
                largest = max(i["size_bytes"] for i in images)
            else:
                images = _craft_all(craft, registry, grid, progress)
                largest = max(grid.sizes_bytes)
            conditions = _provide(stack, grid, registry, largest)
            _write_json(out / "conditions.json", [c.to_json() for c in conditions])
            available = [c for c in conditions if c.available]
            if not available:
                raise LocalRunError("no condition of the grid can be provided on this machine: "
                                    + "; ".join(f"{c.name}: {c.reason}" for c in conditions))
            versions.update(containerd=available[0].containerd.version,
                            snapshotters=sorted({c.snapshotter for c in available}))
            if stargz.SNAPSHOTTER in versions["snapshotters"]:
                versions["stargz_snapshotter"] = next(c.details["stargz_snapshotter"] for c in available
                                                      if c.snapshotter == stargz.SNAPSHOTTER)
                try:
                    stargz.convert_images(registry.host, images, grid.disk_dir, progress)
                except ServiceError as exc:
                    raise LocalRunError(f"{exc}; no pull was measured, no record written") from exc
                for image in images:
                    image["lazy_blob_bytes"] = blob_total(registry.host, stargz.lazy_repository(image["repository"]),
                                                          image["tag"])
            status("running")
            stack.enter_context(Cleanup(interrupted, f"status of run {name}"))
            _pull_all(grid, images, available, fd, name, versions, progress, counter, done)
            finished = True
    except BaseException as exc:
        finished = True
        state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        status(state, finished_at=_now(), error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        os.close(fd)
    _typed_frame(_read_jsonl(records_path)).to_csv(out / "records.csv", index=False)
    status("complete", finished_at=_now())
    return out


def _read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _typed_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """The record columns typed as records.typed_records types them, then the local extras."""
    # reindex: runs recorded before a column existed (read_s) load with it empty
    df = pd.DataFrame(rows).reindex(columns=LOCAL_COLUMNS)
    typed = typed_records(df[RECORD_COLUMNS])
    df["workload"] = df["workload"].astype(object).fillna(READ_ALL)  # runs recorded before workloads: synthetic
    for col in ("fetch_s", "unpack_s", "read_s", "link_mbit_measured", "create_s", "run_s", "fraction_read"):
        typed[col] = df[col].astype("float64")
    for col in ("read_bytes", "repetition", "sequence", "exit_code", "registry_bytes", "registry_blob_bytes",
                "image_blob_bytes"):
        typed[col] = pd.array([None if pd.isna(v) else int(v) for v in df[col].tolist()], dtype="Int64")
    for col in ("storage", "link", "containerd_version", "snapshotter", "root_fstype", "root_device", "workload",
                "run_status"):
        typed[col] = df[col].astype("string")
    return typed[LOCAL_COLUMNS]


def _out_dir(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.is_file() else path


def load_local_run(path: str | Path) -> pd.DataFrame:
    """The tidy records of a local run (its folder or run.json), typed like the archived runs' records.

    Reads records.csv, or raw/records.jsonl when the run stopped before writing the csv.
    """
    out = _out_dir(path)
    csv, jsonl = out / "records.csv", out / "raw" / "records.jsonl"
    if csv.exists():
        return _typed_frame(pd.read_csv(csv, dtype={"pod": "string", "started_at": "string", "scheduled_at": "string"},
                                        keep_default_na=True))
    if jsonl.exists():
        return _typed_frame(_read_jsonl(jsonl))
    raise FileNotFoundError(f"no records.csv or raw/records.jsonl under {out}: not a local run folder")


def catalog_entry(path: str | Path) -> catalog.Run:
    """The run as a catalog.Run, so it can be listed and selected with the archived runs."""
    doc = json.loads((_out_dir(path) / "run.json").read_text())
    fields = {f.name: doc[f.name] for f in dataclasses.fields(catalog.Run)  # a later optional field: its default
              if f.name in doc or f.default is dataclasses.MISSING}
    fields["files"] = tuple(catalog.RunFile(**f) for f in fields["files"])
    fields["node_counts"] = tuple(fields["node_counts"])
    return catalog.Run(**fields)


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """Median fetch, unpack, pull and read seconds and bytes transferred, per size, content and condition."""
    keys = ["size_bytes", "layers", "content", "storage", "link", "snapshotter"]
    return (records.groupby(keys, as_index=False)
            .agg(pulls=("pull_s", "size"), fetch_s=("fetch_s", "median"), unpack_s=("unpack_s", "median"),
                 pull_s=("pull_s", "median"), read_s=("read_s", "median"),
                 image_size_reported=("image_size_reported", "median")))

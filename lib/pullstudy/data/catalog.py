"""The catalog of pulling runs: what each archived run measured, under which conditions, in which files.

The conditions come from the upstream experiment READMEs and are cross-checked in the tests against
the node labels of the runs' own ``kubectl get nodes`` files (instance type, local SSD, image
streaming). The files come from the manifest, so every upstream run is listed whether or not this
machine can get its files. ``python -m pullstudy.data.catalog build`` writes data/catalog.json; a test
checks that the committed catalog equals a fresh build.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from .fetch import Manifest, available_files, load_manifest
from pullstudy.paths import data_dir

CHONKS = "container-chonks"
GHCR = "ghcr.io (GitHub Container Registry, outside Google Cloud)"
ARTIFACT_REGISTRY = "Artifact Registry us-central1 (same region as the cluster)"
#: The host of every image reference a registry serves: the machine-readable twin of ``registry``,
#: which the tests and ``archive.load_run`` check against the images the run's events actually pulled.
REGISTRY_HOSTS = {GHCR: "ghcr.io", ARTIFACT_REGISTRY: "us-central1-docker.pkg.dev"}
BOOT_DISK = "boot disk (pd-balanced)"
LOCAL_SSD = "local SSD"
SYNTHETIC = "zeros"  # layers of `head -c N /dev/zero` on a busybox base
APPS = "real"  # spack-built application images
def _gke(registry: str, storage: str, streaming: bool | None, content: str, study_file: str, description: str,
         machine_type: str = "n1-standard-16") -> dict:
    return {"provider": "GKE", "machine_type": machine_type, "region": "us-central1", "registry": registry,
            "registry_host": REGISTRY_HOSTS[registry], "ephemeral_storage": storage, "image_streaming": streaming, "image_content": content,
            "study_file": f"experiments/{study_file}", "description": description}


# (experiment, run) -> conditions. The runs of pulling-test follow the same design as those of pulling.
# Registry and study file are those of the images the run's events pulled, not of the README's command
# (tests/test_catalog_runs.py checks every run whose events are here; archive.load_run every other):
# pulling/run3's command says studies/run2.json but it pulled the ghcr.io images of run1.json, and
# pulling-test/run3 ("we can stick with gcr.io") pulled us-central1-docker.pkg.dev/.../container-chonks.
_APPS = "spack-built apps (LAMMPS, AMG2023, MiniFE, OSU) run by the Flux Operator"
CONDITIONS: dict[tuple[str, str], dict] = {
    ("pulling", "run1"): _gke(GHCR, BOOT_DISK, False, SYNTHETIC, "pulling/studies/run1.json",
                              "baseline: 9-layer synthetic images of 1.2-19 GB pulled from ghcr.io"),
    ("pulling", "run2"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, False, SYNTHETIC, "pulling/studies/run2.json",
                              "registry proximity: the run1 images from Artifact Registry in the cluster's region"),
    ("pulling", "run3"): _gke(GHCR, LOCAL_SSD, False, SYNTHETIC, "pulling/studies/run1.json",
                              "local SSD for ephemeral storage (containerd root), images from ghcr.io"),
    ("pulling", "run4"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, True, SYNTHETIC, "pulling/studies/run4.json",
                              "GKE image streaming (lazy pulling; needs Artifact Registry)"),
    ("pulling", "streaming"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, True, APPS, "pulling/studies/streaming.json",
                                   f"{_APPS}, image streaming on; app logs kept"),
    ("pulling", "without-streaming"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, False, APPS, "pulling/studies/streaming.json",
                                           f"{_APPS}, without image streaming; app logs kept"),
    ("pulling-test", "run1"): _gke(GHCR, BOOT_DISK, False, SYNTHETIC, "pulling-test/studies/run1.json",
                                   "earlier round: 38 images, 9 vs 125 layers, 48 MB-19 GB, from ghcr.io"),
    ("pulling-test", "run2"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, False, SYNTHETIC, "pulling-test/studies/run2.json",
                                   "earlier round, images from Artifact Registry in the cluster's region"),
    ("pulling-test", "run3"): _gke(ARTIFACT_REGISTRY, LOCAL_SSD, False, SYNTHETIC, "pulling-test/studies/run2.json",
                                   "earlier round, local SSD for ephemeral storage, images from Artifact Registry"),
    ("pulling-test", "run4"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, True, SYNTHETIC, "pulling-test/studies/run2.json",
                                   "earlier round, GKE image streaming"),
    ("pulling-test", "streaming"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, True, APPS,
                                        "pulling-test/studies/streaming.json",
                                        "earlier round of the app runs, image streaming on"),
    ("pulling-test", "without-streaming"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, False, APPS,
                                                "pulling-test/studies/streaming.json",
                                                "earlier round of the app runs, without image streaming"),
    ("pulling-test", "streaming-test"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, None, APPS,
                                             "pulling-test/studies/streaming.json",
                                             "trial of the app runs on 4 nodes (streaming setting not recorded)"),
    ("pulling-test", "streaming-test/streaming"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, True, APPS,
                                                       "pulling-test/studies/streaming.json",
                                                       "trial of the app runs on 4 nodes, image streaming on"),
    ("pulling-test", "streaming-test/without-streaming"): _gke(ARTIFACT_REGISTRY, BOOT_DISK, False, APPS,
                                                               "pulling-test/studies/streaming.json",
                                                               "trial of the app runs on 4 nodes, without streaming"),
    ("pulling-test", "test/n1-standard-16"): _gke(GHCR, BOOT_DISK, False, SYNTHETIC, "pulling-test/studies/test.json",
                                                  "machine-type trial: 1-125 layers on n1-standard-16"),
    ("pulling-test", "test/n1-standard-64"): _gke(GHCR, BOOT_DISK, False, SYNTHETIC, "pulling-test/studies/test.json",
                                                  "machine-type trial: 1-125 layers on n1-standard-64",
                                                  machine_type="n1-standard-64"),
    ("pulling-aws", "run1"): {"provider": "EKS", "machine_type": "c5a.4xlarge", "region": None, "registry": GHCR,
                              "registry_host": REGISTRY_HOSTS[GHCR], "ephemeral_storage": "EBS root volume", "image_streaming": False,
                              "image_content": SYNTHETIC, "study_file": "experiments/pulling-aws/studies/run1.json",
                              "description": "the same design on AWS EKS"},
}

# Container sets whose manifests and configs were archived: the layer-similarity study reads them.
SETS: dict[str, dict] = {
    "similarity/containers": {
        "source": CHONKS, "folder": "experiments/similarity/data/containers/containers",
        "outputs": "experiments/similarity/data/similarity/containers",
        "description": "ensemble containers: the same applications built to share base layers (best effort)"},
    "similarity/performance-study": {
        "source": CHONKS, "folder": "experiments/similarity/data/containers/performance-study",
        "outputs": "experiments/similarity/data/similarity/performance-study",
        "description": "the performance study's CPU containers: some care taken to share layers"},
    "similarity/spack": {
        "source": CHONKS, "folder": "experiments/similarity/data/containers/spack",
        "outputs": "experiments/similarity/data/similarity/spack",
        "description": "spack builds: one large environment layer per application (little sharing)"},
    "container-sizes/performance-study": {
        "source": "performance-study", "folder": "analysis/container-sizes/data/containers",
        "outputs": "analysis/container-sizes/data/similarity", "extra": ("analysis/container-sizes/data/all-containers.json",),
        "description": "every container of the performance study (CPU and GPU builds, several clouds, many tags)"},
}


#: Archived ``kubectl get nodes -o json`` of the performance study's GPU clusters (GKE, EKS, AKS):
#: experiments/<cloud>/<service>/gpu/**/nodes*.json and broken-nodes.json.
GPU_NODE_FILE = re.compile(r"^experiments/([^/]+)/([^/]+)/gpu/(?:.*/)?(nodes[^/]*|broken-nodes)\.json$")
GPU_PROVIDERS = {"gke": "GKE", "eks": "EKS", "aks": "AKS"}


def gpu_cluster_label(path: str) -> str:
    """``gke/size4/nodes-4`` for experiments/google/gke/gpu/size4/metadata/nodes-4.json."""
    match = GPU_NODE_FILE.match(path)
    service = match.group(2) if match else "?"
    rest = path.split("/gpu/", 1)[-1].replace("metadata/", "").removesuffix(".json")
    return f"{service}/{rest}"


def build_gpu_clusters(manifest: Manifest) -> list[dict]:
    """Every archived GPU cluster node list: a label, the provider and the file."""
    rows = []
    for f in manifest.files:
        match = GPU_NODE_FILE.match(f.path)
        if match:
            rows.append({"id": gpu_cluster_label(f.path), "source": f.source, "path": f.path,
                         "provider": GPU_PROVIDERS.get(match.group(2), match.group(2))})
    return sorted(rows, key=lambda r: (r["provider"], r["id"]))


def load_gpu_clusters(path: str | Path | None = None) -> list[dict]:
    return json.loads(Path(path or catalog_path()).read_text())["gpu_clusters"]


@dataclass(frozen=True)
class ContainerSet:
    id: str
    source: str
    folder: str  # under data/raw/<source>/
    outputs: str | None  # the upstream's own results for this set, kept for checking
    description: str
    extra: tuple[str, ...] = ()  # other files of the set, e.g. the list of images it was made from
    files: tuple[str, ...] = field(repr=False, default=())


def build_sets(manifest: Manifest) -> list[ContainerSet]:
    """Every archived container set with its files (manifests and the upstream outputs)."""
    out = []
    for set_id, spec in SETS.items():
        prefixes = [spec["folder"] + "/"] + ([spec["outputs"] + "/"] if spec["outputs"] else [])
        files = tuple(sorted(f.path for f in manifest.files if f.source == spec["source"] and (
            f.path.startswith(tuple(prefixes)) or f.path in spec.get("extra", ()))))
        out.append(ContainerSet(id=set_id, files=files, **spec))
    return out


def load_sets(path: str | Path | None = None) -> list[ContainerSet]:
    doc = json.loads(Path(path or catalog_path()).read_text())
    return [ContainerSet(**{**s, "files": tuple(s["files"]), "extra": tuple(s["extra"])}) for s in doc["sets"]]


def get_set(set_id: str, sets: list[ContainerSet] | None = None) -> ContainerSet:
    sets = sets if sets is not None else load_sets()
    for s in sets:
        if s.id == set_id:
            return s
    raise KeyError(f"no container set {set_id!r} in the catalog; known sets: {', '.join(s.id for s in sets)}")


_METADATA = re.compile(r"^experiments/(?P<experiment>pulling[^/]*)/metadata/(?P<rest>.+)$")
_NODES_IN_NAME = re.compile(r"(?:events-size|nodes)-(\d+)-")


@dataclass(frozen=True)
class RunFile:
    path: str  # upstream path, also the path under data/raw/<source>/
    kind: str  # events | nodes | app-log
    cluster_nodes: int
    size: int | None


@dataclass(frozen=True)
class Run:
    id: str  # "<experiment>/<run>", e.g. "pulling/run1"
    source: str
    experiment: str
    run: str
    provider: str
    machine_type: str
    region: str | None
    registry: str
    ephemeral_storage: str
    image_streaming: bool | None
    image_content: str
    study_file: str
    description: str
    node_counts: tuple[int, ...]
    files: tuple[RunFile, ...] = field(repr=False)
    registry_host: str | None = None  # host of the images it pulled, e.g. "ghcr.io" (None: not known)

    def files_of(self, kind: str, cluster_nodes: Iterable[int] | None = None) -> list[RunFile]:
        wanted = set(cluster_nodes) if cluster_nodes is not None else None
        return [f for f in self.files if f.kind == kind and (wanted is None or f.cluster_nodes in wanted)]


def _classify(rest: str) -> tuple[str, int, str] | None:
    """Split a metadata path into (run, cluster_nodes, kind), or None if it is not a run file."""
    parts = rest.split("/")
    name = parts[-1]
    if "logs" in parts[:-1]:
        kind = "app-log"
    elif name.startswith("events"):
        kind = "events"
    elif name.startswith("nodes"):
        kind = "nodes"
    else:
        return None
    digits = [i for i, p in enumerate(parts[:-1]) if p.isdigit()]
    if digits:
        return "/".join(parts[: digits[0]]), int(parts[digits[0]]), kind
    m = _NODES_IN_NAME.search(name)
    if not m:
        return None
    return "/".join(parts[:-1]), int(m.group(1)), kind


def build(manifest: Manifest) -> list[Run]:
    """Every pulling run of the manifest with its conditions; unknown runs are an error, not a skip."""
    grouped: dict[tuple[str, str], list[RunFile]] = {}
    source_of: dict[tuple[str, str], str] = {}
    for f in manifest.files:
        m = _METADATA.match(f.path)
        if not m:
            continue
        parsed = _classify(m.group("rest"))
        if parsed is None:
            raise ValueError(f"catalog: cannot place {f.key} in a run (unrecognised file name)")
        run, nodes, kind = parsed
        key = (m.group("experiment"), run)
        grouped.setdefault(key, []).append(RunFile(f.path, kind, nodes, f.size))
        source_of[key] = f.source
    unknown = sorted(set(grouped) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"catalog: runs with no recorded conditions: {unknown}; add them to CONDITIONS")
    runs = []
    for (experiment, run), cond in CONDITIONS.items():
        files = sorted(grouped.get((experiment, run), []), key=lambda f: (f.cluster_nodes, f.kind, f.path))
        runs.append(Run(id=f"{experiment}/{run}", source=source_of.get((experiment, run), CHONKS),
                        experiment=experiment, run=run, node_counts=tuple(sorted({f.cluster_nodes for f in files})),
                        files=tuple(files), **cond))
    return runs


def to_json(runs: list[Run], sets: list[ContainerSet] | None = None, gpu_clusters: list[dict] | None = None) -> dict:
    return {
        "about": "Pulling runs of the archived upstream experiments and their conditions, and the archived "
                 "container sets and GPU cluster node lists. Built from data/manifest.json by `python -m pullstudy.data.catalog build`.",
        "runs": [asdict(r) for r in runs],
        "sets": [asdict(s) for s in (sets or [])],
        "gpu_clusters": gpu_clusters or [],
    }


def catalog_path() -> Path:
    return data_dir() / "catalog.json"


def load(path: str | Path | None = None) -> list[Run]:
    doc = json.loads(Path(path or catalog_path()).read_text())
    runs = []
    for r in doc["runs"]:
        r = dict(r)
        r["files"] = tuple(RunFile(**f) for f in r["files"])
        r["node_counts"] = tuple(r["node_counts"])
        runs.append(Run(**r))
    return runs


def get(run_id: str, runs: list[Run] | None = None) -> Run:
    runs = runs if runs is not None else load()
    for r in runs:
        if r.id == run_id:
            return r
    raise KeyError(f"no run {run_id!r} in the catalog; known runs: {', '.join(r.id for r in runs)}")


def select(runs: list[Run] | None = None, **conditions) -> list[Run]:
    """Runs whose fields equal every given condition, e.g. ``select(image_streaming=True)``."""
    runs = runs if runs is not None else load()
    bad = set(conditions) - set(Run.__dataclass_fields__)
    if bad:
        raise KeyError(f"unknown run fields {sorted(bad)}")
    return [r for r in runs if all(getattr(r, k) == v for k, v in conditions.items())]


CONDITION_FIELDS = ("provider", "machine_type", "region", "registry", "ephemeral_storage", "image_streaming",
                    "image_content", "node_counts", "description")


def conditions(runs: Iterable[Run]):
    """The runs' conditions side by side (a row per field), with whether they differ."""
    import pandas as pd

    runs = list(runs)
    table = pd.DataFrame({r.id: [str(getattr(r, f)) for f in CONDITION_FIELDS] for r in runs},
                         index=list(CONDITION_FIELDS))
    table["differs"] = table.nunique(axis=1) > 1
    return table


def availability(runs: list[Run], manifest: Manifest | None = None, raw: str | Path | None = None):
    """A tidy table: per run, node count and file kind, how many files are listed and how many are here."""
    import pandas as pd

    manifest = manifest or load_manifest()
    have = available_files(manifest, raw)
    rows = []
    for r in runs:
        for f in r.files:
            rows.append({"run": r.id, "cluster_nodes": f.cluster_nodes, "kind": f.kind,
                         "available": f"{r.source}/{f.path}" in have})
    df = pd.DataFrame(rows, columns=["run", "cluster_nodes", "kind", "available"])
    return (df.groupby(["run", "cluster_nodes", "kind"], as_index=False)
              .agg(files=("available", "size"), available=("available", "sum")))


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pullstudy.data.catalog")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write data/catalog.json from data/manifest.json")
    b.add_argument("--manifest", default=None)
    b.add_argument("--out", default=None)
    sub.add_parser("list", help="print the runs and their conditions")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command == "build":
        out = Path(args.out) if args.out else catalog_path()
        manifest = load_manifest(args.manifest)
        out.write_text(json.dumps(to_json(build(manifest), build_sets(manifest), build_gpu_clusters(manifest)),
                                  indent=1) + "\n")
        print(f"wrote {out}")
        return 0
    for r in load():
        print(f"{r.id:45s} {r.provider} {r.machine_type:14s} streaming={r.image_streaming!s:5s} "
              f"nodes={','.join(map(str, r.node_counts))}  {r.registry.split(' ')[0]} / {r.ephemeral_storage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

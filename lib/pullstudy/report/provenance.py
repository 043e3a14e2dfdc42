"""results/ro-crate-metadata.json: the provenance of a ``make reproduce`` run as an RO-Crate (``rocrate``).

One ``CreateAction`` per executed notebook (Process Run Crate style): its *instrument* is the notebook as
run (``<nb>/<nb>.ipynb``, ``File`` + ``SoftwareSourceCode`` in Jupyter, with the package versions it ran with);
its *object* the parameters papermill gave it and the pullstudy version (``PropertyValue``) and the input data — the data
folder as a ``Dataset`` (the DOI when data/raw was fetched by DOI, with the bundle's SHA-256), each file
present with its upstream URL at the pinned commit, git blob id and size; its *result* every file the
notebook wrote (``metrics.json``, charts, tables) and each verdict (``PropertyValue``: claim, verdict, reason).
Start and end come from papermill; a failed notebook's action is ``FailedActionStatus`` with the error.

Which RO-Crate: a Workflow Run Crate 0.5 (and so a Process Run Crate 0.5), which is defined on RO-Crate
1.1, so ``rocrate`` writes version 1.1. The workflow (the crate's ``mainEntity``) is the runner that
``make reproduce`` ran, ``pullstudy.report.runner``, copied into the crate as ``workflow/runner.py`` so the
crate holds what it names; its ``CreateAction`` takes the data folder and the ``-p`` overrides and gives
the claims table, the results page and the paper files. The per-notebook actions are its steps. The data
folder is a contextual ``Dataset`` (``#input-data``), not a part of the crate: its files are upstream, named
by URL at the pinned commit. The tests validate with roc-validator's ``workflow-run-crate-0.5`` profile
offline, its cache seeded with the RO-Crate 1.1 context as ``rocrate`` 0.12.0 shipped it (``make cite-tools``).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path

import nbformat
from rocrate.model.computerlanguage import ComputerLanguage
from rocrate.model.contextentity import ContextEntity
from rocrate.model.file import File
from rocrate.model.softwareapplication import SoftwareApplication
from rocrate.rocrate import ROCrate

from . import paper
from pullstudy import paths
from pullstudy.data.bundle import default_version
from pullstudy.data.fetch import DataConfigError, load_manifest
from .output import load_metrics

CRATE_FILE = "ro-crate-metadata.json"
RO_CRATE_VERSION = "1.1"  # the version the Workflow Run Crate 0.5 profile is defined on
PROFILES = {"https://w3id.org/ro/wfrun/process/0.5": ("Process Run Crate", "0.5"),
            "https://w3id.org/ro/wfrun/workflow/0.5": ("Workflow Run Crate", "0.5"),
            "https://w3id.org/workflowhub/workflow-ro-crate/1.0": ("Workflow RO-Crate", "1.0")}
WORKFLOW_FILE = "workflow/runner.py"
# What the workflow's run produced beyond the notebooks' own outputs (paths under results/).
WORKFLOW_OUTPUTS = ("claims.csv", "index.html", "how-sure.html", "how-sure.png", "how-sure.svg")
PACKAGES = ("altair", "nbformat", "numpy", "pandas", "papermill", "pooch", "scipy", "vl-convert-python")
_ENCODING = {".json": "application/json", ".csv": "text/csv", ".png": "image/png", ".svg": "image/svg+xml",
             ".html": "text/html", ".ipynb": "application/x-ipynb+json", ".pdf": "application/pdf",
             ".log": "text/plain", ".txt": "text/plain", ".md": "text/markdown", ".py": "text/x-python",
             ".tex": "application/x-tex", ".bib": "application/x-bibtex"}


def _version(name: str) -> str:
    try:
        return package_version(name)
    except PackageNotFoundError:
        return "not installed"


def _file(crate: ROCrate, root: Path, path: Path, extra: dict | None = None) -> File:
    rel = path.relative_to(root).as_posix()
    existing = crate.get(rel)
    if existing is not None:
        return existing
    props = {"name": path.name, "contentSize": path.stat().st_size}
    if path.suffix in _ENCODING:
        props["encodingFormat"] = _ENCODING[path.suffix]
    props.update(extra or {})
    return crate.add(File(crate, source=None, dest_path=rel, properties=props))


def _input_data(crate: ROCrate, raw: Path, data_dir: Path) -> ContextEntity:
    """The data folder as a Dataset: DOI and bundle checksum when fetched by DOI; each file here with its
    upstream URL at the pinned commit and git blob id."""
    ident = paper.data_identity(raw)
    props = {"@type": "Dataset", "name": f"pullstudy data {default_version()}",
             "description": "The upstream files of data/manifest.json present in data/raw, each verified by "
                            "its git blob id", "license": "MIT"}
    if ident.get("doi"):
        props["identifier"] = f"https://doi.org/{ident['doi']}"
    if ident.get("sha256"):
        props["description"] += f"; fetched as {ident['bundle']} (SHA-256 {ident['sha256']})"
    data = crate.add(ContextEntity(crate, "#input-data", properties=props))
    parts = []
    try:
        manifest = load_manifest(data_dir / "manifest.json")
    except DataConfigError:
        return data
    repos = {name: crate.add(ContextEntity(crate, src.get("repository", f"#source-{name}"), properties={
        "@type": "CreativeWork", "name": name, "version": src["commit"],
        "description": f"upstream repository {name} at commit {src['commit']} ({src.get('license', '')} licence)"}))
        for name, src in manifest.sources.items()}
    for f in manifest.files:
        if not (raw / f.source / f.path).is_file():
            continue
        parts.append(crate.add(ContextEntity(crate, manifest.url(f), properties={
            "@type": "File", "name": f.path.rsplit("/", 1)[-1], "identifier": f"git-blob:{f.git_blob}",
            **({"encodingFormat": _ENCODING[Path(f.path).suffix]} if Path(f.path).suffix in _ENCODING else {}),
            **({"contentSize": f.size} if f.size is not None else {}),
            "isPartOf": repos[f.source]})))
    if parts:
        data["hasPart"] = parts
    return data


def _workflow(crate: ROCrate, root: Path, python: ComputerLanguage, version: str) -> File:
    """The crate's main workflow: a copy of the runner module that ran, as a File + ComputationalWorkflow."""
    source = Path(importlib.util.find_spec("pullstudy.report.runner").origin)
    target = root / WORKFLOW_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return _file(crate, root, target, {
        "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"], "name": "pullstudy reproduce",
        "programmingLanguage": python, "version": version,
        "description": "pullstudy.report.runner as `make reproduce` ran it: executes every study notebook with "
                       "papermill, then writes the claims table, the results page, the paper files and this crate"})


def build(results_root: str | Path | None = None, *, raw: Path | None = None, data_dir: Path | None = None,
          parameters: dict | None = None) -> Path:
    """Write ``results/ro-crate-metadata.json`` and return it. ``parameters``: the ``-p`` overrides the
    runner was given (recorded on the workflow's action)."""
    root = Path(results_root) if results_root else paths.results_dir()
    raw = Path(raw) if raw else paths.raw_dir()
    data_dir = Path(data_dir) if data_dir else paths.data_dir()
    crate = ROCrate(version=RO_CRATE_VERSION)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    crate.root_dataset.properties().update({
        "name": "pullstudy results", "license": "MIT", "datePublished": now,
        "description": "The results of `make reproduce`: every study notebook run on the archived data, with "
                       "the figures, tables, metrics and verdicts each produced."})
    profiles = [crate.add(ContextEntity(crate, uri, properties={"@type": ["CreativeWork", "Profile"], "name": name,
                                                                 "version": ver}))
                for uri, (name, ver) in PROFILES.items()]
    crate.root_dataset["conformsTo"] = profiles
    python = crate.add(ComputerLanguage(crate, "https://www.python.org/", properties={
        "name": "Python", "url": "https://www.python.org/", "version": platform.python_version()}))
    jupyter = crate.add(ComputerLanguage(crate, "https://jupyter.org/", properties={
        "name": "Jupyter Notebook", "url": "https://jupyter.org/", "version": f"nbformat {_version('nbformat')}"}))
    requirements = [crate.add(SoftwareApplication(crate, f"https://pypi.org/project/{p}/{_version(p)}/", properties={
        "name": p, "version": _version(p), "url": f"https://pypi.org/project/{p}/"})) for p in PACKAGES]
    pullstudy_version = _version("pullstudy") if _version("pullstudy") != "not installed" else default_version()
    data = _input_data(crate, raw, data_dir)
    metrics_by_nb = {Path(m["path"]).parent.name: m for m in load_metrics(root)}
    actions = []
    for ipynb in sorted(root.glob("*/*.ipynb")):
        stem = ipynb.parent.name
        if ipynb.stem != stem:
            continue
        try:
            meta = nbformat.read(ipynb, as_version=4).metadata.get("papermill", {})
        except (OSError, ValueError):
            meta = {}
        notebook = _file(crate, root, ipynb, {"@type": ["File", "SoftwareSourceCode"], "programmingLanguage": jupyter,
                                              "softwareRequirements": requirements, "version": pullstudy_version,
                                              "description": f"notebook {stem} as papermill ran it, with pullstudy "
                                                             f"{pullstudy_version} on Python {platform.python_version()}"})
        params = [crate.add(ContextEntity(crate, f"#{stem}-param-{k}", properties={
            "@type": "PropertyValue", "name": k, "value": json.dumps(v) if not isinstance(v, str) else v}))
            for k, v in sorted((meta.get("parameters") or {}).items())]
        outputs = [_file(crate, root, p) for p in sorted(ipynb.parent.iterdir())
                   if p.is_file() and p != ipynb]
        verdicts = [crate.add(ContextEntity(crate, f"#{stem}-verdict-{v['claim_id']}", properties={
            "@type": "PropertyValue", "name": v["claim_id"], "value": v["verdict"], "description": v.get("reason", "")}))
            for v in (metrics_by_nb.get(stem) or {}).get("verdicts", [])]
        props = {"@type": "CreateAction", "name": f"Run of notebook {stem}",
                 "actionStatus": "http://schema.org/FailedActionStatus" if meta.get("exception")
                 else "http://schema.org/CompletedActionStatus"}
        if meta.get("start_time"):
            props["startTime"] = meta["start_time"]
        if meta.get("end_time"):
            props["endTime"] = meta["end_time"]
        if meta.get("exception"):
            props["error"] = "the notebook raised an exception: see the executed notebook"
        params.append(crate.add(ContextEntity(crate, f"#{stem}-pullstudy-version", properties={
            "@type": "PropertyValue", "name": "pullstudy version", "value": pullstudy_version})))
        action = crate.add_action(notebook, identifier=f"#run-{stem}", object=params + [data],
                                  result=outputs + verdicts, properties=props)
        actions.append(action)
    workflow = _workflow(crate, root, python, pullstudy_version)
    crate.root_dataset["mainEntity"] = workflow
    overrides = [crate.add(ContextEntity(crate, f"#reproduce-param-{k}", properties={
        "@type": "PropertyValue", "name": k, "value": json.dumps(v) if not isinstance(v, str) else v}))
        for k, v in sorted((parameters or {}).items())]
    produced = [_file(crate, root, root / name) for name in WORKFLOW_OUTPUTS if (root / name).is_file()]
    produced += [_file(crate, root, p) for p in sorted((root / paper.PAPER_DIR).rglob("*")) if p.is_file()] \
        if (root / paper.PAPER_DIR).is_dir() else []
    props = {"@type": "CreateAction", "name": "Run of make reproduce",
             "actionStatus": "http://schema.org/FailedActionStatus"
             if any(a.get("actionStatus", "").endswith("FailedActionStatus") for a in actions)
             else "http://schema.org/CompletedActionStatus"}
    times = [a.get(k) for a in actions for k in ("startTime", "endTime") if a.get(k)]
    if times:
        props["startTime"], props["endTime"] = min(times), max(times)
    run = crate.add_action(workflow, identifier="#run-reproduce", object=overrides + [data], result=produced,
                           properties=props)
    crate.root_dataset["mentions"] = [run] + actions
    # RO-Crate 1.1: every data entity is reached from the root by hasPart, the upstream files (web data
    # entities) included; the metadata descriptor is not a part of itself.
    crate.root_dataset["hasPart"] = [e for e in crate.get_entities()
                                     if isinstance(e, File) and e is not crate.metadata] + list(data.get("hasPart") or [])
    crate.metadata.write(root)
    return root / CRATE_FILE

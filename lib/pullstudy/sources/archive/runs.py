"""Pull records of archived runs, read from data/raw/ through the catalog.

Files the catalog lists but this machine does not have are returned in ``unavailable`` so that a
notebook can say which cluster sizes it could not analyse, instead of silently analysing fewer; every
requested cluster size gets a status and a reason in ``ParseResult.cluster_sizes``.

A run's events are also checked against its catalog entry: a run whose events pull none of its study
file's images, or pull them from another registry than the entry says, is a wrong entry and raises
``CatalogMismatch`` (a wrong entry would otherwise throw every pull away as "system pods").
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import pandas as pd
from tqdm.auto import tqdm

from pullstudy.data import catalog
from pullstudy.parsers.kubelet_events import ParseResult, parse_events
from pullstudy.records import split_image
from pullstudy.images.oci_manifests import HISTORY_COLUMNS, LAYER_COLUMNS, LAYOUT_FILE, ImageSet, read_set
from pullstudy.paths import raw_dir


def condition_label(run: catalog.Run) -> str:
    """A short human label of a run's conditions, for tables and chart legends."""
    registry = run.registry.split(" (")[0]
    streaming = {True: "streaming", False: "no streaming", None: "streaming unknown"}[run.image_streaming]
    return f"{run.provider} {run.machine_type}, {registry}, {run.ephemeral_storage}, {streaming}"


class CatalogMismatch(ValueError):
    """A run's events contradict its catalog entry (study file or registry)."""


def study_images(run: catalog.Run, raw: Path | None = None) -> set[str] | None:
    """Image references the run set out to pull (from its study file), or None if the file is missing.

    A trailing comma before ``]`` or ``}`` is accepted: upstream ``studies/test.json`` has one.
    """
    path = (raw or raw_dir()) / run.source / run.study_file
    if not path.is_file():
        return None
    text = re.sub(r",(\s*[\]}])", r"\1", path.read_text(encoding="utf-8", errors="replace"))
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: the study file of {run.id} is not JSON ({exc}); run `make verify-data`") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: the study file of {run.id} is neither {{uri, tags}} nor {{nodes: [jobs]}}")
    if "tags" in doc and "uri" in doc:
        return {f"{doc['uri']}:{tag}" for tag in doc["tags"]}
    return {job["image"] for jobs in doc.values() if isinstance(jobs, list) for job in jobs if "image" in job}


def image_host(ref: str) -> str:
    """The registry host of an image reference (``docker.io`` when the reference names none)."""
    first, _, rest = str(ref).partition("/")
    return first if rest and ("." in first or ":" in first or first == "localhost") else "docker.io"


def _size_status(status: str, reason: str = "", complete: bool = True) -> dict:
    return {"status": status, "reason": reason, "complete": complete}


def load_run(run: str | catalog.Run, cluster_nodes: Iterable[int] | None = None, *,
             raw: str | Path | None = None, runs: list[catalog.Run] | None = None,
             progress: bool = False) -> ParseResult:
    """Records of one run, all its cluster sizes or the given ones; nothing requested goes unmentioned.

    Every requested size is in ``cluster_sizes`` with a status ("read", "partly read", "not read") and
    the reason: not in the catalog for this run, event files not available here, event capture
    failed, no events. Missing files are also listed in ``unavailable``. Raises ``CatalogMismatch``
    when the events contradict the run's catalog entry (see :func:`check_against_catalog`).
    """
    run = catalog.get(run, runs) if isinstance(run, str) else run
    raw = Path(raw) if raw else raw_dir()
    requested = sorted(set(int(n) for n in cluster_nodes)) if cluster_nodes is not None else list(run.node_counts)
    sizes: dict[int, dict] = {}
    images = study_images(run, raw)
    results = []
    for n in tqdm(requested, desc=run.id, unit="cluster", disable=not progress):
        if n not in run.node_counts:
            sizes[n] = _size_status("not read", "not in the catalog for this run, whose sizes are "
                                    f"{', '.join(map(str, run.node_counts)) or 'none'}", complete=False)
            continue
        files = run.files_of("events", [n])
        here = [raw / run.source / f.path for f in files if (raw / run.source / f.path).is_file()]
        missing = [f"{run.source}/{f.path}" for f in files if not (raw / run.source / f.path).is_file()]
        result = parse_events(here, label_root=raw, study=run.experiment, run=run.id,
                              condition=condition_label(run), backend="archive", cluster_nodes=n) \
            if here else ParseResult(parse_events([]).records)
        result.unavailable += missing
        results.append(result)
        sizes[n] = _status_of_size(files, here, missing, result)
    out = ParseResult.combine(results)
    out.cluster_sizes = sizes
    rec = out.records
    if images is not None:
        rec["study_image"] = rec["image"].isin(images)
    else:  # no study file here: fall back to the upstream tag format
        rec["study_image"] = rec["layers"].notna()
    rec.loc[rec["study_image"], "content"] = run.image_content
    check_against_catalog(run, rec, images)
    return out


def _status_of_size(files, here, missing, result: ParseResult) -> dict:
    """Read, partly read or not read, and why: what a notebook says of one cluster size."""
    if not files:
        return _size_status("not read", "the catalog lists no event file for this size", complete=False)
    if not here:
        return _size_status("not read", f"event files not available here: {len(missing)} listed, run `make data`",
                            complete=False)
    failed = list(result.capture_failed.values())
    if result.items == 0:
        if failed:
            return _size_status("not read", f"event capture failed: {failed[0]}", complete=False)
        return _size_status("not read", "no events in its event file(s)", complete=False)
    notes = []
    if missing:
        notes.append(f"{len(missing)} of {len(files)} event files not available here")
    if failed:
        notes.append(f"{len(failed)} of {len(files)} event files: event capture failed: {failed[0]}")
    if missing:
        return _size_status("partly read", "; ".join(notes), complete=False)
    return _size_status("read", "; ".join(notes))


def check_against_catalog(run: catalog.Run, records, images: set[str] | None) -> None:
    """Refuse a run whose pulls contradict its catalog entry, naming entry and what was pulled.

    A run with pulls but none of its study images (or, without a study file, no image whose tag
    encodes the upstream layers-and-size format) was catalogued with the wrong study file or
    registry; so was a run whose study images came from another host than ``registry_host``.
    """
    if records.empty:
        return
    study = records[records["study_image"]]
    fix = ("fix the run's entry in lib/pullstudy/catalog.py CONDITIONS (the pulled images are the ground "
           "truth) and run `make catalog`")
    seen = Counter(image_host(i) for i in records["image"])
    seen_text = ", ".join(f"{host} ({count} pulls)" for host, count in seen.most_common())
    if study.empty:
        if images is None:
            what = (f"its study file {run.source}/{run.study_file} is not here and no pulled tag encodes "
                    "layers and size (run `make data`, or")
        else:
            repos = Counter(split_image(i)[0] for i in records["image"]).most_common(3)
            what = (f"none of its {len(records)} pulls is an image of its study file {run.study_file} "
                    f"(registry {run.registry_host or run.registry}); most pulled: "
                    + ", ".join(f"{r} ({c})" for r, c in repos) + " (")
        raise CatalogMismatch(f"{run.id}: {what}{fix}); registry hosts seen: {seen_text}")
    hosts = set(image_host(i) for i in study["image"])
    if run.registry_host and hosts != {run.registry_host}:
        raise CatalogMismatch(f"{run.id}: the catalog says its images come from {run.registry_host} "
                              f"({run.registry}), its events pulled its study images from {', '.join(sorted(hosts))}; "
                              f"{fix}")


def load_summary(results: dict[str, ParseResult]) -> pd.DataFrame:
    """One row per run: files read and unavailable, items read, records, and skips by reason."""
    rows = []
    for run_id, r in results.items():
        row = {"run": run_id, "files_read": len(r.files), "files_unavailable": len(r.unavailable),
               "items_read": r.items, "records": len(r.records),
               "study_pulls": int((r.records["study_image"] & ~r.records["cache_hit"]).sum())}
        row.update({f"skipped: {k}": v for k, v in sorted(r.skipped.items())})
        rows.append(row)
    return pd.DataFrame(rows).fillna(0)


def load_container_set(set_id_or_folder: str | Path, *, raw: str | Path | None = None):
    """A catalog container set (by id) or any folder of manifests, and the files it lacks here.

    A folder is read as it is (a set fetched with ``pullstudy.images.oci`` or made by hand); a catalog
    set reads its manifests from data/raw and lists the manifest files this machine does not have.
    """
    folder = Path(set_id_or_folder)
    if folder.is_dir():
        return read_set(folder, folder.name), []
    spec = catalog.get_set(str(set_id_or_folder))
    raw = Path(raw) if raw else raw_dir()
    wanted = [f for f in spec.files if f.startswith(spec.folder + "/") and f.endswith(LAYOUT_FILE)]
    missing = [f"{spec.source}/{f}" for f in wanted if not (raw / spec.source / f).is_file()]
    root = raw / spec.source / spec.folder
    if not root.is_dir():
        return ImageSet(spec.id, pd.DataFrame(columns=LAYER_COLUMNS), pd.DataFrame(columns=HISTORY_COLUMNS)), missing
    return read_set(root, spec.id), missing


def container_set_outputs(set_id_or_folder: str | Path, *, raw: str | Path | None = None) -> Path | None:
    """The folder of the upstream's own results for a catalog set, if it has one and it is here.

    None for a plain folder of manifests: nobody archived results for it.
    """
    if Path(set_id_or_folder).is_dir():
        return None
    spec = catalog.get_set(str(set_id_or_folder))
    if not spec.outputs:
        return None
    folder = (Path(raw) if raw else raw_dir()) / spec.source / spec.outputs
    return folder if folder.is_dir() else None


def load_runs(run_ids: Iterable[str], cluster_nodes: Iterable[int] | None = None, **kwargs) -> ParseResult:
    runs = kwargs.pop("runs", None) or catalog.load()
    nodes = list(cluster_nodes) if cluster_nodes is not None else None
    return ParseResult.combine(load_run(r, nodes, runs=runs, **kwargs) for r in run_ids)


__all__ = ["CatalogMismatch", "check_against_catalog", "condition_label", "image_host", "container_set_outputs", "load_container_set", "load_run", "load_runs", "load_summary", "study_images"]

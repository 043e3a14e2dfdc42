"""Pull records of archived runs, read from data/raw/ through the catalog.

Files the catalog lists but this machine does not have are returned in ``unavailable`` so that a
notebook can say which cluster sizes it could not analyse, instead of silently analysing fewer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd
from tqdm.auto import tqdm

from .. import catalog
from ..events import ParseResult, parse_events, split_image
from ..manifests import HISTORY_COLUMNS, LAYER_COLUMNS, LAYOUT_FILE, ImageSet, read_set
from ..paths import raw_dir


def condition_label(run: catalog.Run) -> str:
    """A short human label of a run's conditions, for tables and chart legends."""
    registry = run.registry.split(" (")[0]
    streaming = {True: "streaming", False: "no streaming", None: "streaming unknown"}[run.image_streaming]
    return f"{run.provider} {run.machine_type}, {registry}, {run.ephemeral_storage}, {streaming}"


def study_images(run: catalog.Run, raw: Path | None = None) -> set[str] | None:
    """Image references the run set out to pull (from its study file), or None if the file is missing."""
    path = (raw or raw_dir()) / run.source / run.study_file
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    if "tags" in doc and "uri" in doc:
        return {f"{doc['uri']}:{tag}" for tag in doc["tags"]}
    return {job["image"] for jobs in doc.values() if isinstance(jobs, list) for job in jobs if "image" in job}


def load_run(run: str | catalog.Run, cluster_nodes: Iterable[int] | None = None, *,
             raw: str | Path | None = None, runs: list[catalog.Run] | None = None,
             progress: bool = False) -> ParseResult:
    """Records of one run, all its cluster sizes or the given ones; missing files are reported."""
    run = catalog.get(run, runs) if isinstance(run, str) else run
    raw = Path(raw) if raw else raw_dir()
    wanted = sorted(set(cluster_nodes) & set(run.node_counts)) if cluster_nodes is not None else run.node_counts
    images = study_images(run, raw)
    results = []
    for n in tqdm(wanted, desc=run.id, unit="cluster", disable=not progress):
        files = run.files_of("events", [n])
        here = [raw / run.source / f.path for f in files if (raw / run.source / f.path).is_file()]
        missing = [f"{run.source}/{f.path}" for f in files if not (raw / run.source / f.path).is_file()]
        result = parse_events(here, label_root=raw, study=run.experiment, run=run.id,
                              condition=condition_label(run), backend="archive", cluster_nodes=n) \
            if here else ParseResult(parse_events([]).records)
        result.unavailable += missing
        results.append(result)
    out = ParseResult.combine(results)
    rec = out.records
    if images is not None:
        rec["study_image"] = rec["image"].isin(images)
    else:  # no study file here: fall back to the upstream tag format
        rec["study_image"] = rec["layers"].notna()
    rec.loc[rec["study_image"], "content"] = run.image_content
    return out


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

    A folder is read as it is (a set fetched with ``pullstudy.registry`` or made by hand); a catalog
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


__all__ = ["condition_label", "container_set_outputs", "load_container_set", "load_run", "load_runs", "load_summary", "study_images", "split_image"]

"""The archive source: one catalog run's kubelet events, read from data/raw, as pull records.

Wraps :func:`pullstudy.sources.archive.runs.load_run` (which parses the events and checks them against
the catalog) and the selection of analysable pulls, and accounts for everything it leaves out: skips
by reason, failed event captures, files this machine does not have, and what became of every
requested cluster size. Analysis modules reach the archive only through here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pullstudy.data import catalog
from . import runs as archive
from pullstudy.records import analysable_pulls, ref_key
from pullstudy.sources.interface import NamedByRunId, SourceResult
from typing import Iterable
from pullstudy.paths import raw_dir
from pullstudy.parsers.app_logs import _frame, parse_app_logs


@dataclass(frozen=True)
class ArchiveSource(NamedByRunId):
    """A catalog run (``pulling/run1``) as a record source."""

    run_id: str
    runs: list[catalog.Run] | None = field(default=None, compare=False, hash=False, repr=False)  # None: data/catalog.json
    kind = "archive"

    def run(self) -> catalog.Run:
        return catalog.get(self.run_id, self.runs)

    def study_images(self, raw: Path | None = None) -> set[str] | None:
        """Image references the run set out to pull (its study file), or None when the file is not here."""
        return archive.study_images(self.run(), raw)

    def study_keys(self) -> frozenset[str]:
        """The image keys of the run's study images; empty when its study file cannot be read."""
        try:
            images = self.study_images()
        except ValueError:  # an unreadable study file: the run cannot be matched by its images
            return frozenset()
        return frozenset(ref_key(i) for i in images or ())

    def load(self, cluster_nodes=None, *, time: str = "pull_wait_s", require_size: bool = True,
             progress: bool = True) -> SourceResult:
        """Read the run's events at the given cluster sizes and keep the analysable pulls, accounting for the rest."""
        nodes = list(cluster_nodes) if cluster_nodes is not None else None
        result = archive.load_run(self.run_id, nodes, runs=self.runs, progress=progress)
        summary = archive.load_summary({self.run_id: result}).iloc[0].to_dict()
        pulls, excluded = analysable_pulls(result.records, time, require_size=require_size)
        failed = Counter(f"event capture failed: {first}" for first in result.capture_failed.values())
        sizes = cluster_size_status(result, pulls)
        line = (f"* **{self.run_id}**: {len(pulls)} pulls analysed from {len(result.files)} event file(s); "
                "excluded: " + ("; ".join([f"{r} ({c})" for r, c in excluded.items()]
                                          + [f"{r} ({c} file{'s' if c > 1 else ''})" for r, c in failed.items()])
                                or "nothing"))
        if result.unavailable:
            line += (f". **{len(result.unavailable)} event file(s) unavailable here**: "
                     + ", ".join(f"`{p}`" for p in result.unavailable))
        line += ". Cluster sizes: " + "; ".join(
            f"{n} {v['status']}" + (f" ({v['reason']})" if v["reason"] else "") for n, v in sizes.items())
        empty = ""
        if pulls.empty:
            empty = "; ".join([f"{r}: {c}" for r, c in (excluded + failed).items()]
                              + [f"size {n}: {v['reason']}" for n, v in sizes.items() if v["status"] == "not analysed"]) \
                or f"{len(result.files)} event files read"
        return SourceResult(self.run_id, pulls, excluded + failed, [line], list(result.unavailable), sizes,
                            summary=summary, ledger=result, empty_reason=empty)


def cluster_size_status(result, pulls: pd.DataFrame) -> dict[int, dict]:
    """Every requested cluster size of one run: analysed, partly analysed or not analysed, and why.

    Starts from what ``sources.archive.runs.load_run`` found of each size (files missing, capture failed, not in
    the catalog) and adds how many pulls survived the selection, so that no requested size vanishes.
    """
    counts = pulls["cluster_nodes"].astype(int).value_counts().to_dict() if len(pulls) else {}
    out = {}
    for n, found in sorted(result.cluster_sizes.items()):
        pulls_n = int(counts.get(n, 0))
        if found["status"] == "not read":
            status, reason = "not analysed", found["reason"]
        elif pulls_n == 0:
            status = "not analysed"
            reason = "; ".join(filter(None, ["no analysable pulls in its events", found["reason"]]))
        else:
            status = "analysed" if found["status"] == "read" else "partly analysed"
            reason = found["reason"]
        out[n] = {"status": status, "reason": reason, "complete": bool(found["complete"]) and pulls_n > 0,
                  "pulls": pulls_n}
    return out


def container_set(set_id_or_folder: str | Path, *, raw: str | Path | None = None):
    """A catalog container set (or a folder of manifests): (image set, files not here, upstream outputs folder)."""
    image_set, unavailable = archive.load_container_set(set_id_or_folder, raw=raw)
    return image_set, unavailable, archive.container_set_outputs(set_id_or_folder, raw=raw)



def load_app_runs(run_ids: Iterable[str], cluster_nodes: Iterable[int] | None = None, *,
                  raw: str | Path | None = None, runs: list[catalog.Run] | None = None
                  ) -> tuple[pd.DataFrame, Counter, list[str]]:
    """The catalog's app logs of the given runs, read from data/raw.

    Returns (one row per usable log, skipped logs counted as ``"<run>: <reason>"``, the listed log files
    this machine does not have).
    """
    raw = Path(raw) if raw else raw_dir()
    runs = runs if runs is not None else catalog.load()
    wanted = set(cluster_nodes) if cluster_nodes is not None else None
    frames, skipped, unavailable = [], Counter(), []
    for run_id in dict.fromkeys(run_ids):
        run = catalog.get(run_id, runs)
        images = ArchiveSource(run.id, runs).study_images(raw) or set()
        for n in sorted(run.node_counts):
            if wanted is not None and n not in wanted:
                continue
            files = run.files_of("app-log", [n])
            here = [raw / run.source / f.path for f in files if (raw / run.source / f.path).is_file()]
            unavailable += [f"{run.source}/{f.path}" for f in files if not (raw / run.source / f.path).is_file()]
            df, skips = parse_app_logs(here, run=run.id, cluster_nodes=n, images=images, label_root=raw)
            frames.append(df)
            skipped.update({f"{run.id}: {reason}": c for reason, c in skips.items()})
    df = pd.concat(frames, ignore_index=True) if frames else _frame([])
    return _frame(df.to_dict("records")), skipped, unavailable

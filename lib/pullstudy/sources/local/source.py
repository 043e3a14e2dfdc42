"""The local source: a grid of cold pulls measured on this machine (or reused), as pull records.

The pull-time notebooks take ``backend="local"`` and a grid; the records of a local run have the
same schema as the archived ones (:mod:`pullstudy.records`), so the analysis is the same code. Each
local run is kept in ``data/runs/<name>/`` with a catalog entry (``run.json``), so it can be listed
and analysed again like an archived run; an existing finished run of the same grid is reused instead
of measured again, an unfinished one (a failed or stopped attempt) is resumed, and only a different
grid is refused. :class:`LocalSource` is one condition of such a run (``where={field: value}``) as a
:class:`pullstudy.sources.interface.RecordSource`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from pullstudy.data import catalog
from . import measure as local
from pullstudy.paths import data_dir
from pullstudy.records import analysable_pulls
from pullstudy.sources.interface import SourceResult

MB = 1_000_000

# Default grids of the notebooks' local mode: each finishes in a few minutes on a 2-core machine.
GRIDS = {
    "01-pull-size-layers": {"sizes_bytes": [16 * MB, 64 * MB, 256 * MB], "layers": [1, 16], "contents": ["zeros"],
                            "storage": ["disk"], "links": ["loopback"], "repetitions": 3},
    "02-registry-proximity": {"sizes_bytes": [32 * MB, 128 * MB], "layers": [4], "contents": ["zeros", "random"],
                              "storage": ["disk"], "links": ["loopback", "rate-limited"], "rate_mbit": 100,
                              "repetitions": 5},
    "03-local-ssd": {"sizes_bytes": [64 * MB, 256 * MB], "layers": [4], "contents": ["zeros", "random"],
                     "storage": ["disk", "tmpfs"], "links": ["loopback"], "repetitions": 5},
    # random content behind a 100 Mbit link: what streaming saves, and what it moves into the reads
    "04-image-streaming": {"sizes_bytes": [16 * MB, 64 * MB], "layers": [4], "contents": ["random"],
                           "storage": ["disk"], "links": ["rate-limited"], "rate_mbit": 100,
                           "snapshotters": ["overlayfs", "stargz"], "repetitions": 5},
}


# The application images' grid (workload="apps", notebook 04): real containers, eager vs lazy, behind the
# rate-limited link; the ML image is the largest (~0.6 GB compressed: ~50 s a pull at 100 Mbit/s).
APP_GRIDS = {
    "04-image-streaming": {"sizes_bytes": [], "layers": [], "workload": "apps", "storage": ["disk"],
                           "links": ["rate-limited"], "rate_mbit": 100, "snapshotters": ["overlayfs", "stargz"],
                           "repetitions": 3},
}


def notebook_grid(notebook: str, params) -> dict | None:
    """The local grid a notebook's parameters ask for: ``local_grid`` as given, else the notebook's default grid
    for its ``workload`` (``synthetic`` or ``apps``, with ``local_apps``) at ``link_mbit``; None: the default grid."""
    if params.get("local_grid") is not None:
        return params["local_grid"]
    workload = params.get("workload", local.SYNTHETIC)
    if workload == local.APPS:
        if notebook not in APP_GRIDS:
            raise ValueError(f"{notebook}: workload='apps' is defined for {', '.join(APP_GRIDS)} only")
        grid = dict(APP_GRIDS[notebook])
        if params.get("local_apps"):
            grid["apps"] = list(params["local_apps"])
    else:
        grid = dict(GRIDS[notebook])
    if params.get("link_mbit") is not None:
        rate = float(params["link_mbit"])  # 100, not 100.0: the grid's digest (its folder) stays that of the default
        grid["rate_mbit"] = int(rate) if rate.is_integer() else rate
    return grid if workload == local.APPS or grid != GRIDS[notebook] else None


def runs_dir() -> Path:
    """data/runs, or ``PULLSTUDY_RUNS_DIR`` (tests keep their runs out of the project)."""
    return Path(os.environ.get("PULLSTUDY_RUNS_DIR", data_dir() / "runs"))


def local_runs(folder: str | Path | None = None) -> list[catalog.Run]:
    """Every recorded local run, as catalog runs (``local/<name>``), newest first."""
    folder = Path(folder) if folder else runs_dir()
    entries = sorted(folder.glob("*/run.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [local.catalog_entry(p) for p in entries]


def _grid_json(grid: local.LocalGrid) -> dict:
    return local.grid_json(grid)


@dataclass(frozen=True)
class RunPlan:
    """What to do with a run folder for a grid: ``measure`` (afresh), ``resume``, ``reuse`` or ``refuse``."""

    action: str
    reason: str
    records: int = 0  # complete records the folder holds


def plan_run(folder: str | Path, grid: local.LocalGrid, reuse: bool = True) -> RunPlan:
    """Decide from the folder's run.json and records, so a failed attempt never blocks the next one.

    A finished run of the grid is reused; an unfinished one (failed, interrupted, killed) is resumed
    with its complete records, or measured afresh when it recorded nothing; records of another grid
    (or of an unknown one) are never mixed in: refused, naming the remedy.
    """
    folder = Path(folder)
    records = len(local.recorded(folder))
    path = folder / "run.json"
    remedy = "remove the folder, or pass run_dir= for a new one"
    if not path.is_file():
        if records:
            return RunPlan("refuse", f"{folder} holds {records} records but no run.json, so not which grid they "
                                     f"measured: {remedy}", records)
        return RunPlan("measure", "new run")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        doc = {"error": str(exc)}
    theirs, ours = local.normal_grid(doc.get("grid")) if isinstance(doc, dict) else None, _grid_json(grid)
    if theirs != ours:
        if not records:
            return RunPlan("measure", "the earlier attempt in the folder recorded nothing")
        differ = sorted(k for k in ours if not isinstance(theirs, dict) or theirs.get(k) != ours[k])
        return RunPlan("refuse", f"{folder} holds {records} records of a different grid (differs in "
                                 f"{', '.join(differ)}; see its run.json): {remedy}", records)
    if doc.get("status") == "complete":
        if reuse:
            return RunPlan("reuse", "finished run of this grid", records)
        return RunPlan("refuse", f"{folder} holds a finished run of this grid and reuse=False: {remedy}", records)
    if not records:
        return RunPlan("measure", f"the earlier attempt ({doc.get('status')}) recorded nothing")
    return RunPlan("resume", f"the earlier attempt ({doc.get('status')}) recorded {records} of "
                             f"{grid.pulls()} pulls", records)


def run_name(notebook: str, grid: local.LocalGrid) -> str:
    """A readable, grid-specific folder name, so a changed grid never reuses another grid's records.

    It ends in a digest of the whole grid: settings the readable part leaves out (rate, delay,
    where the disk is) also get their own folder.
    """
    if grid.workload == local.APPS:
        what = f"apps-{'-'.join(grid.apps)}"
    else:
        what = f"{'-'.join(f'{s // MB}MB' for s in grid.sizes_bytes)}_L{'-'.join(map(str, grid.layers))}_" \
               f"{'-'.join(grid.contents)}"
    snapshotters = "" if grid.snapshotters == ("overlayfs",) else "_" + "-".join(grid.snapshotters)
    digest = hashlib.sha256(json.dumps(_grid_json(grid), sort_keys=True).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._-]", "_",
                  f"{notebook}_{what}_{'-'.join(grid.storage)}_"
                  f"{'-'.join(grid.links)}{snapshotters}_r{grid.repetitions}_s{grid.seed}_{digest}")


def measure(notebook: str, grid: dict | None = None, *, run_dir: str | Path | None = None, reuse: bool = True,
            progress: bool = True, replicate: int = 1) -> tuple[pd.DataFrame, Path, str]:
    """The local records for a notebook's grid: reused if a finished run of it exists, resumed if an
    unfinished one does (see :func:`plan_run`), else measured now.

    ``replicate`` > 1 names another run of the same grid (``…_rep2``): measured after the first, it
    says how far re-running the whole grid moves the result (:func:`measure_replicates`).
    """
    spec = dict(GRIDS[notebook] if grid is None else grid)
    spec["sizes_bytes"] = [int(s) for s in spec["sizes_bytes"]]
    g = local.LocalGrid(**spec)
    name = run_name(notebook, g) + (f"_rep{replicate}" if replicate > 1 else "")
    folder = Path(run_dir) if run_dir else runs_dir() / name
    plan = plan_run(folder, g, reuse)
    if plan.action == "refuse":
        raise local.LocalRunError(plan.reason)
    if plan.action == "reuse":
        how = f"reused the finished local run in `{folder}`"
    else:
        local.run(g, folder, name=folder.name, progress=progress, resume=True)
        kept = f" (resumed: {plan.reason}, kept)" if plan.action == "resume" else ""
        how = f"measured {g.pulls() - plan.records} cold pulls on this machine into `{folder}`{kept}"
    report = how + _conditions_text(folder)
    return local.load_local_run(folder), folder, report


def measure_replicates(notebook: str, grid: dict | None = None, replicates: int = 2, *, progress: bool = True
                       ) -> tuple[list[pd.DataFrame], list[Path], str]:
    """``replicates`` runs of the same grid, one after the other: the local backend's re-runs.

    Within a run the repetitions are the replicates (the cluster-level interval resamples them);
    between runs, the spread of the same comparison is the local noise floor.
    """
    if not isinstance(replicates, int) or isinstance(replicates, bool) or replicates < 1:
        raise ValueError(f"local_replicates must be a whole number >= 1, got {replicates!r}")
    records, folders, reports = [], [], []
    for k in range(1, replicates + 1):
        r, folder, report = measure(notebook, grid, progress=progress, replicate=k)
        records.append(r)
        folders.append(folder)
        reports.append(f"replicate {k}: {report}" if replicates > 1 else report)
    return records, folders, "\n\n".join(reports)


def _conditions_text(folder: Path) -> str:
    path = folder / "conditions.json"
    if not path.is_file():
        return ""
    lines = []
    for c in json.loads(path.read_text()):
        state = "available" if c["available"] else f"**unavailable: {c['reason']}**"
        rate = f", link measured {c['link_mbit_measured']:.0f} Mbit/s" if c.get("link_mbit_measured") else ""
        lines.append(f"\n* {c['condition']}: {state}{rate}")
    return "; conditions:" + "".join(lines)


@dataclass
class LocalSource:
    """One condition of a local run (``where``, e.g. ``{"storage": "tmpfs"}``), measured here or reused.

    ``replicate`` names which run of the grid this is (1 the first; k > 1 the k-th, measured after
    the first); ``replicates`` is how many runs the study should measure in all, so that a study can
    ask for the others (:meth:`replicate_of`) for its noise floor.
    """

    notebook: str
    grid: dict | None = None
    where: dict = field(default_factory=dict)
    replicate: int = 1
    replicates: int = 1
    time: str = "pull_s"
    kind = "local"

    def _grid(self) -> local.LocalGrid:
        spec = dict(GRIDS[self.notebook] if self.grid is None else self.grid)
        spec["sizes_bytes"] = [int(s) for s in spec["sizes_bytes"]]
        return local.LocalGrid(**spec)

    @property
    def run_name(self) -> str:
        return run_name(self.notebook, self._grid()) + (f"_rep{self.replicate}" if self.replicate > 1 else "")

    @property
    def id(self) -> str:
        return f"local/{self.run_name}"

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.where.items()) or self.id

    def replicate_of(self, k: int) -> "LocalSource":
        return LocalSource(self.notebook, self.grid, dict(self.where), k, self.replicates, self.time)

    def load(self, cluster_nodes=None, *, time: str | None = None, require_size: bool = True,
             progress: bool = True) -> SourceResult:
        """Measure (or reuse) the run and keep the analysable pulls of this condition.

        ``cluster_nodes`` has no meaning for a run on one machine and is ignored.
        """
        records, folder, report = measure(self.notebook, self.grid, progress=progress, replicate=self.replicate)
        mask = pd.Series(True, index=records.index)
        for col, value in self.where.items():
            mask &= records[col] == value
        excluded = Counter({f"other conditions of the run than {self.label}": int((~mask).sum())}
                           if self.where else {})
        pulls, skipped = analysable_pulls(records[mask], time or self.time, require_size=require_size)
        excluded = Counter({k: v for k, v in (excluded + skipped).items() if v})
        return SourceResult(self.id, pulls, excluded, [report], run_records=records, local_run=folder.name,
                            report=report)

"""Where pull records come from, behind one interface: a source yields records and says what it left out.

Every source — the archived catalog runs (:class:`~pullstudy.sources.archive.ArchiveSource`), a grid
measured on this machine (:class:`~pullstudy.sources.local.LocalSource`), later a live cluster —
returns a :class:`SourceResult`: the analysable pulls in the one schema of :mod:`pullstudy.records`,
and an account of everything else (exclusions by reason, files not here, what became of each
requested cluster size, the input of the completeness ledger). A comparison study takes two *arms*,
each from any source, so a new source changes no notebook: :func:`arms` turns a notebook's
parameters into its baseline and treatment.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import pandas as pd


@dataclass
class SourceResult:
    """The pulls of one source and an account of what did not become one, and why."""

    source: str  # the source's id (a catalog run id, ``local/<run>``)
    records: pd.DataFrame  # the analysable pulls, records schema plus ``size_gb`` and ``image_key``
    excluded: Counter = field(default_factory=Counter)  # reason -> count, everything left out
    report_lines: list[str] = field(default_factory=list)  # Markdown, what was read and left out
    unavailable: list[str] = field(default_factory=list)  # files wanted but not on this machine
    cluster_sizes: dict[int, dict] = field(default_factory=dict)  # size -> status, reason, complete, pulls
    summary: dict | None = None  # one row of the input-summary table
    ledger: Any = None  # what the completeness ledger reads (archive: the run's ParseResult)
    run_records: pd.DataFrame | None = None  # every record of the run, before selection (local runs)
    local_run: str | None = None  # the local run folder: its results are reported, not judged
    report: str = ""  # the source's own account (a local run: measured or reused, its conditions)
    empty_reason: str = ""  # why there are no pulls, when there are none

    @property
    def judged(self) -> bool:
        """Whether a verdict on the upstream claims may rest on this source (only the archive's runs)."""
        return self.local_run is None


@runtime_checkable
class RecordSource(Protocol):
    """A source of pull records: archive, local, later kube."""

    kind: str  # "archive", "local", ...

    @property
    def id(self) -> str: ...

    @property
    def label(self) -> str: ...

    def load(self, cluster_nodes=None) -> SourceResult: ...


BACKENDS = ("archive", "local")

# Per comparison notebook: the condition its local mode varies, baseline -> treatment, and which
# content mode stands for the comparison (the one whose bytes really travel or really get written).
LOCAL_CONDITIONS = {
    "02-registry-proximity": ("link", "rate-limited", "loopback", "random"),
    "03-local-ssd": ("storage", "disk", "tmpfs", "zeros"),
    "04-image-streaming": ("snapshotter", "overlayfs", "stargz", "random"),
}


def arms(backend: str, notebook: str, params: Mapping[str, Any]) -> tuple[RecordSource, RecordSource]:
    """The (baseline, treatment) sources of a comparison notebook, from its parameters.

    archive: the catalog runs ``baseline_run`` and ``treatment_run``; local: the notebook's
    condition measured on this machine (``local_grid``, ``local_replicates``).
    """
    from .archive import ArchiveSource
    from .local import LocalSource

    if backend == "archive":
        return ArchiveSource(params["baseline_run"]), ArchiveSource(params["treatment_run"])
    if backend == "local":
        if notebook not in LOCAL_CONDITIONS:
            raise ValueError(f"{notebook}: no local comparison is defined (known: {', '.join(LOCAL_CONDITIONS)}); "
                             "use backend='archive'")
        field_, base, treat, _ = LOCAL_CONDITIONS[notebook]
        opts = dict(grid=params.get("local_grid"), replicates=int(params.get("local_replicates", 1)))
        return (LocalSource(notebook, where={field_: base}, **opts),
                LocalSource(notebook, where={field_: treat}, **opts))
    raise ValueError(f"backend={backend!r} is not a known source; choose one of {', '.join(BACKENDS)}")

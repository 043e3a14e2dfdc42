"""The record-source interface: ``RecordSource`` (what a source offers) and ``SourceResult`` (the
records in the one schema plus the account of what was left out and why).

Its own module, below the sources themselves, so each source imports it without importing the
package whose :func:`pullstudy.sources.arms` chooses among them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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


class NamedByRunId:
    """For a source that is one recorded run: its id and its label are the run id (``pulling/run1``,
    ``kube/<name>``). Mixed into the frozen dataclasses that declare a ``run_id`` field."""

    run_id: str

    @property
    def id(self) -> str:
        return self.run_id

    @property
    def label(self) -> str:
        return self.run_id

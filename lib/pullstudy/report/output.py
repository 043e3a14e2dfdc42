"""What a notebook leaves in its results folder: charts, tables, metrics, verdicts, exclusions.

One writer for every notebook, so ``make reproduce`` can build one results page from any of them
and a reader can always find what was measured, what was concluded, and what was left out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import altair as alt
import numpy as np
import pandas as pd

from pullstudy.studies import charts, completeness
from pullstudy.studies.claims import Verdict, verdict_table, with_reported_not_judged

METRICS_FILE = "metrics.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

ChartT = TypeVar("ChartT", bound=alt.TopLevelMixin)


def json_safe(value: Any, where: str = "value") -> Any:
    """A value json.dumps accepts without NaN: numpy scalars unwrapped, NaN/NA -> None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.generic,)):
        return json_safe(value.item(), where)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "as_dict") and callable(value.as_dict):
        return json_safe(value.as_dict(), where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value), where)
    if isinstance(value, dict):
        return {str(k): json_safe(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), where)
    if isinstance(value, (pd.Series, pd.Index)):
        return json_safe(value.tolist(), where)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, dt.timedelta)):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"{where}: cannot store {type(value).__name__} in metrics.json; "
        "convert it to a number, string, list or dict"
    )


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{kind} name {name!r} must be a plain file name (letters, digits, '.', '_', '-')"
        )
    return name


class StudyOutput:
    """Collects a notebook's outputs in ``output_dir`` and writes ``metrics.json`` on ``write()``.

    Recording the same chart, table, metric or exclusion again replaces it (and a verdict with the
    same claim and measurement replaces the earlier one), so re-running a cell never duplicates.

    Once a completeness ledger is recorded (``pulls.load_for_analysis`` does it for every run it
    reads), verdicts resting on cells below ``completeness_threshold`` say so in their reason, and
    median tables written afterwards carry the completeness of the cells behind each row.
    """

    def __init__(self, notebook: str, output_dir: str | Path, *,
                 completeness_threshold: float = completeness.DEFAULT_THRESHOLD) -> None:
        completeness.check_threshold(completeness_threshold)
        if not isinstance(notebook, str) or not notebook.strip():
            raise ValueError("StudyOutput needs the notebook's name, e.g. '01-pull-size-layers'")
        self.notebook = notebook
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics: dict[str, Any] = {}
        self.verdicts: list[Verdict] = []
        self.exclusions: dict[str, int] = {}
        self.charts: list[str] = []
        self.tables: list[str] = []
        self.completeness_threshold = completeness_threshold
        self.completeness_ledger: pd.DataFrame | None = None
        charts.apply_theme()

    def record_completeness(self, ledger: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
        """Keep the ledger (runs x cluster sizes x images) that later verdicts and tables are checked against.

        A second call (a second ``load_for_analysis`` in one notebook) adds its runs' cells,
        replacing cells of the same run, so each verdict is checked against everything read.
        """
        if threshold is not None:
            completeness.check_threshold(threshold)
            self.completeness_threshold = threshold
        old = self.completeness_ledger
        if old is not None:
            ledger = pd.concat([old[~old["run"].isin(ledger["run"])], ledger], ignore_index=True)
        self.completeness_ledger = ledger
        return ledger

    def chart(self, chart: ChartT, name: str) -> ChartT:
        """Save the chart (PNG, SVG, HTML) and return it, so a cell can end with this call."""
        charts.save_chart(chart, self.output_dir, name)
        if name not in self.charts:
            self.charts.append(name)
        return chart

    def table(self, df: pd.DataFrame, name: str) -> pd.DataFrame:
        """Write ``<name>.csv`` and return the frame, so a cell can end with this call."""
        _check_name("table", name)
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"table {name!r}: expected a pandas DataFrame, got {type(df).__name__}")
        written = df
        if self.completeness_ledger is not None and any("median" in str(c) for c in df.columns):
            written = completeness.flag_table(df, self.completeness_ledger, self.completeness_threshold)
        written.to_csv(self.output_dir / f"{name}.csv", index=False)
        if name not in self.tables:
            self.tables.append(name)
        return df

    def metric(self, name: str, value: Any) -> Any:
        """Store a JSON-safe copy of a value under ``name`` and return the value."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"metric name must be a non-empty string, got {name!r}")
        self.metrics[name] = json_safe(value, f"metric {name!r}")
        return value

    def verdict(self, v: Verdict, *, runs: list[str] | None = None,
                cells: pd.DataFrame | None = None) -> Verdict:
        """Record a verdict on a claim, attributed to this notebook unless it names another.

        With a completeness ledger recorded, the reason gains a caveat when cells below the
        threshold are involved: the claim's own cells when the notebook names them (``runs``, or
        ``cells``: rows of the ledger), otherwise every cell of the runs this notebook read, said
        as such (the ledger cannot know which of them one claim used).
        """
        if not isinstance(v, Verdict):
            raise TypeError(f"expected a claims.Verdict, got {type(v).__name__}")
        if not v.notebook:
            v.notebook = self.notebook
        ledger, scope = self.completeness_ledger, "the runs this notebook read"
        if ledger is not None and (runs is not None or cells is not None):
            unknown = sorted(set(runs or []) - set(ledger["run"]))
            ledger = cells if cells is not None else ledger[ledger["run"].isin(runs)]
            scope = None
        else:
            unknown = []
        note = completeness.caveat(ledger, self.completeness_threshold, scope=scope)
        if unknown:  # e.g. a run whose study file says nothing of how many pods to expect
            gap = f"the completeness of {', '.join(unknown)} could not be assessed (no ledger for it)"
            note = f"{note}; {gap}" if note else gap
        if note and note not in v.reason:
            v.reason = f"{v.reason.rstrip().rstrip('.')}; {note}"
        self.verdicts = [
            old for old in self.verdicts
            if (old.claim_id, old.measured, old.notebook) != (v.claim_id, v.measured, v.notebook)
        ]
        self.verdicts.append(v)
        return v

    def excluded(self, reason: str, count: int) -> int:
        """Record how many inputs the analysis left out and why (0 is worth recording too)."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("an exclusion needs a reason")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"exclusion {reason!r}: count must be a non-negative integer, got {count!r}")
        self.exclusions[reason] = int(count)
        return int(count)

    def as_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "metrics": self.metrics,
            "verdicts": [v.as_dict() for v in self.verdicts],
            "excluded": dict(self.exclusions),
            "charts": list(self.charts),
            "tables": list(self.tables),
        }

    def write(self) -> Path:
        """Write ``metrics.json`` atomically (a half-written file never looks like a result)."""
        path = self.output_dir / METRICS_FILE
        text = json.dumps(self.as_dict(), indent=2, ensure_ascii=False, allow_nan=False)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


    def finish(self) -> pd.DataFrame:
        """Write the results and return the verdict table of this notebook: the last cell of every notebook.

        Only the claims this notebook judged appear; a notebook that measured locally (its metrics
        name the ``local_run``) shows its study's claims as reported, not judged, as the results page does.
        """
        self.write()
        verdicts = with_reported_not_judged(self.notebook, self.metrics, self.verdicts)
        table = verdict_table(verdicts)
        return table[table["notebook"] != ""][["claim_id", "claim", "verdict", "measured", "reason"]]


_REQUIRED = {"notebook": str, "metrics": dict, "verdicts": list, "excluded": dict,
             "charts": list, "tables": list}


def read_metrics(path: str | Path) -> dict[str, Any]:
    """One metrics.json, checked; any problem is a ValueError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read metrics ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise ValueError(f"{path}: {key!r} missing or not a {kind.__name__}")
    data["path"] = str(path)
    return data


def load_metrics(results_root: str | Path) -> list[dict[str, Any]]:
    """Every ``<results_root>/*/metrics.json``, sorted by folder; a broken one raises."""
    return [read_metrics(p) for p in sorted(Path(results_root).glob(f"*/{METRICS_FILE}"))]

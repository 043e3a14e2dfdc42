"""Application logs of the Flux Operator runs, parsed into a tidy table (one row per log).

Each archived app run left one log per application run whose last lines are GNU ``time``
figures::

    FLUXTIME fluxsubmit wall time 0:26.68     (the job itself: flux submit --watch)
    FLUXTIME fluxstart wall time 0:37.96      (the whole Flux instance: broker start, job, shutdown)

A parser only: finding a run's logs is the archive source's job, and what streaming did to
time to useful work is the study :mod:`pullstudy.studies.streaming`.

Nothing is dropped silently: a log without usable FLUXTIME lines is a counted skip under its
reason; a file that is not a text log at all raises :class:`AppLogError` naming it.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import pandas as pd

from pullstudy.data.rawfiles import read_raw_bytes
from .kubelet_events import DurationError, parse_go_duration
from pullstudy.records import ref_key

APP_RUN_COLUMNS = ["run", "cluster_nodes", "app", "image_key", "image", "fluxsubmit_s", "fluxstart_s",
                   "broker_quorum_s", "broker_run_s", "source"]

# Skip reasons, so callers and tests name them the same way.
EMPTY = "empty log file"
NO_FLUXTIME = "no FLUXTIME line (the run did not finish, or was not timed)"
TRUNCATED = "truncated log (ends before the fluxstart FLUXTIME line, or inside a line)"
NO_SUBMIT = "no fluxsubmit FLUXTIME line"
BAD_FORMAT = "FLUXTIME value in an unknown time format"
REPEATED = "FLUXTIME line repeated (ambiguous which run it times)"


class AppLogError(ValueError):
    """A file that is not a text log (binary content, broken gzip stream)."""


class SkippedLog(Exception):
    """A text log that carries no usable timing; ``reason`` is one of the skip reasons above."""

    def __init__(self, reason: str, path: str | Path):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


# --------------------------------------------------------------------------- one log

# GNU time %E: [hours:]minutes:seconds; the seconds carry hundredths ("0:26.68", "7:49.33", "1:02:03").
_ELAPSED = re.compile(r"^(?:(?P<h>\d+):(?P<hm>[0-5]\d):(?P<hs>[0-5]\d(?:\.\d+)?)|(?P<m>\d+):(?P<s>[0-5]\d\.\d+))$")
_FLUXTIME = re.compile(r"^FLUXTIME (?P<what>\S+) wall time (?P<value>.*?)\s*$")
# Rank 0's state transitions, e.g. "broker.info[0]: quorum-full: quorum->run 8.29626s".
_BROKER = re.compile(r"^broker\.info\[0\]: [\w-]+: (?P<transition>\w+->\w+) (?P<duration>\S+)\s*$")
_LOG_NAME = re.compile(r"^(?P<stem>.+?)(?:-(?P<hash>[0-9a-f]{8}))?\.log(?:\.gz)?$")


def parse_elapsed(text: str) -> float:
    """Seconds in a GNU time ``%E`` value: ``0:26.68``, ``7:49.33``, ``1:02:03`` or ``1:02:03.5``."""
    m = _ELAPSED.match(text.strip())
    if not m:
        raise ValueError(f"not a GNU time %E value ([h:]mm:ss.ss): {text!r}")
    if m["h"] is not None:
        return int(m["h"]) * 3600 + int(m["hm"]) * 60 + float(m["hs"])
    return int(m["m"]) * 60 + float(m["s"])


def _sanitized(ref: str) -> str:
    """The Flux Operator's log file name for an image: every non-alphanumeric character becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9]", "_", ref)


def app_name(image_key: str) -> str:
    """Short app name from an image key: the last dash-separated word of the repository name.

    ``ensemble-amg2023:spack-skylake`` -> ``amg2023``.
    """
    return image_key.split(":", 1)[0].rsplit("-", 1)[-1]


def _identify(stem: str, images: Iterable[str]) -> tuple[str | None, str | None]:
    """(image reference, image key) of a log from its file name and the run's study images.

    The exact image is known when the name is the sanitized reference; when the same repository and tag
    were served by another registry (the name ends in the sanitized ``repository:tag``), only the key is.
    """
    images = list(images)
    for ref in images:
        if _sanitized(ref) == stem:
            return ref, ref_key(ref)
    keys = sorted({ref_key(ref) for ref in images if stem.endswith("_" + _sanitized(ref_key(ref)))},
                  key=len, reverse=True)
    if len(keys) == 1 or (len(keys) > 1 and len(keys[0]) > len(keys[1])):
        return None, keys[0]
    return None, None


def _read_text(path: Path) -> str:
    return read_raw_bytes(path, "an application log", AppLogError).decode("utf-8", errors="replace")


def parse_app_log(path: str | Path, *, run: str | None = None, cluster_nodes: int | None = None,
                  images: Iterable[str] = (), label_root: str | Path | None = None) -> dict:
    """One application log -> one record (a dict with APP_RUN_COLUMNS).

    ``images`` are the references the run pulled (its study file), used to name the image the log
    belongs to. Raises :class:`SkippedLog` (with a reason) for a log without usable FLUXTIME figures
    and :class:`AppLogError` for a file that is not a text log.
    """
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise SkippedLog(EMPTY, path)
    lines = text.splitlines()
    found: dict[str, list[str]] = {}
    broker: dict[str, str] = {}
    for line in lines:
        m = _FLUXTIME.match(line)
        if m:
            found.setdefault(m["what"], []).append(m["value"])
            continue
        b = _BROKER.match(line)
        if b:
            broker.setdefault(b["transition"], b["duration"])
    if not found:
        raise SkippedLog(NO_FLUXTIME, path)
    cut_inside_a_line = not text.endswith("\n") and bool(_FLUXTIME.match(lines[-1]))
    if "fluxstart" not in found or cut_inside_a_line:
        raise SkippedLog(TRUNCATED, path)
    if "fluxsubmit" not in found:
        raise SkippedLog(NO_SUBMIT, path)
    if len(found["fluxsubmit"]) > 1 or len(found["fluxstart"]) > 1:
        raise SkippedLog(REPEATED, path)
    try:
        submit, start = parse_elapsed(found["fluxsubmit"][0]), parse_elapsed(found["fluxstart"][0])
    except ValueError:
        raise SkippedLog(BAD_FORMAT, path) from None
    m = _LOG_NAME.match(path.name)
    stem = m["stem"] if m else path.stem
    image, key = _identify(stem, images)
    return {
        "run": run, "cluster_nodes": cluster_nodes, "app": app_name(key) if key else stem,
        "image_key": key, "image": image, "fluxsubmit_s": submit, "fluxstart_s": start,
        "broker_quorum_s": _broker_seconds(broker, "quorum->run"),
        "broker_run_s": _broker_seconds(broker, "run->cleanup"),
        "source": str(path.relative_to(label_root)) if label_root else str(path),
    }


def _broker_seconds(broker: dict[str, str], transition: str) -> float:
    """A broker transition's own timing (a cross-check of FLUXTIME); NaN when absent or unreadable."""
    try:
        return parse_go_duration(broker[transition])
    except (KeyError, DurationError):
        return math.nan


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=APP_RUN_COLUMNS)
    df["cluster_nodes"] = pd.array(df["cluster_nodes"].tolist(), dtype="Int64")
    for col in ("run", "app", "image_key", "image", "source"):
        df[col] = df[col].astype("string")
    for col in ("fluxsubmit_s", "fluxstart_s", "broker_quorum_s", "broker_run_s"):
        df[col] = df[col].astype("float64")
    return df


def parse_app_logs(paths: Iterable[str | Path], **context) -> tuple[pd.DataFrame, Counter]:
    """Several logs -> (records, skipped reasons counted); ``context`` as for :func:`parse_app_log`."""
    rows, skipped = [], Counter()
    for path in paths:
        try:
            rows.append(parse_app_log(path, **context))
        except SkippedLog as skip:
            skipped[skip.reason] += 1
    return _frame(rows), skipped


__all__ = ["APP_RUN_COLUMNS", "AppLogError", "SkippedLog", "app_name", "parse_app_log", "parse_app_logs", "parse_elapsed"]

"""Raw kubelet events -> the tidy table of pull records (one row per image pull on one node).

The record schema and the tag format are :mod:`pullstudy.records`'; this module only parses.

Inputs are Kubernetes Event objects as the upstream experiments stored them: JSON lines written by
kubernetes-event-exporter (with the exporter's own log lines mixed in), plain or gzip-compressed, or
``kubectl get events -o json`` lists. Both core/v1 and events.k8s.io/v1 fields are understood.

Nothing disappears silently: every input line or list item that does not become part of a record is
counted in ``ParseResult.skipped`` under the reason it was left out. A file that holds only what
kubectl printed when the exporter was not ready (``Error from server (BadRequest): container
"event-exporter" ... is waiting to start``) is a failed capture, not a broken file: it is counted
(``event-capture-failed``) and listed in ``ParseResult.capture_failed`` with its first line, and the
other files are read. A file that is not an event file at all (binary, a truncated gzip stream, a
truncated JSON document, no JSON in it) raises ``EventFileError`` naming the file.

Times are parsed once, here, as RFC 3339 timestamps into timezone-aware UTC datetimes: events join
(Pulling -> Pulled -> Started) by comparing times, and ``42Z`` against ``42.500000Z`` or a ``+02:00``
offset compared as strings gives wrong joins.
"""

from __future__ import annotations

import bisect
import functools
import gc
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Iterable, Iterator, NamedTuple

import msgspec
import orjson
import pandas as pd

from pullstudy.data.rawfiles import read_raw_bytes
import numpy as np

from pullstudy.records import (BOOL_COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, RECORD_COLUMNS, STRING_COLUMNS, TIME_COLUMNS,
                              TIME_UNIT, decode_tag, empty_records, split_image)

# Reasons an input item is not used, in the order a reader would look for them.
SKIP_REASONS = (
    "not-json", "not-an-object", "exporter-log", "missing-reason", "bad-metadata", "missing-message",
    "duplicate", "bad-duration", "unrecognized-pulled-message", "missing-time", "bad-time", "not-a-pull-event",
    "empty-file", "event-capture-failed",
)


class DurationError(ValueError):
    """A Go duration string that Go itself would reject (unknown unit, stray characters)."""


class EventFileError(Exception):
    """A file that is not an event file (binary, truncated gzip, truncated JSON document, no JSON)."""


class EventCaptureFailed(EventFileError):
    """A file holding kubectl's error text instead of events: the capture failed, the run did not.

    ``parse_events`` counts it and goes on; raised only by :func:`iter_event_objects`.
    """

    def __init__(self, path: Path, first_line: str) -> None:
        super().__init__(f"{path}: event capture failed: {first_line}")
        self.path = path
        self.first_line = first_line


# What kubectl prints instead of the log it was asked to follow: "Error from server (BadRequest): ...",
# "error: error from server (NotFound): ...", "error: ...", and the connection failures.
_KUBECTL_ERROR = re.compile(
    r"^(?:error:\s+|error from server\b|unable to connect to the server\b|the connection to the server\b)",
    re.IGNORECASE)


_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]+)")


@functools.lru_cache(maxsize=1 << 16)  # pull messages repeat their durations across nodes
def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (``1h2m3.5s``, ``1m8.725s``, ``998ms``, ``1.5µs``, ``0``)."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s[1:] if s[:1] in "+-" else s
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        unit = m.group(2)
        if unit not in _UNIT_SECONDS:
            raise DurationError(f"unknown unit {unit!r} in duration {text!r}")
        total += float(m.group(1)) * _UNIT_SECONDS[unit]
        pos = m.end()
    if pos == 0 or pos != len(body):
        raise DurationError(f"not a Go duration: {text!r}")
    return sign * total


_PULLED = re.compile(
    r'^Successfully pulled image "(?P<image>[^"]+)"'
    r"(?: in (?P<pull>[^\s(]+?)(?: \((?P<wait>[^\s)]+) including waiting\))?)?"
    r"\.?(?: Image size: (?P<size>\d+) bytes\.?)?\s*$"
)
_CACHE_HIT = re.compile(r'^Container image "(?P<image>[^"]+)" already present on machine')


class PullMessage(NamedTuple):  # immutable as the frozen dataclass it was, 3x cheaper to build (one per Pulled)
    image: str
    cache_hit: bool
    pull_s: float | None = None
    pull_wait_s: float | None = None
    image_size_reported: int | None = None


class UnrecognizedMessage(ValueError):
    pass


def parse_pulled_message(message: str) -> PullMessage:
    """Decode a ``Pulled`` event's message; every kubelet form since 1.2x, including a cache hit.

    A negative duration is valid Go but no pull takes negative time: it is a ``DurationError``.
    """
    m = _PULLED.match(message)
    if m:
        pull = parse_go_duration(m["pull"]) if m["pull"] else None
        wait = parse_go_duration(m["wait"]) if m["wait"] else None
        if (pull is not None and pull < 0) or (wait is not None and wait < 0):
            raise DurationError(f"negative pull duration in {message[:120]!r}")
        size = int(m["size"]) if m["size"] else None
        return PullMessage(m["image"], False, pull, wait, size)
    m = _CACHE_HIT.match(message)
    if m:
        return PullMessage(m["image"], True)
    raise UnrecognizedMessage(f"not a kubelet Pulled message: {message[:120]!r}")


@dataclass
class ParseResult:
    """The records, and an account of every input item that did not become one."""

    records: pd.DataFrame
    skipped: Counter = field(default_factory=Counter)
    items: int = 0  # lines or list items read
    files: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # files the caller wanted but could not have
    capture_failed: dict[str, str] = field(default_factory=dict)  # file -> first line kubectl printed
    # Per requested cluster size, what became of it ({"status", "reason", "complete"}); filled by
    # archive.load_run for one run, so combine() leaves it empty.
    cluster_sizes: dict[int, dict] = field(default_factory=dict)

    @staticmethod
    def combine(results: Iterable["ParseResult"]) -> "ParseResult":
        results = list(results)
        frames = [r.records for r in results if len(r.records)]
        out = ParseResult(pd.concat(frames, ignore_index=True) if frames else empty_records())
        for r in results:
            out.skipped.update(r.skipped)
            out.items += r.items
            out.files += r.files
            out.unavailable += r.unavailable
            out.capture_failed.update(r.capture_failed)
        return out

    def skipped_table(self) -> pd.DataFrame:
        rows = [{"reason": k, "count": v} for k, v in sorted(self.skipped.items(), key=lambda kv: -kv[1])]
        return pd.DataFrame(rows, columns=["reason", "count"])


def _open_bytes(path: Path) -> bytes:
    return read_raw_bytes(path, "JSON events", EventFileError)


def _read_event_file(path: Path, skipped: Counter, label: str, data: bytes | None = None) -> tuple[list | None, bytes]:
    """(items, data): the list items or single document of a JSON file as ``(where, object)``, or None
    and the bytes of a JSON-lines file, read line by line by the caller. Counts an empty file; raises
    ``EventCaptureFailed`` for kubectl's error text and ``EventFileError`` for a truncated document.
    ``data``: the file's content when the caller has read it already."""
    data = _open_bytes(path) if data is None else data
    if not data or data.isspace():  # not data.strip(): that copies the whole file
        skipped["empty-file"] += 1
        return [], b""
    first = _first_line(data)
    first_text = first.decode("utf-8", "replace")
    if _KUBECTL_ERROR.match(first_text) and not _has_json_line(data):
        raise EventCaptureFailed(path, first_text[:300])
    if _json_then_more(data, first):
        doc = None  # JSON lines: decoding the whole file would fail after its first line, having checked it all
    else:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
            if first in (b"{", b"["):
                raise EventFileError(f"{path}: a JSON document that does not parse (truncated?)") from None
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        return [(f"{label}#items[{i}]", item) for i, item in enumerate(doc["items"])], b""
    if doc is not None:
        return [(f"{label}:1", doc)], b""
    return None, data


def _no_json(path: Path) -> EventFileError:
    return EventFileError(f"{path}: no JSON in the file; not event-exporter JSON lines or a kubectl list")


def iter_event_objects(path: str | Path, skipped: Counter,
                       label_root: str | Path | None = None) -> Iterator[tuple[str | int, object]]:
    """Yield (where, decoded JSON) for each event line or list item; count what is not JSON.

    ``where`` is the file label and ``:line`` or ``#items[i]``; the line number alone is yielded as an
    int and joined to the label only for the events that become records (most never do).
    ``parse_events`` reads JSON lines in its own loop (the same rules, without a generator per line).
    """
    path = Path(path)
    label = str(path.relative_to(label_root) if label_root else path)
    items, data = _read_event_file(path, skipped, label)
    if items is not None:
        yield from items
        return
    found_json = False
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line or line.isspace():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            skipped["not-json"] += 1
            continue
        found_json = True
        yield lineno, obj
    if not found_json:
        raise _no_json(path)


class _Event(NamedTuple):  # a tuple, not a frozen dataclass: built once per Pulled event, 3x cheaper
    reason: str
    message: str | None
    pod: str  # namespace/name of the involved object
    pod_key: str  # its uid when known
    container: str  # fieldPath, e.g. spec.containers{pull}
    node: str | None
    time: datetime | None
    source: str


_LEADING_SPACE = re.compile(rb"\s*")


def _first_line(data: bytes) -> bytes:
    """The first non-blank line, stripped, without copying the rest of the file (it can be tens of MB)."""
    start = _LEADING_SPACE.match(data).end()
    end = data.find(b"\n", start)
    return data[start:end if end >= 0 else len(data)].strip()


def _json_then_more(data: bytes, first: bytes) -> bool:
    """Whether the first line is a whole JSON value and something other than blanks follows it: then the file
    is not one JSON document (orjson would refuse it, after checking all of it, tens of MB, as UTF-8)."""
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    end = data.find(b"\n", _LEADING_SPACE.match(data).end())
    return end >= 0 and _NOT_SPACE.search(data, end) is not None  # a search, not a copy of the rest


_NOT_SPACE = re.compile(rb"\S")


def _has_json_line(data: bytes) -> bool:
    return any(line.lstrip().startswith((b"{", b"[")) for line in data.split(b"\n"))


_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(value: object) -> datetime | None:
    """A Kubernetes timestamp (RFC 3339, any fraction of a second) as a UTC datetime; None if not one.

    Strict on purpose: an integer, ``"yesterday"`` or a time without offset is not guessed at.
    Each distinct string is parsed once: the events of a run share most of their timestamps (issue 16).
    """
    if not isinstance(value, str):
        return None
    return _parse_time_text(value)


@functools.lru_cache(maxsize=1 << 16)
def _parse_time_text(value: str) -> datetime | None:
    m = _RFC3339.match(value.strip())
    if not m:
        return None
    date, frac, offset = m.groups()
    frac = (frac or "")[:7]  # microseconds: a datetime holds no finer
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{date[:10]}T{date[11:]}{frac}{offset}").astimezone(timezone.utc)
    except ValueError:  # e.g. month 13
        return None


def _event_time(obj: dict) -> tuple[datetime | None, bool]:
    """(time, valid): the event's first time field present; valid is False when it is not RFC 3339."""
    metadata = obj.get("metadata") or {}
    raw = obj.get("eventTime") or obj.get("firstTimestamp") or obj.get("deprecatedFirstTimestamp") \
        or metadata.get("creationTimestamp")
    if raw is None:
        return None, True
    t = parse_time(raw)
    return t, t is not None


def _not_an_event(obj: dict) -> str | None:
    """The skip reason for a JSON object that cannot be used as an event, or None."""
    reason = obj.get("reason")
    if reason and isinstance(reason, str):
        return None
    if reason is None and "involvedObject" not in obj and "regarding" not in obj:
        return "exporter-log" if "level" in obj else "missing-reason"
    return "missing-reason"


def _normalize(obj: dict, source: str, time: datetime | None) -> _Event:
    involved = obj.get("involvedObject") or obj.get("regarding")
    involved = involved if isinstance(involved, dict) else {}
    src = obj.get("source") or obj.get("deprecatedSource") or {}
    node = (src.get("host") if isinstance(src, dict) else None) or obj.get("reportingInstance") or None
    pod = f"{involved.get('namespace', '')}/{involved.get('name', '')}"
    message = obj.get("message", obj.get("note"))
    uid, field_path = involved.get("uid"), involved.get("fieldPath")
    return _Event(obj["reason"], message if isinstance(message, str) else None, pod,
                  uid if isinstance(uid, str) and uid else pod, field_path if isinstance(field_path, str) else "",
                  node if isinstance(node, str) else None, time, source)


def _dedup_key(obj: dict) -> str:
    uid = (obj.get("metadata") or {}).get("uid")
    if isinstance(uid, str) and uid:
        return uid
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


_USED_REASONS = {"Pulled", "Pulling", "Started", "Scheduled"}


def parse_events(paths: str | Path | Iterable[str | Path], *, label_root: str | Path | None = None,
                 **context) -> ParseResult:
    """Pull records from one or more event files of the same cluster.

    ``context`` fills the columns the events cannot know: study, run, condition, backend,
    cluster_nodes. ``source`` names file and line relative to ``label_root`` when given, so results do
    not carry the user's own paths. Files of one cluster are parsed together so that an event repeated across
    files is counted once and a pod's Pulling, Pulled and Started events are joined across files.

    Speed (issue 16): JSON lines are read in one loop here, not through a generator and a call per line.
    Every line is decoded, because the account of skips needs it (is it JSON, an object, an exporter
    log, a duplicate by uid?); an event whose reason is not one kept (most of them) is counted right
    after those checks, inline, and only the others go the full way (:func:`_take`). A byte-level
    pre-filter on the kept reasons was measured and dropped: on the 31 archived event files, scanning
    every line for them took 0.08 s, decoding the lines it could have spared 0.04 s, and those lines must
    be decoded anyway for the counts above. A line is decoded by msgspec straight into the fields read
    (``_Line``), falling back to orjson and dicts for any line that does not fit them exactly; on the
    archived files every line fits. Times are parsed once per distinct string and the columns are built
    directly in their final dtypes (:func:`_typed_columns`).
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    try:
        contents = [_open_bytes(p) for p in paths]
    except EventFileError:  # parsed without the cache below, so that the error is the one of the first bad file
        contents = None
    key = None
    if contents is not None:
        key = (str(label_root), tuple(sorted((k, repr(v)) for k, v in context.items())), tuple(map(str, paths)))
        with _PARSED_LOCK:
            cached = _PARSED.get(key)
            if cached is not None and all(a == b for a, b in zip(cached[0], contents)):  # memcmp: ~10 GB/s
                _PARSED.move_to_end(key)
                return _copy(cached[1])
    result = _parse(paths, contents, label_root, context)
    if key is not None:
        with _PARSED_LOCK:
            _PARSED[key] = (contents, result)
            while len(_PARSED) > 1 and sum(sum(map(len, c)) for c, _ in _PARSED.values()) > _PARSED_MAX_BYTES:
                _PARSED.popitem(last=False)
        return _copy(result)
    return result


# Results of parse_events by files, context and the files' very bytes (issue 16: a comparison notebook reads
# the same runs again for its null comparisons and replications, 238 parses of 40 distinct inputs). A hit
# needs the content read now to equal the content parsed then, byte for byte: a file changed in place is
# parsed again whatever its name, size and time say, and comparing costs less than hashing (a hash of the
# 53 MB of archived events took a quarter of their parse). The contents are kept up to a total size; each
# caller gets its own copy of the result to change.
_PARSED: OrderedDict = OrderedDict()
_PARSED_LOCK = threading.Lock()  # parse_events may be called from several threads
_PARSED_MAX_BYTES = 256 * 2**20


def clear_cache() -> None:
    """Forget every parse (a benchmark timing the parser itself, a test counting its calls)."""
    with _PARSED_LOCK:
        _PARSED.clear()


def _copy(result: ParseResult) -> ParseResult:
    return ParseResult(result.records.copy(), Counter(result.skipped), result.items, list(result.files),
                       list(result.unavailable), dict(result.capture_failed),
                       {n: dict(v) for n, v in result.cluster_sizes.items()})


def _parse(paths: list[Path], contents: list[bytes] | None, label_root, context, typed: bool = True) -> ParseResult:
    """parse_events without its cache; ``contents`` are the files' bytes, or None to read them here.
    ``typed=False`` decodes every line with the generic path only (the parser before the typed decode, which
    tests/test_kubelet_events.py compares it with)."""
    skipped: Counter = Counter()
    seen: set[str] = set()
    pulled: list[tuple[_Event, PullMessage]] = []
    pulling: dict[tuple[str, str], list[str]] = {}
    started: dict[tuple[str, str], list[str]] = {}
    scheduled: dict[str, datetime] = {}
    capture_failed: dict[str, str] = {}
    # The cyclic garbage collector is paused while the files are read and the columns built: the loop makes
    # no reference cycles (decoded JSON, tuples, lists of times), all of it is freed by reference counting
    # (anything cyclic pandas makes is collected once the collector runs again), and otherwise a
    # collection runs every few hundred new objects, rescanning those still held (issue 16: ~10% of the
    # parse). Re-enabled at the end, also on an error, only if it was enabled.
    paused = gc.isenabled()
    gc.disable()
    try:
        items = _read_all(paths, contents, label_root, skipped, seen, pulled, pulling, started, scheduled,
                          capture_failed, typed)
        for times in (*pulling.values(), *started.values()):
            times.sort()  # once here, not on every lookup below
        records = _typed_columns(_columns(pulled, pulling, started, scheduled, context), len(pulled))
    finally:
        if paused:
            gc.enable()
    return ParseResult(records, skipped, items, [str(p) for p in paths], capture_failed=capture_failed)


# The typed decode (issue 16): a JSON line decoded straight into these structs, not into dicts. They have exactly
# the fields kubernetes-event-exporter writes for a core/v1 Event and for its own log lines, every one of them
# typed, and refuse any other field (forbid_unknown_fields), so that msgspec reads every byte of a line it accepts
# and refuses what orjson refuses: a field it skipped unread could hold a number beyond a double's range or bytes
# that are not UTF-8, which orjson refuses and msgspec's skipping does not notice (tests/test_kubelet_events.py).
# That is why the labels and annotations are decoded too, though unused: skipping them would have saved about a
# third of the decode. Any line the typed decode refuses -- not JSON, not an object, a field of another type
# ("message": 5, "metadata": []), another Event schema (events.k8s.io/v1 "regarding"/"note") -- and any line
# without a metadata uid (its de-duplication key is the whole object) goes the generic way (orjson.loads, _take),
# so it is counted exactly as before. On the archived files every line fits; the gain is attributes instead of
# dict lookups and no dict for the event, its metadata or its source (measured: typed decode 0.09 s, orjson 0.10-
# 0.13 s, for the 44,302 lines of the 31 mirrored event files).
_S = str | msgspec.UnsetType  # a string when present
_N = str | None | msgspec.UnsetType  # a string or null when present
_UNSET = msgspec.UNSET


class _OwnerRef(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    apiVersion: _S = _UNSET
    kind: _S = _UNSET
    name: _S = _UNSET
    uid: _S = _UNSET
    controller: bool | msgspec.UnsetType = _UNSET
    blockOwnerDeletion: bool | msgspec.UnsetType = _UNSET


class _Involved(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    kind: _S = _UNSET
    namespace: _S = _UNSET
    name: _S = _UNSET
    uid: _S = _UNSET
    apiVersion: _S = _UNSET
    resourceVersion: _S = _UNSET
    fieldPath: _S = _UNSET
    labels: dict[str, str] | msgspec.UnsetType = _UNSET
    annotations: dict[str, str] | msgspec.UnsetType = _UNSET
    ownerReferences: list[_OwnerRef] | msgspec.UnsetType = _UNSET
    deleted: bool | msgspec.UnsetType = _UNSET


class _Metadata(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: _S = _UNSET
    namespace: _S = _UNSET
    uid: _S = _UNSET
    resourceVersion: _S = _UNSET
    creationTimestamp: _S = _UNSET


class _Source(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    component: _S = _UNSET
    host: _S = _UNSET


# An int64, which orjson reads as the same int (a bigger one it reads as a float, or refuses beyond a double's range).
_Int64 = Annotated[int, msgspec.Meta(ge=-2**63, le=2**63 - 1)]


class _Line(msgspec.Struct, forbid_unknown_fields=True, gc=False,
            rename={"event_age": "event age", "event_name": "event name", "event_namespace": "event namespace"}):
    reason: _N = _UNSET
    message: _N = _UNSET
    metadata: _Metadata | None | msgspec.UnsetType = _UNSET
    involvedObject: _Involved | None | msgspec.UnsetType = _UNSET
    source: _Source | None | msgspec.UnsetType = _UNSET
    reportingInstance: _N = _UNSET
    reportingComponent: _N = _UNSET
    eventTime: _N = _UNSET
    firstTimestamp: _N = _UNSET
    lastTimestamp: _N = _UNSET
    count: _Int64 | None | msgspec.UnsetType = _UNSET
    type: _N = _UNSET
    action: _N = _UNSET
    clusterName: _N = _UNSET
    # the exporter's own log lines
    level: _S = _UNSET
    time: _S = _UNSET
    error: _S = _UNSET
    event_age: _S = _UNSET
    event_name: _S = _UNSET
    event_namespace: _S = _UNSET


# gc=False: a decoded line is never part of a reference cycle, so the collector need not track its structs.
_decode_line = msgspec.json.Decoder(_Line).decode
_TYPED_REFUSED = (msgspec.DecodeError, RecursionError)  # ValidationError is a DecodeError; deep nesting a RecursionError


def _read_all(paths, contents, label_root, skipped, seen, pulled, pulling, started, scheduled, capture_failed,
              typed: bool = True) -> int:
    """The loop of :func:`parse_events` over its files, filling its collections; returns the items read.

    Each JSON line is decoded by the typed decode (``_Line``) when it can be, else the generic way; both end
    in the same counts and records (tests/test_kubelet_events.py compares them on every mirrored file and on
    the bad-input corpus). ``typed=False``: the generic way only."""
    items = 0
    loads, decode_error, used, seen_add = orjson.loads, orjson.JSONDecodeError, _USED_REASONS, seen.add
    decode_line, refused, unset, str_, no_involved = _decode_line, _TYPED_REFUSED, _UNSET, str, _NO_INVOLVED
    parse_text_time = _parse_time_text
    for i, path in enumerate(paths):
        label = str(path.relative_to(label_root) if label_root else path)
        try:
            objects, data = _read_event_file(path, skipped, label, None if contents is None else contents[i])
        except EventCaptureFailed as failed:
            skipped["event-capture-failed"] += 1
            capture_failed[label] = failed.first_line
            continue
        if objects is not None:
            for where, obj in objects:
                items += 1
                _take(obj, where, label, skipped, seen, pulled, pulling, started, scheduled)
            continue
        before = items
        for lineno, line in enumerate(data.split(b"\n"), 1):
            if typed:
                try:
                    x = decode_line(line)
                except refused:
                    pass  # the generic way below
                else:
                    reason = x.reason
                    metadata = x.metadata
                    if not reason:  # UNSET, null or "": as _not_an_event (no "regarding" field gets here)
                        items += 1
                        skipped["exporter-log" if reason != "" and x.involvedObject is unset
                                and x.level is not unset else "missing-reason"] += 1
                        continue
                    uid = metadata.uid if metadata else None
                    if type(uid) is str_ and uid:  # else the key is the whole object's JSON: the generic way
                        items += 1
                        if uid in seen:
                            skipped["duplicate"] += 1
                            continue
                        seen_add(uid)
                        if reason not in used:
                            skipped["not-a-pull-event"] += 1
                            continue
                        if reason == "Pulled":
                            _take_typed(x, reason, metadata, lineno, label, skipped, pulled, pulling, started,
                                        scheduled)
                            continue
                        # what _take_typed does for Pulling, Started and Scheduled, inlined: a third of all lines
                        created = metadata.creationTimestamp
                        raw = x.eventTime or x.firstTimestamp or (None if created is unset else created)
                        time = None if raw is None else parse_text_time(raw)  # a str: typed
                        if time is None:
                            skipped["missing-time" if raw is None else "bad-time"] += 1
                            continue
                        involved = x.involvedObject or no_involved
                        uid = involved.uid
                        if not uid:
                            namespace, name = involved.namespace, involved.name
                            uid = f"{'' if namespace is unset else namespace}/{'' if name is unset else name}"
                        if reason == "Scheduled":
                            scheduled.setdefault(uid, time)
                        else:
                            field_path = involved.fieldPath
                            joins = pulling if reason == "Pulling" else started
                            joins.setdefault((uid, "" if field_path is unset else field_path), []).append(time)
                        continue
            if not line or line.isspace():
                continue
            try:
                obj = loads(line)
            except decode_error:
                skipped["not-json"] += 1
                continue
            items += 1
            if type(obj) is dict:  # the checks of _take up to "not-a-pull-event", inlined for most lines
                reason = obj.get("reason")
                metadata = obj.get("metadata")
                if reason and type(reason) is str and (metadata is None or type(metadata) is dict):
                    uid = metadata.get("uid") if metadata else None
                    key = uid if type(uid) is str and uid else _dedup_key(obj)
                    if key in seen:
                        skipped["duplicate"] += 1
                        continue
                    seen_add(key)
                    if reason not in used:  # most events: counted without building anything
                        skipped["not-a-pull-event"] += 1
                    elif reason == "Pulled":
                        _take_kept(obj, reason, metadata, lineno, label, skipped, pulled, pulling, started, scheduled)
                    else:  # what _take_kept does for Pulling, Started and Scheduled, inlined: a third of all lines
                        raw = obj.get("eventTime") or obj.get("firstTimestamp") or obj.get("deprecatedFirstTimestamp") \
                            or (metadata or {}).get("creationTimestamp")
                        time = None if raw is None else parse_time(raw)
                        if time is None:
                            skipped["missing-time" if raw is None else "bad-time"] += 1
                            continue
                        involved = obj.get("involvedObject") or obj.get("regarding")
                        involved = involved if type(involved) is dict else {}
                        uid, field_path = involved.get("uid"), involved.get("fieldPath")
                        pod_key = uid if type(uid) is str and uid \
                            else f"{involved.get('namespace', '')}/{involved.get('name', '')}"
                        if reason == "Scheduled":
                            scheduled.setdefault(pod_key, time)
                        else:
                            joins = pulling if reason == "Pulling" else started
                            joins.setdefault((pod_key, field_path if type(field_path) is str else ""), []).append(time)
                    continue
                if reason is None and "involvedObject" not in obj and "regarding" not in obj:
                    skipped["exporter-log" if "level" in obj else "missing-reason"] += 1  # as _not_an_event
                    continue
            _take(obj, lineno, label, skipped, seen, pulled, pulling, started, scheduled)
        if items == before:
            raise _no_json(path)
    return items


def _take_typed(x: _Line, reason: str, metadata: _Metadata, lineno: int, label: str, skipped, pulled, pulling,
                started, scheduled) -> None:
    """:func:`_take_kept` for a typed line: the same fields in the same order of precedence. An absent field is
    UNSET, falsy like the None of ``dict.get``; a struct is always truthy, and one of no fields stands for ``{}``,
    which reads the same (the ``or`` fallbacks of the generic path lead to fields that ``_Line`` does not have)."""
    created = metadata.creationTimestamp
    raw = x.eventTime or x.firstTimestamp or (None if created is _UNSET else created)
    time = None if raw is None else _parse_time_text(raw)  # a str: typed
    if raw is not None and time is None:
        skipped["bad-time"] += 1
        return
    involved = x.involvedObject or _NO_INVOLVED
    uid, namespace, name = involved.uid, involved.namespace, involved.name
    pod = f"{'' if namespace is _UNSET else namespace}/{'' if name is _UNSET else name}"
    pod_key = uid if uid else pod  # a str or UNSET (falsy)
    field_path = involved.fieldPath
    container = "" if field_path is _UNSET else field_path
    if reason != "Pulled":
        if time is None:
            skipped["missing-time"] += 1
            return
        if reason == "Pulling":
            pulling.setdefault((pod_key, container), []).append(time)
        elif reason == "Started":
            started.setdefault((pod_key, container), []).append(time)
        else:
            scheduled.setdefault(pod_key, time)
        return
    source = x.source
    host = source.host if source else None
    node = host or x.reportingInstance or None
    message = x.message
    if not isinstance(message, str):  # null, or absent (there is no "note" here)
        skipped["missing-message"] += 1
        return
    ev = _Event(reason, message, pod, pod_key, container, node, time, f"{label}:{lineno}")
    try:
        pulled.append((ev, parse_pulled_message(message)))
    except DurationError:
        skipped["bad-duration"] += 1
    except UnrecognizedMessage:
        skipped["unrecognized-pulled-message"] += 1


_NO_INVOLVED = _Involved()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_NAT = np.iinfo(np.int64).min  # numpy's NaT as an int64


@functools.lru_cache(maxsize=1 << 16)
def _image_parts(image: str) -> tuple[str | None, int | None, int | None]:
    """(tag, layers, size) of an image reference; the same few images are pulled on every node."""
    tag = split_image(image)[1]
    return (tag, *decode_tag(tag))


def _columns(pulled, pulling, started, scheduled, context) -> dict[str, list]:
    """The records as one list per column (RECORD_COLUMNS), each Pulled event joined to the latest
    Pulling before it and the first Started after it (same pod and container) and its pod's Scheduled."""
    n = len(pulled)
    events = [ev for ev, _ in pulled]
    messages = [msg for _, msg in pulled]
    parts = [_image_parts(m.image) for m in messages]
    pulling_at, started_at = [], []
    for ev, msg in pulled:
        key = (ev.pod_key, ev.container)
        pulling_at.append(None if msg.cache_hit else _latest_at_or_before(pulling.get(key), ev.time))
        started_at.append(_earliest_at_or_after(started.get(key), ev.time))
    return {
        "study": [context.get("study")] * n, "run": [context.get("run")] * n,
        "condition": [context.get("condition")] * n, "backend": [context.get("backend", "archive")] * n,
        "cluster_nodes": [context.get("cluster_nodes")] * n, "node": [ev.node for ev in events],
        "image": [m.image for m in messages], "tag": [p[0] for p in parts], "layers": [p[1] for p in parts],
        "size_bytes": [p[2] for p in parts], "content": ["unknown"] * n,
        "image_size_reported": [m.image_size_reported for m in messages],
        "pull_s": [m.pull_s for m in messages], "pull_wait_s": [m.pull_wait_s for m in messages],
        "cache_hit": [m.cache_hit for m in messages], "pulling_at": pulling_at,
        "pulled_at": [ev.time for ev in events], "started_at": started_at, "source": [ev.source for ev in events],
        "pod": [ev.pod for ev in events], "scheduled_at": [scheduled.get(ev.pod_key) for ev in events],
        "study_image": [False] * n,
    }


def _microseconds(values: list) -> np.ndarray:
    """UTC datetimes (or None) as int64 microseconds since the epoch (NaT for None), without pandas
    inferring each value; each distinct time is converted once."""
    cache: dict = {v: (v - _EPOCH) // _MICROSECOND for v in set(values) if v is not None}
    cache[None] = _NAT
    return np.array([cache[v] for v in values], dtype=np.int64)  # a list, not numpy item by item: 3x faster


def _typed_columns(columns: dict[str, list], n: int) -> pd.DataFrame:
    """The records frame built column by column in its final dtypes: what ``typed_records(DataFrame(columns))``
    gives (tests/test_kubelet_events.py), without a frame of objects converted 22 columns at a time (issue 16:
    that was a quarter of the parse). The times are already UTC datetimes, parsed once in ``parse_time``."""
    if not n:
        return empty_records()
    out: dict[str, object] = {}
    for col in RECORD_COLUMNS:
        values = columns[col]
        if col in INT_COLUMNS:  # ints or None, as IntegerArray(data, mask): 4x faster than pd.array
            mask = np.array([v is None for v in values], dtype=bool)
            data = np.array([0 if v is None else v for v in values], dtype=np.int64)
            out[col] = pd.arrays.IntegerArray(data, mask)
        elif col in FLOAT_COLUMNS:
            out[col] = np.array([np.nan if v is None else v for v in values], dtype="float64")
        elif col in BOOL_COLUMNS:
            out[col] = np.array(values, dtype=bool)
        elif col in TIME_COLUMNS:
            out[col] = pd.DatetimeIndex(_microseconds(values).view(f"M8[{TIME_UNIT}]")).tz_localize("UTC")
        else:  # str or None (checked by StringArray), without pd.array inferring the values first
            out[col] = pd.arrays.StringArray(np.array(values, dtype=object))
    return pd.DataFrame(out, columns=RECORD_COLUMNS)


def _take(obj, where, label, skipped, seen, pulled, pulling, started, scheduled) -> None:
    """Use one decoded item: count why it is left out, or file it under Pulled/Pulling/Started/Scheduled."""
    if not isinstance(obj, dict):
        skipped["not-an-object"] += 1
        return
    # _not_an_event, _dedup_key and _event_time inlined for the common cases: this runs once per line
    reason = obj.get("reason")
    if not (reason and isinstance(reason, str)):
        skipped[_not_an_event(obj)] += 1
        return
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        skipped["bad-metadata"] += 1
        return
    uid = metadata.get("uid") if metadata else None
    key = uid if isinstance(uid, str) and uid else _dedup_key(obj)
    if key in seen:
        skipped["duplicate"] += 1
        return
    seen.add(key)
    if reason not in _USED_REASONS:  # most events: counted without building anything
        skipped["not-a-pull-event"] += 1
        return
    _take_kept(obj, reason, metadata, where, label, skipped, pulled, pulling, started, scheduled)


def _take_kept(obj, reason, metadata, where, label, skipped, pulled, pulling, started, scheduled) -> None:
    """File a new (not duplicate) Pulled, Pulling, Started or Scheduled event, or count why it cannot be."""
    raw = obj.get("eventTime") or obj.get("firstTimestamp") or obj.get("deprecatedFirstTimestamp") \
        or (metadata or {}).get("creationTimestamp")
    time = None if raw is None else parse_time(raw)
    if raw is not None and time is None:
        skipped["bad-time"] += 1  # not placed in time, so not joined or kept
        return
    if reason != "Pulled":  # only the join key and the time are needed: no _Event built (issue 16)
        if time is None:
            skipped["missing-time"] += 1  # a timeless Pulling/Started/Scheduled cannot be joined
            return
        involved = obj.get("involvedObject") or obj.get("regarding")
        involved = involved if isinstance(involved, dict) else {}
        uid, field_path = involved.get("uid"), involved.get("fieldPath")
        pod_key = uid if isinstance(uid, str) and uid else f"{involved.get('namespace', '')}/{involved.get('name', '')}"
        container = field_path if isinstance(field_path, str) else ""
        if reason == "Pulling":
            pulling.setdefault((pod_key, container), []).append(time)
        elif reason == "Started":
            started.setdefault((pod_key, container), []).append(time)
        else:
            scheduled.setdefault(pod_key, time)
        return
    ev = _normalize(obj, f"{label}:{where}" if isinstance(where, int) else where, time)
    if ev.message is None:
        skipped["missing-message"] += 1
        return
    try:
        pulled.append((ev, parse_pulled_message(ev.message)))
    except DurationError:
        skipped["bad-duration"] += 1
    except UnrecognizedMessage:
        skipped["unrecognized-pulled-message"] += 1


def _latest_at_or_before(times: list[datetime] | None, t: datetime | None) -> datetime | None:
    if not times:
        return None
    ordered = times  # sorted by parse_events
    if t is None:
        return ordered[-1]
    i = bisect.bisect_right(ordered, t)
    return ordered[i - 1] if i else None


def _earliest_at_or_after(times: list[datetime] | None, t: datetime | None) -> datetime | None:
    if not times:
        return None
    ordered = times  # sorted by parse_events
    if t is None:
        return ordered[0]
    i = bisect.bisect_left(ordered, t)
    return ordered[i] if i < len(ordered) else None

"""The archived raw data: fetch every file of the manifest into data/raw/ and verify it.

Files come from a local mirror folder (``PULLSTUDY_DATA_MIRROR``; same layout as the upstream
repositories, files may be ``.gz``) or are downloaded from the public repository at the pinned
commit. Every file is verified by its git blob id before it is written, and written atomically,
so data/raw/ only ever holds files that are exactly the upstream ones. A file found in data/raw/
that does not verify is never left there to be analysed: it is moved to data/quarantine/ with a
note of the expected and the actual blob id.

What ``make verify-data`` expects: every manifest file except those the last ``make data``
reported *unavailable* (not in the mirror and no download possible, e.g. CI's mirror lacks files of
4 MiB and more and some whole runs). Those are listed as "not expected here", not failures; the
notebooks say which cluster sizes they could not analyse. A file that should be here but is not —
missing, altered, corrupt at its source, quarantined, never tried, or a fetch that stopped — fails.

Command line: ``python -m pullstudy.data.fetch fetch`` (``make data``) and
``python -m pullstudy.data.fetch verify`` (``make verify-data``). Exit codes: 0 all good; 1 a data file
is missing, altered or corrupt; 2 a setting or the environment is wrong (the one-line message
names the file or variable and the remedy); 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

from tqdm.auto import tqdm

from pullstudy.paths import data_dir, quarantine_dir, raw_dir

FETCH_REPORT = "FETCH-REPORT.json"
LOCK = ".fetch.lock"  # held by a running fetch, so two fetches never write at once
IN_PROGRESS = ".fetch-in-progress"  # exists from a fetch's start until its report is written
CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 30
HAVE = ("verified", "from-mirror", "downloaded")  # statuses of a file that is in data/raw, verified
# Statuses of a file that should be in data/raw but could not be had: a failure, never "unavailable".
FAILED = ("corrupt", "quarantined")
BOOKKEEPING = {FETCH_REPORT, LOCK, IN_PROGRESS}


class DataConfigError(ValueError):
    """A file or setting the user controls is wrong; the message names it and says what to do."""


class DestinationError(Exception):
    """data/raw (or data/quarantine) cannot be written: the fetch stops, with the reason and the remedy."""

    def __init__(self, path: Path, exc: OSError, root: Path | None = None):
        self.path, self.errno = Path(path), exc.errno
        root = root or self.path.parent
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            msg = f"no space left on the device of {path}: free some space and run `make data` again"
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            msg = (f"{root} is read-only ({exc.strerror}) and {path} needs writing: make it writable "
                   f"(chmod -R u+w {root}) or set PULLSTUDY_RAW_DIR to a writable folder")
        else:
            msg = f"cannot write {path}: {exc.strerror or exc}"
        super().__init__(msg)


@dataclass(frozen=True)
class DataFile:
    """One upstream file: where it lives upstream and the git blob id it must hash to."""

    source: str
    path: str
    git_blob: str
    size: int | None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.path}"


@dataclass(frozen=True)
class Manifest:
    sources: dict
    files: tuple[DataFile, ...]

    def url(self, f: DataFile) -> str:
        src = self.sources[f.source]
        return src["url_template"].format(commit=src["commit"], path=f.path)


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read and check data/manifest.json; any damage is a DataConfigError naming the file and entry."""
    path = Path(path) if path else data_dir() / "manifest.json"
    fix = "restore it (git checkout -- data/manifest.json) or pass the right one with --manifest"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataConfigError(f"{path}: not found: {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataConfigError(f"{path}: cannot be read ({exc}): {fix}") from None
    except json.JSONDecodeError as exc:
        raise DataConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; "
                              f"truncated?): {fix}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), dict) or not isinstance(doc.get("files"), list):
        raise DataConfigError(f"{path}: needs a 'sources' object and a 'files' list: {fix}")
    files = []
    for i, entry in enumerate(doc["files"]):
        if not isinstance(entry, dict):
            raise DataConfigError(f"{path}: file entry {i} is not an object: {fix}")
        missing = {"source", "path", "git_blob"} - set(entry)
        if missing:
            raise DataConfigError(f"{path}: file entry {i} lacks {sorted(missing)}: {fix}")
        if entry["source"] not in doc["sources"]:
            raise DataConfigError(f"{path}: file entry {i} names unknown source {entry['source']!r}: {fix}")
        blob, size = entry["git_blob"], entry.get("size")
        if not (isinstance(blob, str) and len(blob) == 40 and all(c in "0123456789abcdef" for c in blob)):
            raise DataConfigError(f"{path}: file entry {i} has git_blob {blob!r}, not 40 hex digits: {fix}")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise DataConfigError(f"{path}: file entry {i} has size {size!r}, not a byte count or null: {fix}")
        files.append(DataFile(entry["source"], entry["path"], blob, size))
    for name in sorted({f.source for f in files}):
        src = doc["sources"][name]
        lacks = {"commit", "url_template"} - set(src if isinstance(src, dict) else {})
        if lacks:
            raise DataConfigError(f"{path}: source {name!r} lacks {sorted(lacks)}: {fix}")
    return Manifest(sources=doc["sources"], files=tuple(files))


def git_blob_id(content: bytes) -> str:
    """The id git gives a file's content, so any file can be checked against the upstream commit."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def git_blob_id_of_file(path: str | Path) -> str:
    path = Path(path)
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class VerificationError(Exception):
    """Content did not hash to the expected git blob id."""


def _file_mode() -> int:
    """The mode a new file gets under the current umask (0644 under 022), as any download would.

    mkstemp creates 0600 files; data files are not secrets, and others on the machine read them.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _copy_verified(stream: BinaryIO, dest: Path, expected_blob: str, root: Path | None = None) -> int:
    """Copy a stream into dest atomically, but only if its content has the expected blob id.

    git's blob header needs the length first, so the content is spooled to a temporary file in
    dest's folder (never held in memory), hashed, and renamed into place only when it matches.
    Reading the source may raise OSError (the source's fault); any failure to write raises
    DestinationError (this machine's fault), so a full disk is never blamed on the mirror.
    """
    tmp: Path | None = None
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            tmp = Path(tmp_name)
            out = os.fdopen(fd, "wb")
        except OSError as exc:
            raise DestinationError(tmp or dest, exc, root) from None
        size = 0
        with out:
            while chunk := stream.read(CHUNK):
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise DestinationError(dest, exc, root) from None
                size += len(chunk)
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise DestinationError(dest, exc, root) from None
        actual = git_blob_id_of_file(tmp)
        if actual != expected_blob:
            raise VerificationError(f"git blob {actual} != expected {expected_blob} ({size} bytes)")
        try:
            os.chmod(tmp, _file_mode())
            os.replace(tmp, dest)
        except OSError as exc:
            raise DestinationError(dest, exc, root) from None
        return size
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # cleaned at the start of the next fetch


def _mirror_candidates(mirror: Path, f: DataFile) -> list[Path]:
    base = mirror / f.source / f.path
    return [base, base.with_name(base.name + ".gz")]


def check_mirror(mirror: str | Path | None, manifest: Manifest, origin: str = "PULLSTUDY_DATA_MIRROR") -> Path | None:
    """The mirror folder, if set; a wrong one is a DataConfigError, not hundreds of "not in the mirror"."""
    if mirror is None or str(mirror) == "":
        return None
    path = Path(mirror)
    layout = "the folder holding <source>/<path> copies of the upstream files"
    if not path.exists():
        raise DataConfigError(f"{origin}={mirror} does not exist: point it at {layout}, or unset it to download")
    if not path.is_dir():
        raise DataConfigError(f"{origin}={mirror} is a file, not a folder: point it at {layout}, or unset it to download")
    sources = sorted({f.source for f in manifest.files})
    if sources and not any((path / s).is_dir() for s in sources):
        raise DataConfigError(f"{origin}={mirror} holds none of the source folders {sources}: "
                              f"point it at {layout} (their parent folder)")
    return path


@dataclass
class FetchReport:
    """What ``make data`` did to every file; the report is kept beside the data."""

    # key -> verified|from-mirror|downloaded|unavailable|corrupt|quarantined
    status: dict[str, str] = field(default_factory=dict)
    detail: dict[str, str] = field(default_factory=dict)  # key -> why, for unavailable/corrupt/quarantined
    quarantined: dict[str, str] = field(default_factory=dict)  # key -> where this run moved an altered copy
    total: int = 0  # files in the manifest
    stopped: str | None = None  # why the fetch ended before the last file
    cleaned: int = 0  # stale partial files of an interrupted fetch, removed at the start

    def counts(self) -> Counter:
        return Counter(self.status.values())

    @property
    def have(self) -> int:
        c = self.counts()
        return sum(c[s] for s in HAVE)

    @property
    def ok(self) -> bool:
        return self.stopped is None and not any(s in FAILED for s in self.status.values()) and self.have > 0

    def to_json(self) -> dict:
        return {"complete": self.stopped is None, "stopped": self.stopped, "status": self.status,
                "detail": self.detail, "quarantined": self.quarantined}

    def summary(self) -> str:
        c = self.counts()
        lines = [
            f"data: {self.have} of {self.total or len(self.status)} files verified by git blob id "
            f"({c['verified']} already present, {c['from-mirror']} from the mirror, {c['downloaded']} downloaded)"
        ]
        if self.cleaned:
            lines.append(f"  removed {self.cleaned} partial files left by an interrupted fetch")
        if c["unavailable"]:
            reasons = Counter(self.detail[k] for k, s in self.status.items() if s == "unavailable")
            lines.append(f"  {c['unavailable']} unavailable (not expected here; verify-data lists them):")
            lines += [f"    {n:4d}  {why}" for why, n in reasons.most_common()]
        for k, where in self.quarantined.items():
            lines.append(f"  QUARANTINED {k}: it failed verification, moved to {where}")
        for k, s in self.status.items():
            if s in FAILED:
                lines.append(f"  {s.upper()} {k}: {self.detail[k]}")
        if self.stopped:
            lines.append(f"  STOPPED after {len(self.status)} of {self.total} files: {self.stopped}")
        elif not self.have:
            lines.append("  no file could be had: check PULLSTUDY_DATA_MIRROR, or the network (PULLSTUDY_OFFLINE)")
        return "\n".join(lines)


def _quarantine(f: DataFile, dest: Path, actual: str, qroot: Path) -> Path:
    """Move a data/raw file that failed verification out of the notebooks' reach, with a note why."""
    target = qroot / f.source / f.path
    note = target.with_name(target.name + ".note.txt")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        size = dest.stat().st_size
        try:
            os.replace(dest, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.move(dest, target)
        note.write_text(f"{f.key}: git blob {actual} ({size} bytes), expected {f.git_blob} "
                        f"(data/manifest.json); moved from {dest} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    except OSError as exc:
        raise DestinationError(Path(exc.filename or dest), exc, dest.parent) from None
    return target


def _clean_stale_parts(dest_root: Path) -> int:
    """Remove the partial files a killed fetch left; safe because the caller holds the fetch lock."""
    n = 0
    for p in dest_root.rglob("*.part"):
        if p.is_file() and (p.name == FETCH_REPORT + ".part" or p.name.startswith(".")):
            try:
                p.unlink()
            except OSError as exc:
                raise DestinationError(p, exc, dest_root) from None
            n += 1
    return n


class _FetchLock:
    """An exclusive lock on data/raw for one fetch; None-op where data/raw is read-only."""

    def __init__(self, dest_root: Path):
        self.path = dest_root / LOCK
        self.fd: int | None = None

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return self  # read-only folder: nobody can write it, so there is nothing to exclude
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"data: waiting for another `make data` writing {self.path.parent} ...", file=sys.stderr)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock


def fetch_running(dest_root: Path) -> bool:
    """Whether a fetch holds data/raw's lock right now."""
    try:
        fd = os.open(dest_root / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _fetch_one(f: DataFile, manifest: Manifest, dest_root: Path, qroot: Path, mirror: Path | None,
               report: FetchReport, offline: list[str | None]) -> None:
    """Bring one file into data/raw, verified, and record what happened (offline[0]: why downloads stop)."""
    dest = dest_root / f.source / f.path
    key = f.key
    if dest.is_file():
        actual = git_blob_id_of_file(dest)
        if actual == f.git_blob:
            report.status[key] = "verified"
            if dest.stat().st_mode & 0o777 == 0o600 != _file_mode():
                try:
                    os.chmod(dest, _file_mode())  # written by an older fetch that left 0600
                except OSError:
                    pass
            return
        report.quarantined[key] = str(_quarantine(f, dest, actual, qroot))
    why: list[str] = []
    if mirror is not None:
        found = [p for p in _mirror_candidates(mirror, f) if p.is_file()]
        if not found:
            why.append("not in the mirror")
        for candidate in found:
            try:
                opener = gzip.open if candidate.suffix == ".gz" and not f.path.endswith(".gz") else open
                with opener(candidate, "rb") as stream:
                    _copy_verified(stream, dest, f.git_blob, dest_root)
                report.status[key] = "from-mirror"
                report.detail.pop(key, None)
                break
            except (VerificationError, OSError, EOFError, zlib.error) as exc:
                report.status[key] = "corrupt"
                report.detail[key] = f"mirror file {candidate}: {exc}"
        if report.status.get(key) in ("from-mirror", "corrupt"):
            return
    if offline[0] is None:
        url = manifest.url(f)
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                _copy_verified(resp, dest, f.git_blob, dest_root)
            report.status[key] = "downloaded"
            return
        except VerificationError as exc:
            report.status[key] = "corrupt"
            report.detail[key] = f"download {url}: {exc}"
            return
        except urllib.error.HTTPError as exc:
            why.append(f"download failed: HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            # No route to the internet: say so once, and stop trying for the other files.
            offline[0] = f"download failed: {getattr(exc, 'reason', exc)}"
    if offline[0] is not None:
        why.append(offline[0])
    held = qroot / f.source / f.path
    if held.is_file():
        # Sticky: the researcher had this file, so it stays a failure until it is restored or let go.
        report.status[key] = "quarantined"
        report.detail[key] = (f"an altered copy is held in {held}; {'; '.join(why) or 'no source'}: restore the "
                              "file (mirror or download) or delete the quarantined copy to accept it as unavailable")
        return
    report.status[key] = "unavailable"
    report.detail[key] = "; ".join(why) or "no source"


def fetch(
    manifest: Manifest,
    dest_root: str | Path | None = None,
    *,
    mirror: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
    write_report: bool = True,
) -> FetchReport:
    """Make dest_root hold every manifest file that can be had, each verified; idempotent.

    Altered files are quarantined first, stale partial files of a killed fetch removed, and the
    report written last (so an unfinished fetch is visible to verify-data by its in-progress
    marker). A failure to write stops the fetch with ``report.stopped`` set; nothing is written
    where nothing needs writing, so a read-only data/raw that is complete passes.
    """
    dest_root = Path(dest_root) if dest_root else raw_dir()
    mirror_path = check_mirror(mirror, manifest, "data mirror (--mirror or PULLSTUDY_DATA_MIRROR)")
    qroot = quarantine_dir(dest_root)
    report = FetchReport(total=len(manifest.files))
    offline: list[str | None] = [None if download else "downloads disabled (offline mode)"]
    marker = dest_root / IN_PROGRESS
    marked = False
    try:
        try:
            dest_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(dest_root, exc, dest_root.parent) from None
        with _FetchLock(dest_root):
            try:
                marker.write_text(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
                marked = True
            except OSError as exc:
                if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise DestinationError(marker, exc, dest_root) from None
            report.cleaned = _clean_stale_parts(dest_root)
            try:
                for f in tqdm(manifest.files, desc="make data", unit="file", disable=not progress):
                    _fetch_one(f, manifest, dest_root, qroot, mirror_path, report, offline)
            except DestinationError as exc:
                report.stopped = str(exc)
            if write_report:
                _write_fetch_report(dest_root, report)
            if marked:
                marker.unlink(missing_ok=True)
    except DestinationError as exc:
        report.stopped = report.stopped or str(exc)  # the first failure is the cause
    return report


@dataclass
class VerifyReport:
    ok_files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # fetched before, gone now
    altered: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # expected but make data could not get it: why
    never_fetched: list[str] = field(default_factory=list)  # unavailable when fetched: not expected here
    reasons: Counter = field(default_factory=Counter)  # why the never_fetched were unavailable
    problems: list[str] = field(default_factory=list)  # about data/raw as a whole (no report, interrupted)

    @property
    def expected(self) -> int:
        return len(self.ok_files) + len(self.missing) + len(self.altered) + len(self.failed)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.altered or self.unknown or self.failed or self.problems) and self.expected > 0

    def summary(self) -> str:
        lines = [
            f"verify-data: {len(self.ok_files)} of {self.expected} expected files intact; {len(self.missing)} missing, "
            f"{len(self.altered)} altered, {len(self.failed)} not fetched, {len(self.unknown)} unknown; "
            f"{len(self.never_fetched)} not expected here (unavailable when fetched, see {FETCH_REPORT})"
        ]
        lines += [f"    {n:4d}  {why}" for why, n in self.reasons.most_common()]
        lines += [f"  FAILED {p}" for p in self.problems]
        if not self.problems and self.expected == 0:
            lines.append("  FAILED no file is expected: nothing was fetched; check PULLSTUDY_DATA_MIRROR and run `make data`")
        lines += [f"  MISSING {k}: run `make data`" for k in self.missing]
        lines += [f"  ALTERED {k}: run `make data` (it quarantines the file and fetches it again)" for k in self.altered]
        lines += [f"  NOT FETCHED {k}: {why}" for k, why in self.failed.items()]
        lines += [f"  UNKNOWN {k}" for k in self.unknown]
        return "\n".join(lines)


def load_fetch_report(dest_root: Path) -> dict | None:
    """The last fetch's report, or None if there is none; a damaged one is a DataConfigError naming it."""
    path = Path(dest_root) / FETCH_REPORT
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataConfigError(f"{path}: damaged ({exc}; truncated?): run `make data` to rewrite it") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("status"), dict) and isinstance(doc.get("detail"), dict)):
        raise DataConfigError(f"{path}: damaged (no 'status' and 'detail' objects): run `make data` to rewrite it")
    return doc


def verify(manifest: Manifest, dest_root: str | Path | None = None, *, progress: bool = True) -> VerifyReport:
    """Check data/raw against the manifest and the last fetch report (see the module docstring)."""
    dest_root = Path(dest_root) if dest_root else raw_dir()
    report = VerifyReport()
    fetched_doc = load_fetch_report(dest_root)
    if fetched_doc is None:
        report.problems.append(f"{dest_root / FETCH_REPORT} not found: data/raw was never fetched; run `make data`")
        fetched_doc = {"status": {}, "detail": {}}
    fetched, detail = fetched_doc["status"], fetched_doc["detail"]
    if (dest_root / IN_PROGRESS).exists():
        if fetch_running(dest_root):
            report.problems.append("a `make data` is running now: wait for it, then run verify-data again")
        else:
            report.problems.append(f"the last `make data` was interrupted ({dest_root / IN_PROGRESS} is left): "
                                   "run `make data` again")
    elif fetched_doc.get("complete") is False:
        report.problems.append(f"the last `make data` stopped: {fetched_doc.get('stopped')}; run `make data` again")
    known = set()
    for f in tqdm(manifest.files, desc="verify-data", unit="file", disable=not progress):
        path = dest_root / f.source / f.path
        known.add(path.resolve())
        status = fetched.get(f.key)
        if path.is_file():
            (report.ok_files if git_blob_id_of_file(path) == f.git_blob else report.altered).append(f.key)
        elif status == "unavailable":
            report.never_fetched.append(f.key)
            report.reasons[detail.get(f.key, "no reason recorded")] += 1
        elif status in HAVE:
            report.missing.append(f.key)
        elif status is None:
            if fetched:
                report.failed[f.key] = "not in the last fetch report (the manifest is newer): run `make data`"
        else:
            report.failed[f.key] = f"{status}: {detail.get(f.key, 'no reason recorded')}"
    if dest_root.is_dir():
        for path in sorted(p for p in dest_root.rglob("*") if p.is_file()):
            if path.resolve() not in known and not (path.parent == dest_root and path.name in BOOKKEEPING):
                report.unknown.append(str(path.relative_to(dest_root)))
    return report


def available_files(manifest: Manifest, dest_root: str | Path | None = None) -> set[str]:
    """Keys of the manifest files present in data/raw (verified by ``make data``)."""
    dest_root = Path(dest_root) if dest_root else raw_dir()
    return {f.key for f in manifest.files if (dest_root / f.source / f.path).is_file()}


def _same_outcome(previous: dict | None, report: FetchReport) -> bool:
    """Whether the report on disk already says what this fetch found (so a read-only data/raw may stay)."""
    if previous is None or previous.get("complete") is False or report.stopped or report.quarantined:
        return False
    old = previous["status"]
    if set(old) != set(report.status):
        return False
    return all((old[k] in HAVE and s in HAVE) or old[k] == s for k, s in report.status.items())


def _write_fetch_report(dest_root: Path, report: FetchReport) -> None:
    """Write the report atomically; never leave a .part. Raises DestinationError if it cannot."""
    tmp = dest_root / (FETCH_REPORT + ".part")
    try:
        tmp.write_text(json.dumps(report.to_json(), indent=1, sort_keys=True))
        os.chmod(tmp, _file_mode())
        os.replace(tmp, dest_root / FETCH_REPORT)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        try:
            previous = load_fetch_report(dest_root)
        except DataConfigError:
            previous = None
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and _same_outcome(previous, report):
            return  # nothing needed writing
        raise DestinationError(dest_root / FETCH_REPORT, exc, dest_root) from None


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pullstudy.data.fetch", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="fill data/raw from the mirror or by download, verifying every file")
    p_fetch.add_argument("--mirror", default=None, help="local mirror folder (default: $PULLSTUDY_DATA_MIRROR)")
    p_fetch.add_argument("--offline", action="store_true", default=os.environ.get("PULLSTUDY_OFFLINE") == "1",
                         help="never download (default: $PULLSTUDY_OFFLINE=1)")
    sub.add_parser("verify", help="re-check data/raw; non-zero exit unless every expected file is present and intact")
    for p in sub.choices.values():
        p.add_argument("--manifest", default=None, help="manifest.json (default: data/manifest.json)")
        p.add_argument("--raw", default=None, help="data/raw folder (default: data/raw)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(list(argv) if argv is not None else None)
    dest_root = Path(args.raw) if args.raw else raw_dir()
    try:
        manifest = load_manifest(args.manifest)
        if args.command == "fetch":
            if args.mirror is not None:
                mirror = check_mirror(args.mirror, manifest, "--mirror")
            else:
                mirror = check_mirror(os.environ.get("PULLSTUDY_DATA_MIRROR") or None, manifest)
            report = fetch(manifest, dest_root, mirror=mirror, download=not args.offline, progress=not args.quiet)
            print(report.summary())
            if report.stopped:
                print(f"error: {report.stopped}", file=sys.stderr)
                return 2
            return 0 if report.ok else 1
        vreport = verify(manifest, dest_root, progress=not args.quiet)
    except DataConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted; run it again to finish", file=sys.stderr)
        return 130
    print(vreport.summary())
    return 0 if vreport.ok else 1


if __name__ == "__main__":
    sys.exit(main())

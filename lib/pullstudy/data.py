"""The archived raw data: fetch every file of the manifest into data/raw/ and verify it.

Files come from a local mirror folder (``PULLSTUDY_DATA_MIRROR``; same layout as the upstream
repositories, files may be ``.gz``) or are downloaded from the public repository at the pinned
commit. Every file is verified by its git blob id before it is written, and written atomically,
so data/raw/ only ever holds files that are exactly the upstream ones.

Command line: ``python -m pullstudy.data fetch`` (``make data``) and
``python -m pullstudy.data verify`` (``make verify-data``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

from tqdm.auto import tqdm

from .paths import data_dir, raw_dir

FETCH_REPORT = "FETCH-REPORT.json"
CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 30


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
    path = Path(path) if path else data_dir() / "manifest.json"
    doc = json.loads(Path(path).read_text())
    files = []
    for i, entry in enumerate(doc["files"]):
        missing = {"source", "path", "git_blob"} - set(entry)
        if missing:
            raise ValueError(f"{path}: file entry {i} lacks {sorted(missing)}")
        if entry["source"] not in doc["sources"]:
            raise ValueError(f"{path}: file entry {i} names unknown source {entry['source']!r}")
        files.append(DataFile(entry["source"], entry["path"], entry["git_blob"], entry.get("size")))
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


def _copy_verified(stream: BinaryIO, dest: Path, expected_blob: str) -> int:
    """Copy a stream into dest atomically, but only if its content has the expected blob id.

    git's blob header needs the length first, so the content is spooled to a temporary file in
    dest's folder (never held in memory), hashed, and renamed into place only when it matches.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        actual = git_blob_id_of_file(tmp)
        if actual != expected_blob:
            raise VerificationError(f"git blob {actual} != expected {expected_blob} ({size} bytes)")
        os.replace(tmp, dest)
        return size
    finally:
        tmp.unlink(missing_ok=True)


def _mirror_candidates(mirror: Path, f: DataFile) -> list[Path]:
    base = mirror / f.source / f.path
    return [base, base.with_name(base.name + ".gz")]


@dataclass
class FetchReport:
    """What ``make data`` did to every file; the report is kept beside the data."""

    status: dict[str, str] = field(default_factory=dict)  # key -> verified|from-mirror|downloaded|unavailable|corrupt
    detail: dict[str, str] = field(default_factory=dict)  # key -> why, for unavailable/corrupt

    def counts(self) -> Counter:
        return Counter(self.status.values())

    @property
    def ok(self) -> bool:
        return "corrupt" not in self.status.values()

    def to_json(self) -> dict:
        return {"status": self.status, "detail": self.detail}

    def summary(self) -> str:
        c = self.counts()
        have = c["verified"] + c["from-mirror"] + c["downloaded"]
        lines = [
            f"data: {have} of {len(self.status)} files verified by git blob id "
            f"({c['verified']} already present, {c['from-mirror']} from the mirror, {c['downloaded']} downloaded)"
        ]
        if c["unavailable"]:
            reasons = Counter(self.detail[k] for k, s in self.status.items() if s == "unavailable")
            lines.append(f"  {c['unavailable']} unavailable:")
            lines += [f"    {n:4d}  {why}" for why, n in reasons.most_common()]
        for k, s in self.status.items():
            if s == "corrupt":
                lines.append(f"  CORRUPT {k}: {self.detail[k]}")
        return "\n".join(lines)


def fetch(
    manifest: Manifest,
    dest_root: str | Path | None = None,
    *,
    mirror: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> FetchReport:
    """Make dest_root hold every manifest file that can be had, each verified; idempotent."""
    dest_root = Path(dest_root) if dest_root else raw_dir()
    mirror = Path(mirror) if mirror else None
    if mirror is not None and not mirror.is_dir():
        raise FileNotFoundError(f"data mirror {mirror} is not a folder (PULLSTUDY_DATA_MIRROR)")
    report = FetchReport()
    offline_reason: str | None = None if download else "downloads disabled (offline mode)"
    for f in tqdm(manifest.files, desc="make data", unit="file", disable=not progress):
        dest = dest_root / f.source / f.path
        if dest.is_file() and git_blob_id_of_file(dest) == f.git_blob:
            report.status[f.key] = "verified"
            continue
        why: list[str] = []
        if mirror is not None:
            found = [p for p in _mirror_candidates(mirror, f) if p.is_file()]
            if not found:
                why.append("not in the mirror")
            for candidate in found:
                try:
                    opener = gzip.open if candidate.suffix == ".gz" and not f.path.endswith(".gz") else open
                    with opener(candidate, "rb") as stream:
                        _copy_verified(stream, dest, f.git_blob)
                    report.status[f.key] = "from-mirror"
                    report.detail.pop(f.key, None)
                    break
                except (VerificationError, OSError, EOFError, zlib.error) as exc:
                    report.status[f.key] = "corrupt"
                    report.detail[f.key] = f"mirror file {candidate}: {exc}"
            if report.status.get(f.key) in ("from-mirror", "corrupt"):
                continue
        if offline_reason is None:
            url = manifest.url(f)
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                    _copy_verified(resp, dest, f.git_blob)
                report.status[f.key] = "downloaded"
                continue
            except VerificationError as exc:
                report.status[f.key] = "corrupt"
                report.detail[f.key] = f"download {url}: {exc}"
                continue
            except urllib.error.HTTPError as exc:
                why.append(f"download failed: HTTP {exc.code}")
            except (urllib.error.URLError, OSError) as exc:
                # No route to the internet: say so once, and stop trying for the other files.
                offline_reason = f"download failed: {getattr(exc, 'reason', exc)}"
        if offline_reason is not None:
            why.append(offline_reason)
        report.status[f.key] = "unavailable"
        report.detail[f.key] = "; ".join(why) or "no source"
    return report


@dataclass
class VerifyReport:
    ok_files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # fetched before, gone now
    altered: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    never_fetched: list[str] = field(default_factory=list)  # unavailable when fetched: reported, not an error

    @property
    def ok(self) -> bool:
        return not (self.missing or self.altered or self.unknown)

    def summary(self) -> str:
        lines = [
            f"verify-data: {len(self.ok_files)} files intact, {len(self.missing)} missing, "
            f"{len(self.altered)} altered, {len(self.unknown)} unknown; "
            f"{len(self.never_fetched)} were unavailable when fetched (see {FETCH_REPORT})"
        ]
        lines += [f"  MISSING {k}" for k in self.missing]
        lines += [f"  ALTERED {k}" for k in self.altered]
        lines += [f"  UNKNOWN {k}" for k in self.unknown]
        return "\n".join(lines)


def load_fetch_report(dest_root: Path) -> dict:
    path = dest_root / FETCH_REPORT
    if not path.is_file():
        return {"status": {}, "detail": {}}
    return json.loads(path.read_text())


def verify(manifest: Manifest, dest_root: str | Path | None = None, *, progress: bool = True) -> VerifyReport:
    """Check data/raw against the manifest: every file fetched is there, unchanged, and nothing else is."""
    dest_root = Path(dest_root) if dest_root else raw_dir()
    fetched = load_fetch_report(dest_root)["status"]
    report = VerifyReport()
    known = set()
    for f in tqdm(manifest.files, desc="verify-data", unit="file", disable=not progress):
        path = dest_root / f.source / f.path
        known.add(path.resolve())
        if path.is_file():
            (report.ok_files if git_blob_id_of_file(path) == f.git_blob else report.altered).append(f.key)
        elif fetched.get(f.key, "unavailable") in ("unavailable", "corrupt"):
            report.never_fetched.append(f.key)
        else:
            report.missing.append(f.key)
    if dest_root.is_dir():
        for path in sorted(p for p in dest_root.rglob("*") if p.is_file()):
            if path.resolve() not in known and path.name != FETCH_REPORT:
                report.unknown.append(str(path.relative_to(dest_root)))
    return report


def available_files(manifest: Manifest, dest_root: str | Path | None = None) -> set[str]:
    """Keys of the manifest files present in data/raw (verified by ``make data``)."""
    dest_root = Path(dest_root) if dest_root else raw_dir()
    return {f.key for f in manifest.files if (dest_root / f.source / f.path).is_file()}


def _write_fetch_report(dest_root: Path, report: FetchReport) -> None:
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = dest_root / (FETCH_REPORT + ".part")
    tmp.write_text(json.dumps(report.to_json(), indent=1, sort_keys=True))
    os.replace(tmp, dest_root / FETCH_REPORT)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pullstudy.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="fill data/raw from the mirror or by download, verifying every file")
    p_fetch.add_argument("--mirror", default=os.environ.get("PULLSTUDY_DATA_MIRROR") or None,
                         help="local mirror folder (default: $PULLSTUDY_DATA_MIRROR)")
    p_fetch.add_argument("--offline", action="store_true", default=os.environ.get("PULLSTUDY_OFFLINE") == "1",
                         help="never download (default: $PULLSTUDY_OFFLINE=1)")
    sub.add_parser("verify", help="re-check data/raw; non-zero exit naming every missing, altered or unknown file")
    for p in sub.choices.values():
        p.add_argument("--manifest", default=None, help="manifest.json (default: data/manifest.json)")
        p.add_argument("--raw", default=None, help="data/raw folder (default: data/raw)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(list(argv) if argv is not None else None)
    manifest = load_manifest(args.manifest)
    dest_root = Path(args.raw) if args.raw else raw_dir()
    if args.command == "fetch":
        report = fetch(manifest, dest_root, mirror=args.mirror, download=not args.offline, progress=not args.quiet)
        _write_fetch_report(dest_root, report)
        print(report.summary())
        return 0 if report.ok else 1
    report = verify(manifest, dest_root, progress=not args.quiet)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

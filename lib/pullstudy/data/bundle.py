"""``make archive``: the verified data folder as one deterministic bundle a data repository can give a DOI.

The bundle ``dist/pullstudy-data-<version>.tar.gz`` holds, under one top folder ``pullstudy-data-<version>/``:

* ``raw/<source>/<path>`` — every manifest file that is in data/raw and hashes to its git blob id (a file that
  does not verify stops the archive: a deposit must never carry an altered upstream file);
* ``runs/<name>/…`` — the researcher's own recorded runs, when asked for (``RUNS="data/runs/<name> …"``):
  a paper's new measurements are what most needs a DOI;
* ``manifest.json``, ``catalog.json``, ``README.md`` (provenance, MIT attribution) from data/;
* ``bundle.json`` — version, counts, and every manifest file *not* included with the reason;
* ``SHA256SUMS`` — ``sha256sum -c`` format, of every other member.

Why deterministic: a DOI names bytes. The same data gives the same bundle on any machine, so anyone can
rebuild it and compare the SHA-256 written beside it. Entries are sorted; every member has mtime
``BUNDLE_MTIME``, uid/gid 0 without names, mode 0644; the gzip header carries no file name and time 0.

Why a secret scan: the upstream archive is published, but a deposit is forever and new runs are ours.
Before anything is written every member is scanned line by line (kubeconfig credentials, bearer tokens,
private keys, passwords, API tokens, certificate secret keys). A finding fails the archive naming file and
line — never the matched text — unless data/secret-allowlist.json lists that file, line and kind with a
reason (the upstream Flux app logs print a ZeroMQ CURVE certificate of clusters that no longer exist).

Command line: ``python -m pullstudy.data.bundle [--runs DIR …] [--out dist] [--version V]``. Exit codes: 0 written;
1 a secret was found or a data file is altered; 2 a setting is wrong (one line naming it and the remedy).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Iterable

from pullstudy import paths
from .fetch import FETCH_REPORT, DataConfigError, git_blob_id_of_file, load_fetch_report, load_manifest

BUNDLE_MTIME = 1704067200  # 2024-01-01T00:00:00Z: any fixed time; the upstream runs are from 2024
ALLOWLIST = "secret-allowlist.json"
METADATA_FILES = ("manifest.json", "catalog.json", "README.md")
CHUNK = 1 << 20

# One pattern per kind of secret, over a file's bytes (``[ \t]``, not ``\s``, so a match never spans lines).
# A finding names file, line and kind only, never the matched text.
SECRET_PATTERNS: dict[str, re.Pattern] = {
    "private-key": re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"),
    "kubeconfig-credential": re.compile(
        rb"\b(client-key-data|client-certificate-data|id-token|refresh-token)[\"']?[ \t]*:[ \t]*[\"']?[A-Za-z0-9+/=._-]{16,}"),
    "bearer-token": re.compile(rb"(?i)\bbearer[ \t]+[A-Za-z0-9._~+/=-]{20,}"),
    "password": re.compile(rb"(?i)\b(password|passwd|pwd)[\"']?[ \t]*[:=][ \t]*[\"']?[^\s\"',}{]{4,}"),
    "api-token": re.compile(
        rb"(?i)\b(api[_-]?key|access[_-]?token|auth[_-]?token|zenodo[_-]?token)[\"']?[ \t]*[:=][ \t]*[\"']?"
        rb"[A-Za-z0-9._~+/=-]{16,}|\bgh[pousr]_[A-Za-z0-9]{30,}|\bAKIA[0-9A-Z]{16}\b"),
    "certificate-secret-key": re.compile(rb"(?i)\bsecret[-_]?key[\"']?[ \t]*[:=][ \t]*[\"']?[^\s]{8,}"),
}


class BundleError(Exception):
    """A setting or the data is not fit to archive; the message names the file and the remedy."""


class SecretsFound(Exception):
    """The scan found secrets outside the allow-list; ``findings`` are (member, line, kind)."""

    def __init__(self, findings: list[tuple[str, int, str]], allowlist: Path):
        self.findings = findings
        shown = "\n".join(f"  {m}:{line}: {kind}" for m, line, kind in findings[:50])
        more = f"\n  … and {len(findings) - 50} more" if len(findings) > 50 else ""
        super().__init__(f"archive refused: {len(findings)} possible secret(s) found (remove them, or list each "
                         f"with a reason in {allowlist} if it is public and harmless):\n{shown}{more}")


@dataclass
class Bundle:
    """What was (or would be) archived: member name in the bundle -> file on disk."""

    version: str
    members: dict[str, Path] = field(default_factory=dict)
    not_included: dict[str, str] = field(default_factory=dict)  # manifest key -> why
    runs: list[str] = field(default_factory=list)
    allowed: list[dict] = field(default_factory=list)  # allow-listed findings (file, line, kind, reason)

    @property
    def top(self) -> str:
        return f"pullstudy-data-{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.top}.tar.gz"


def default_version() -> str:
    """The package version (pyproject.toml), so software and data carry the same version by default."""
    try:
        return package_version("pullstudy")
    except PackageNotFoundError:  # pragma: no cover - only in an uninstalled checkout
        import tomllib
        return tomllib.loads((paths.PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]


def load_allowlist(path: Path) -> dict[tuple[str, int, str], str]:
    """(member, line, kind) -> reason. Each entry must give a reason: an allowed secret is a decision."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        entries = doc["allowed"]
        out = {}
        for i, e in enumerate(entries):
            if not (isinstance(e.get("reason"), str) and e["reason"].strip()):
                raise BundleError(f"{path}: entry {i} has no reason: every allowed finding says why it is harmless")
            if e.get("kind") not in SECRET_PATTERNS:
                raise BundleError(f"{path}: entry {i} has kind {e.get('kind')!r}, not one of {sorted(SECRET_PATTERNS)}")
            out[(e["file"], int(e["line"]), e["kind"])] = e["reason"]
        return out
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"{path}: not a valid allow-list ({exc!r}); it needs {{'allowed': [{{file, line, kind, "
                          f"reason}}]}}") from None


def scan_file(path: Path) -> list[tuple[int, str]]:
    """(line number, kind) of every possible secret in one file, matched on its bytes (any encoding)."""
    content = path.read_bytes()
    found = set()
    for kind, pattern in SECRET_PATTERNS.items():
        for m in pattern.finditer(content):
            found.add((content.count(b"\n", 0, m.start()) + 1, kind))
    return sorted(found)


def scan(members: dict[str, Path], allowlist: dict[tuple[str, int, str], str]) -> tuple[list, list]:
    """(refused, allowed) findings over the bundle's members; member names are those of the allow-list
    (the path inside the bundle's top folder, e.g. ``raw/container-chonks/experiments/…``)."""
    refused, allowed = [], []
    for name in sorted(members):
        for lineno, kind in scan_file(members[name]):
            reason = allowlist.get((name, lineno, kind))
            if reason is None:
                refused.append((name, lineno, kind))
            else:
                allowed.append({"file": name, "line": lineno, "kind": kind, "reason": reason})
    return refused, allowed


def collect(data_dir: Path | None = None, raw: Path | None = None, runs: Iterable[str | Path] = (),
            version: str | None = None) -> Bundle:
    """Choose the members: every verified manifest file, the metadata, and the given runs.

    A file present in data/raw that does not hash to its git blob id is a BundleError (run ``make data``);
    a manifest file that is not here is recorded in ``not_included`` with the fetch report's reason."""
    data_dir = Path(data_dir) if data_dir else paths.data_dir()
    raw = Path(raw) if raw else paths.raw_dir()
    try:
        manifest = load_manifest(data_dir / "manifest.json")
        report = load_fetch_report(raw) or {"status": {}, "detail": {}}
    except DataConfigError as exc:
        raise BundleError(str(exc)) from None
    bundle = Bundle(version=version or default_version())
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+_-]*", bundle.version):
        raise BundleError(f"--version {bundle.version!r}: use letters, digits and . + _ - only (it names the file)")
    altered = []
    for f in manifest.files:
        path = raw / f.source / f.path
        if not path.is_file():
            why = report["detail"].get(f.key) or report["status"].get(f.key) or "not in data/raw"
            bundle.not_included[f.key] = why
        elif git_blob_id_of_file(path) != f.git_blob:
            altered.append(f.key)
        else:
            bundle.members[f"raw/{f.key}"] = path
    if altered:
        raise BundleError(f"{len(altered)} file(s) of {raw} do not match their git blob id (first: {altered[0]}): "
                          "run `make data` (it quarantines and re-fetches them), then `make archive`")
    if not bundle.members:
        raise BundleError(f"{raw}: no verified data file to archive: run `make data` first")
    for name in METADATA_FILES:
        if not (data_dir / name).is_file():
            raise BundleError(f"{data_dir / name}: not found: restore it with git, it belongs in every bundle")
        bundle.members[name] = data_dir / name
    for run in runs:
        run = Path(run)
        if not (run / "run.json").is_file():
            raise BundleError(f"RUNS: {run} is not a recorded run (no run.json): pass data/runs/<name> folders")
        if run.name in bundle.runs:
            raise BundleError(f"RUNS: two runs named {run.name!r}: each run's folder name must be unique")
        bundle.runs.append(run.name)
        for p in sorted(run.rglob("*")):
            if p.is_symlink():
                raise BundleError(f"RUNS: {p} is a symbolic link: copy the file itself into the run folder")
            if p.is_file():
                bundle.members[f"runs/{run.name}/{p.relative_to(run).as_posix()}"] = p
    return bundle


def sha256_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, BUNDLE_MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write(bundle: Bundle, out_dir: Path) -> tuple[Path, str]:
    """Write the bundle atomically (a .part renamed into place) and its .sha256 beside it; return both."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sums = "".join(f"{sha256_of_file(bundle.members[n])}  {n}\n" for n in sorted(bundle.members))
    info = {
        "name": bundle.top, "version": bundle.version, "files": len(bundle.members), "runs": bundle.runs,
        "not_included": dict(sorted(bundle.not_included.items())),
        "allowed_findings": bundle.allowed,
        "verify": "sha256sum -c SHA256SUMS; every raw/ file also by its git blob id in manifest.json",
    }
    generated = {"bundle.json": json.dumps(info, indent=1, sort_keys=True).encode() + b"\n"}
    sums += "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in generated.items())
    generated["SHA256SUMS"] = sums.encode()
    entries = sorted([(n, "file") for n in bundle.members] + [(n, "bytes") for n in generated])
    target = out_dir / bundle.filename
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as fh:
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for name, what in entries:
                        arcname = f"{bundle.top}/{name}"
                        if what == "bytes":
                            tar.addfile(_tarinfo(arcname, len(generated[name])), io.BytesIO(generated[name]))
                        else:
                            path = bundle.members[name]
                            with path.open("rb") as src:
                                tar.addfile(_tarinfo(arcname, path.stat().st_size), src)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    digest = sha256_of_file(target)
    (out_dir / (bundle.filename + ".sha256")).write_text(f"{digest}  {bundle.filename}\n")
    return target, digest


def archive(out_dir: Path | None = None, *, data_dir: Path | None = None, raw: Path | None = None,
            runs: Iterable[str | Path] = (), version: str | None = None) -> tuple[Path, str, Bundle]:
    """collect, scan (SecretsFound stops it before any byte is written), write."""
    data_dir = Path(data_dir) if data_dir else paths.data_dir()
    bundle = collect(data_dir, raw, runs, version)
    allow_path = data_dir / ALLOWLIST
    refused, bundle.allowed = scan(bundle.members, load_allowlist(allow_path))
    if refused:
        raise SecretsFound(refused, allow_path)
    target, digest = write(bundle, Path(out_dir) if out_dir else paths.PROJECT_ROOT / "dist")
    return target, digest, bundle


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pullstudy.data.bundle", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], help="recorded runs to include (data/runs/<name>)")
    parser.add_argument("--out", default=None, help="output folder (default: dist/)")
    parser.add_argument("--version", default=None, help="bundle version (default: the package version)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        target, digest, bundle = archive(args.out, runs=args.runs, version=args.version)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SecretsFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = target.stat().st_size
    print(f"archive: {target} ({len(bundle.members)} files, {size / 1e6:.1f} MB; {len(bundle.not_included)} manifest "
          f"files not here, listed in bundle.json; {len(bundle.allowed)} allow-listed findings)")
    print(f"sha256 {digest}  (also in {target.name}.sha256)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

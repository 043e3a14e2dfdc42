"""Root filesystems from Debian packages, as OCI layer blobs on disk, cached by what defines them.

Real images are layered by stage: a base (a minimal Debian), a runtime (the packages the
application needs) and the application (its own files). Here each Debian stage is a root filesystem
built by ``mmdebstrap`` (Debian's own bootstrapper, fetching from Debian's package registry, no
Docker engine) with the packages of every stage so far; the stage's layer is what differs from the
stage below it (new and changed files, whiteouts for removed ones), as a ``RUN apt-get install``
layer would be. The application stage is a layer of the given files only.

Cache. A stage's layer is stored under ``<cache>/<key>/`` (``layer.tar.gz`` and ``layer.json``, plus
the stage's ``rootfs/`` for the stages built on it), where the key is the SHA-256 of everything that
decides it (suite, mirror, variant, packages, hooks, files, the stage below, this module's
``BUILDER_VERSION``). A second build of the same definition reads the cache and builds nothing; a
changed definition gets a new key. The Debian archive moves on (point releases), so two builds of
the same definition at different times may hold different package versions: ``layer.json`` records
the versions that were installed.

Determinism within a build: entries sorted by path, owners numeric (no names), modification times
clamped to ``SOURCE_DATE_EPOCH`` (``EPOCH``), gzip level 6 with a zero mtime. ``/dev``, ``/proc``
and ``/sys`` are kept as empty directories (the runtime mounts them).
"""
from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from pullstudy.paths import data_dir

BUILDER_VERSION = 1
EPOCH = 1_700_000_000          # SOURCE_DATE_EPOCH of every build: 2023-11-14
MIRROR = "http://deb.debian.org/debian"
EMPTY_DIRS = ("dev", "proc", "sys")  # their contents belong to the runtime, not the image
GZIP_LEVEL = 6


class BuildError(RuntimeError):
    """A root filesystem or layer could not be built; the message names the stage and the remedy."""


def cache_dir() -> Path:
    """``PULLSTUDY_IMAGE_CACHE``, else data/image-cache (not in git)."""
    return Path(os.environ.get("PULLSTUDY_IMAGE_CACHE", data_dir() / "image-cache"))


def host_suite() -> str:
    """The Debian suite of this machine (bookworm here): its packages are what apt can fetch."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "bookworm"


@dataclass(frozen=True)
class DebianStage:
    """A root filesystem of ``packages`` (cumulative: this stage's and every stage's below) on ``variant``."""

    name: str
    variant: str                        # mmdebstrap --variant: extract, custom, essential, minbase, apt
    packages: tuple[str, ...]
    hooks: tuple[str, ...] = ()         # mmdebstrap --customize-hook commands ("$1" is the root; not run by extract)
    links: tuple[tuple[str, str], ...] = ()  # (path, target) symbolic links made afterwards (extract runs no hooks)
    suite: str = field(default_factory=host_suite)
    mirror: str = MIRROR


@dataclass(frozen=True)
class FilesStage:
    """A layer of literal files: (path in the image, text, mode)."""

    name: str
    files: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True)
class Layer:
    """A layer blob on disk, with what the OCI config and manifest need."""

    path: Path
    digest: str          # sha256 of the gzip blob
    diff_id: str         # sha256 of the tar
    size: int            # blob bytes
    tar_bytes: int
    files: int           # regular files in the layer
    created_by: str
    built: bool          # False: read from the cache
    packages: tuple[str, ...] = ()      # name=version installed by this stage (Debian stages)


def _key(*parts) -> str:
    text = json.dumps([BUILDER_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def stage_key(stage, below: str | None) -> str:
    return _key(type(stage).__name__, asdict(stage), below)


def build_layers(stages: Sequence[DebianStage | FilesStage], cache: Path | None = None,
                 log=None) -> list[Layer]:
    """The layers of ``stages`` (bottom first), built where the cache lacks them.

    A Debian stage's layer is its root filesystem minus the previous Debian stage's; the first
    Debian stage is a whole root filesystem. ``log(text)`` is told what is being built.
    """
    cache = Path(cache or cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    layers, below, below_root = [], None, None
    for stage in stages:
        key = stage_key(stage, below)
        folder = cache / key
        if isinstance(stage, DebianStage):
            root = folder / "rootfs"
            layer = _cached(folder)
            if layer is None or not root.is_dir():
                if log:
                    log(f"building the {stage.name} stage ({stage.variant}: {' '.join(stage.packages) or 'no packages'})")
                _mmdebstrap(stage, folder, cache)
                for path, target in stage.links:
                    link = root / path.strip("/")
                    link.unlink(missing_ok=True)
                    link.symlink_to(target)
                layer = _write_layer(folder, _diff(root, below_root), root, stage.name,
                                     f"mmdebstrap --variant={stage.variant} {stage.suite}: {' '.join(stage.packages)}",
                                     _installed(root, below_root) or _extracted(stage, root))
            below_root = root
        else:
            layer = _cached(folder)
            if layer is None:
                layer = _files_layer(folder, stage)
        layers.append(layer)
        below = key
    return layers


def _cached(folder: Path) -> Layer | None:
    meta = folder / "layer.json"
    if not meta.is_file() or not (folder / "layer.tar.gz").is_file():
        return None
    doc = json.loads(meta.read_text())
    if (folder / "layer.tar.gz").stat().st_size != doc["size"]:
        return None  # torn by an interrupted build: build again
    return Layer(folder / "layer.tar.gz", doc["digest"], doc["diff_id"], doc["size"], doc["tar_bytes"], doc["files"],
                 doc["created_by"], False, tuple(doc.get("packages", ())))


# --- building a root filesystem ------------------------------------------------------------------

def _mmdebstrap(stage: DebianStage, folder: Path, cache: Path) -> None:
    binary = shutil.which("mmdebstrap")
    if binary is None:
        raise BuildError("mmdebstrap not found on PATH: install the Debian package with `apt-get install mmdebstrap` "
                         "(as root, `make system` does)")
    if os.geteuid() != 0:
        raise BuildError(f"building the {stage.name} stage with mmdebstrap needs root (running as uid {os.geteuid()}): "
                         "run the local backend as root")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    archives = cache / "apt-archives"  # downloaded .debs, shared by every build: a rebuild downloads nothing
    archives.mkdir(exist_ok=True)
    argv = [binary, f"--variant={stage.variant}", "--mode=root", "--format=directory",
            *([f"--include={','.join(stage.packages)}"] if stage.packages else []),
            "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
            f"--setup-hook=sync-in {archives} /var/cache/apt/archives",
            *[f"--customize-hook={h}" for h in stage.hooks],
            f"--customize-hook=sync-out /var/cache/apt/archives {archives}",
            stage.suite, str(folder / "rootfs"), stage.mirror]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "LC_ALL": "C.UTF-8"}
    log_path = folder / "mmdebstrap.log"
    with open(log_path, "wb") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-1500:]
        raise BuildError(f"mmdebstrap failed building the {stage.name} stage (exit {proc.returncode}; "
                         f"does this machine reach {stage.mirror}?); its log {log_path} ends:\n{tail}")


def _installed(root: Path, below: Path | None) -> tuple[str, ...]:
    """name=version of the packages dpkg lists in ``root`` and not in ``below``."""
    def listed(r: Path | None) -> set[str]:
        status = r / "var/lib/dpkg/status" if r else None
        if not status or not status.is_file():
            return set()
        found, name = set(), None
        for line in status.read_text(errors="replace").splitlines():
            if line.startswith("Package: "):
                name = line[9:].strip()
            elif line.startswith("Version: ") and name:
                found.add(f"{name}={line[9:].strip()}")
        return found
    return tuple(sorted(listed(root) - listed(below)))


def _extracted(stage: DebianStage, root: Path) -> tuple[str, ...]:
    """name=version of a stage's packages from their Debian changelogs (an extract stage has no dpkg status)."""
    import gzip
    import re

    found = []
    for name in stage.packages:
        changelog = root / "usr/share/doc" / name / "changelog.Debian.gz"
        if changelog.is_file():
            with gzip.open(changelog, "rt", errors="replace") as f:
                m = re.match(r"\S+ \(([^)]+)\)", f.readline())
            if m:
                found.append(f"{name}={m[1]}")
    return tuple(found)


# --- the difference of two trees -------------------------------------------------------------------

def _walk(root: Path) -> dict[str, os.stat_result]:
    """Relative path -> lstat of every entry, without the contents of /dev, /proc, /sys."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        if rel_folder in EMPTY_DIRS:
            dirs[:] = []
            continue
        for name in dirs + files:
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            entries[rel] = os.lstat(os.path.join(folder, name))
    return entries


def _same(a: Path, sa: os.stat_result, b: Path, sb: os.stat_result) -> bool:
    if (stat.S_IFMT(sa.st_mode), sa.st_mode, sa.st_uid, sa.st_gid) != (stat.S_IFMT(sb.st_mode), sb.st_mode,
                                                                        sb.st_uid, sb.st_gid):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISREG(sa.st_mode):
        return sa.st_size == sb.st_size and filecmp.cmp(a, b, shallow=False)
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return sa.st_rdev == sb.st_rdev
    return True  # a directory: its own metadata only


@dataclass
class Diff:
    """What a layer holds: entries to write (with their parents) and whiteouts of removed ones."""

    entries: list[str]
    whiteouts: list[str]


def _diff(root: Path, below: Path | None) -> Diff:
    new = _walk(root)
    if below is None:
        return Diff(sorted(new), [])
    old = _walk(below)
    changed = {rel for rel, st in new.items() if rel not in old or not _same(root / rel, st, below / rel, old[rel])}
    for rel in list(changed):  # a changed entry's parents go along (tar convention; their metadata is the new one)
        parent = os.path.dirname(rel)
        while parent and parent not in changed:
            changed.add(parent)
            parent = os.path.dirname(parent)
    # only the topmost removed entry needs a whiteout: it hides everything below it
    removed = [rel for rel in old if rel not in new and (os.path.dirname(rel) in new or "/" not in rel)]
    for rel in removed:
        parent = os.path.dirname(rel)
        while parent and parent not in changed:
            changed.add(parent)
            parent = os.path.dirname(parent)
    return Diff(sorted(changed), sorted(removed))


# --- writing a layer ---------------------------------------------------------------------------------

class _BlobWriter:
    """A write-only file for tarfile: hashes the tar, gzips it, hashes and writes the blob."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.raw, self.packed = hashlib.sha256(), hashlib.sha256()
        self.gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self.tar_bytes = self.size = 0

    def write(self, data) -> int:
        self.raw.update(data)
        self.tar_bytes += len(data)
        self._out(self.gz.compress(data))
        return len(data)

    def _out(self, data: bytes) -> None:
        if data:
            self.packed.update(data)
            self.size += len(data)
            self.file.write(data)

    def close(self) -> None:
        self._out(self.gz.flush())
        self.file.close()


def _info(tar: tarfile.TarFile, path: Path, arcname: str) -> tarfile.TarInfo:
    tar.inodes.clear()  # a layer of a diff may lack a hard link's other name: store every file whole
    info = tar.gettarinfo(str(path), arcname)
    info.uname = info.gname = ""
    info.mtime = min(int(info.mtime), EPOCH)
    return info


def _write_layer(folder: Path, diff: Diff, root: Path, name: str, created_by: str,
                 packages: tuple[str, ...]) -> Layer:
    def members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, Path | None]]:
        for rel in diff.entries:
            path = root / rel
            info = _info(tar, path, rel)
            if not (info.isreg() or info.isdir() or info.issym()):
                continue  # device nodes and fifos are the runtime's
            yield info, path if info.isreg() else None
        for rel in diff.whiteouts:
            head, tail = os.path.split(rel)
            info = tarfile.TarInfo(f"{head}/.wh.{tail}" if head else f".wh.{tail}")
            info.mtime = EPOCH
            yield info, None
    return _tar_layer(folder, name, created_by, members, packages)


def _tar_layer(folder: Path, name: str, created_by: str, members, packages: tuple[str, ...] = ()) -> Layer:
    folder.mkdir(parents=True, exist_ok=True)
    blob = folder / "layer.tar.gz"
    writer = _BlobWriter(blob.with_suffix(".part"))
    files = 0
    try:
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for info, path in members(tar):
                if path is None:
                    tar.addfile(info)
                else:
                    files += 1
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
    finally:
        writer.close()
    blob.with_suffix(".part").replace(blob)
    layer = Layer(blob, f"sha256:{writer.packed.hexdigest()}", f"sha256:{writer.raw.hexdigest()}", writer.size,
                  writer.tar_bytes, files, created_by, True, packages)
    doc = {k: v for k, v in asdict(layer).items() if k not in ("path", "built")}
    (folder / "layer.json").write_text(json.dumps({**doc, "stage": name}, indent=1) + "\n")
    return layer


def _files_layer(folder: Path, stage: FilesStage) -> Layer:
    def members(tar: tarfile.TarFile):
        dirs = sorted({p for path, _, _ in stage.files for p in _parents(path.strip("/"))})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            yield info, None
        for path, text, mode in sorted(stage.files):
            data = text.encode()
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.mtime = len(data), mode, EPOCH
            tmp = folder / "file.tmp"
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            yield info, tmp
    names = ", ".join(p for p, _, _ in stage.files)
    layer = _tar_layer(folder, stage.name, f"COPY {names}", members)
    (folder / "file.tmp").unlink(missing_ok=True)
    return layer


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i + 1]) for i in range(len(parts))]

"""Lazy pulling on one machine: the stargz snapshotter, and eStargz copies of the crafted images.

A lazy pull (GKE image streaming upstream) fetches only the manifest, the config and each layer's
table of contents, mounts the layers remotely, and fetches file contents when they are read. Here
that is the real stargz snapshotter, served by ``pullstudy-stargz`` (``tools/stargz``, built by
``make stargz`` from the library Debian packages: Debian ships the library and ``ctr-remote`` but not
the daemon), as a containerd proxy snapshotter, with FUSE:

- the images are converted once with ``ctr-remote image convert --estargz --oci`` (the project's own
  converter, into a throwaway containerd) and pushed next to the originals as ``<repository>-esgz``
  with the same tag, so the two snapshotters pull the same files;
- a lazy pull is ``ctr-remote image rpull --plain-http`` after a cold wipe (see ``local.lazy_pull``);
- the snapshotter runs with its defaults (background fetch and prefetch on, as upstream ships it).

What this machine cannot provide (no daemon built, no ``ctr-remote``, no ``/dev/fuse``, not root) is
reported as the reason the condition is unavailable; a lazy pull is never simulated.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from .lifecycle import (ConditionUnavailable, Process, Resource, ScratchDir, ServiceError, binary_version,
                        require_binary, require_root, start_process, stop_then_remove)
from .containerd import Containerd

SNAPSHOTTER = "stargz"
DAEMON = "pullstudy-stargz"
BUILD_HINT = ("build it with `make stargz` (needs `apt-get install golang-go "
              "golang-github-containerd-stargz-snapshotter-dev`)")
ESGZ_SUFFIX = "-esgz"


def daemon_binary() -> str | None:
    """``$PULLSTUDY_STARGZ``, else pullstudy-stargz on PATH or beside this Python (``make stargz`` puts it there)."""
    configured = os.environ.get("PULLSTUDY_STARGZ")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    beside = Path(sys.executable).parent / DAEMON
    return shutil.which(DAEMON) or (str(beside) if os.access(beside, os.X_OK) else None)


def unavailable_reason() -> str | None:
    """Why lazy pulling cannot be measured on this machine, or None when it can."""
    missing = []
    if daemon_binary() is None:
        missing.append(f"the stargz snapshotter daemon ({DAEMON}) is not built: {BUILD_HINT}")
    if shutil.which("ctr-remote") is None:
        missing.append("ctr-remote is not installed: `apt-get install stargz-snapshotter`")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        missing.append("/dev/fuse is not available (the snapshotter mounts layers with FUSE)")
    if os.geteuid() != 0:
        missing.append(f"mounting layers needs root (running as uid {os.geteuid()})")
    return "; ".join(missing) or None


class StargzSnapshotter(Resource):
    """The stargz snapshotter daemon on a private socket, for one ``Containerd(remote_snapshotter=...)``.

    Containerd starts it (``start(root)``) before itself and stops it after itself, so that each cold
    wipe also empties its cache. Stopping it gracefully unmounts its FUSE layers; the Containerd
    unmounts whatever a crashed daemon left.
    """

    def __init__(self, binary: str | None = None, start_timeout: float = 20.0, background_fetch: bool = True):
        self.binary, self.start_timeout = binary, start_timeout
        # background_fetch=False: only what the container reads is fetched, so the bytes fetched say
        # how much of the image it needed (the apps workload); True is the snapshotter's default
        self.background_fetch = background_fetch
        self.process: Process | None = None
        self.tmp: Path | None = None

    def _open(self) -> None:
        reason = unavailable_reason()  # root, FUSE, ctr-remote and the daemon, each with its remedy
        if reason:
            raise ConditionUnavailable(reason)
        self.binary = self.binary or daemon_binary()
        self.version = binary_version([self.binary, "-version"])
        self.tmp = Path(tempfile.mkdtemp(prefix="pullstudy-sgz-"))
        self.socket = self.tmp / "stargz.sock"

    def start(self, root: Path) -> None:
        """Start the daemon with its state under ``root`` and wait until its socket is up."""
        self.socket.unlink(missing_ok=True)
        config = []
        if not self.background_fetch:
            (self.tmp / "config.toml").write_text("no_background_fetch = true\n")
            config = ["-config", str(self.tmp / "config.toml")]
        self.process = start_process([self.binary, "-address", str(self.socket), "-root", str(root), *config],
                                     self.tmp / "stargz.log", self.socket.exists, self.start_timeout,
                                     f"{self.binary} did not open {self.socket}", poll_s=0.01)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None

    def _close(self) -> None:
        stop_then_remove(self.stop, self.tmp)

    def __repr__(self) -> str:
        return f"StargzSnapshotter({self.binary})"


def lazy_repository(repository: str) -> str:
    return repository + ESGZ_SUFFIX


def convert_images(registry_host: str, images: list[dict], scratch_parent: str | None = None,
                   progress: bool = True) -> None:
    """Push an eStargz copy of every image as ``<repository>-esgz:<tag>`` (same files, lazily pullable).

    The conversion runs in a throwaway containerd (root on disk, removed afterwards); a failure names
    the image and is raised, since the lazy condition would otherwise measure other images.
    """
    require_root("converting images to eStargz (containerd)")
    ctr_remote = require_binary("ctr-remote")
    with ScratchDir(scratch_parent or "/var/tmp", "pullstudy-esgz-") as scratch, \
            Containerd(scratch.path / "containerd") as ctd:
        for image in tqdm(images, desc="eStargz", unit="image", disable=not progress):
            source = f"{registry_host}/{image['repository']}:{image['tag']}"
            target = f"{registry_host}/{lazy_repository(image['repository'])}:{image['tag']}"
            try:
                # an hour each: converting a GB-sized application image (ml-torch) takes minutes on 2 cores
                ctd.ctr("images", "pull", "--plain-http", source, timeout=3600)
                ctd.ctr("images", "convert", "--estargz", "--oci", source, target, binary=ctr_remote, timeout=3600)
                ctd.ctr("images", "push", "--plain-http", target, timeout=3600)
            except ServiceError as exc:
                raise ServiceError(f"converting {source} to eStargz failed: {exc}") from exc
            ctd.wipe()  # keep the scratch disk small: one image at a time

"""containerd on a private socket with its own root and state, and ``ctr`` driven against it.

Wiped before every cold pull; its errors (``CtrError``, ``DiskFull``) name the command and the remedy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pullstudy.sources.local.lifecycle import (Process, Resource, ServiceError, _empty_dir, binary_version,
                                               child_env, mount_of, mounts_under, require_binary,
                                               require_root, start_process, stop_then_remove, unmount)


class CtrError(ServiceError):
    """A ``ctr`` command failed; ``stderr`` is kept for the caller."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


class DiskFull(CtrError):
    """ENOSPC while containerd wrote content or snapshots."""


class Containerd(Resource):
    """containerd on a private socket; its root (content, snapshots, metadata) under ``root_dir``.

    The caller chooses what ``root_dir`` is on (a tmpfs, a disk directory): that is the storage
    condition. ``wipe()`` is a real cold start: stop containerd, delete its whole root and state,
    start it again (``ctr images rm`` alone leaves snapshots and content behind). With a
    ``remote_snapshotter`` (a lazy-pulling one) its cache and mounts are wiped with the rest.
    """

    def __init__(self, root_dir: str | Path, namespace: str = "pullstudy", snapshotter: str = "overlayfs",
                 start_timeout: float = 20.0, remote_snapshotter=None):
        self.root_dir, self.namespace, self.snapshotter = Path(root_dir), namespace, snapshotter
        self.start_timeout = start_timeout
        # A proxy snapshotter (lazy.StargzSnapshotter) named ``snapshotter``: started before containerd and
        # stopped after it, its state kept under root_dir so that a wipe leaves it cold too.
        self.remote = remote_snapshotter
        self.process: Process | None = None
        self.tmp: Path | None = None
        self._inflight: set[subprocess.Popen] = set()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _open(self) -> None:
        require_root("containerd (snapshot mounts)")
        self.binary, self.ctr_binary = require_binary("containerd"), require_binary("ctr")
        self.version = binary_version([self.binary, "--version"])
        self.tmp = Path(tempfile.mkdtemp(prefix="pullstudy-ctd-"))
        self.socket = self.tmp / "containerd.sock"
        if len(str(self.socket)) > 100:
            raise ServiceError(f"socket path {self.socket} is too long for a unix socket: set TMPDIR to a "
                               "shorter directory")
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.fs_mount, self.root_fstype, self.root_device = mount_of(self.root_dir)
        self.start()

    def _config(self) -> str:
        t = self.tmp
        return "\n".join([
            "version = 2",
            f'root = "{self.root_dir}"',
            f'state = "{t / "state"}"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]", f'  address = "{self.socket}"',
            "[ttrpc]", f'  address = "{self.socket}.ttrpc"',
            "[debug]", '  address = ""',
            "[metrics]", '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]', f'  path = "{t / "opt"}"',
            *([f"[proxy_plugins.{self.snapshotter}]", '  type = "snapshot"', f'  address = "{self.remote.socket}"']
              if self.remote else []),
            "",
        ])

    def start(self) -> None:
        """Start containerd and wait until it answers on its socket."""
        if self.remote:
            self.remote.start(self.root_dir / f"io.pullstudy.{self.snapshotter}")
        config = self.tmp / "config.toml"
        config.write_text(self._config())
        self.process = start_process([self.binary, "--config", str(config), "--log-level", "warn"],
                                     self.tmp / "containerd.log",
                                     lambda: self.socket.exists() and self._run_ctr(["version"], 5).returncode == 0,
                                     self.start_timeout, f"containerd did not answer on {self.socket}")

    def stop(self) -> None:
        if self.process and self.process.alive():
            self._reap()
        if self.process:
            self.process.stop()
        if self.remote:
            self.remote.stop()  # unmounts its lazily fetched layers
        for point in mounts_under(self.root_dir) + (mounts_under(self.tmp) if self.tmp else []):
            if point != os.path.realpath(self.root_dir):  # the caller's mount (a tmpfs) stays
                unmount(point)

    def _reap(self) -> None:
        """Kill and delete every task and container still there (a run stopped midway): their shims
        run in process groups of their own and would outlive containerd."""
        try:
            listing = self._run_ctr(["tasks", "ls"], 10).stdout.splitlines()[1:]
            for task in [line.split()[0] for line in listing if line.strip()]:
                self._run_ctr(["tasks", "kill", "--signal", "SIGKILL", task], 10)
                for _ in range(50):
                    if self._run_ctr(["tasks", "delete", task], 10).returncode == 0:
                        break
                    time.sleep(0.1)
            for name in self._run_ctr(["containers", "ls", "-q"], 10).stdout.split():
                self._run_ctr(["containers", "delete", name], 10)
        except ServiceError:
            pass  # containerd not answering: its stop below takes what it can

    def wipe(self) -> None:
        """A real cold start: stop, delete root (content, snapshots, metadata) and state, start."""
        self.stop()
        _empty_dir(self.root_dir)
        shutil.rmtree(self.tmp / "state", ignore_errors=True)
        self.start()

    def _run_ctr(self, args: list[str], timeout: float, binary: str | None = None) -> subprocess.CompletedProcess:
        """Run ctr (or ``binary``, a ctr with more commands), tracked so that a signal's cleanup kills it too."""
        argv = [binary or self.ctr_binary, "--address", str(self.socket), "--namespace", self.namespace, *args]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        self._inflight.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise ServiceError(f"`ctr {' '.join(args)}` did not finish within {timeout} s") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            self._inflight.discard(proc)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def ctr(self, *args: str, timeout: float = 600, binary: str | None = None) -> subprocess.CompletedProcess:
        """``ctr --address SOCK --namespace NS ARGS``; a failure raises CtrError (DiskFull on ENOSPC).

        ``binary`` runs another ctr build on the same socket (``ctr-remote``, for rpull and convert).
        """
        proc = self._run_ctr(list(args), timeout, binary)
        if proc.returncode != 0:
            err = proc.stderr.strip()
            cls = DiskFull if "no space left on device" in err.lower() else CtrError
            shown = "\n".join(line for line in err.splitlines() if "level=debug" not in line)
            raise cls(f"`{Path(binary or 'ctr').name} {' '.join(args)}` failed (exit {proc.returncode}): {shown[-1000:]}", err)
        return proc

    def content_bytes(self) -> int:
        """Bytes in the content store (manifest, config and compressed layers fetched)."""
        blobs = self.root_dir / "io.containerd.content.v1.content" / "blobs"
        return sum(p.stat().st_size for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else 0

    def _close(self) -> None:
        for proc in list(self._inflight):  # a ctr interrupted by a signal
            proc.kill()
        stop_then_remove(self.stop, self.tmp)

    def __repr__(self) -> str:
        return f"Containerd(root={self.root_dir})"

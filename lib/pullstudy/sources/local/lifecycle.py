"""The lifecycle every local service shares: processes, scratch folders, mounts (a tmpfs), ports,
and the errors they raise; the services themselves are one file each (``registry_process``,
``containerd``, ``link``, ``stargz``).

Each is a context manager with its own temporary state that is always torn down: on a normal exit,
on an error, on Ctrl-C and on SIGTERM. Why so careful: a measurement left running (a registry, a
containerd, a mount, a network namespace) would disturb every later measurement on the machine.

- Child processes run in their own process group (so a terminal's Ctrl-C does not race our
  orderly shutdown) and are stopped terminate -> wait -> kill, then the whole group is killed.
- They also get ``PR_SET_PDEATHSIG``: if this Python process is killed outright, they die with it.
- SIGINT/SIGTERM handlers close every live resource (newest first), restore the previous handlers
  and re-raise the signal; ``atexit`` closes whatever is left as a last resort. (Python allows
  handlers in the main thread only: resources opened from another thread rely on atexit and
  PR_SET_PDEATHSIG.)

Nothing here simulates a condition: what this machine cannot provide raises ``ConditionUnavailable``
with the reason, and the caller reports the condition as unavailable.
"""
from __future__ import annotations

import atexit
import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests

log = logging.getLogger(__name__)

# Binary -> the Debian package that ships it, named in the error when it is missing.
PACKAGES = {"docker-registry": "docker-registry", "containerd": "containerd", "ctr": "containerd",
            "ctr-remote": "stargz-snapshotter", "ip": "iproute2", "tc": "iproute2", "mount": "mount",
            "umount": "mount"}
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}


class ServiceError(RuntimeError):
    """A service failed to start, answer or stop; the message says which and what to do."""


class MissingBinary(ServiceError):
    """A program the local backend needs is not installed."""


class PortInUse(ServiceError):
    """The port asked for is taken by another process."""


class ConditionUnavailable(ServiceError):
    """This machine cannot provide a condition (not root, no netem...): report it, never simulate it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def require_binary(name: str) -> str:
    """The path of ``name`` on PATH, or MissingBinary naming the Debian package to install."""
    path = shutil.which(name)
    if path is None:
        package = PACKAGES.get(name, name)
        raise MissingBinary(f"{name} not found on PATH: install the Debian package with "
                            f"`apt-get install {package}`")
    return path


def require_root(what: str) -> None:
    """Raise ConditionUnavailable unless we are root (mounts, namespaces and containerd need it)."""
    euid = os.geteuid()
    if euid != 0:
        raise ConditionUnavailable(f"{what} needs root (running as uid {euid}): run the local backend as root")


def child_env() -> dict[str, str]:
    """Our environment without proxy variables: all traffic stays on loopback and our own veth."""
    return {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}


def http_session() -> requests.Session:
    """A requests session that ignores proxy variables (a proxy must never see a 10.200.x.x request)."""
    session = requests.Session()
    session.trust_env = False
    return session


# --- the last-resort cleanup of everything still alive --------------------------------------------

_live: dict[int, object] = {}
_lock = threading.RLock()
_saved_handlers: dict[int, object] = {}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _register(resource) -> None:
    with _lock:
        _live[id(resource)] = resource
        if not _saved_handlers and threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                _saved_handlers[sig] = signal.getsignal(sig)
                signal.signal(sig, _on_signal)


def _unregister(resource) -> None:
    with _lock:
        _live.pop(id(resource), None)
        if not _live:
            _restore_handlers()


def _restore_handlers() -> None:
    if _saved_handlers and threading.current_thread() is threading.main_thread():
        for sig, handler in _saved_handlers.items():
            signal.signal(sig, handler)
        _saved_handlers.clear()


def close_all() -> None:
    """Close every live resource, newest first; errors are logged, never stop the others' cleanup."""
    with _lock:
        resources = list(_live.values())[::-1]
    for resource in resources:
        try:
            resource.close()
        except Exception as exc:  # noqa: BLE001 - cleanup must go on
            log.warning("cleanup of %r failed: %s", resource, exc)


def _on_signal(signum, frame) -> None:
    """Stop everything we started, then behave as the previous handler would have."""
    for sig in _SIGNALS:  # a second Ctrl-C must not interrupt the cleanup
        signal.signal(sig, signal.SIG_IGN)
    previous = _saved_handlers.get(signum, signal.SIG_DFL)
    try:
        close_all()
    finally:
        with _lock:
            for sig in _SIGNALS:
                signal.signal(sig, _saved_handlers.get(sig, signal.SIG_DFL))
            _saved_handlers.clear()
    if callable(previous):
        previous(signum, frame)  # Python's default SIGINT handler raises KeyboardInterrupt
    elif previous != signal.SIG_IGN:
        os.kill(os.getpid(), signum)  # SIG_DFL: die of the signal, as without us


atexit.register(close_all)


# --- processes -------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _libc = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the parent dies, even by SIGKILL."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Process:
    """A child in its own process group, logging to a file; ``stop`` leaves nothing of it behind."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv, self.log_path = argv, Path(log_path)
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env if env is not None else child_env(), start_new_session=True,
                                          preexec_fn=_die_with_parent)
        self.pid = self.pgid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, SIGKILL; then SIGKILL the whole group for anything the child left."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start_process(argv: list[str], log_path: Path, ready, timeout: float, what: str, poll_s: float = 0.02) -> Process:
    """Start ``argv`` and wait until ``ready()``; if it dies or the time runs out, stop it and say why, with its log."""
    process = Process(argv, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.alive():
        if ready():
            return process
        time.sleep(poll_s)
    process.stop()
    raise ServiceError(f"{what} within {timeout} s; its log:\n{process.log_tail()}")


def _run(argv: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    """A short command (ip, tc, mount); a failure raises ServiceError with its stderr."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired:
        raise ServiceError(f"`{' '.join(argv)}` did not finish within {timeout} s") from None
    if check and proc.returncode != 0:
        raise ServiceError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


class Resource:
    """Context-manager plumbing: register on enter, close on exit (idempotent), close on enter errors."""

    _closed = True

    def __enter__(self):
        self._closed = False
        _register(self)
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._close()
        finally:
            _unregister(self)

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def stop_then_remove(stop, scratch: Path | None) -> None:
    """A daemon's close: stop it, then delete its scratch folder (socket, state, log) even if stopping failed."""
    try:
        stop()
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


class Cleanup(Resource):
    """Run ``action`` once: on exit, or from the signal handlers / atexit if the process is stopped."""

    def __init__(self, action, name: str = "cleanup"):
        self.action, self.name = action, name

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        self.action()

    def __repr__(self) -> str:
        return f"Cleanup({self.name})"


class ScratchDir(Resource):
    """A new directory under ``parent`` (a disk, for the disk condition), removed with its contents."""

    def __init__(self, parent: str | Path | None = None, prefix: str = "pullstudy-scratch-"):
        self.parent, self.prefix = parent, prefix
        self.path: Path | None = None

    def _open(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=self.prefix, dir=self.parent))

    def _close(self) -> None:
        if self.path:
            for point in mounts_under(self.path):
                unmount(point)
            shutil.rmtree(self.path, ignore_errors=True)

    def __repr__(self) -> str:
        return f"ScratchDir({self.path})"


# --- the registry ----------------------------------------------------------------------------------

def free_port(bind: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((bind, 0))
        return s.getsockname()[1]


def check_port_free(bind: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((bind, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} on {bind} is already in use by another process: choose another "
                                "port, or port=None for a free one") from None
            raise


def binary_version(argv: list[str]) -> str:
    """The version word of ``X --version`` (e.g. 2.8.2+ds1, 1.6.20~ds1)."""
    out = _run(argv, timeout=10).stdout.split()
    words = [w for w in out if w[:1].isdigit() or (w[:1] == "v" and w[1:2].isdigit())]
    return words[0].lstrip("v") if words else " ".join(out)


# --- containerd ------------------------------------------------------------------------------------

def mount_of(path: str | Path) -> tuple[str, str, str]:
    """(mount point, filesystem type, device) of the mount holding ``path``, from /proc/self/mountinfo."""
    target = os.path.realpath(path)
    best = ("/", "unknown", "unknown")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        point = left.split()[4].replace("\\040", " ")
        fstype, source = (right.split() + ["", ""])[:2]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype, source)
    return best


def mounts_under(path: str | Path) -> list[str]:
    """Mount points at or below ``path``, deepest first (the order to unmount them)."""
    root = os.path.realpath(path).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def mount(fstype: str, source: str, target: str | Path, options: list[str] | tuple[str, ...] = ()) -> None:
    """``mount -t FSTYPE [-o OPTIONS] SOURCE TARGET``; a failure raises ServiceError with mount's words."""
    _run([require_binary("mount"), "-t", fstype, *(["-o", ",".join(options)] if options else []), source,
          str(target)])


def unmount(point: str) -> None:
    umount = shutil.which("umount") or "umount"
    if _run([umount, point], check=False).returncode != 0:
        _run([umount, "-l", point], check=False)  # busy: detach now, freed when the last user goes


def _empty_dir(path: Path) -> None:
    """Remove everything inside ``path`` but not ``path`` itself (it may be a mount point)."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


# --- tmpfs -----------------------------------------------------------------------------------------

class Tmpfs(Resource):
    """A tmpfs mounted on a temporary directory, unmounted and removed on exit."""

    def __init__(self, size: int | str = "1g"):
        self.size = size
        self.path: Path | None = None
        self._mounted = False

    def _open(self) -> None:
        require_root("mounting a tmpfs")
        require_binary("umount")
        self.path = Path(tempfile.mkdtemp(prefix="pullstudy-tmpfs-"))
        mount("tmpfs", "pullstudy-tmpfs", self.path, [f"size={self.size}", "mode=0755"])
        self._mounted = True

    def _close(self) -> None:
        if self.path is None:
            return
        if self._mounted:
            for point in mounts_under(self.path):
                unmount(point)
        try:
            self.path.rmdir()
        except OSError as exc:
            log.warning("could not remove %s: %s", self.path, exc)

    def __repr__(self) -> str:
        return f"Tmpfs({self.path}, size={self.size})"


def _wait_http(session: requests.Session, url: str, process: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.alive():
        try:
            session.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise ServiceError(f"nothing answered on {url} within {timeout} s; log:\n{process.log_tail()}")

"""Process managers for the local backend: a registry, containerd, a tmpfs and a rate-limited link.

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
import ipaddress
import itertools
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml

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


class CtrError(ServiceError):
    """A ``ctr`` command failed; ``stderr`` is kept for the caller."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


class DiskFull(CtrError):
    """ENOSPC while containerd wrote content or snapshots."""


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


class Registry(Resource):
    """The CNCF distribution registry (Debian ``docker-registry``) with a generated config.

    Filesystem storage in a temporary directory (or ``storage_dir``, e.g. another registry's, to serve
    the same images at a second address), plain http, no auth, deletes enabled. ``netns``: a
    :class:`RateLimitedLink` (or a namespace name, then ``bind`` must be its address) to run inside
    that network namespace, bound to the namespace's veth address.
    """

    def __init__(self, bind: str = "127.0.0.1", port: int | None = None, netns=None,
                 storage_dir: str | Path | None = None, readonly: bool = False, start_timeout: float = 15.0):
        self.netns_name = getattr(netns, "netns", netns)
        if isinstance(netns, RateLimitedLink):
            bind = netns.ns_address
        elif netns and bind.startswith("127."):
            raise ValueError(f"a registry in namespace {netns} must bind the namespace's veth address, not {bind}")
        self.bind, self.port, self.readonly, self.start_timeout = bind, port, readonly, start_timeout
        self._storage_arg = Path(storage_dir) if storage_dir else None
        self.process: Process | None = None
        self.tmp: Path | None = None

    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _open(self) -> None:
        binary = require_binary("docker-registry")
        prefix: list[str] = []
        if self.netns_name:
            require_root("a registry in a network namespace")
            prefix = [require_binary("ip"), "netns", "exec", self.netns_name]
        self.version = binary_version([binary, "--version"])
        self.tmp = Path(tempfile.mkdtemp(prefix="pullstudy-registry-"))
        self.storage_dir = self._storage_arg or self.tmp / "storage"
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        fixed = self.port is not None
        if fixed and not self.netns_name:
            check_port_free(self.bind, self.port)
        for _attempt in range(3):  # a free port can be taken between choosing and binding it
            if not fixed:
                self.port = free_port("127.0.0.1" if self.netns_name else self.bind)
            config = self.tmp / "config.yml"
            config.write_text(yaml.safe_dump(self._config()))
            self.process = Process(prefix + [binary, "serve", str(config)], self.tmp / "registry.log")
            if self._wait_ready():
                return
            self.process.stop()
            text = self.process.log_tail()
            if "address already in use" in text:
                if fixed:
                    raise PortInUse(f"port {self.port} on {self.bind} is already in use by another process: "
                                    "choose another port, or port=None for a free one")
                continue
            raise ServiceError(f"docker-registry did not answer on {self.url}/v2/ within {self.start_timeout} s; "
                               f"its log:\n{text}")
        raise ServiceError(f"docker-registry could not bind a free port on {self.bind} in 3 attempts")

    def _config(self) -> dict:
        return {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {"filesystem": {"rootdirectory": str(self.storage_dir)}, "delete": {"enabled": True},
                            "maintenance": {"uploadpurging": {"enabled": False},
                                            "readonly": {"enabled": self.readonly}}},
                "http": {"addr": self.host, "secret": secrets.token_hex(16)}}

    def _wait_ready(self) -> bool:
        session, deadline = http_session(), time.monotonic() + self.start_timeout
        try:
            while time.monotonic() < deadline and self.process.alive():
                try:
                    if session.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                        return True
                except requests.RequestException:
                    time.sleep(0.05)
            return False
        finally:
            session.close()

    def _close(self) -> None:
        if self.process:
            self.process.stop()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Registry({self.host}, netns={self.netns_name})"


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
        if self.process:
            self.process.stop()
        if self.remote:
            self.remote.stop()  # unmounts its lazily fetched layers
        for point in mounts_under(self.root_dir) + (mounts_under(self.tmp) if self.tmp else []):
            if point != os.path.realpath(self.root_dir):  # the caller's mount (a tmpfs) stays
                unmount(point)

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
        try:
            self.stop()
        finally:
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Containerd(root={self.root_dir})"


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


# --- the rate-limited link -------------------------------------------------------------------------

_link_counter = itertools.count()
NETEM_UNAVAILABLE = "netem unavailable on this kernel"
_IPV4 = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?)\b")

# A tiny HTTP server run inside the namespace: GET /bytes/N sends N bytes, POST reads the body.
_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/bytes/") else 0
        self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
        chunk = bytes(65536)
        while n > 0:
            self.wfile.write(chunk[:min(n, 65536)]); n -= 65536
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        while n > 0:
            got = self.rfile.read(min(n, 65536))
            if not got: break
            n -= len(got)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


class RateLimitedLink(Resource):
    """A network namespace behind a veth pair shaped by tbf in both directions.

    The pair's /30 (10.200.X.0/30, host .1, namespace .2) exists only on this machine: nothing is
    routed beyond the two ends, so it behaves like a slower loopback. ``delay_ms`` (one-way, each
    direction) needs the kernel's netem; without it the link raises ConditionUnavailable
    ("netem unavailable on this kernel"): a delay is never simulated.
    """

    def __init__(self, rate_mbit: float, delay_ms: float | None = None, burst_bytes: int | None = None,
                 latency_ms: float = 50.0):
        self.rate_mbit, self.delay_ms, self.latency_ms = float(rate_mbit), delay_ms, latency_ms
        rate_bytes = self.rate_mbit * 1e6 / 8
        self.burst_bytes = burst_bytes or max(32 * 1024, int(rate_bytes / 200))  # 5 ms of traffic
        n = next(_link_counter)
        self.netns = f"pullstudy-{os.getpid()}-{n}"
        self.host_dev, self.ns_dev = f"psh{os.getpid():x}x{n:x}", f"psn{os.getpid():x}x{n:x}"  # <= 15 chars
        self.host_address = self.ns_address = None
        self.measured_mbit: float | None = None
        self.measurements: list[dict] = []
        self.unavailable: dict[str, str] = {}
        self._created_ns = self._created_veth = False
        self._servers: list[Process] = []
        self.tmp: Path | None = None

    def _open(self) -> None:
        require_root("a network namespace with a rate-limited veth")
        self.ip, self.tc = require_binary("ip"), require_binary("tc")
        self.tmp = Path(tempfile.mkdtemp(prefix="pullstudy-link-"))
        _run([self.ip, "netns", "add", self.netns])
        self._created_ns = True
        _run([self.ip, "link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev, "netns", self.netns])
        self._created_veth = True
        net = self._choose_subnet()
        self.host_address, self.ns_address = f"{net}.{self._base + 1}", f"{net}.{self._base + 2}"
        _run([self.ip, "addr", "add", f"{self.host_address}/30", "dev", self.host_dev])
        _run([self.ip, "link", "set", self.host_dev, "up"])
        _run([self.ip, "-n", self.netns, "addr", "add", f"{self.ns_address}/30", "dev", self.ns_dev])
        _run([self.ip, "-n", self.netns, "link", "set", self.ns_dev, "up"])
        _run([self.ip, "-n", self.netns, "link", "set", "lo", "up"])
        for ns, dev in ((None, self.host_dev), (self.netns, self.ns_dev)):
            self._shape(ns, dev)

    def _choose_subnet(self) -> str:
        """A /30 in 10.200.0.0/16 that no address or route of this machine overlaps yet."""
        text = (_run([self.ip, "-o", "-4", "addr", "show"]).stdout + "\n"
                + _run([self.ip, "-4", "route", "show", "table", "all"]).stdout)
        used = [ipaddress.ip_network(m, strict=False) for m in _IPV4.findall(text)]
        start = (os.getpid() * 7 + int(self.netns.rsplit("-", 1)[-1])) % 16384
        for i in range(256):
            idx = (start + i) % 16384
            net = ipaddress.ip_network(f"10.200.{idx // 64}.{(idx % 64) * 4}/30")
            if not any(net.overlaps(u) for u in used if u.prefixlen > 0):  # a default route is no conflict
                self._base = (idx % 64) * 4
                return f"10.200.{idx // 64}"
        raise ServiceError("no free /30 in 10.200.0.0/16 for the link's veth pair")

    def _tc(self, ns: str | None, *args: str) -> subprocess.CompletedProcess:
        return _run([self.tc, *(["-n", ns] if ns else []), *args], check=False)

    def _shape(self, ns: str | None, dev: str) -> None:
        rate = f"{self.rate_mbit}mbit"
        proc = self._tc(ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", rate,
                        "burst", str(self.burst_bytes), "latency", f"{self.latency_ms}ms")
        if proc.returncode != 0:
            raise ConditionUnavailable(f"tc tbf on {dev} failed: {proc.stderr.strip()}")
        if self.delay_ms:
            proc = self._tc(ns, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "netem",
                            "delay", f"{self.delay_ms}ms")
            if proc.returncode != 0:
                reason = f"{NETEM_UNAVAILABLE} (tc: {proc.stderr.strip()})"
                self.unavailable["delay"] = reason
                raise ConditionUnavailable(reason)

    def ns_popen(self, argv: list[str], log_name: str) -> Process:
        """A process inside the namespace, stopped with the link."""
        proc = Process([self.ip, "netns", "exec", self.netns, *argv], self.tmp / log_name)
        self._servers.append(proc)
        return proc

    def measure(self, nbytes: int = 4 * 1024 * 1024, url: str | None = None, timeout: float = 60) -> float:
        """Mbit/s actually achieved towards the host: time a download of ``nbytes`` (or of ``url``).

        Without ``url``, a tiny HTTP server is started in the namespace for the duration. The upload
        direction (host -> namespace) is measured too and kept in ``measurements``.
        """
        session = http_session()
        server = None
        try:
            if url is None:
                port = 8000 + secrets.randbelow(1000)
                server = self.ns_popen([sys.executable, "-c", _SERVER, self.ns_address, str(port)], "measure.log")
                base = f"http://{self.ns_address}:{port}"
                _wait_http(session, f"{base}/bytes/0", server, timeout=10)
                url = f"{base}/bytes/{nbytes}"
                up = self._time_upload(session, base, nbytes, timeout)
                self.measurements.append({"direction": "host->namespace", "bytes": nbytes, **up})
            start = time.perf_counter()
            got = 0
            with session.get(url, stream=True, timeout=timeout) as response:
                response.raise_for_status()
                for chunk in response.iter_content(1 << 16):
                    got += len(chunk)
            seconds = time.perf_counter() - start
        finally:
            session.close()
            if server:
                server.stop()
                self._servers.remove(server)
        mbit = got * 8 / seconds / 1e6
        self.measurements.append({"direction": "namespace->host", "bytes": got, "seconds": seconds, "mbit": mbit})
        self.measured_mbit = mbit
        return mbit

    @staticmethod
    def _time_upload(session, base: str, nbytes: int, timeout: float) -> dict:
        body = bytes(nbytes)
        start = time.perf_counter()
        session.post(f"{base}/upload", data=body, timeout=timeout).raise_for_status()
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "mbit": nbytes * 8 / seconds / 1e6}

    def _close(self) -> None:
        for proc in self._servers:
            proc.stop()
        self._servers.clear()
        if self._created_ns:
            _run([self.ip, "netns", "del", self.netns], check=False)  # takes its veth end, and so the pair, along
        if self._created_veth and _run([self.ip, "link", "show", self.host_dev], check=False).returncode == 0:
            _run([self.ip, "link", "del", self.host_dev], check=False)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"RateLimitedLink({self.netns}, {self.rate_mbit} Mbit/s, {self.host_address}<->{self.ns_address})"


def _wait_http(session: requests.Session, url: str, process: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.alive():
        try:
            session.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise ServiceError(f"nothing answered on {url} within {timeout} s; log:\n{process.log_tail()}")

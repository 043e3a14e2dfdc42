"""Notebook kernels forked from one process that has already imported what the notebooks import.

Why (issue 16): every notebook of ``make reproduce`` runs in its own fresh kernel, as it must, and a
fresh kernel spends ~2 s of CPU importing the same libraries (IPython, ipykernel, pandas, numpy, scipy,
altair and the study modules) before its first line of analysis: on two cores, seven kernels pay ~14 s
of the whole run. Here one *kernel server* imports them once, then forks a kernel for each notebook.
A forked kernel is still a separate process with nothing shared at run time: it starts from the state
the imports left (copy-on-write), exactly as a fresh process would after running the same imports,
and from there it is an ordinary ``python -m ipykernel_launcher`` (the kernelspec's own command,
run by :mod:`runpy` in the child). What could differ from a fresh process is handled in the child:
its own session (the kernel manager signals its process group), its own stdio, working folder,
environment and ``sys.argv``, fresh random state, every inherited descriptor closed; and it dies with
the server (``PR_SET_PDEATHSIG``), which dies with the runner (its stdin closes). The outputs are those
of ordinary kernels, byte for byte (tests/test_warm_kernels.py). ``make reproduce REPRODUCE_ARGS=--cold-kernels``
uses ordinary kernels; so does anything the server cannot fork (another kernel command, no Linux
pidfd, a preload that started a thread).

What is preloaded is read from the notebooks themselves: every module a code cell imports
(:func:`notebook_imports`), plus the kernel's own modules. Nothing is initialised beyond importing:
no kernel, no ZeroMQ context, no chart renderer (vl-convert starts its JavaScript engine on first use,
in the kernel). Modules that read the environment when imported see the runner's, which is also what
the kernels get.

The server is a small local service: a Unix socket in a private (0700) temporary folder, the peer's
user checked; a request is one kernel command with its environment, folder and three descriptors
(SCM_RIGHTS); the reply is the kernel's pid, then its exit status. A client that goes away kills its
kernel.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import functools
import importlib
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

#: The kernel's own modules (what ``python -m ipykernel_launcher`` imports before the first cell).
KERNEL_MODULES = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger", "IPython")
#: The kernelspec command this server can start: ``<this python> -m ipykernel_launcher ...``.
LAUNCHER = "ipykernel_launcher"
READY_TIMEOUT_S = 120.0
FOLDER_PREFIX = "pullstudy-kernels-"
_PR_SET_PDEATHSIG = 1
_HEADER = struct.Struct("!I")


class WarmKernelsUnavailable(RuntimeError):
    """The server could not start or cannot fork here; ordinary kernels are used instead."""


# ---------------------------------------------------------------- what to preload


def notebook_imports(notebooks: Iterable[str | Path]) -> list[str]:
    """The modules the notebooks' code cells import (``import a.b`` -> ``a.b``; ``from a import b`` ->
    ``a`` and ``a.b``, the latter only if it is a module), in first-seen order. A cell that is not plain
    Python (a magic) is skipped: it only means less is preloaded."""
    seen: dict[str, None] = {}
    for path in notebooks:
        try:
            cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
        except (OSError, ValueError):
            continue  # the runner reports an unreadable notebook; preloading is only an optimisation
        for cell in cells:
            if cell.get("cell_type") != "code":
                continue
            source = cell.get("source", "")
            try:
                tree = ast.parse("".join(source) if isinstance(source, list) else source)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        seen.setdefault(alias.name)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    seen.setdefault(node.module)
                    for alias in node.names:
                        if alias.name != "*":
                            seen.setdefault(f"{node.module}.{alias.name}")
    return list(seen)


def preload(modules: Sequence[str]) -> list[str]:
    """Import ``modules`` (a name that is an attribute, not a module, or that fails to import, is left
    for the kernel to import and report itself); the names imported."""
    done = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the notebook's own import will raise it where it belongs
            continue
        done.append(name)
    return done


# ---------------------------------------------------------------- the server (its own process)


def _send(sock: socket.socket, message: dict, fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    payload = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], list(fds))
    else:
        sock.sendall(payload)


def _receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message and the descriptors sent with it; (None, []) when the peer closed first."""
    buffer, fds = b"", []
    while len(buffer) < _HEADER.size or len(buffer) < _HEADER.size + _HEADER.unpack_from(buffer)[0]:
        if max_fds and not fds:
            chunk, got, _, _ = socket.recv_fds(sock, 1 << 16, max_fds)
            fds.extend(got)
        else:
            chunk = sock.recv(1 << 16)
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None, []
        buffer += chunk
    (length,) = _HEADER.unpack_from(buffer)
    return json.loads(buffer[_HEADER.size:_HEADER.size + length]), fds


def _exit_code(status: int) -> int:
    """A wait status as Popen reports it: the exit code, or minus the signal that ended the process."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _die_with_parent(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def _become_kernel(request: dict, fds: list[int], parent: int, keep_closed: Sequence[socket.socket]) -> None:
    """In the forked child: become ``python -m ipykernel_launcher <args>`` and never return."""
    code = 1
    try:
        for sock in keep_closed:  # the server's sockets: their descriptors are closed below, not by GC later
            sock.detach()
        os.setsid()  # as jupyter_client's launcher does (start_new_session): its own process group
        _die_with_parent(signal.SIGKILL)
        if os.getppid() != parent:  # the server died before the line above
            os._exit(1)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):  # stdin, stdout, stderr, as the kernel manager asked
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # what Popen's close_fds does
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        random.seed()  # a fresh process draws its own seeds; a fork would repeat the server's
        if "numpy.random" in sys.modules:
            sys.modules["numpy.random"].seed()
        # ipykernel reads JPY_PARENT_PID when it is imported (the default of IPKernelApp.parent_handle),
        # which here was in the server: give the kernel the value it would have read itself.
        parent_pid = [f"--IPKernelApp.parent_handle={request['env']['JPY_PARENT_PID']}"] \
            if request["env"].get("JPY_PARENT_PID") else []
        sys.argv = [LAUNCHER, *request["argv"], *parent_pid]
        sys.path[0] = os.getcwd()  # what `python -m` puts first (ipykernel_launcher removes it again)
        import runpy

        runpy.run_module(LAUNCHER, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the kernel's own traceback, on its stderr (the kernel log)
        import traceback

        traceback.print_exc()
    finally:
        import atexit

        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # what interpreter exit runs (IPython's history, ipykernel's clean-up)
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(socket_path: str, notebooks: Sequence[str]) -> int:
    """The server's main loop, single-threaded so that forking is safe: preload, say ``ready``, then fork
    one kernel per request until stdin closes (the runner is gone) or SIGTERM."""
    _die_with_parent(signal.SIGTERM)
    if not hasattr(os, "pidfd_open"):
        print("unavailable: no os.pidfd_open (Linux 5.3+, Python 3.9+)", flush=True)
        return 1
    preload([*KERNEL_MODULES, *notebook_imports(notebooks)])
    if threading.active_count() > 1:  # forking a process with other Python threads is not safe
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.current_thread())
        print(f"unavailable: a preloaded module started a thread ({names})", flush=True)
        return 1
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)
    print(f"ready {os.getpid()}", flush=True)

    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(sys.stdin.fileno(), select.POLLIN)
    clients: dict[int, socket.socket] = {}  # connection fd -> connection
    kernels: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
    by_connection: dict[int, int] = {}  # connection fd -> pidfd
    uid = os.getuid()

    def finish(pidfd: int, code: int | None) -> None:
        pid, conn = kernels.pop(pidfd)
        poller.unregister(pidfd)
        os.close(pidfd)
        by_connection.pop(conn.fileno(), None)
        if code is not None:
            with contextlib.suppress(OSError):
                _send(conn, {"exit": code})
        clients.pop(conn.fileno(), None)
        poller.unregister(conn)
        conn.close()

    try:
        while not stopping:
            try:
                events = poller.poll(500)
            except InterruptedError:
                continue
            for fd, _ in events:
                if fd == sys.stdin.fileno():
                    if not os.read(fd, 4096):
                        return 0
                elif fd == listener.fileno():
                    conn, _ = listener.accept()
                    peer_uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                  struct.calcsize("3i")))[1]
                    if peer_uid != uid:
                        conn.close()
                        continue
                    clients[conn.fileno()] = conn
                    poller.register(conn, select.POLLIN)
                elif fd in kernels:
                    pid, _ = kernels[fd]
                    _, status = os.waitpid(pid, 0)
                    finish(fd, _exit_code(status))
                elif fd in by_connection:  # a client with a running kernel went away: the kernel goes too
                    pidfd = by_connection[fd]
                    pid, _ = kernels[pidfd]
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    finish(pidfd, None)
                elif fd in clients:
                    conn = clients[fd]
                    request, fds = _receive(conn, max_fds=3)
                    if request is None or len(fds) != 3:
                        for extra in fds:
                            os.close(extra)
                        clients.pop(fd)
                        poller.unregister(conn)
                        conn.close()
                        continue
                    sys.stdout.flush()
                    pid = os.fork()
                    if pid == 0:
                        _become_kernel(request, fds, os.getppid(), [listener, *clients.values()])
                    for received in fds:
                        os.close(received)
                    pidfd = os.pidfd_open(pid)
                    kernels[pidfd] = (pid, conn)
                    by_connection[fd] = pidfd
                    poller.register(pidfd, select.POLLIN)
                    _send(conn, {"pid": pid})
    finally:
        for pidfd, (pid, _) in list(kernels.items()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            finish(pidfd, -signal.SIGKILL)
        listener.close()
        _remove_socket(socket_path)  # also when the runner was killed and cannot
    return 0


def _remove_socket(socket_path: str) -> None:
    """The socket and its private folder (made by :class:`WarmKernelServer`), if still there."""
    with contextlib.suppress(OSError):
        os.unlink(socket_path)
    folder = os.path.dirname(socket_path)
    if os.path.basename(folder).startswith(FOLDER_PREFIX):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


# ---------------------------------------------------------------- the runner's side


class ForkedKernel:
    """A kernel process the server forked, with the part of :class:`subprocess.Popen` that
    jupyter_client's :class:`LocalProvisioner` uses (pid, poll, wait, signals). Its exit status comes
    from the server, its parent; closing this object's connection kills it."""

    stdin = stdout = stderr = None

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self._conn = conn
        self.pid = pid
        self.returncode: int | None = None

    def _read_exit(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        ready, _, _ = select.select([self._conn], [], [], timeout)
        if not ready:
            return
        message, _ = _receive(self._conn)
        # No message: the server is gone, and with it (PR_SET_PDEATHSIG) the kernel.
        self.returncode = int(message["exit"]) if message else -signal.SIGKILL
        self._conn.close()

    def poll(self) -> int | None:
        self._read_exit(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._read_exit(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmKernelServer:
    """The kernel server of one run: started with the notebooks it preloads for, stopped on exit
    (also on error and Ctrl-C: :meth:`close` in a ``with`` block; if the runner is killed, the server
    sees its stdin close, and it is also signalled when its parent dies)."""

    def __init__(self, notebooks: Sequence[Path], cwd: Path) -> None:
        self._folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)  # 0700: only this user can connect
        self.socket_path = os.path.join(self._folder, "server.sock")
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, self.socket_path, *map(str, notebooks)],
            cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal is the runner's to handle, not the server's
        )
        self._ready: bool | None = None
        self._lock = threading.Lock()
        self.reason = ""
        self.cancelled = False

    def ready(self) -> bool:
        """Whether the server has preloaded and listens (waits for it the first time)."""
        with self._lock:
            if self._ready is None:
                line = b""
                if select.select([self._process.stdout], [], [], READY_TIMEOUT_S)[0]:
                    line = self._process.stdout.readline()
                self._ready = line.startswith(b"ready ")
                if not self._ready and not self.cancelled:
                    self.reason = line.decode(errors="replace").strip() or "the kernel server did not start"
                    print(f"note: warm kernels {self.reason}; every kernel starts from scratch (slower, the same "
                          "outputs)", file=sys.stderr)
                    self.close()
            return self._ready

    def cancel(self) -> None:
        """The run is being interrupted: start no more kernels (one asked for now fails), stop the server."""
        self.cancelled = True
        with contextlib.suppress(OSError):
            self._process.kill()  # a kernel waiting for it to be ready stops waiting; forked kernels die with it

    def launch(self, argv: Sequence[str], env: dict[str, str], cwd: str, stdio: Sequence[int]) -> ForkedKernel:
        """Fork a kernel running ``python -m ipykernel_launcher *argv`` (``stdio``: descriptors for its
        stdin, stdout and stderr)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.socket_path)
            _send(conn, {"argv": list(argv), "env": dict(env), "cwd": str(cwd)}, stdio)
            message, _ = _receive(conn)
        except OSError as exc:
            conn.close()
            raise WarmKernelsUnavailable(f"the kernel server did not answer: {exc}") from exc
        if not message or "pid" not in message:
            conn.close()
            raise WarmKernelsUnavailable("the kernel server refused the kernel")
        return ForkedKernel(conn, int(message["pid"]))

    def close(self) -> None:
        if self._process.poll() is None:
            if self._ready is not True:  # no kernel was asked for: nothing to stop but a preload (a no-change run)
                self._process.kill()
            with contextlib.suppress(OSError):
                self._process.stdin.close()  # the server's signal to stop (it kills its kernels)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        _remove_socket(self.socket_path)

    def __enter__(self) -> "WarmKernelServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _fileno(stream: Any, default: int) -> int:
    if stream is None:
        return default
    return stream if isinstance(stream, int) else stream.fileno()


@functools.cache
def provisioner_class() -> type:
    """jupyter_client's local provisioner, with the kernel forked by a :class:`WarmKernelServer` when the
    command is this interpreter's ``-m ipykernel_launcher``; anything else is launched as usual. (A
    function, so that importing this module does not import jupyter_client: the runner starts the server
    before its own imports.)"""
    from jupyter_client.provisioning import LocalProvisioner

    class WarmProvisioner(LocalProvisioner):
        server: WarmKernelServer | None = None

        async def launch_kernel(self, cmd: list[str], **kwargs: Any):
            server = self.server
            forkable = bool(server) and cmd[:3] == [sys.executable, "-m", LAUNCHER] and server.ready()
            if server and server.cancelled:  # also while it waited for ready(): Ctrl-C came
                raise RuntimeError("the run was interrupted: no kernel is started")
            if not forkable:
                return await super().launch_kernel(cmd, **kwargs)
            env = dict(kwargs.get("env") or os.environ)
            env["JPY_PARENT_PID"] = str(os.getpid())  # what jupyter_client's launcher adds for its kernels
            cwd = kwargs.get("cwd") or os.getcwd()
            try:
                with open(os.devnull, "rb") as devnull:  # the launcher gives a kernel a closed pipe: no input
                    stdio = [devnull.fileno(), _fileno(kwargs.get("stdout"), 1), _fileno(kwargs.get("stderr"), 2)]
                    self.process = server.launch(cmd[3:], env, cwd, stdio)
            except WarmKernelsUnavailable as exc:  # the server went away during the run: start it as usual
                print(f"note: {exc}; this kernel starts from scratch", file=sys.stderr)
                return await super().launch_kernel(cmd, **kwargs)
            self.pid = self.pgid = self.process.pid  # the child calls setsid(): its pid is its group
            self.cwd = cwd
            return self.connection_info

    return WarmProvisioner


def use_server(manager: Any, server: WarmKernelServer | None) -> None:
    """Give a kernel manager (before its kernel starts) a provisioner that forks from ``server``."""
    if server is None or manager.provisioner is not None:
        return
    manager.kernel_id = manager.kernel_id or uuid.uuid4().hex
    provisioner = provisioner_class()(kernel_id=manager.kernel_id, kernel_spec=manager.kernel_spec, parent=manager)
    provisioner.server = server
    manager.provisioner = provisioner


def start_for_command_line(argv: Sequence[str]) -> WarmKernelServer | None:
    """The server for ``python -m pullstudy.report.runner <argv>``, started before the runner's own imports
    so that both proceed at once (issue 16: ~1 s at the start of every run). Reads only the options that
    choose the notebooks; the runner checks all of them, and stops the server if it has nothing to run.
    None with ``--cold-kernels`` or ``--help``, or when the notebooks folder holds none."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--notebooks", type=Path)
    parser.add_argument("--only", nargs="+", action="extend")
    parser.add_argument("--cold-kernels", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    try:
        known, _ = parser.parse_known_args(list(argv))
    except SystemExit:  # a malformed option: the runner's own parser says what is wrong
        return None
    if known.cold_kernels or known.help:
        return None
    from pullstudy import paths

    folder = Path(known.notebooks or paths.notebooks_dir())
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not known.only or p.stem in known.only)
    return WarmKernelServer(notebooks, folder.resolve()) if notebooks else None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m pullstudy.report.warm_kernels SOCKET NOTEBOOK...", file=sys.stderr)
        return 2
    return serve(args[0], args[1:])


if __name__ == "__main__":
    raise SystemExit(main())

"""Real containers started with containerd and runc (``ctr``), timed until they print their ready line.

The measurement of stargz's hello-bench and SOCI's benchmark, after a cold pull: ``create_s`` is
``ctr containers create`` (the container's spec and its writable snapshot on the image),
``run_s`` runs from ``ctr tasks start`` (runc starts the process) to the line that says the work is
done (``ready``). Under a lazy snapshotter the files the process reads are fetched during
``run_s``; that is where the cost of lazy pulling moves.

A container that does not print its ready line within its timeout is killed, and the run is recorded
as ``timeout`` with the output it gave; one that exits first is recorded as ``exited`` with its exit
code. Either way the task, the container and its snapshot are deleted before returning (and, should
this process be stopped meanwhile, by :meth:`Containerd.stop`, which reaps what is left).
"""
from __future__ import annotations

import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from .containerd import Containerd
from .lifecycle import ServiceError, child_env

READY, TIMEOUT, EXITED = "ready", "timeout", "exited"
EXIT_GRACE_S = 10.0   # after the ready line, how long the process may take to exit by itself


@dataclass(frozen=True)
class ContainerRun:
    """One container started and stopped: times, outcome and the tail of its output."""

    create_s: float
    run_s: float | None     # to the ready line; None unless status is ready
    status: str             # ready, timeout or exited
    exit_code: int | None
    output: str             # the last lines it printed (stdout and stderr)
    timeout_s: float

    @property
    def ready(self) -> bool:
        return self.status == READY


def _lines(stream, into: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        into.put((time.perf_counter(), line))
    into.put((time.perf_counter(), None))


def run_container(ctd: Containerd, ref: str, command: Sequence[str], *, ready: str = READY,
                  timeout_s: float = 120.0, name: str = "pullstudy-app") -> ContainerRun:
    """Create and start a container of the pulled image ``ref`` running ``command``; wait for ``ready``.

    ``ready`` must start a line of the output. The container gets its own network namespace with
    loopback only (ctr's default): nothing it does reaches beyond this machine.
    """
    t0 = time.perf_counter()
    # "--": the command's own flags (sh -c) are not ctr's
    ctd.ctr("containers", "create", "--snapshotter", ctd.snapshotter, "--", ref, name, *command, timeout=timeout_s)
    create_s = time.perf_counter() - t0
    argv = [ctd.ctr_binary, "--address", str(ctd.socket), "--namespace", ctd.namespace, "tasks", "start", name]
    lines: queue.Queue = queue.Queue()
    status, run_s, tail = TIMEOUT, None, []
    proc = None
    try:
        t1 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, env=child_env())
        ctd._inflight.add(proc)
        reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        deadline = t1 + timeout_s
        while True:
            try:
                at, line = lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break  # timeout
            if line is None:
                status = EXITED
                break
            tail = (tail + [line.rstrip("\n")])[-20:]
            if line.startswith(ready):
                status, run_s = READY, at - t1
                break
        if status in (READY, EXITED):
            try:
                proc.wait(timeout=EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        exit_code = None
        if proc.poll() is None:  # timed out, or slow to exit after its work: stop it
            _kill_task(ctd, name)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            exit_code = proc.returncode
        reader.join(timeout=5)
        while not lines.empty():
            _, line = lines.get()
            if line is not None:
                tail = (tail + [line.rstrip("\n")])[-20:]
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            ctd._inflight.discard(proc)
        remove_container(ctd, name)
    return ContainerRun(create_s, run_s, status, exit_code, "\n".join(tail)[-2000:], timeout_s)


def _kill_task(ctd: Containerd, name: str) -> None:
    try:
        ctd.ctr("tasks", "kill", "--signal", "SIGKILL", name, timeout=30)
    except ServiceError:
        pass  # already gone


def remove_container(ctd: Containerd, name: str) -> None:
    """Delete the container's task (killed first if it runs), the container and its snapshot."""
    tasks = ctd.ctr("tasks", "ls", timeout=30).stdout.splitlines()[1:]
    if any(line.split()[:1] == [name] for line in tasks):
        _kill_task(ctd, name)
        deadline = time.monotonic() + 30
        while True:
            try:
                ctd.ctr("tasks", "delete", name, timeout=30)
                break
            except ServiceError:
                if time.monotonic() > deadline:
                    ctd.ctr("tasks", "delete", "--force", name, timeout=30)
                    break
                time.sleep(0.1)
    if name in ctd.ctr("containers", "ls", "-q", timeout=30).stdout.split():
        ctd.ctr("containers", "delete", name, timeout=30)


def leftovers(ctd: Containerd) -> dict[str, list[str]]:
    """Tasks and containers containerd still has: empty after every run (the tests check it)."""
    tasks = [line.split()[0] for line in ctd.ctr("tasks", "ls").stdout.splitlines()[1:] if line.strip()]
    return {"tasks": tasks, "containers": ctd.ctr("containers", "ls", "-q").stdout.split()}

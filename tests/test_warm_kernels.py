"""Kernels forked from a process that has imported what the notebooks import (issue 16): the outputs of
ordinary kernels, each kernel its own process, and nothing left running however the run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pullstudy import paths
from pullstudy.report import warm_kernels
from pullstudy.report.runner import run_notebooks
from notebook_support import interrupt_runner, run_quietly, write_notebook
from test_runner_fast import SMALL, _outputs

pytestmark = pytest.mark.notebooks

# A notebook that says what its kernel is: whether a module only a notebook cell imports was there
# before the cell ran, its process, session, parent, folder, environment, argv and random draws.
PROBE = (
    "import json, os, random, sys\n"
    "preloaded = 'xml.dom.minidom' in sys.modules\n"
    "import numpy as np\n"
    "import xml.dom.minidom\n"
    "info = dict(preloaded=preloaded, pid=os.getpid(), ppid=os.getppid(), sid=os.getsid(0), pgid=os.getpgid(0),\n"
    "            cwd=os.getcwd(), probe=os.environ.get('PULLSTUDY_PROBE'), argv=sys.argv,\n"
    "            parent=os.environ.get('JPY_PARENT_PID'), draw=random.random(), np_draw=float(np.random.random()),\n"
    "            path=sys.path, fds=len(os.listdir('/proc/self/fd')))\n"
    "(__import__('pathlib').Path(output_dir) / 'kernel.json').write_text(json.dumps(info))\n"
)


def _probe_notebooks(folder: Path) -> list[str]:
    stems = ["01-probe", "02-probe"]
    for stem in stems:
        write_notebook(folder / f"{stem}.ipynb", PROBE)
    return stems


def _kernel(results: Path, stem: str) -> dict:
    return json.loads((results / stem / "kernel.json").read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return status not in ("Z", "X")


def _servers() -> list[int]:
    """Kernel servers started by this test process (its children) still running."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if b"pullstudy.report.warm_kernels" in cmd and parent == os.getpid() and _alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def test_warm_kernels_write_what_ordinary_kernels_write(tmp_path: Path) -> None:
    """Two real studies, forked kernels against kernels started from scratch: the same CSVs, SVGs, metrics."""
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    a = run_notebooks(paths.notebooks_dir(), warm, SMALL, progress=False, jobs=2)
    b = run_notebooks(paths.notebooks_dir(), cold, SMALL, progress=False, jobs=2, warm=False)
    assert all(r.ok for r in a + b), [r.error for r in a + b]
    x, y = _outputs(warm), _outputs(cold)
    assert any(k.endswith(".svg") for k in x) and sorted(x) == sorted(y)
    assert [k for k in x if x[k] != y[k]] == []


def test_a_forked_kernel_is_a_process_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULLSTUDY_PROBE", "from the runner")
    stems = _probe_notebooks(tmp_path / "nb")
    run_quietly(tmp_path / "nb", tmp_path / "warm", "-j", "2")
    run_quietly(tmp_path / "nb", tmp_path / "cold", "-j", "2", "--cold-kernels")
    warm = [_kernel(tmp_path / "warm", s) for s in stems]
    cold = [_kernel(tmp_path / "cold", s) for s in stems]
    assert [k["preloaded"] for k in warm] == [True, True]  # imported by the server, before the cell ran
    assert [k["preloaded"] for k in cold] == [False, False]
    for k in warm + cold:
        assert k["sid"] == k["pgid"] == k["pid"]  # its own session: the kernel manager signals its group
        assert k["cwd"] == str(tmp_path / "nb") and k["path"] == cold[0]["path"]
        assert k["probe"] == "from the runner" and k["parent"] == str(os.getpid())
    assert max(k["fds"] for k in warm) <= min(k["fds"] for k in cold)  # no descriptor of the server's inherited
    assert warm[0]["ppid"] == warm[1]["ppid"] != os.getpid()  # both forked by the one server
    for w, c in zip(warm, cold):  # the kernelspec's command line, as `python -m ipykernel_launcher` sees it
        assert w["argv"][0] == c["argv"][0] and w["argv"][1] == c["argv"][1] == "-f"
    draws = {k["draw"] for k in warm} | {k["np_draw"] for k in warm}
    assert len(draws) == 4  # fresh random state in each kernel, not the server's repeated
    assert _servers() == []  # the server stopped with the run


def test_killed_runner_leaves_no_server_or_kernel(tmp_path: Path) -> None:
    """SIGKILL to the runner mid-cell (no clean-up of its own can run): the server sees its stdin close
    and stops its kernels; a kernel would also die with the server (PR_SET_PDEATHSIG)."""
    d = tmp_path / "nb"
    write_notebook(d / "01-slow.ipynb", "import os, pathlib, time\n"
                   "(pathlib.Path(output_dir) / 'pid').write_text(f'{os.getpid()} {os.getppid()}')\ntime.sleep(120)")
    results = tmp_path / "r"
    runner = subprocess.Popen([sys.executable, "-m", "pullstudy.report.runner", "--notebooks", str(d),
                               "--results", str(results), "--no-progress"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = results / "01-slow" / "pid"
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        kernel, server = map(int, pid_file.read_text().split())
        assert _alive(kernel) and _alive(server)
        folder = Path(Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")[3].decode()).parent
        assert folder.name.startswith(warm_kernels.FOLDER_PREFIX) and folder.is_dir()
        runner.kill()
        runner.wait(timeout=10)
        deadline = time.monotonic() + 15
        while (_alive(kernel) or _alive(server)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(kernel) and not _alive(server)
        assert not folder.exists()  # the server removed its socket's folder itself
    finally:
        if runner.poll() is None:
            runner.kill()


def test_the_server_preloads_what_the_notebooks_import(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "01-x.ipynb", "import a.b\nfrom c import d, e as f\nfrom . import rel\n",
                        "%matplotlib inline\nimport not_python_cell", "def g():\n    import lazy.inside")
    assert warm_kernels.notebook_imports([nb]) == ["a.b", "c", "c.d", "c.e", "lazy.inside"]
    assert warm_kernels.notebook_imports([tmp_path / "missing.ipynb"]) == []
    assert warm_kernels.preload(["json", "no_such_module_here", "os.path"]) == ["json", "os.path"]


def test_a_kernel_command_it_cannot_fork_starts_as_usual(tmp_path: Path) -> None:
    """The server forks only ``<this python> -m ipykernel_launcher``; another command is started by
    jupyter_client as it would be without the server (here: a Python that is not the runner's)."""
    import asyncio

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_client.provisioning import LocalProvisioner

    notebook = write_notebook(tmp_path / "01-x.ipynb", "x = 1")
    with warm_kernels.WarmKernelServer([notebook], tmp_path) as server:
        km = AsyncKernelManager(kernel_name="python3")
        warm_kernels.use_server(km, server)
        assert isinstance(km.provisioner, warm_kernels.provisioner_class())
        km.kernel_spec.argv[0] = os.path.realpath(sys.executable) + "-not-this-one"
        launched = []

        async def launch(self, cmd, **kw):
            launched.append(cmd)
            raise RuntimeError("started as usual")

        original = LocalProvisioner.launch_kernel
        LocalProvisioner.launch_kernel = launch
        try:
            with pytest.raises(RuntimeError, match="started as usual"):
                asyncio.run(km.provisioner.launch_kernel([km.kernel_spec.argv[0], "-m", "ipykernel_launcher"]))
        finally:
            LocalProvisioner.launch_kernel = original
        assert launched and launched[0][0].endswith("-not-this-one")


def test_a_server_that_cannot_start_means_ordinary_kernels_and_a_note(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capfd: pytest.CaptureFixture) -> None:
    """A server that exits before it is ready (here: a preload that starts a thread, which makes forking
    unsafe) leaves the run to ordinary kernels, with one line saying so; the notebook still runs."""
    d = tmp_path / "nb"
    (tmp_path / "threading_preload.py").write_text("import threading, time\n"
                                                 "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    write_notebook(d / "01-x.ipynb", "import threading_preload\nimport os, pathlib\n"
                   "(pathlib.Path(output_dir) / 'ppid').write_text(str(os.getppid()))")
    results = tmp_path / "r"
    runs = run_notebooks(d, results, progress=False)
    assert [r.ok for r in runs] == [True], [r.error for r in runs]
    assert int((results / "01-x" / "ppid").read_text()) == os.getpid()  # started by jupyter_client here
    err = capfd.readouterr().err
    assert "note: warm kernels unavailable: a preloaded module started a thread" in err
    assert _servers() == []


def test_a_server_gone_during_a_run_means_the_next_kernel_starts_as_usual(tmp_path: Path,
                                                                          capfd: pytest.CaptureFixture) -> None:
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    notebook = write_notebook(tmp_path / "01-x.ipynb", "x = 1")
    with warm_kernels.WarmKernelServer([notebook], tmp_path) as server:
        assert server.ready()
        server._process.kill()
        server._process.wait()

        async def start_and_stop() -> type:
            km = AsyncKernelManager(kernel_name="python3")
            warm_kernels.use_server(km, server)
            await km.start_kernel()
            try:
                return type(km.provisioner.process)
            finally:
                await km.shutdown_kernel(now=True)

        assert asyncio.run(start_and_stop()) is subprocess.Popen  # jupyter_client's own launch
    assert "the kernel server did not answer" in capfd.readouterr().err


@pytest.mark.parametrize("between_s", [0.02, 0.1, 0.5])
def test_ctrl_c_twice_with_notebooks_running_concurrently(tmp_path: Path, between_s: float) -> None:
    """SIGINT twice in a row (as ``timeout -s INT`` sends it: to the runner and to its group) while two
    notebooks run at once: both are listed as interrupted, no traceback, exit 130, nothing left running."""
    d = tmp_path / "nb"
    for stem in ("01-slow", "02-slow"):
        write_notebook(d / f"{stem}.ipynb", "import os, pathlib, time\n"
                       "(pathlib.Path(output_dir) / 'pid').write_text(f'{os.getpid()} {os.getppid()}')\ntime.sleep(120)")
    results = tmp_path / "r"
    pids = [results / stem / "pid" for stem in ("01-slow", "02-slow")]
    processes: set[int] = set()

    def both_running() -> bool:
        if not all(p.exists() and p.read_text() for p in pids):
            return False
        processes.update(int(x) for p in pids for x in p.read_text().split())
        return True

    code, stdout, stderr = interrupt_runner(d, results, both_running, "-j", "2", again_after_s=between_s)
    assert processes and code == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "INTERRUPTED 01-slow" in stdout and "INTERRUPTED 02-slow" in stdout
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in processes)  # both kernels and their server

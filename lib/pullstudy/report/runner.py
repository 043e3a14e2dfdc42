"""The engine of ``make reproduce``: run every study notebook, then have the results page built
(:mod:`pullstudy.report.page`).

    python -m pullstudy.report.runner [--results DIR] [--only NAME ...] [-p key=value ...] [-j N] [--force]

Each ``notebooks/<stem>.ipynb`` is executed by papermill into ``<results>/<stem>/<stem>.ipynb``
with ``output_dir=<results>/<stem>``. It stops at the first failing notebook (later studies would
only repeat or hide the error) and says which notebook, which cell and what error. The results page
(``index.html``) and ``claims.csv`` are written in every case, for what did run, and list every
claim, so an unchecked claim is visible.

Parameters are checked before any notebook starts: a name no selected notebook has is refused (papermill
would only warn and run with the defaults), each notebook gets only the parameters it has, and the
values are checked by :mod:`pullstudy.report.parameters`, as the notebooks check them again themselves.
A notebook counts as OK only if every cell ran: an interrupted one (Ctrl-C) is listed as
"interrupted" and its verdicts are not judged.

Speed (issue 16): the notebooks are independent (each reads the archive and writes only its own folder),
so ``-j N`` (default: the number of cores) runs N at a time; they start longest first (by their last
recorded run time, never-run ones before them, see :func:`start_order`), a failure stops any that has
not started yet, each notebook's offline page and PDFs are made in its worker as soon as it succeeds,
and the page is built once at the end, so the outputs are those of a serial run
(tests/test_runner_fast.py). A notebook whose source, parameters, library, environment pins
and input data are unchanged since its last successful run is not re-executed (``--force`` re-runs
it): its key is kept in ``<results>/.reproduce-cache/<stem>.json``. Kernels are forked from a process that
has imported what the notebooks import (:mod:`pullstudy.report.warm_kernels`; ``--cold-kernels``: not).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import threading
import shutil
import sys
import tempfile
import time
from collections import Counter
import concurrent.futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

if __name__ == "__main__":
    # The kernel server starts preloading now, while this module's own imports (~1 s) run on another core
    # (issue 16); main() takes it over, and stops it however the run ends.
    from pullstudy.report.warm_kernels import start_for_command_line

    _EARLY_SERVER = start_for_command_line(sys.argv[1:])

import pandas as pd  # noqa: E402 - after the early start above, on purpose
from tqdm import tqdm  # noqa: E402

from pullstudy import paths  # noqa: E402
from pullstudy.studies.claims import VERDICTS  # noqa: E402
from .parameters import SET_BY_RUNNER, SPECS, ParameterError, close_matches, notebook_parameters, validate  # noqa: E402
from pullstudy.report.page import (  # noqa: E402
    ERROR_FILE, INTERRUPTED_FILE, KERNEL_LOG, _first_line, collect_verdict_table, failing_cell, write_index)

KERNEL = "python3"
EXIT_INTERRUPTED = 130  # the shell's code for a command stopped by SIGINT


@dataclass
class NotebookRun:
    """How one notebook run went; ``error`` names the notebook, the cell and the error."""

    stem: str
    input_path: Path
    output_path: Path
    ok: bool
    seconds: float
    error: str = ""
    interrupted: bool = False
    cached: bool = False  # unchanged since its last successful run: not re-executed


# ---------------------------------------------------------------- selecting and parameters


def select_notebooks(notebooks_dir: str | Path, only: Iterable[str] | None = None) -> list[Path]:
    """The notebooks to run, sorted by name; an unknown ``--only`` name is an error, not a no-op."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise ValueError(f"notebooks folder {notebooks_dir} does not exist")
    found = sorted(p for p in notebooks_dir.glob("*.ipynb") if not p.name.startswith("."))
    if only is None:
        return found
    if isinstance(only, str):
        only = [only]
    wanted = [name.removesuffix(".ipynb") for name in only]
    stems = {p.stem: p for p in found}
    unknown = [name for name in wanted if name not in stems]
    if unknown:
        raise ValueError(
            f"--only: no notebook named {', '.join(unknown)} in {notebooks_dir}; "
            f"available: {', '.join(stems) or '(none)'}"
        )
    return [p for p in found if p.stem in wanted]


def parse_parameters(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON is used as such (2, 0.5, true, [..])."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"parameter {pair!r} must look like name=value (name a Python identifier)")
        if key == "output_dir":
            raise ValueError("output_dir is set by reproduce (<results>/<notebook>); use --results")
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    return parameters


def plan_parameters(notebooks: Sequence[Path], parameters: dict[str, Any], *,
                    check_values: bool = True) -> dict[str, dict[str, Any]]:
    """The parameters to give each notebook: those of ``parameters`` it has.

    Refuses, before anything runs, a name that no selected notebook has (listing their real
    parameters) and, with ``check_values``, a value the notebook's spec refuses (ParameterError).
    """
    declared = {nb.stem: notebook_parameters(nb) for nb in notebooks}
    known = sorted(set().union(*declared.values()) - set(SET_BY_RUNNER)) if declared else []
    for name in parameters:
        if name not in known:
            whose = (f"notebook {notebooks[0].stem} has" if len(notebooks) == 1
                     else f"none of the {len(notebooks)} selected notebooks has")
            raise ParameterError(f"unknown parameter {name}: {whose} no parameter of that name"
                                 f"{close_matches(name, known)}; its parameters: {', '.join(known) or '(none)'}")
    plan = {}
    for nb in notebooks:
        given = {k: v for k, v in parameters.items() if k in declared[nb.stem]}
        if check_values and given and nb.stem in SPECS:
            validate(nb.stem, {**declared[nb.stem], **given}, base=nb.parent)
        plan[nb.stem] = given
    return plan


def describe_failure(stem: str, input_path: Path, output_path: Path, exc: BaseException) -> str:
    """One message that names the notebook, the failing cell and the error."""
    ename = getattr(exc, "ename", None)
    if ename is None:  # not a cell error: kernel missing or died, unreadable notebook, ...
        hint = ""
        if type(exc).__name__ == "NoSuchKernel":
            hint = (f"\n  no '{KERNEL}' Jupyter kernel: install one into this environment with "
                    f"`{sys.executable} -m ipykernel install --sys-prefix`")
        return f"notebook {stem} ({input_path}) could not run: {type(exc).__name__}: {exc}{hint}"
    cell = failing_cell(input_path, output_path)
    if cell is None:
        source = getattr(exc, "source", "") or ""
        where = f"a cell (`{_first_line(source)}`)"
    else:
        position, first_line = cell
        if position is not None:
            where = f"cell {position} (`{first_line}`)"
        else:  # not found in the source notebook: papermill's index in the executed copy
            where = f"cell {getattr(exc, 'cell_index', -1) + 1} of the executed notebook (`{first_line}`)"
    evalue = getattr(exc, "evalue", "")
    if ename == ParameterError.__name__:  # a user mistake: its message says it all, on one line
        return f"notebook {stem} refused its parameters: {evalue}"
    return (
        f"notebook {stem} ({input_path}) failed in {where}: {ename}: {evalue}\n"
        f"  the executed notebook with the traceback: {output_path}"
    )


def _kernel_manager(log_path: Path, *, started: list | None = None, server=None, chart_cache: Path | None = None,
                    interrupting: threading.Event | None = None) -> type:
    """A kernel manager whose kernel writes its own stderr (kernel logging, not cell output) to
    ``log_path``: on Ctrl-C the kernel is shut down mid-cell and logs a ZMQ traceback, which must not
    reach the terminal; the log stays in the results folder for debugging. Each kernel started is added
    to ``started`` (so that Ctrl-C can stop it); one that starts after ``interrupting`` is set (Ctrl-C
    came while it was starting) is stopped at once. With a
    :class:`~pullstudy.report.warm_kernels.WarmKernelServer`, the kernel is forked by it. ``chart_cache``:
    where the kernel keeps its charts' drawings between runs (:func:`pullstudy.studies.charts.chart_cache_dir`),
    unless the environment already names a place."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw: Any):
            from . import warm_kernels

            warm_kernels.use_server(self, server)
            if chart_cache is not None:
                kw["env"] = {"PULLSTUDY_CHART_CACHE": str(chart_cache), **(kw.get("env") or os.environ)}
            return await super()._async_pre_start_kernel(**kw)

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with open(log_path, "ab") as log:  # the kernel process keeps its own copy
                await super()._async_launch_kernel(kernel_cmd, **{**kw, "stderr": log})
            if started is not None:
                started.append(self)
            if interrupting is not None and interrupting.is_set():
                await self.provisioner.kill()

    return LoggedKernelManager


def _engine_options(log_path: Path, **manager: Any) -> dict[str, Any]:
    """Encrypt kernel traffic where pyzmq can (CurveZMQ); it also keeps the kernel's
    "running over TCP without encryption" warning out of the logs. The kernel's stderr goes to
    ``log_path``; ``manager``: the other options of :func:`_kernel_manager`."""
    import zmq
    from traitlets.config import Config

    options: dict[str, Any] = {"kernel_manager_class": _kernel_manager(log_path, **manager)}
    if zmq.has("curve"):
        options["config"] = Config({"KernelManager": {"transport_encryption": "auto"}})
    return options


CACHE_DIR = ".reproduce-cache"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def environment_key() -> str:
    """What every notebook depends on besides its own source and parameters: the library (every source
    file, not only ``__version__``, which a code change does not bump), the environment's pins and Python,
    and the input data (the manifest and catalog, and the size and modification time of every raw file)."""
    import pullstudy

    lib = Path(pullstudy.__file__).resolve().parent
    parts = [pullstudy.__version__.encode(), sys.version.encode()]
    for f in sorted(lib.rglob("*.py")):
        parts += [str(f.relative_to(lib)).encode(), f.read_bytes()]
    pins = paths.PROJECT_ROOT / "pyproject.toml"
    parts.append(pins.read_bytes() if pins.is_file() else b"")
    data = paths.data_dir()
    for name in ("manifest.json", "catalog.json"):
        parts.append((data / name).read_bytes() if (data / name).is_file() else b"")
    raw = paths.raw_dir()
    if raw.is_dir():
        for f in sorted(raw.rglob("*")):
            if f.is_file() and f.name != "FETCH-REPORT.json":
                st = f.stat()
                parts.append(f"{f.relative_to(raw)} {st.st_size} {st.st_mtime_ns}".encode())
    return _digest(*parts)


def notebook_key(notebook: Path, parameters: dict[str, Any], out_dir: Path, kernel_name: str,
                 environment: str) -> str:
    """The cache key of one notebook run: its source, its parameters, where it writes, the kernel, the rest."""
    given = json.dumps({"parameters": parameters, "output_dir": str(out_dir), "kernel": kernel_name},
                       sort_keys=True, default=str)
    return _digest(notebook.read_bytes(), given.encode(), environment.encode())


def _unchanged(results_root: Path, stem: str, key: str) -> bool:
    out_dir = results_root / stem
    stamp = results_root / CACHE_DIR / f"{stem}.json"
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError, AttributeError):
        return False
    return (recorded == key and (out_dir / f"{stem}.ipynb").is_file()
            and not (out_dir / ERROR_FILE).exists() and not (out_dir / INTERRUPTED_FILE).exists())


def _record_success(results_root: Path, stem: str, key: str, seconds: float) -> None:
    stamp = results_root / CACHE_DIR / f"{stem}.json"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "seconds": round(seconds, 3)}) + "\n", encoding="utf-8")


def _last_seconds(results_root: Path, stem: str) -> float | None:
    """How long the notebook's last successful run took, if one is recorded."""
    try:
        seconds = json.loads((results_root / CACHE_DIR / f"{stem}.json").read_text(encoding="utf-8")).get("seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return float(seconds) if isinstance(seconds, (int, float)) else None


def start_order(notebooks: Sequence[Path], results_root: Path) -> list[Path]:
    """The order to start notebooks in: never run (or failed) first, then the longest last time first.

    With N at a time the run ends when the last notebook does; starting the long ones first keeps a
    long one from starting last while the other workers idle (longest-processing-time scheduling).
    Name order among equals; only when they start changes, not what they write."""
    def rank(nb: Path) -> float:
        seconds = _last_seconds(results_root, nb.stem)
        return -float("inf") if seconds is None else -seconds
    return sorted(notebooks, key=rank)


def _finish_pages(results_root: Path, stem: str, output_path: Path) -> None:
    """Right after a notebook succeeds, in its worker: its offline page and its charts as PDFs, which the
    results page would otherwise build one after the other at the end (issue 16: ~1.5 s a notebook).
    The final build finds them up to date and keeps them; a failure here is left for it to report."""
    from . import offline_report, paper

    with contextlib.suppress(OSError, ValueError):
        offline_report.render_notebook(output_path)
    with contextlib.suppress(OSError, ValueError):
        paper.figures(results_root, results_root / "paper" / "figures", only=stem)


def default_jobs() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def run_notebooks(
    notebooks_dir: str | Path | None = None,
    results_root: str | Path | None = None,
    only: Iterable[str] | None = None,
    parameters: dict[str, Any] | None = None,
    *,
    kernel_name: str = KERNEL,
    progress: bool = True,
    check_values: bool = True,
    jobs: int | None = None,
    force: bool = False,
    warm: bool = True,
    server=None,
) -> list[NotebookRun]:
    """Execute the selected notebooks, ``jobs`` at a time (one at a time: in name order; more: longest
    first, see :func:`start_order`); after the first failure no further notebook starts (serially the
    failed one is the last in the list; those already running finish). The runs are listed in name order.

    Each notebook's results folder is emptied first, so nothing from an earlier run can pass for
    a result of this one. Ctrl-C stops the run too: the notebooks running are recorded as interrupted
    (``reproduce-interrupted.txt`` in their folder). Unchanged notebooks are skipped unless ``force``.
    With ``warm`` the kernels are forked from a process that has imported what the notebooks import
    (:mod:`pullstudy.report.warm_kernels`; ``server``: one already started, which the caller stops);
    otherwise each is started from scratch.
    """
    import papermill as pm  # slow to import; only needed here

    notebooks_dir = Path(notebooks_dir or paths.notebooks_dir()).resolve()
    results_root = Path(results_root or paths.results_dir()).resolve()
    notebooks = select_notebooks(notebooks_dir, only)
    parameters = dict(parameters or {})
    if "output_dir" in parameters:
        raise ValueError("output_dir is set by reproduce (<results>/<notebook>)")
    jobs = default_jobs() if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"-j/--jobs must be a whole number of at least 1, got {jobs!r}")
    plan = plan_parameters(notebooks, parameters, check_values=check_values)
    results_root.mkdir(parents=True, exist_ok=True)
    environment = environment_key()
    total = len(notebooks)

    bar = tqdm(total=total, unit="notebook", disable=None if progress else True,
               file=sys.stderr, dynamic_ncols=True)
    say = tqdm.write if progress else (lambda *a, **k: None)
    stop = threading.Event()  # a failure or Ctrl-C: start nothing more
    interrupting = threading.Event()
    kernels: list = []  # the kernel managers started, so Ctrl-C can stop kernels run by worker threads
    started_at: dict[str, float] = {}

    keys = {nb.stem: notebook_key(nb, plan[nb.stem], results_root / nb.stem, kernel_name, environment)
            for nb in notebooks}
    unchanged = {nb.stem for nb in notebooks if not force and _unchanged(results_root, nb.stem, keys[nb.stem])}
    to_run = [nb for nb in notebooks if nb.stem not in unchanged]

    def run_one(i: int, notebook: Path) -> NotebookRun | None:
        if stop.is_set():
            return None
        out_dir = results_root / notebook.stem
        output_path = out_dir / f"{notebook.stem}.ipynb"
        key = keys[notebook.stem]
        if notebook.stem in unchanged:
            say(f"[{i}/{total}] {notebook.stem} unchanged since its last successful run: not re-run (--force re-runs it)")
            bar.update()
            return NotebookRun(notebook.stem, notebook, output_path, True, 0.0, cached=True)
        (results_root / CACHE_DIR / f"{notebook.stem}.json").unlink(missing_ok=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        bar.set_description(notebook.stem)
        say(f"[{i}/{total}] {notebook.stem} ...")
        start = started_at[notebook.stem] = time.monotonic()
        try:
            pm.execute_notebook(
                str(notebook), str(output_path),
                parameters={"output_dir": str(out_dir), **plan[notebook.stem]},
                kernel_name=kernel_name, language="python",
                progress_bar=False, log_output=False,
                **_engine_options(out_dir / KERNEL_LOG, started=kernels, server=server, interrupting=interrupting,
                                  chart_cache=results_root / CACHE_DIR / "charts"),
            )
        except Exception as exc:  # noqa: BLE001 - any failure stops the run, reported
            seconds = time.monotonic() - start
            if interrupting.is_set():  # its kernel was stopped by Ctrl-C: interrupted, not failed
                return _interrupted(notebook, output_path, seconds)
            stop.set()
            message = describe_failure(notebook.stem, notebook, output_path, exc)
            (out_dir / ERROR_FILE).write_text(message + "\n", encoding="utf-8")
            say(f"[{i}/{total}] {notebook.stem} FAILED after {seconds:.1f} s")
            bar.update()
            return NotebookRun(notebook.stem, notebook, output_path, False, seconds, message)
        finally:
            log = out_dir / KERNEL_LOG
            if log.is_file() and log.stat().st_size == 0:
                log.unlink()  # the usual case: the kernel had nothing to say
        seconds = time.monotonic() - start
        if interrupting.is_set():
            return _interrupted(notebook, output_path, seconds)
        _record_success(results_root, notebook.stem, key, seconds)
        _finish_pages(results_root, notebook.stem, output_path)
        say(f"[{i}/{total}] {notebook.stem} OK in {seconds:.1f} s")
        bar.update()
        return NotebookRun(notebook.stem, notebook, output_path, True, seconds)

    def _interrupted(notebook: Path, output_path: Path, seconds: float) -> NotebookRun:
        message = (f"notebook {notebook.stem} was interrupted (Ctrl-C) after {seconds:.1f} s; "
                   f"its later cells did not run: {output_path}")
        output_path.parent.mkdir(parents=True, exist_ok=True)
        (output_path.parent / INTERRUPTED_FILE).write_text(message + "\n", encoding="utf-8")
        say(f"{notebook.stem} INTERRUPTED after {seconds:.1f} s")
        return NotebookRun(notebook.stem, notebook, output_path, False, seconds, message, interrupted=True)

    runs: list[NotebookRun] = []
    # papermill's cwd= changes the process's folder for each notebook, which races between threads;
    # every notebook runs in notebooks_dir, so it is set once for the whole run.
    with contextlib.chdir(notebooks_dir), _kernel_server(to_run, notebooks_dir, warm, server) as server:
        try:
            if jobs == 1 or total <= 1:
                for i, notebook in enumerate(notebooks, start=1):
                    try:
                        run = run_one(i, notebook)
                    except KeyboardInterrupt:
                        out = results_root / notebook.stem / f"{notebook.stem}.ipynb"
                        runs.append(_interrupted(notebook, out, time.monotonic() - started_at.get(notebook.stem, time.monotonic())))
                        break
                    if run is None:
                        break
                    runs.append(run)
                    if not run.ok:
                        break
            else:
                order = start_order(notebooks, results_root)
                position = {nb.stem: i for i, nb in enumerate(notebooks, start=1)}
                done = _run_concurrently(order, jobs, lambda _, nb: run_one(position[nb.stem], nb), stop,
                                         interrupting, kernels, server.cancel if server else None)
                runs = sorted(done, key=lambda r: position[r.stem])  # reported in name order
        finally:
            bar.close()
    return runs


@contextlib.contextmanager
def _kernel_server(notebooks: Sequence[Path], cwd: Path, warm: bool, started=None):
    """The warm-kernel server for the notebooks to run (``started``, or one started here and stopped when
    the run ends, any way); None when ``warm`` is off or there is nothing to run."""
    if not (warm and notebooks):
        yield None
        return
    if started is not None:
        yield started
        return
    from .warm_kernels import WarmKernelServer

    with WarmKernelServer(notebooks, cwd) as server:
        yield server


def _run_concurrently(notebooks: Sequence[Path], jobs: int, run_one, stop: threading.Event,
                      interrupting: threading.Event, kernels: list, on_interrupt=None) -> list[NotebookRun]:
    """``run_one`` for each notebook in ``jobs`` worker threads (each notebook is its own kernel process,
    so threads suffice), started in the order given; the runs in that order. Ctrl-C stops the kernels
    still running (and, by ``on_interrupt``, any about to start), whose notebooks are then recorded as
    interrupted; a second Ctrl-C while they stop (``timeout -s INT`` sends two) only stops them again."""
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="notebook")
    futures = [pool.submit(run_one, i, nb) for i, nb in enumerate(notebooks, start=1)]
    pool.submit(_prepare_page, stop)  # starts once every notebook has: on a worker with nothing left to run
    try:
        results = [f.result() for f in futures]
    except KeyboardInterrupt:
        interrupting.set()
        stop.set()
        if on_interrupt is not None:
            on_interrupt()
        for f in futures:
            f.cancel()  # those not started yet
        while True:
            for km in list(kernels):
                pid = getattr(getattr(km, "provisioner", None), "pid", None)
                if pid:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            try:  # on the futures, not Thread.join: a join interrupted by a signal may not wait again
                concurrent.futures.wait(futures)
                break
            except KeyboardInterrupt:
                continue
        results = [f.result() if f.done() and not f.cancelled() else None for f in futures]
    pool.shutdown(wait=True)
    return [r for r in results if r is not None]


def _prepare_page(stop: threading.Event) -> None:
    """:func:`pullstudy.report.page.prepare` unless the run is stopping; a failure is the page build's to report."""
    if not stop.is_set():
        with contextlib.suppress(Exception):
            from . import page

            page.prepare()


# ---------------------------------------------------------------- command line


def summary(runs: Sequence[NotebookRun], selected: Sequence[Path], table: pd.DataFrame,
            index: Path) -> str:
    """The one-screen report printed at the end of ``make reproduce``."""
    width = max([len(p.stem) for p in selected] + [8])
    lines = [f"pullstudy reproduce: {len(runs)} of {len(selected)} notebook(s) run"]
    done = {r.stem: r for r in runs}
    for p in selected:
        r = done.get(p.stem)
        if r is None:
            lines.append(f"  {'not run':7} {p.stem:{width}}  (stopped at the first failure or interruption)")
        else:
            label = "OK" if r.ok else "INTERRUPTED" if r.interrupted else "FAILED"
            when = "unchanged, not re-run" if r.cached else f"{r.seconds:7.1f} s"
            lines.append(f"  {label:7} {p.stem:{width}}  {when}")
    counts = Counter(table["verdict"])
    lines.append("verdicts (all claims): " + ", ".join(f"{v} {counts.get(v, 0)}" for v in VERDICTS))
    lines.append(f"results page: {index}")
    return "\n".join(lines)


def prepare_results(results_root: Path) -> None:
    """Create the results folder and check it can be written: a bad ``--results`` (a file, a
    read-only place) fails in one line before any notebook runs, not as a traceback after one."""
    if results_root.exists() and not results_root.is_dir():
        raise ValueError(f"--results {results_root} is a file, not a folder: give a folder (or remove the file)")
    try:
        results_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=results_root):
            pass
    except OSError as exc:
        raise ValueError(f"--results {results_root} cannot be written ({exc.strerror or exc}): "
                         "give a folder you can write to") from None


def main(argv: Sequence[str] | None = None, server=None) -> int:
    """The command line; Ctrl-C anywhere ends it with one line and exit code 130, no traceback.
    ``server``: a kernel server already started for these arguments, stopped here in every case."""
    try:
        return _main(argv, server)
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): stopped; what finished is in the results folder", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if server is not None:
            server.close()


def _main(argv: Sequence[str] | None = None, server=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pullstudy.report.runner",
        description="Run every study notebook with papermill and build the results page.",
    )
    parser.add_argument("--results", type=Path, default=None,
                        help="results folder (default: results/, or $PULLSTUDY_RESULTS_DIR)")
    parser.add_argument("--notebooks", type=Path, default=None, help="notebooks folder (default: notebooks/)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                        help="run only these notebooks (file stems, e.g. 01-pull-size-layers)")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="notebook parameter; VALUE is JSON when it parses, else a string")
    parser.add_argument("--kernel", default=KERNEL, help=f"Jupyter kernel name (default {KERNEL})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or per-notebook lines")
    parser.add_argument("-j", "--jobs", type=int, default=None, metavar="N",
                        help=f"notebooks run at a time (default: the cores, here {default_jobs()})")
    parser.add_argument("--force", action="store_true",
                        help="re-run notebooks even if unchanged since their last successful run")
    parser.add_argument("--cold-kernels", action="store_true",
                        help="start every kernel from scratch instead of forking it from a process that has "
                             "imported what the notebooks import (the same outputs, slower)")
    args = parser.parse_args(argv)

    notebooks_dir = Path(args.notebooks or paths.notebooks_dir())
    results_root = Path(args.results or paths.results_dir())
    if args.jobs is not None and args.jobs < 1:
        print(f"error: -j/--jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        parameters = parse_parameters(args.parameter)
        selected = select_notebooks(notebooks_dir, args.only)
        if selected:
            plan_parameters(selected, parameters)  # names and values, before anything is written or run
            prepare_results(results_root)
    except ValueError as exc:  # ParameterError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not selected:
        print(f"error: no notebooks (*.ipynb) in {notebooks_dir}", file=sys.stderr)
        return 2

    try:
        runs = run_notebooks(notebooks_dir, results_root, args.only, parameters,
                             kernel_name=args.kernel, progress=not args.no_progress,
                             jobs=args.jobs, force=args.force, warm=not args.cold_kernels, server=server)
        from . import paper, provenance
        paper.build(results_root)
        index = write_index(results_root)
        provenance.build(results_root, parameters=parameters)
        table = collect_verdict_table(results_root)
    except ValueError as exc:
        print(f"error: cannot build the results page: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.filename or results_root}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(summary(runs, selected, table, index))
    failed = [r for r in runs if not r.ok]
    if failed:
        print(f"\nerror: {failed[0].error}", file=sys.stderr)
        return EXIT_INTERRUPTED if failed[0].interrupted else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(server=_EARLY_SERVER))

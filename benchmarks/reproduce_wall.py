"""``make reproduce`` re-executing every notebook, this tree against a baseline revision, interleaved (issue 16).

Each round runs ``python -m pullstudy.report.runner --force -j N`` in this tree (with the drawings of
unchanged charts kept from the previous run, as a re-run has them; and with every chart drawn,
``PULLSTUDY_CHART_CACHE=`` empty; with ``--cold-kernels`` also with every kernel started from scratch) and once in the
baseline (a ``git archive`` of ``--baseline`` in a temporary folder, sharing this tree's data/raw and
environment, so only the code differs), the order alternating per round, and records the wall time and
the CPU time of the whole process tree. Reported: medians and the ratio (< 1: faster), also paired by
round, with the machine's load average before each run (other work on the machine moves wall times;
CPU seconds much less). Both write their own results folders; the outputs are compared by the tests
(tests/test_runner_fast.py), not here.

    .venv/bin/python benchmarks/reproduce_wall.py [--baseline 03eda7a] [--rounds 3] [-j 2] [--cold-kernels]

Minutes, not seconds (a full reproduce per run), so not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _baseline_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "data" / "raw").symlink_to(ROOT / "data" / "raw")  # read only, as a reproduce reads it
    return into


def _run(tree: Path, jobs: int, env: dict, extra: tuple[str, ...] = ()) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the runner and its kernels, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "pullstudy.report.runner", "--force", "-j", str(jobs), "--no-progress",
                         *extra],
                        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, rc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="03eda7a", help="git revision to compare with (default: before issue 16.1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--cold-kernels", action="store_true",
                        help="also run this tree with --cold-kernels (kernels started from scratch)")
    args = parser.parse_args()
    if not (ROOT / "data" / "raw").is_dir():
        raise SystemExit("no data/raw: run `make data` first")
    with tempfile.TemporaryDirectory(prefix="pullstudy-baseline-") as tmp:
        base = _baseline_tree(args.baseline, Path(tmp))
        env = {k: v for k, v in os.environ.items() if k not in ("PULLSTUDY_RESULTS_DIR", "PYTHONPATH")}
        trees = {f"baseline {args.baseline}": (base, {**env, "PYTHONPATH": str(base / "lib")}, ()),
                 "this tree": (ROOT, env, ())}
        # The same tree drawing every chart (no drawing kept between runs): what the chart cache saves.
        trees["this tree, charts drawn"] = (ROOT, {**env, "PULLSTUDY_CHART_CACHE": ""}, ())
        if args.cold_kernels:  # the same tree with every kernel started from scratch: what forking saves
            trees["this tree, cold kernels"] = (ROOT, {**env, "PULLSTUDY_CHART_CACHE": ""}, ("--cold-kernels",))
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                load = os.getloadavg()[0]
                tree, tree_env, extra = trees[name]
                wall, cpu, rc = _run(tree, args.jobs, tree_env, extra)
                if rc:
                    raise SystemExit(f"{name}: the runner exited with {rc}")
                runs[name].append((wall, cpu))
                print(f"round {r + 1}: {name:20s} {wall:6.1f} s wall {cpu:6.1f} s CPU (load before {load:.1f})",
                      flush=True)
    for name, rows in runs.items():
        print(f"{name:26s} median {statistics.median(w for w, _ in rows):6.1f} s wall, "
              f"{statistics.median(c for _, c in rows):6.1f} s CPU over {len(rows)} runs (-j {args.jobs})")
    (_, b), (_, t), (_, drawn), *cold = runs.items()
    pairs = [("this tree / baseline", t, b), ("charts drawn / baseline", drawn, b),
             ("this tree / charts drawn", t, drawn)] + [("charts drawn / cold kernels", drawn, c) for _, c in cold]
    for label, x_runs, y_runs in pairs:
        for i, what in ((0, "wall"), (1, "CPU")):
            med = statistics.median(x[i] for x in x_runs) / statistics.median(y[i] for y in y_runs)
            paired = statistics.median(x[i] / y[i] for x, y in zip(x_runs, y_runs))
            print(f"ratio {label}, {what}: {med:.2f}x of the medians, {paired:.2f}x paired by round")


if __name__ == "__main__":
    main()

"""HelloBench-style starts of real application images on this machine: lazy (stargz) against eager (overlayfs).

The stargz snapshotter's hello-bench and SOCI's benchmark report, per image, the pull, the run to the
application's ready line and their total, eager against lazy; so does this, in the same run (the
pulls of both snapshotters interleaved, shuffled, each cold), with the fraction of the image the
registry sent. The images are pullstudy's catalogue (``pullstudy.images.apps``), built with
mmdebstrap (cached) and served by a real registry behind a tbf-shaped link (``--rate`` Mbit/s) or on
loopback. Ratios are eager/lazy (> 1: lazy is faster), medians of ``--repeat`` cold starts with
bootstrap 95% CIs. Needs root (containerd, runc, FUSE, a network namespace).
Run: ``.venv/bin/python benchmarks/app_starts.py [--apps shell python-data] [--repeat 3] [--link loopback]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

from pullstudy.images import apps
from pullstudy.sources.local import measure as local, stargz
from pullstudy.studies import local_apps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", nargs="+", default=list(apps.DEFAULT_APPS), choices=list(apps.CATALOGUE))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--link", choices=local.LINKS, default="rate-limited")
    parser.add_argument("--rate", type=float, default=100.0, help="Mbit/s of the rate-limited link")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("app_starts: skipped: containers need root (containerd, runc, FUSE); run `make bench` as root")
        return 0
    reason = stargz.unavailable_reason()
    if reason:
        print(f"app_starts: skipped: lazy pulling is unavailable here: {reason}")
        return 0
    grid = local.LocalGrid(sizes_bytes=(), layers=(), workload="apps", apps=tuple(args.apps), storage=("disk",),
                           links=(args.link,), rate_mbit=args.rate, snapshotters=("overlayfs", "stargz"),
                           repetitions=args.repeat)
    with tempfile.TemporaryDirectory(prefix="pullstudy-bench-apps-") as out:
        start = time.perf_counter()
        local.run(grid, out, name="bench-app-starts", progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        records = local.load_local_run(out)
    table = local_apps.hellobench_table(records, n_boot=2000, seed=0)
    link = args.link if args.link == "loopback" else f"{args.rate:g} Mbit/s link"
    print(f"app starts, {link}, {args.repeat} cold starts per image and snapshotter ({len(records)} in "
          f"{seconds:.0f} s, including builds, pushes and eStargz conversion); medians, seconds:")
    print(f"{'image':<12} {'MB':>6}  {'pull eager':>10} {'pull lazy':>9} {'ratio':>6}  {'run eager':>9} "
          f"{'run lazy':>8}  {'total eager':>11} {'total lazy':>10} {'ratio':>6} {'95% CI':>13}  {'read lazy':>9}")
    for r in table.itertuples():
        run_e, run_l = r.create_s_eager + r.run_s_eager, r.create_s_lazy + r.run_s_lazy
        ci = f"{r.ttuw_speedup_ci_low:.2f}-{r.ttuw_speedup_ci_high:.2f}" if math.isfinite(r.ttuw_speedup_ci_low) else "-"
        print(f"{r.app:<12} {r.image_mb:>6.0f}  {r.pull_s_eager:>10.2f} {r.pull_s_lazy:>9.2f} {r.pull_speedup:>5.2f}x  "
              f"{run_e:>9.2f} {run_l:>8.2f}  {r.ttuw_s_eager:>11.2f} {r.ttuw_s_lazy:>10.2f} {r.ttuw_speedup:>5.2f}x "
              f"{ci:>13}  {r.fraction_read_lazy:>8.1%}")
    excluded = records["run_status"].ne("ready").sum()
    if excluded:
        print(f"  {excluded} cold starts did not reach their ready line and are not in the medians")
    print("  (run = create + start to the ready line; ratio = eager / lazy, > 1: lazy faster; "
          "read lazy = registry blob bytes sent / the eStargz image's blob bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Similarity summaries at scale: row blocks (``summary_from_incidence``) against the whole sparse matrix
(``summary(jaccard(inc))``, today's way), in the same run (issue 16).

The whole-matrix way holds every pair that shares a layer (n² entries once images share a base), so
it is run at ``--baseline-n`` (default 30,000: ~0.6 GB) for the ratio; the blocked way runs there and at
``--n`` (default 100,000), with its memory bounded by ``--block-mb``. Same synthetic images as
benchmarks/similarity.py. Time: wall clock of one call each (median of ``--repeat``); memory: the
tracemalloc peak of one more call (numpy/scipy buffers included). Both give the same summary (checked).
Run: ``.venv/bin/python benchmarks/similarity_scale.py [--n 100000] [--block-mb 256]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import tracemalloc

from pullstudy.studies import similarity
from similarity import synthetic_layers  # benchmarks/similarity.py, the same images


def _time(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def _peak_gb(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--baseline-n", type=int, default=30_000)
    parser.add_argument("--block-mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    budget = args.block_mb * 2**20
    print(f"{'':40s}{'n':>8s}{'seconds':>9s}{'peak GB':>9s}")
    results = {}
    for n in (args.baseline_n, args.n):
        inc, _, _ = similarity.incidence(synthetic_layers(n))
        blocked = lambda: similarity.summary_from_incidence(inc, max_block_bytes=budget)  # noqa: E731
        t_b, s_b = _time(blocked, args.repeat)
        row = {"blocked": (t_b, _peak_gb(blocked), s_b)}
        if n == args.baseline_n:
            whole = lambda: similarity.summary(similarity.jaccard(inc))  # noqa: E731
            t_w, s_w = _time(whole, args.repeat)
            row["whole"] = (t_w, _peak_gb(whole), s_w)
            for f in ("mean", "std", "pair_mean", "pair_std"):
                if not math.isclose(getattr(s_w, f), getattr(s_b, f), rel_tol=1e-12):
                    raise SystemExit(f"blocked {f} differs from the whole-matrix summary: benchmark invalid")
        results[n] = row
        for kind, (t, gb, _) in row.items():
            label = "today: summary(jaccard(inc)), whole" if kind == "whole" else f"blocks of <= {args.block_mb} MB"
            print(f"{label:40s}{n:8d}{t:9.2f}{gb:9.2f}")
    (tw, gw, _), (tb, gb, _) = results[args.baseline_n]["whole"], results[args.baseline_n]["blocked"]
    print(f"at n={args.baseline_n}: blocked/whole time {tb / tw:.2f}x, peak memory {gb / gw:.2f}x (same summary, checked)")
    s = results[args.n]["blocked"][2]
    print(f"at n={args.n}: mean {s.mean:.4f} std {s.std:.4f}, pairs {s.pair_mean:.4f} ± {s.pair_std:.4f}")


if __name__ == "__main__":
    main()

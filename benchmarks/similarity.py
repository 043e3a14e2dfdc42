"""Layer-similarity scaling: pullstudy.studies.similarity (sparse A·Aᵀ) against pairwise Python sets, in the same run.

The baseline is the upstream's method with its DataFrame filtering already removed: one Python set
of digests per image, then a double loop over all pairs (intersection / union), filling a dense
matrix. It is quadratic, so it runs at n = 200 only; ours runs at the same n for the ratio, and at
10,000 images for the scale the brief asks about. Both sides are checked to give the same matrix.

Synthetic images (seeded): each takes one of ``--bases`` base stacks of 3 layers (shared widely,
as real images share an OS/toolchain base) and 4–10 application layers drawn from a pool of
``--pool`` layers, so images have ~10 layers and the similarity matrix is sparse but not trivially.

Time: wall clock (time.perf_counter), median of ``--repeat`` runs. Memory: the tracemalloc peak
during one extra run (numpy and scipy report their buffers to tracemalloc), i.e. the peak of memory
allocated by the computation itself, not the process RSS; the process's ru_maxrss is printed too.
Run: ``.venv/bin/python benchmarks/similarity.py``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import tracemalloc

import numpy as np
import pandas as pd

from pullstudy.studies import similarity


def synthetic_layers(n: int, *, bases: int = 40, pool: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """n images of ~10 layers: a shared 3-layer base stack and 4–10 layers from a shared pool."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, bases, n)
    apps = rng.integers(4, 11, n)
    image = np.repeat(np.arange(n), 3 + apps)
    digests = []
    for b, k in zip(base, apps):
        digests.append(np.concatenate([[f"base{b}-{j}" for j in range(3)],
                                       [f"app{d}" for d in rng.integers(0, pool, k)]]))
    return pd.DataFrame({"image": [f"img{i}" for i in image], "digest": np.concatenate(digests)})


def ours(layers: pd.DataFrame):
    """Incidence, sparse Jaccard and the summary: what a notebook needs, without a dense matrix."""
    inc, images, _ = similarity.incidence(layers)
    sim = similarity.jaccard(inc)
    return sim, similarity.summary(sim, len(images))


def baseline(layers: pd.DataFrame) -> np.ndarray:
    """Pairwise Python sets, double loop: the upstream's method minus its per-pair DataFrame filters."""
    sets = {name: set(g) for name, g in layers.groupby("image", sort=False)["digest"]}
    names = list(sets)
    n = len(names)
    out = np.eye(n)
    for i in range(n):
        a = sets[names[i]]
        for j in range(i + 1, n):
            b = sets[names[j]]
            out[i, j] = out[j, i] = len(a & b) / len(a | b)
    return out


def timed(fn, arg, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def peak_mb(fn, arg) -> float:
    """tracemalloc peak (MB) of one call: memory the computation allocated, on top of its input."""
    tracemalloc.start()
    fn(arg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--bases", type=int, default=40)
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    kw = dict(bases=args.bases, pool=args.pool)

    small = synthetic_layers(args.small, **kw)
    t_base, dense = timed(baseline, small, args.repeat)
    t_small, (sim_small, _) = timed(ours, small, args.repeat)
    if not np.allclose(sim_small.toarray(), dense, rtol=0, atol=1e-12):
        raise SystemExit("sparse result differs from the pairwise sets: benchmark invalid")

    big = synthetic_layers(args.n, **kw)
    t_big, (sim, s) = timed(ours, big, args.repeat)
    mem_big, mem_small = peak_mb(ours, big), peak_mb(ours, small)
    mem_base = peak_mb(baseline, small)
    n_pairs = args.n * (args.n - 1) // 2
    shared = (sim.nnz - args.n) // 2

    print(f"synthetic images: {args.bases} base stacks of 3 layers + 4-10 layers from a pool of {args.pool}; "
          f"median of {args.repeat} runs, wall clock; memory = tracemalloc peak of one call")
    print(f"{'':34s}{'n':>7s}{'layers':>8s}{'seconds':>10s}{'peak MB':>9s}")
    print(f"{'baseline: pairwise Python sets':34s}{args.small:7d}{len(small):8d}{t_base:10.4f}{mem_base:9.1f}")
    print(f"{'pullstudy.studies.similarity (sparse)':34s}{args.small:7d}{len(small):8d}{t_small:10.4f}{mem_small:9.1f}")
    print(f"{'pullstudy.studies.similarity (sparse)':34s}{args.n:7d}{len(big):8d}{t_big:10.4f}{mem_big:9.1f}")
    print(f"speed ratio at n={args.small}: baseline/pullstudy = {t_base / t_small:.1f}x (same matrix, checked)")
    print(f"n={args.n}: {shared} of {n_pairs} pairs share a layer ({shared / n_pairs:.2%}), stored entries "
          f"{sim.nnz} vs {args.n ** 2} dense ({args.n ** 2 * 8 / 1e6:.0f} MB as float64); "
          f"mean {s.mean:.4f} std {s.std:.4f} (full, diagonal), pairs {s.pair_mean:.4f} ± {s.pair_std:.4f}")
    print(f"baseline extrapolated to n={args.n} (quadratic): ~{t_base * (args.n / args.small) ** 2:.0f} s, not run")
    print(f"process ru_maxrss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB")


if __name__ == "__main__":
    main()

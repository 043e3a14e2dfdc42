"""Per-kernel startup of a study notebook, against the baseline it replaced, in the same run (issue 16).

Two costs every notebook kernel paid before: (1) ``import altair`` building the rfc3987_syntax Lark
grammar (through jsonschema's format checkers), now deferred by ``import pullstudy``; (2) the first
inline HTML chart rebuilding the Vega JavaScript bundle, now read from a per-environment file. Each
is timed in fresh interpreters, interleaved with its baseline, and reported as a ratio (< 1: faster).
Run: ``.venv/bin/python benchmarks/reproduce_startup.py [--repeat 5]``. ``make reproduce`` itself is
timed from the shell (its numbers are in the issue-16 report).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

IMPORT_NEW = "import pullstudy, altair"
IMPORT_OLD = "import altair"  # what the kernel did before: nothing deferred the grammar
CHART = ("import altair as alt, pandas as pd, tempfile, pathlib\n"
         "c = alt.Chart(pd.DataFrame({'x': [1, 2]}), title='t').mark_point().encode(x='x:Q')\n"
         "d = pathlib.Path(tempfile.mkdtemp())\n"
         "import time; t = time.perf_counter()\n")
HTML_NEW = CHART + ("from pullstudy.studies import charts\n"
                    "with charts._cached_javascript_bundle(): c.save(d / 'c.html', format='html', inline=True)\n"
                    "print(time.perf_counter() - t)")
HTML_OLD = CHART + "c.save(d / 'c.html', format='html', inline=True)\nprint(time.perf_counter() - t)"


def _wall(code: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t


def _inner(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    _inner(HTML_NEW)  # fills the bundle cache once, as the first notebook of an environment does
    rows = [("import pullstudy + altair (process wall)", IMPORT_NEW, IMPORT_OLD, _wall),
            ("first inline HTML chart in a kernel", HTML_NEW, HTML_OLD, _inner)]
    for label, new, old, timer in rows:
        a, b = [], []
        for _ in range(args.repeat):  # interleaved, so load on the machine hits both alike
            a.append(timer(new))
            b.append(timer(old))
        na, nb = statistics.median(a), statistics.median(b)
        print(f"{label}: pullstudy {na:.3f} s, baseline {nb:.3f} s, ratio {na / nb:.2f}x (median of {args.repeat})")


if __name__ == "__main__":
    main()

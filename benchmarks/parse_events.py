"""Event parsing throughput: pullstudy.parsers.kubelet_events against the upstream approach, in the same run.

The baseline is what the upstream analysis did: ``json.loads`` on every line, keep the ``Pulled``
events, read the times out of the message with a regular expression. pullstudy does more (both
timing figures, cache hits, joins with Pulling/Started/Scheduled, de-duplication, counted skips),
so the ratio says what that costs or saves. All three read the same files from the page cache, in
rounds that run each once (order rotated), and the ratios are of the medians. Run: ``make bench`` or
``.venv/bin/python benchmarks/parse_events.py [--repeat 5]``. Needs ``make data`` first.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

from pullstudy.data import catalog
from pullstudy.parsers import kubelet_events
from pullstudy.parsers.kubelet_events import parse_events
from pullstudy.paths import raw_dir

_WAITING = re.compile(r" in (\S+) \((\S+) including waiting\)")


def baseline(paths: list[Path]) -> int:
    """The upstream way: json.loads per line, Pulled events only, figures by regex."""
    pulls = 0
    for path in paths:
        with path.open() as fh:
            for line in fh:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("reason") == "Pulled" and _WAITING.search(event.get("message", "")):
                    pulls += 1
    return pulls


def upstream_approach(paths: list[Path]) -> int:
    """What the upstream ``experiments/pulling/analysis/1-prepare-data.py`` does (re-implemented here,
    made robust to the fields it assumed): json.loads per stripped line, events grouped by the name of
    their involved object, the last timestamp and instance per reason kept, a Pulled message stored.
    It returns no table; the count is of grouped objects with a Pulled event."""
    lookup: dict = {}
    for path in paths:
        for line in path.read_text().split("\n"):
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(event, dict) or "reason" not in event:
                continue
            uid = ((event.get("metadata") or {}).get("name") or "").rsplit(".", 1)[0]
            entry = lookup.setdefault(uid, {"events": {}})
            reason = str(event["reason"]).lower()
            entry["events"][reason] = {"timestamp": event.get("eventTime") or event.get("firstTimestamp"),
                                       "instance": event.get("reportingInstance")}
            if reason == "pulled":
                entry["events"][reason]["message"] = event.get("message")
    return sum(1 for e in lookup.values() if "pulled" in e["events"])


def pullstudy_parser(paths: list[Path]) -> int:
    """Each file parsed for real: the cache of parses by content (which a notebook reading a run again hits)
    is emptied first, so a round pays for hashing the files and parsing them, never for a lookup only."""
    kubelet_events.clear_cache()
    return sum(len(parse_events(p).records) for p in paths)


def event_files() -> list[Path]:
    raw = raw_dir()
    paths = [raw / r.source / f.path for r in catalog.load() for f in r.files_of("events")]
    return [p for p in paths if p.is_file()]


def measure_interleaved(fns: dict, paths, repeat: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds of each function in each of ``repeat`` rounds, and its result; every round runs each
    function once, in an order rotated per round, so that drift on the machine (frequency, other load)
    hits all alike instead of whichever ran last."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    results: dict[str, int] = {}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            results[name] = fns[name](paths)
            times[name].append(time.perf_counter() - t0)
    return times, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    paths = event_files()
    if not paths:
        raise SystemExit("no event files in data/raw: run `make data` first")
    size_mb = sum(p.stat().st_size for p in paths) / 1e6
    lines = sum(1 for p in paths for _ in p.open("rb"))
    for p in paths:  # warm the page cache so both sides read from memory
        p.read_bytes()
    fns = {"baseline": baseline, "pullstudy": pullstudy_parser, "upstream": upstream_approach}
    pullstudy_parser(paths[:1])  # imports and first-call costs out of the timing, as for the others
    times, counts = measure_interleaved(fns, paths, args.repeat)
    t_base, t_ours, t_up = (statistics.median(times[n]) for n in ("baseline", "pullstudy", "upstream"))
    n_base, n_ours, n_up = (counts[n] for n in ("baseline", "pullstudy", "upstream"))
    print(f"{len(paths)} event files, {size_mb:.1f} MB, {lines} lines, the same files for all three; "
          f"median of {args.repeat} interleaved rounds")
    print(f"{'':34s}{'seconds':>9s}{'MB/s':>9s}{'lines/s':>11s}{'pulls':>8s}")
    for name, t, n in (("baseline json.loads+regex", t_base, n_base), ("upstream 1-prepare-data.py way", t_up, n_up),
                       ("pullstudy.parsers.kubelet_events", t_ours, n_ours)):
        print(f"{name:34s}{t:9.3f}{size_mb / t:9.1f}{lines / t:11.0f}{n:8d}")

    def paired(other: str) -> float:  # the median of the per-round ratios: each round's pair saw the same load
        return statistics.median(a / b for a, b in zip(times[other], times["pullstudy"]))

    print(f"speed ratio pullstudy/baseline: {t_base / t_ours:.2f}x of the medians, {paired('baseline'):.2f}x "
          f"paired by round (pullstudy also keeps {n_ours - n_base} cache-hit and old-format records the baseline drops)")
    print(f"speed ratio pullstudy/upstream 1-prepare-data.py approach: {t_up / t_ours:.2f}x of the medians, "
          f"{paired('upstream'):.2f}x paired by round "
          "(the upstream approach builds no table, types nothing, de-duplicates nothing)")


if __name__ == "__main__":
    main()

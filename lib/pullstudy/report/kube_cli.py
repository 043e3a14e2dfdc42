"""The kube backend's command line: plan (dry run), record a run on a live cluster, or analyse a recorded one.

It lives in the report layer because analysing a recorded run starts the notebook runner; the
backend itself is :mod:`pullstudy.sources.kube.run`.
"""

from __future__ import annotations

import json
import sys

from pullstudy.sources.kube.source import KubeParamError, KubeRunError, dry_run, parse_params, run



def _names_recorded_run(given: dict) -> bool:
    """Whether the parameters name a recorded run (``size_run``, ``treatment_run``, ``runs``, ... = kube/<name>)."""
    from pullstudy.report.parameters import RUN_PARAMS
    from pullstudy.sources import is_recorded

    values = [given[k] for k in RUN_PARAMS if k in given]
    return any(is_recorded(v) for value in values for v in ([value] if isinstance(value, str) else value or []))


def list_runs(out=sys.stdout) -> int:
    """One line per recorded run: its catalog id (what the notebooks take), status, size and when."""
    from pullstudy.sources.kube.source import KubeSource, kube_runs

    runs = kube_runs()
    if not runs:
        print("no recorded kube runs (record one with `make run STUDY=01-pull-size-layers BACKEND=kube ...`)", file=out)
    for r in runs:
        folder = KubeSource(r.id).folder()
        doc = json.loads((folder / "run.json").read_text())
        print(f"{r.id:55s} {doc.get('status', '?'):10s} nodes={','.join(map(str, r.node_counts))} "
              f"started={doc.get('started', '')[:19]}  {r.description}", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pullstudy.report.kube_cli --study 01-pull-size-layers -p dry_run=true [-p key=value ...]``"""
    import argparse

    from pullstudy.report.runner import parse_parameters

    ap = argparse.ArgumentParser(prog="pullstudy.report.kube_cli", description=main.__doc__)
    ap.add_argument("--study")
    ap.add_argument("--list", action="store_true", help="list the recorded runs (kube/<name>) and their status")
    ap.add_argument("--results", default="results/kube", help="where an analysis of a recorded run goes")
    ap.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    if args.list:
        return list_runs()
    if not args.study:
        ap.error("--study is required (or --list)")
    try:
        given = parse_parameters(args.parameter)
    except ValueError as exc:
        print(f"kube backend: {exc}", file=sys.stderr)
        return 2
    if _names_recorded_run(given):  # analyse a recorded run (kube/<name>): the notebook, with backend="kube"
        from pullstudy.report import runner

        return runner.main(["--only", args.study, "--results", args.results, "-p", "backend=kube",
                               *[a for pair in args.parameter for a in ("-p", pair)]])
    try:
        p = parse_params({"study": args.study, **given})
        if p.dry_run:
            dry_run(p)
            return 0
        folder = run(p)
    except (KubeParamError, KubeRunError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    doc = json.loads((folder / "run.json").read_text())
    print(f"kube backend: run {doc['id']} {doc['status']} in {folder}; compare it with an archived run: "
          f"make run STUDY=03-local-ssd BACKEND=kube RUN_ARGS='-p treatment_run={doc['id']} -p cluster_nodes={p.nodes}'")
    return 0 if doc["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())

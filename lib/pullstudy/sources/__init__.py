"""Where pull records come from, behind one interface: a source yields records and says what it left out.

Every source — the archived catalog runs (:class:`~pullstudy.sources.archive.source.ArchiveSource`), a grid
measured on this machine (:class:`~pullstudy.sources.local.source.LocalSource`), later a live cluster —
returns a :class:`SourceResult`: the analysable pulls in the one schema of :mod:`pullstudy.records`,
and an account of everything else (exclusions by reason, files not here, what became of each
requested cluster size, the input of the completeness ledger). A comparison study takes two *arms*,
each from any source, so a new source changes no notebook: :func:`arms` turns a notebook's
parameters into its baseline and treatment.
"""
from __future__ import annotations

from typing import Any, Mapping

from pullstudy.sources.interface import RecordSource


BACKENDS = ("archive", "local", "kube")

# Per comparison notebook: the condition its local mode varies, baseline -> treatment, and which
# content mode stands for the comparison (the one whose bytes really travel or really get written).
LOCAL_CONDITIONS = {
    "02-registry-proximity": ("link", "rate-limited", "loopback", "random"),
    "03-local-ssd": ("storage", "disk", "tmpfs", "zeros"),
    "04-image-streaming": ("snapshotter", "overlayfs", "stargz", "random"),
}


def arms(backend: str, notebook: str, params: Mapping[str, Any]) -> tuple[RecordSource, RecordSource]:
    """The (baseline, treatment) sources of a comparison notebook, from its parameters.

    archive: the catalog runs ``baseline_run`` and ``treatment_run``; local: the notebook's
    condition measured on this machine (``local_grid``, ``local_replicates``).
    """
    from pullstudy.sources.archive.source import ArchiveSource
    from pullstudy.sources.local.source import LocalSource

    if backend == "archive":
        return ArchiveSource(params["baseline_run"]), ArchiveSource(params["treatment_run"])
    if backend == "local":
        if notebook not in LOCAL_CONDITIONS:
            raise ValueError(f"{notebook}: no local comparison is defined (known: {', '.join(LOCAL_CONDITIONS)}); "
                             "use backend='archive'")
        from pullstudy.sources.local.source import notebook_grid

        field_, base, treat, _ = LOCAL_CONDITIONS[notebook]
        opts = dict(grid=notebook_grid(notebook, params), replicates=int(params.get("local_replicates", 1)))
        return (LocalSource(notebook, where={field_: base}, **opts),
                LocalSource(notebook, where={field_: treat}, **opts))
    if backend == "kube":  # a run recorded on a live cluster (treatment_run="kube/<name>") against an archived one
        return source_for(params["baseline_run"]), source_for(params["treatment_run"])
    raise ValueError(f"backend={backend!r} is not a known source; choose one of {', '.join(BACKENDS)}")


def is_recorded(run_id: str) -> bool:
    """A run recorded by the kube backend (``kube/<name>``), as opposed to an archived catalog run."""
    return str(run_id).startswith("kube/")


def source_for(run_id: str) -> RecordSource:
    """The record source of a run id: a recorded kube run (``kube/<name>``) or an archived catalog run."""
    if is_recorded(run_id):
        from pullstudy.sources.kube.source import KubeSource

        return KubeSource(run_id)
    from pullstudy.sources.archive.source import ArchiveSource

    return ArchiveSource(run_id)


def run_entry(run_id: str):
    """The catalog entry of a run id, archived or recorded (a recorded run's ``run.json`` is one)."""
    from pullstudy.data import catalog

    if is_recorded(run_id):
        from pullstudy.sources.kube.source import KubeSource, catalog_entry

        return catalog_entry(KubeSource(run_id).folder())
    return catalog.get(run_id)


def availability(run_ids: list[str]):
    """Per run, cluster size and file kind: files listed and files here (``catalog.availability``'s table),
    for archived runs and recorded ones alike (a recorded run's files are in its own folder)."""
    import pandas as pd
    from pullstudy.data import catalog

    archived = [catalog.get(r) for r in dict.fromkeys(run_ids) if not is_recorded(r)]
    parts = [catalog.availability(archived)] if archived else []
    for r in dict.fromkeys(run_ids):
        if is_recorded(r):
            from pullstudy.sources.kube.source import KubeSource

            folder, entry = KubeSource(r).folder(), run_entry(r)
            parts.append(pd.DataFrame([{"run": r, "cluster_nodes": f.cluster_nodes, "kind": f.kind, "files": 1,
                                        "available": int((folder / f.path).is_file())} for f in entry.files]))
    return pd.concat(parts, ignore_index=True) if parts else catalog.availability([])


def recorded_kube_runs() -> list:
    """The runs recorded by the kube backend (``kube/<name>``), as catalog runs, for parameter checks."""
    from pullstudy.sources.kube.source import kube_runs

    return kube_runs()

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
        from pullstudy.sources.kube.source import KubeSource

        def one(run_id: str):
            return KubeSource(run_id) if str(run_id).startswith("kube/") else ArchiveSource(run_id)

        return one(params["baseline_run"]), one(params["treatment_run"])
    raise ValueError(f"backend={backend!r} is not a known source; choose one of {', '.join(BACKENDS)}")


def recorded_kube_runs() -> list:
    """The runs recorded by the kube backend (``kube/<name>``), as catalog runs, for parameter checks."""
    from pullstudy.sources.kube.source import kube_runs

    return kube_runs()

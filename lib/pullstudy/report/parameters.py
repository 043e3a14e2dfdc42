"""Every notebook's parameters, checked in one place before the first cell of work.

papermill injects parameters as they are given: ``time_column="nonsense"`` surfaced as a KeyError
deep in pandas, ``cluster_nodes=4`` as "'int' object is not iterable", ``cluster_nodes="four"`` was
read as the sizes ``['f', 'o', 'u', 'r']``, ``backend="kube"`` silently ran the local backend, and
``n_boot=1`` gave a zero-width "95% CI" with a verdict. Each notebook therefore calls, in the cell
after its parameters cell::

    globals().update(parameters.validate("03-local-ssd", globals()))

which returns the cleaned values (a single value where a list is expected becomes a one-item list)
or raises a ParameterError whose one-line message names the parameter, what was given and what is
allowed. ``pullstudy.report.runner`` runs the same check before starting any notebook and also refuses
parameter names a notebook does not have (papermill would only warn and run with the defaults).

The spec below is declarative, one entry per parameter of each notebook. The names and defaults come
from the notebook's own parameters cell (:func:`notebook_parameters`); a test checks that every
notebook parameter has a spec and every default passes it, so the two cannot drift apart.
"""

from __future__ import annotations

import ast
import difflib
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pullstudy.images.apps import CATALOGUE as APP_CATALOGUE

# Fewer resamples than this make a "95% CI" meaningless (n_boot=1 gives a zero-width interval).
MIN_BOOT = 200
SET_BY_RUNNER = ("output_dir", "notebook")  # every notebook has them; fixed or set by the runner, not by users


class ParameterError(ValueError):
    """A notebook parameter with a value the notebook cannot use; the message is one line."""


@dataclass(frozen=True)
class Param:
    """What one parameter accepts.

    ``kind`` is the item type (str, int, float, bool or dict); with ``many`` the value is a list of
    such items, and a single item is accepted as a one-item list (``cluster_nodes=4``,
    ``runs="pulling/run1"``), never iterated into characters. ``none``: None is allowed (its meaning
    is in the notebook's comment). ``lookup``: the value must be a run ("run") or container set
    ("set", or a folder of manifests) of the catalog.
    """

    kind: type
    many: bool = False
    none: bool = False
    choices: tuple = ()
    minimum: float | None = None
    above: float | None = None  # strictly greater than this
    maximum: float | None = None
    length: int | None = None  # exact list length
    lookup: str | None = None
    why: str = ""  # the reason for a bound, shown when it is violated


def _describe(p: Param) -> str:
    item = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a mapping"}[p.kind]
    if p.choices:
        item = " or ".join(repr(c) for c in p.choices)
    elif p.lookup == "run":
        item = "a catalog run id such as 'pulling/run1'"
    elif p.lookup == "set":
        item = "a catalog set id such as 'similarity/spack' or a folder of manifests"
    bounds = []
    if p.above is not None:
        bounds.append(f"> {p.above:g}")
    if p.minimum is not None:
        bounds.append(f">= {p.minimum:g}")
    if p.maximum is not None:
        bounds.append(f"<= {p.maximum:g}")
    if bounds:
        item += " " + " and ".join(bounds)
    if p.many:
        item = (f"a list of {p.length} values, each {item}" if p.length else
                f"{item}, or a list of them")
    if p.none:
        item += ", or None"
    return item


# ------------------------------------------------------------------------------- the specs

RUN = Param(str, lookup="run")
SIZES = Param(int, many=True, none=True, minimum=1)
TIME = Param(str, choices=("pull_wait_s", "pull_s"))
N_BOOT = Param(int, minimum=MIN_BOOT, why=f"fewer than {MIN_BOOT} resamples make a 95% CI meaningless")
SEED = Param(int, minimum=0)
# The pull-time notebooks also read runs recorded by the kube backend (treatment_run="kube/<name>").
BACKEND_KUBE = Param(str, choices=("archive", "local", "kube"))
GRID = Param(dict, none=True)
REPLICATES = Param(int, minimum=1)
MARGIN = Param(float, above=0, maximum=1)
SPEEDUP = Param(float, above=0)
PATH = Param(str, none=True)

SPECS: dict[str, dict[str, Param]] = {
    "01-pull-size-layers": {
        "size_run": RUN, "layers_run": RUN, "cluster_nodes": SIZES, "time_column": TIME,
        "layers_bound_s": Param(float, above=0), "model_split_bytes": Param(float, none=True, above=0),
        "n_boot": N_BOOT, "seed": SEED, "backend": BACKEND_KUBE, "local_grid": GRID,
    },
    "02-registry-proximity": {
        "baseline_run": RUN, "treatment_run": RUN, "cluster_nodes": SIZES, "time_column": TIME,
        "equivalence_margin": MARGIN, "network_min_fraction": Param(float, minimum=0, maximum=1),
        "n_boot": N_BOOT, "seed": SEED, "backend": BACKEND_KUBE, "local_grid": GRID, "local_replicates": REPLICATES,
    },
    "03-local-ssd": {
        "baseline_run": RUN, "treatment_run": RUN, "cluster_nodes": SIZES, "time_column": TIME,
        "claimed_speedup": SPEEDUP, "equivalence_margin": MARGIN,
        "n_boot": N_BOOT, "seed": SEED, "backend": BACKEND_KUBE, "local_grid": GRID, "local_replicates": REPLICATES,
    },
    "04-image-streaming": {
        "baseline_run": RUN, "treatment_run": RUN, "cluster_nodes": SIZES, "time_column": TIME,
        "claimed_speedup_range": Param(float, many=True, length=2, above=0),
        "apps_baseline_run": RUN, "apps_treatment_run": RUN, "apps_cluster_nodes": SIZES,
        "apps_claimed_speedup": SPEEDUP, "wall_time": Param(str, choices=("fluxstart_s", "fluxsubmit_s")),
        "equivalence_margin": MARGIN, "n_boot": N_BOOT, "seed": SEED, "backend": BACKEND_KUBE, "local_grid": GRID,
        "local_replicates": REPLICATES,
        "workload": Param(str, choices=("synthetic", "apps")),
        "local_apps": Param(str, many=True, none=True, choices=tuple(APP_CATALOGUE)),
        "link_mbit": Param(float, above=0, maximum=100_000, why="a link of this machine, in Mbit/s"),
    },
    "05-layer-similarity": {
        "sets": Param(str, many=True, lookup="set"),
        "measures": Param(str, many=True, choices=("digest", "content")),
        "spack_set": Param(str), "tolerance": Param(float, minimum=0),
    },
    "06-gpu-usernetes-check": {
        "archive_files": Param(str, many=True, none=True), "kubeconfig": PATH, "node_container": PATH,
        "run_workload_pod": Param(bool), "dry_run": Param(bool), "training_log": PATH,
        "expected_epochs": Param(int, none=True, minimum=1), "command_timeout_s": Param(float, above=0),
    },
    "07-cluster-scale": {
        "runs": Param(str, many=True, lookup="run"), "cluster_nodes": SIZES, "time_column": TIME,
        "n_boot": N_BOOT, "seed": SEED, "backend": Param(str, choices=("archive", "kube")),
    },
}


def _distinct(a: str, b: str) -> Callable[[dict], str | None]:
    def check(values: dict) -> str | None:
        if values[a] == values[b]:
            return (f"{b}={values[b]!r} is the same run as {a}: a run compared with itself says nothing; "
                    f"choose two different runs")
        return None
    return check


RUN_PARAMS = ("size_run", "layers_run", "baseline_run", "treatment_run", "runs")


def _recorded_needs_kube(values: dict) -> str | None:
    """A run recorded by the kube backend (kube/<name>) is read only with backend="kube", so that a notebook
    run with the archive's defaults never mixes in a recorded run unawares (and the verdicts say why)."""
    if values.get("backend") == "kube":
        return None
    for name in RUN_PARAMS:
        given = values.get(name)
        for run in ([given] if isinstance(given, str) else given or []):
            if str(run).startswith("kube/"):
                return (f"{name}={given!r} names a run recorded on a live cluster: set backend=\"kube\" to read it "
                        f"(its verdicts are reported, not judged)")
    return None


def _apps_need_the_apps_workload(values: dict) -> str | None:
    if values.get("local_apps") and values.get("workload") != "apps":
        return (f"local_apps={values['local_apps']!r} names application images but workload={values['workload']!r}: "
                "set workload='apps', or local_apps=None")
    return None


def _range_ordered(values: dict) -> str | None:
    low, high = values["claimed_speedup_range"]
    return None if low <= high else f"claimed_speedup_range={[low, high]!r} must be [low, high] with low <= high"


def _spack_among_sets(values: dict) -> str | None:
    names = [Path(s).name for s in values["sets"]]
    # a set as given or any tail of its path (similarity/spack, spack); or a catalog set not chosen
    # (the spack part is then reported not testable): similarity.resolve_label reads it the same way
    tails = {"/".join(Path(s).parts[-n:]) for s in values["sets"] for n in range(1, len(Path(s).parts) + 1)}
    if values["spack_set"] in tails or values["spack_set"] in _known("set"):
        return None
    return f"spack_set={values['spack_set']!r} is not one of the sets' names; allowed: " + \
        ", ".join(repr(n) for n in names)


# Rules across parameters, per notebook: each returns a problem or None.
# Every notebook names itself in its parameters cell, so its setup cell is the same in every notebook;
# the name is fixed (a notebook cannot be run as another one).
for _stem, _spec in SPECS.items():
    _spec["notebook"] = Param(str, choices=(_stem,), why="the notebook's own name, fixed")

CROSS: dict[str, list[Callable[[dict], str | None]]] = {
    "01-pull-size-layers": [_recorded_needs_kube],
    "02-registry-proximity": [_distinct("baseline_run", "treatment_run"), _recorded_needs_kube],
    "03-local-ssd": [_distinct("baseline_run", "treatment_run"), _recorded_needs_kube],
    "04-image-streaming": [_distinct("baseline_run", "treatment_run"),
                           _distinct("apps_baseline_run", "apps_treatment_run"), _range_ordered,
                           _apps_need_the_apps_workload, _recorded_needs_kube],
    "05-layer-similarity": [_spack_among_sets],
    "07-cluster-scale": [_recorded_needs_kube],
}


# ------------------------------------------------------------------------------- checking


def _known(lookup: str) -> list[str]:
    from pullstudy.data import catalog

    if lookup == "run":  # the archived runs and the runs recorded by the kube backend (kube/<name>)
        from pullstudy.sources import recorded_kube_runs as kube_runs

        return [r.id for r in catalog.load()] + [r.id for r in kube_runs()]
    return [s.id for s in catalog.load_sets()]


def close_matches(word: str, candidates: list[str]) -> str:
    """" (did you mean 'x'?)" for a near miss, else ""."""
    near = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""


def _item(name: str, p: Param, value: Any, base: Path | None) -> tuple[Any, str | None]:
    """(cleaned item, problem or None)."""
    kind_ok = {
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
        float: isinstance(value, numbers.Real) and not isinstance(value, bool),
        dict: isinstance(value, Mapping),
    }[p.kind]
    if not kind_ok:
        return value, "is not allowed"
    if p.kind is float:
        value = float(value)
    elif p.kind is int:
        value = int(value)
    if p.choices and value not in p.choices:
        return value, "is not allowed"
    if p.above is not None and not value > p.above or p.minimum is not None and value < p.minimum \
            or p.maximum is not None and value > p.maximum:
        return value, "is out of range" + (f" ({p.why})" if p.why else "")
    if p.lookup:
        if p.lookup == "set" and ((base or Path.cwd()) / value).is_dir():
            return value, None
        known = _known(p.lookup)
        if value not in known:
            what = "run" if p.lookup == "run" else "container set (nor a folder)"
            near = close_matches(value, known)
            return value, (f"is no {what} of the catalog{near}" if near else
                           f"is no {what} of the catalog; known: {', '.join(known)}")
    return value, None


def check(notebook: str, name: str, value: Any, *, base: Path | None = None) -> Any:
    """One parameter's cleaned value, or a ParameterError naming it, the value and what is allowed."""
    p = SPECS[notebook][name]

    def fail(problem: str, shown: Any = value) -> ParameterError:
        return ParameterError(f"{notebook}: parameter {name}={shown!r} {problem}; allowed: {_describe(p)}")

    if value is None:
        if p.none:
            return None
        raise fail("is not allowed")
    if p.many:
        single = isinstance(value, (str, numbers.Number, Mapping))
        if single:
            value = [value]  # one item where a list is expected: never split a string into characters
        elif not isinstance(value, (list, tuple)):
            raise fail("is not a list")
        if not value:
            raise fail("is empty")
        if p.length is not None and len(value) != p.length:
            raise fail(f"has {len(value)} values, not {p.length}")
        cleaned = []
        for item in value:
            item, problem = _item(name, p, item, base)
            if problem:
                raise fail(problem) if single else fail(f"holds {item!r}, which {problem}")
            cleaned.append(item)
        return cleaned
    cleaned, problem = _item(name, p, value, base)
    if problem:
        raise fail(problem)
    return cleaned


def validate(notebook: str, namespace: Mapping[str, Any], *, base: str | Path | None = None) -> dict[str, Any]:
    """The notebook's parameters from ``namespace`` (its globals), cleaned; or a ParameterError.

    ``base`` is the folder relative paths are read from (the notebook's working directory; default
    the current one).
    """
    if notebook not in SPECS:
        raise ParameterError(f"no parameter spec for notebook {notebook!r}; known: {', '.join(SPECS)}")
    base = Path(base) if base is not None else None
    missing = [n for n in SPECS[notebook] if n not in namespace]
    if missing:
        raise ParameterError(f"{notebook}: parameter {missing[0]} is not set (the parameters cell and "
                             "pullstudy.report.parameters.SPECS disagree)")
    values = {name: check(notebook, name, namespace[name], base=base) for name in SPECS[notebook]}
    for rule in CROSS.get(notebook, []):
        problem = rule(values)
        if problem:
            raise ParameterError(f"{notebook}: parameter {problem}")
    return values


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The names and default values of a notebook's parameters cell (papermill's own reading of it).

    A default that is not a literal is given as its source text.
    """
    import papermill as pm  # slow to import; only needed here
    from nbformat.validator import MissingIDFieldWarning

    with warnings.catch_warnings():  # about the notebook's format, not its parameters: not for this check
        warnings.simplefilter("ignore", MissingIDFieldWarning)
        found = pm.inspect_notebook(str(path))
    defaults = {}
    for name, info in found.items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            defaults[name] = info["default"]
    return defaults

"""Notebook parameters: one spec per notebook, checked before any work; bad values get one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pullstudy import paths
from pullstudy.report.parameters import MIN_BOOT, SPECS, ParameterError, notebook_parameters, validate
from pullstudy.report.runner import plan_parameters

NOTEBOOKS = paths.notebooks_dir()
REPO = NOTEBOOKS.parent


def _defaults(stem: str) -> dict:
    values = notebook_parameters(NOTEBOOKS / f"{stem}.ipynb")
    values.pop("output_dir")
    return values


def _validate(stem: str, **overrides) -> dict:
    return validate(stem, {**_defaults(stem), **overrides}, base=NOTEBOOKS)


def test_every_notebook_parameter_has_a_spec_and_its_default_passes() -> None:
    """The spec cannot drift from the parameters cells: same names, and every default is valid."""
    stems = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert sorted(SPECS) == stems
    for stem in stems:
        defaults = _defaults(stem)
        assert set(defaults) == set(SPECS[stem]), stem
        assert validate(stem, defaults, base=NOTEBOOKS) == defaults, stem


def test_every_notebook_validates_in_the_cell_after_its_parameters() -> None:
    import nbformat

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        assert f'notebook = "{path.stem}"' in nb.cells[i].source  # names itself, so the setup cell is the same
        assert "globals().update(parameters.validate(notebook, globals()))" in nb.cells[i + 1].source


BAD = [
    # (notebook, overrides, what the one-line message must say)
    ("03-local-ssd", {"time_column": "nonsense"}, "time_column='nonsense' is not allowed; allowed: 'pull_wait_s' or 'pull_s'"),
    ("07-cluster-scale", {"time_column": "pull_wait"}, "time_column='pull_wait'"),
    ("03-local-ssd", {"cluster_nodes": "four"}, "cluster_nodes='four' is not allowed; allowed: an integer >= 1"),
    ("01-pull-size-layers", {"cluster_nodes": [4, 0]}, "cluster_nodes=[4, 0] holds 0, which is out of range"),
    ("01-pull-size-layers", {"cluster_nodes": [4, 8.5]}, "holds 8.5"),
    ("02-registry-proximity", {"cluster_nodes": []}, "cluster_nodes=[] is empty"),
    ("07-cluster-scale", {"backend": "local"}, "backend='local' is not allowed; allowed: 'archive' or 'kube'"),
    ("01-pull-size-layers", {"backend": "k8s"}, "backend='k8s' is not allowed; allowed: 'archive' or 'local' or 'kube'"),
    ("04-image-streaming", {"backend": "nonsense"}, "backend='nonsense'"),
    ("02-registry-proximity", {"treatment_run": "pulling/run1"}, "the same run as baseline_run"),
    ("03-local-ssd", {"baseline_run": "pulling/run3"}, "the same run as baseline_run"),
    ("04-image-streaming", {"apps_treatment_run": "pulling-test/without-streaming"}, "the same run as apps_baseline_run"),
    ("03-local-ssd", {"n_boot": 1}, f"n_boot=1 is out of range (fewer than {MIN_BOOT} resamples"),
    ("07-cluster-scale", {"n_boot": MIN_BOOT - 1}, f"allowed: an integer >= {MIN_BOOT}"),
    ("01-pull-size-layers", {"n_boot": "2000"}, "n_boot='2000' is not allowed"),
    ("03-local-ssd", {"treatment_run": "pulling/rn3"}, "is no run of the catalog (did you mean 'pulling/run3'"),
    ("07-cluster-scale", {"runs": ["pulling/run1", "pulling/run9"]}, "holds 'pulling/run9', which is no run of the catalog"),
    ("05-layer-similarity", {"sets": "similarity/spak"}, "is no container set (nor a folder) of the catalog (did you mean 'similarity/spack'"),
    ("05-layer-similarity", {"measures": "digests"}, "measures='digests' is not allowed; allowed: 'digest' or 'content'"),
    ("05-layer-similarity", {"spack_set": "spak"}, "spack_set='spak' is not one of the sets' names"),
    ("04-image-streaming", {"claimed_speedup_range": [120, 15]}, "low <= high"),
    ("04-image-streaming", {"wall_time": "wall"}, "'fluxstart_s' or 'fluxsubmit_s'"),
    ("06-gpu-usernetes-check", {"command_timeout_s": "soon"}, "command_timeout_s='soon'"),
    ("06-gpu-usernetes-check", {"run_workload_pod": "yes"}, "run_workload_pod='yes' is not allowed; allowed: true or false"),
    ("06-gpu-usernetes-check", {"archive_files": 4}, "archive_files=4 is not allowed"),
]


@pytest.mark.parametrize("stem, overrides, message", BAD, ids=[f"{s}:{next(iter(o))}" for s, o, _ in BAD])
def test_bad_value_is_refused_in_one_line(stem: str, overrides: dict, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        _validate(stem, **overrides)
    text = str(info.value)
    assert message in text
    assert text.startswith(f"{stem}: parameter ") and "\n" not in text


def test_a_single_value_where_a_list_is_expected_is_one_item() -> None:
    """Never iterated: "four" was the sizes f, o, u, r; a label string was split into characters."""
    assert _validate("03-local-ssd", cluster_nodes=4)["cluster_nodes"] == [4]
    assert _validate("06-gpu-usernetes-check", archive_files="gke/size4/nodes-4")["archive_files"] == [
        "gke/size4/nodes-4"]
    assert _validate("07-cluster-scale", runs="pulling/run3")["runs"] == ["pulling/run3"]
    assert _validate("05-layer-similarity", sets="similarity/spack")["sets"] == ["similarity/spack"]
    assert _validate("05-layer-similarity", measures="content")["measures"] == ["content"]
    # numbers are cleaned to the declared kind; None keeps its documented meaning
    assert _validate("04-image-streaming", claimed_speedup_range=(15, 120))["claimed_speedup_range"] == [15.0, 120.0]
    assert _validate("07-cluster-scale", cluster_nodes=None)["cluster_nodes"] is None


def test_a_folder_of_manifests_is_a_set(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    values = validate("05-layer-similarity", {**_defaults("05-layer-similarity"), "sets": str(folder),
                                              "spack_set": "mine"})
    assert values["sets"] == [str(folder)]


def test_unknown_parameter_name_is_refused_listing_the_real_ones() -> None:
    """papermill only warns about n_bot=50 and runs with the defaults."""
    with pytest.raises(ParameterError) as info:
        plan_parameters([NOTEBOOKS / "03-local-ssd.ipynb"], {"n_bot": 50})
    text = str(info.value)
    assert "unknown parameter n_bot: notebook 03-local-ssd has no parameter of that name" in text
    assert "(did you mean 'n_boot'?)" in text
    assert "its parameters: backend, baseline_run, claimed_speedup, cluster_nodes" in text
    assert "output_dir" not in text and "\n" not in text


def test_each_notebook_gets_only_the_parameters_it_has() -> None:
    """`make reproduce REPRODUCE_ARGS="-p n_boot=500"` must still run 05, which has no n_boot."""
    plan = plan_parameters([NOTEBOOKS / "03-local-ssd.ipynb", NOTEBOOKS / "05-layer-similarity.ipynb"],
                           {"n_boot": 500, "tolerance": 0.02})
    assert plan == {"03-local-ssd": {"n_boot": 500}, "05-layer-similarity": {"tolerance": 0.02}}
    with pytest.raises(ParameterError, match="n_boot=50 is out of range"):
        plan_parameters([NOTEBOOKS / "03-local-ssd.ipynb"], {"n_boot": 50})


def test_make_run_passes_backend_only_when_not_the_default() -> None:
    """`make run STUDY=05-layer-similarity` passed -p backend=archive to a notebook without backend."""
    def command(*args: str) -> str:
        out = subprocess.run(["make", "-n", "run", *args], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
        return next(line for line in out.splitlines() if "pullstudy.report.runner" in line)

    assert "backend" not in command("STUDY=05-layer-similarity")
    assert "-p backend=local" in command("STUDY=03-local-ssd", "BACKEND=local")

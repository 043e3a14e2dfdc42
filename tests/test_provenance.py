"""results/ro-crate-metadata.json (pullstudy.report.provenance): validated by roc-validator, and the run structure
(one action per notebook, its parameters, inputs with checksums and DOI, outputs and verdicts) checked.

roc-validator resolves the crate's JSON-LD context over HTTP through its own cache; there is no network here
or in CI, so its cache is seeded with the RO-Crate 1.3 context that the ``rocrate`` package ships (the
document w3id.org serves for that URL) and the validator runs with ``--offline``.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import nbformat
import pytest
import requests
import urllib3
from nbformat.v4 import new_code_cell, new_notebook
from requests_cache import CachedSession

import rocrate
from pullstudy.report import provenance
from pullstudy.data.fetch import FETCH_REPORT
from pullstudy.paths import PROJECT_ROOT
from pullstudy.report.runner import main

pytestmark = pytest.mark.notebooks
VALIDATOR = PROJECT_ROOT / ".venv" / "bin" / "rocrate-validator"
CONTEXT = "https://w3id.org/ro/crate/1.3/context"


def _seed_cache(path: Path) -> Path:
    body = (Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld").read_bytes()
    assert json.loads(body)["@id"] == CONTEXT
    session = CachedSession(cache_name=str(path), backend="sqlite", allowable_methods=("GET",))
    r = requests.Response()
    r.status_code, r.url, r._content, r.encoding = 200, CONTEXT, body, "utf-8"
    r.headers["Content-Type"] = "application/ld+json"
    r.request = requests.Request("GET", CONTEXT).prepare()
    r.raw = urllib3.HTTPResponse(body=io.BytesIO(body), headers=dict(r.headers), status=200,
                                 preload_content=False, request_url=CONTEXT)
    session.cache.save_response(r)
    return path


def validate(crate_dir: Path, cache: Path) -> dict:
    report = crate_dir.parent / "validation.json"
    subprocess.run([str(VALIDATOR), "-y", "--disable-color", "validate", "--offline", "--cache-path", str(cache),
                    "-p", "ro-crate-1.3", "-f", "json", "-o", str(report), str(crate_dir)],
                   capture_output=True, text=True, timeout=300)
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    nbdir = root / "notebooks"
    nbdir.mkdir()
    params = new_code_cell('output_dir = ""\nthreshold = 1.0')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(
        "import pandas as pd\nfrom pullstudy.studies.claims import Verdict\nfrom pullstudy.report.output import StudyOutput\n"
        "out = StudyOutput('01-ok', output_dir)\n"
        "out.table(pd.DataFrame({'image': ['a'], 'speedup': [1.1]}), 'speedup-per-image')\n"
        "out.verdict(Verdict('ssd-speedup', 'partly supported', 'inside the noise floor', value=1.11, n=336))\n"
        "out.write()")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "01-ok.ipynb")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["--notebooks", str(nbdir), "--results", str(root / "results"), "--no-progress",
                     "-p", "threshold=2.5"])
    assert code == 0, err.getvalue()
    return root / "results", _seed_cache(root / "roc-cache")


def _graph(results: Path) -> dict:
    return {e["@id"]: e for e in json.loads((results / provenance.CRATE_FILE).read_text())["@graph"]}


def _ids(value) -> list[str]:
    return [v["@id"] for v in (value if isinstance(value, list) else [value])]


def test_make_reproduce_writes_a_crate_that_validates(run):
    results, cache = run
    report = validate(results, cache)
    assert report["passed"] is True, [i["message"] for i in report["issues"]][:10]


def test_a_broken_crate_is_refused_by_the_validator(run, tmp_path):
    """The validator really checks: an output the crate lists, removed, fails it."""
    results, cache = run
    broken = tmp_path / "results"
    subprocess.run(["cp", "-r", str(results), str(broken)], check=True)
    (broken / "01-ok" / "speedup-per-image.csv").unlink()
    report = validate(broken, cache)
    assert report["passed"] is False
    assert any("speedup-per-image.csv" in json.dumps(i) for i in report["issues"])


def test_each_notebook_run_links_its_parameters_inputs_outputs_and_verdicts(run):
    results, _ = run
    g = _graph(results)
    action = g["#run-01-ok"]
    assert action["@type"] == "CreateAction" and action["actionStatus"] == "http://schema.org/CompletedActionStatus"
    assert action["startTime"] and action["endTime"]
    notebook = g[action["instrument"]["@id"]]
    assert notebook["@id"] == "01-ok/01-ok.ipynb" and "SoftwareSourceCode" in notebook["@type"]
    required = {g[i]["name"]: g[i]["version"] for i in _ids(notebook["softwareRequirements"])}
    assert required["pandas"] and required["papermill"]
    params = {g[i]["name"]: g[i]["value"] for i in _ids(action["object"]) if g[i]["@type"] == "PropertyValue"}
    assert params["threshold"] == "2.5" and params["output_dir"].endswith("01-ok") and params["pullstudy version"]
    data = g["#input-data"]
    assert "#input-data" in _ids(action["object"]) and "#input-data" in _ids(g["./"]["hasPart"])
    for part in _ids(data.get("hasPart", []))[:20]:
        assert part.startswith("https://raw.githubusercontent.com/") and g[part]["identifier"].startswith("git-blob:")
    results_ids = _ids(action["result"])
    assert "01-ok/metrics.json" in results_ids and "01-ok/speedup-per-image.csv" in results_ids
    verdicts = {g[i]["name"]: g[i]["value"] for i in results_ids if g[i]["@type"] == "PropertyValue"}
    assert verdicts == {"ssd-speedup": "partly supported"}
    assert set(_ids(g["./"]["conformsTo"])) == set(provenance.PROFILES)


def test_the_data_doi_and_bundle_checksum_when_fetched_by_doi(run, tmp_path):
    results, _ = run
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / FETCH_REPORT).write_text(json.dumps({"status": {}, "detail": {}, "source": {
        "doi": "10.5281/zenodo.777", "record": "777", "bundle": "pullstudy-data-0.1.0.tar.gz", "sha256": "cd" * 32}}))
    copy = tmp_path / "results"
    subprocess.run(["cp", "-r", str(results), str(copy)], check=True)
    provenance.build(copy, raw=raw)
    data = _graph(copy)["#input-data"]
    assert data["identifier"] == "https://doi.org/10.5281/zenodo.777" and "cd" * 32 in data["description"]

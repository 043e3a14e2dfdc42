"""results/ro-crate-metadata.json (pullstudy.report.provenance): validated by roc-validator, and the run structure
(one action per notebook, its parameters, inputs with checksums and DOI, outputs and verdicts) checked.

The crate is validated with roc-validator's Workflow Run Crate 0.5 profile (which includes Process Run Crate 0.5,
Workflow RO-Crate 1.0 and RO-Crate 1.1). The validator resolves the crate's JSON-LD context over HTTP through its
own cache; there is no network here or in CI, so its cache is seeded with the RO-Crate 1.1 context that
``make cite-tools`` takes from the rocrate 0.12.0 wheel (tools/ro_crate_context.py, pinned by SHA-256), and the
validator runs with ``--offline``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
import requests
import urllib3
from requests_cache import CachedSession

from pullstudy.report import provenance
from pullstudy.data.fetch import FETCH_REPORT
from pullstudy.paths import PROJECT_ROOT
from notebook_support import run_quietly, write_notebook

pytestmark = pytest.mark.notebooks
VALIDATOR = PROJECT_ROOT / ".venv" / "bin" / "rocrate-validator"
CONTEXT = "https://w3id.org/ro/crate/1.1/context"
CONTEXT_FILE = PROJECT_ROOT / ".venv" / "tools" / "ro-crate-1.1-context.jsonld"
PROFILE = "workflow-run-crate-0.5"


def _seed_cache(path: Path) -> Path:
    if not CONTEXT_FILE.is_file():
        why = f"needs the RO-Crate 1.1 context ({CONTEXT_FILE}): run `make cite-tools`"
        if os.environ.get("PULLSTUDY_REQUIRE_SYSTEM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    body = CONTEXT_FILE.read_bytes()
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
                    "-p", PROFILE, "-f", "json", "-o", str(report), str(crate_dir)],
                   capture_output=True, text=True, timeout=300)
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    write_notebook(root / "notebooks" / "01-ok.ipynb",
                   "import pandas as pd\nfrom pullstudy.studies.claims import Verdict\n"
                   "from pullstudy.report.output import StudyOutput\n"
                   "out = StudyOutput('01-ok', output_dir)\n"
                   "out.table(pd.DataFrame({'image': ['a'], 'speedup': [1.1]}), 'speedup-per-image')\n"
                   "out.verdict(Verdict('ssd-speedup', 'partly supported', 'inside the noise floor', value=1.11, n=336))\n"
                   "out.write()", parameters='output_dir = ""\nthreshold = 1.0')
    run_quietly(root / "notebooks", root / "results", "-p", "threshold=2.5")
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
    assert "#input-data" in _ids(action["object"])
    parts = _ids(data.get("hasPart", []))
    assert parts and set(parts) <= set(_ids(g["./"]["hasPart"]))  # RO-Crate 1.1: data entities reached from the root
    for part in parts[:20]:
        assert part.startswith("https://raw.githubusercontent.com/") and g[part]["identifier"].startswith("git-blob:")
    results_ids = _ids(action["result"])
    assert "01-ok/metrics.json" in results_ids and "01-ok/speedup-per-image.csv" in results_ids
    verdicts = {g[i]["name"]: g[i]["value"] for i in results_ids if g[i]["@type"] == "PropertyValue"}
    assert verdicts == {"ssd-speedup": "partly supported"}
    assert set(_ids(g["./"]["conformsTo"])) == set(provenance.PROFILES)


def test_the_workflow_is_the_runner_that_ran_with_its_overrides_inputs_and_outputs(run):
    results, _ = run
    g = _graph(results)
    assert g["ro-crate-metadata.json"]["conformsTo"]["@id"] == "https://w3id.org/ro/crate/1.1"
    workflow = g[g["./"]["mainEntity"]["@id"]]
    assert workflow["@id"] == provenance.WORKFLOW_FILE and "ComputationalWorkflow" in workflow["@type"]
    assert (results / provenance.WORKFLOW_FILE).read_bytes() == (
        PROJECT_ROOT / "lib" / "pullstudy" / "report" / "runner.py").read_bytes()
    run_action = g["#run-reproduce"]
    assert run_action["instrument"]["@id"] == provenance.WORKFLOW_FILE
    objects = _ids(run_action["object"])
    assert "#input-data" in objects and {g[i]["name"]: g[i]["value"] for i in objects
                                         if g[i]["@type"] == "PropertyValue"} == {"threshold": "2.5"}
    produced = _ids(run_action["result"])
    assert {"claims.csv", "index.html", "paper/numbers.tex", "paper/references.bib"} <= set(produced)
    assert set(_ids(g["./"]["mentions"])) == {"#run-reproduce", "#run-01-ok"}


def test_a_crate_without_its_workflow_fails_the_workflow_run_profile(run, tmp_path):
    """The Workflow Run Crate profile is what is checked, not only RO-Crate: no mainEntity, no pass."""
    results, cache = run
    broken = tmp_path / "results"
    subprocess.run(["cp", "-r", str(results), str(broken)], check=True)
    crate = json.loads((broken / provenance.CRATE_FILE).read_text())
    root = next(e for e in crate["@graph"] if e["@id"] == "./")
    del root["mainEntity"]
    (broken / provenance.CRATE_FILE).write_text(json.dumps(crate))
    report = validate(broken, cache)
    assert report["passed"] is False
    assert any("mainEntity" in i["message"] for i in report["issues"])


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

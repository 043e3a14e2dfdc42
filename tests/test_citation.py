"""CITATION.cff (validated by the real cffconvert), .zenodo.json and the data bundle's deposit metadata agree."""

import json
import os
import subprocess
import tomllib

import pytest
import yaml

from pullstudy.paths import PROJECT_ROOT

CFFCONVERT = PROJECT_ROOT / ".venv" / "tools" / "cffconvert" / "bin" / "cffconvert"
UPSTREAM = {"https://github.com/converged-computing/container-chonks",
            "https://github.com/converged-computing/performance-study", "10.5281/zenodo.13738495"}


def _cff() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "CITATION.cff").read_text())


def _zenodo() -> dict:
    return json.loads((PROJECT_ROOT / ".zenodo.json").read_text())


def _deposit() -> dict:
    return json.loads((PROJECT_ROOT / "data" / "zenodo-deposit.json").read_text())["metadata"]


def _pyproject() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def cffconvert() -> str:
    if not CFFCONVERT.exists():
        why = f"needs cffconvert in its own venv ({CFFCONVERT}): run `make cite-tools`"
        if os.environ.get("PULLSTUDY_REQUIRE_SYSTEM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return str(CFFCONVERT)


def test_cffconvert_is_the_pinned_version(cffconvert):
    pin = _pyproject()["tool"]["pullstudy"]["isolated-tools"]["cffconvert"]
    out = subprocess.run([cffconvert, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert out == pin


def test_citation_cff_is_valid(cffconvert):
    done = subprocess.run([cffconvert, "--validate", "-i", str(PROJECT_ROOT / "CITATION.cff")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout


def test_cffconvert_refuses_a_broken_citation(cffconvert, tmp_path):
    """The validator really validates: a reference type outside the schema is refused."""
    broken = tmp_path / "CITATION.cff"
    broken.write_text((PROJECT_ROOT / "CITATION.cff").read_text().replace("type: data", "type: dataset"))
    done = subprocess.run([cffconvert, "--validate", "-i", str(broken)], capture_output=True, text=True)
    assert done.returncode != 0 and "'dataset' is not one of" in done.stdout + done.stderr


def test_citation_and_zenodo_agree_on_title_version_authors_licence():
    """Zenodo ignores CITATION.cff when .zenodo.json exists: the two must say the same."""
    cff, zen = _cff(), _zenodo()
    assert cff["title"] == zen["title"]
    assert str(cff["version"]) == zen["version"] == _pyproject()["project"]["version"]
    assert [a.get("name") or f"{a['family-names']}, {a['given-names']}" for a in cff["authors"]] == \
           [c["name"] for c in zen["creators"]]
    assert cff["license"] == zen["license"] == _pyproject()["project"]["license"]["text"]


def test_data_deposit_metadata_names_its_sources_and_licence():
    meta = _deposit()
    for key in ("title", "creators", "description", "license", "keywords", "version", "related_identifiers"):
        assert meta.get(key), key
    assert meta["upload_type"] == "dataset" and meta["license"] == "MIT"
    assert meta["version"] == _pyproject()["project"]["version"]
    assert meta["creators"] == _zenodo()["creators"]
    derived = {r["identifier"] for r in meta["related_identifiers"] if r["relation"] == "isDerivedFrom"}
    assert derived == UPSTREAM
    assert {r["identifier"] for r in _zenodo()["related_identifiers"] if r["relation"] == "isDerivedFrom"} == UPSTREAM

"""make deposit (pullstudy.data.zenodo.deposit) against the local Zenodo-shaped server: a draft is created, the
bytes uploaded are the bundle's, the reserved DOI is written down, retries are bounded, and the token
appears in no output file, log or message."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from cite_support import small_data
from pullstudy.data import bundle, zenodo
from pullstudy.paths import PROJECT_ROOT
from test_citation import CFFCONVERT
from zenodo_server import FakeZenodo

TOKEN = "zt-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@pytest.fixture
def setup(tmp_path):
    d, raw = small_data(tmp_path / "src")
    path, digest, _ = bundle.archive(tmp_path / "dist", data_dir=d, raw=raw)
    shutil.copyfile(PROJECT_ROOT / "data" / "zenodo-deposit.json", d / "zenodo-deposit.json")
    citation = tmp_path / "CITATION.cff"
    shutil.copyfile(PROJECT_ROOT / "CITATION.cff", citation)
    return path, d, citation


def _all_output(tmp_path) -> str:
    return "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".gz")


def test_deposit_creates_a_draft_uploads_the_bundle_and_writes_the_reserved_doi(setup, tmp_path):
    path, d, citation = setup
    logs, sleeps = [], []
    with FakeZenodo(token=TOKEN) as server:
        server.faults = [429, 503]  # the first call is retried twice
        done = zenodo.deposit(path, api=server.api, token=TOKEN, data_dir=d, citation=citation,
                              paper_doi="10.1145/1234567.7654321", log=logs.append, sleep=sleeps.append)
    assert sleeps == [0.0, 0.0]  # Retry-After: 0 honoured
    (dep_id, dep), = server.depositions.items()
    assert done == {"id": dep_id, "doi": f"10.5072/zenodo.{dep_id}", "html": dep["links"]["html"], "published": False}
    (bucket,) = server.buckets.values()
    assert bucket == {path.name: path.read_bytes()}
    meta = dep["metadata"]
    assert meta["title"].startswith("pullstudy data") and meta["upload_type"] == "dataset"
    assert meta["version"] == bundle.default_version() and meta["prereserve_doi"]
    assert {"identifier": "10.1145/1234567.7654321", "relation": "isSupplementTo", "scheme": "doi",
            "resource_type": "publication"} in meta["related_identifiers"]
    assert server.published == []
    readme = (d / "README.md").read_text()
    assert f"doi:[{done['doi']}](https://doi.org/{done['doi']})" in readme and f"make data DOI={done['doi']}" in readme
    cff = yaml.safe_load(citation.read_text())
    assert {"type": "data", "doi": done["doi"]}.items() <= next(r for r in cff["references"] if r.get("doi") == done["doi"]).items()
    assert any("retry 1 of 5" in line for line in logs)
    assert TOKEN not in "\n".join(logs) + json.dumps(done) + _all_output(tmp_path)


def test_writing_the_doi_twice_replaces_it(setup, tmp_path):
    _, d, citation = setup
    zenodo.write_doi("10.5072/zenodo.777001", "0.1.0", d / "README.md", citation)
    zenodo.write_doi("10.5072/zenodo.777002", "0.1.0", d / "README.md", citation)
    readme, cff = (d / "README.md").read_text(), citation.read_text()
    assert "zenodo.777001" not in readme + cff and readme.count("zenodo.777002") == 3 and cff.count("zenodo.777002") == 1
    if CFFCONVERT.exists():
        done = subprocess.run([str(CFFCONVERT), "--validate", "-i", str(citation)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_publish_only_when_asked(setup):
    path, d, citation = setup
    with FakeZenodo(token=TOKEN) as server:
        done = zenodo.deposit(path, api=server.api, token=TOKEN, data_dir=d, citation=citation, publish=True,
                              log=lambda _: None)
    assert done["published"] and server.published == [done["id"]]


def test_retries_are_bounded(setup):
    path, d, citation = setup
    sleeps = []
    with FakeZenodo(token=TOKEN) as server:
        server.faults = [503] * 20
        with pytest.raises(zenodo.DepositError, match=r"create draft: HTTP 503 after 5 retries") as exc:
            zenodo.deposit(path, api=server.api, token=TOKEN, data_dir=d, citation=citation, log=lambda _: None,
                           sleep=sleeps.append)
    assert len(sleeps) == zenodo.RETRIES
    assert len([r for r in server.requests if r[0] == "POST"]) == zenodo.RETRIES + 1
    assert TOKEN not in str(exc.value)


def test_backoff_grows_and_is_capped():
    """Without Retry-After the waits double from BACKOFF_S up to BACKOFF_CAP_S."""
    sleeps = []
    client = zenodo._Client("http://127.0.0.1:9", TOKEN, log=lambda _: None, sleep=sleeps.append)

    class Answer:
        status_code, headers, text, content = 503, {}, "", b""

    client.session.request = lambda *a, **k: Answer()
    with pytest.raises(zenodo.DepositError):
        client.call("step", "GET", "http://127.0.0.1:9/x")
    assert sleeps == [min(zenodo.BACKOFF_CAP_S, zenodo.BACKOFF_S * 2 ** i) for i in range(zenodo.RETRIES)]


def test_a_wrong_token_is_named_but_never_shown(setup):
    path, d, citation = setup
    with FakeZenodo(token=TOKEN) as server:
        with pytest.raises(zenodo.DepositError, match="HTTP 401 \\(check ZENODO_TOKEN\\)") as exc:
            zenodo.deposit(path, api=server.api, token="wrong-token-1234567890", data_dir=d, citation=citation,
                           log=lambda _: None)
    assert "wrong-token-1234567890" not in str(exc.value)
    with pytest.raises(zenodo.SettingError, match="ZENODO_TOKEN is not set"):
        zenodo.deposit(path, api="http://127.0.0.1:9", token="", data_dir=d, citation=citation)


def test_command_line_deposit_never_leaks_the_token(setup, tmp_path):
    path, d, citation = setup
    with FakeZenodo(token=TOKEN) as server:
        env = os.environ | {"ZENODO_TOKEN": TOKEN, "PULLSTUDY_ZENODO_API": server.api, "PULLSTUDY_DATA_DIR": str(d)}
        done = subprocess.run([sys.executable, "-m", "pullstudy.data.zenodo", "deposit", str(path), "--citation",
                               str(citation)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deposit: draft 1001, doi:10.5072/zenodo.1001 (draft)" in done.stdout
    assert TOKEN not in done.stdout + done.stderr + _all_output(tmp_path)
    assert server.buckets and list(server.buckets.values())[0][path.name] == path.read_bytes()

"""Fetch by DOI (pullstudy.data.zenodo.fetch) against a local Zenodo-shaped server serving real bundles of
`make archive`: a good one restores a verified data/raw; each bad one is refused with its own message and
leaves data/ exactly as it was."""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from cite_support import small_data, tree
from pullstudy.data import bundle, fetch, zenodo
from pullstudy.paths import PROJECT_ROOT
from zenodo_server import FakeZenodo


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real bundle of the small data folder (with one recorded run), and that folder's data dir."""
    root = tmp_path_factory.mktemp("built")
    d, raw = small_data(root)
    run = root / "runs" / "local-ssd-1"
    (run / "raw").mkdir(parents=True)
    (run / "run.json").write_text('{"id": "local/local-ssd-1"}\n')
    (run / "raw" / "records.jsonl").write_text('{"pull_s": 2.5}\n')
    path, digest, b = bundle.archive(root / "dist", data_dir=d, raw=raw, runs=[run])
    return path, digest, d


@pytest.fixture
def clone(tmp_path, built):
    """A fresh clone's data/: the committed files, no raw/ — plus a pre-existing run, to show it is kept."""
    d = tmp_path / "data"
    d.mkdir()
    for name in ("manifest.json", "catalog.json", "README.md"):
        shutil.copyfile(built[2] / name, d / name)
    (d / "runs" / "earlier").mkdir(parents=True)
    (d / "runs" / "earlier" / "run.json").write_text("{}")
    return d


def _entries(path):
    with tarfile.open(path, "r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]


def _retar(entries) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for m, content in entries:
            tar.addfile(m, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def _first_raw(entries):
    return next(i for i, (m, _) in enumerate(entries) if "/raw/" in m.name and m.name.endswith(".log"))


def _tampered(path, *, fix_sums: bool) -> bytes:
    entries = _entries(path)
    i = _first_raw(entries)
    m, content = entries[i]
    new = content.replace(b"flux", b"FLUX", 1)
    m.size = len(new)
    entries[i] = (m, new)
    if fix_sums:
        top = m.name.split("/", 1)[0]
        rel = m.name.split("/", 1)[1]
        j = next(k for k, (x, _) in enumerate(entries) if x.name == f"{top}/SHA256SUMS")
        sums = entries[j][1].decode().replace(hashlib.sha256(content).hexdigest() + f"  {rel}",
                                              hashlib.sha256(new).hexdigest() + f"  {rel}")
        entries[j][0].size = len(sums.encode())
        entries[j] = (entries[j][0], sums.encode())
    return _retar(entries)


def _with_member(path, member: tarfile.TarInfo, content=None) -> bytes:
    return _retar(_entries(path)[:3] + [(member, content)] + _entries(path)[3:])


def _dotdot(path):
    top = _entries(path)[0][0].name.split("/")[0]
    m = tarfile.TarInfo(f"{top}/raw/../../escaped.txt")
    m.size = 3
    return _with_member(path, m, b"bad")


def _symlink(path):
    top = _entries(path)[0][0].name.split("/")[0]
    m = tarfile.TarInfo(f"{top}/raw/link")
    m.type, m.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return _with_member(path, m)


def _absolute(path):
    m = tarfile.TarInfo("/tmp/pullstudy-absolute.txt")
    m.size = 3
    return _with_member(path, m, b"bad")


def _device(path):
    top = _entries(path)[0][0].name.split("/")[0]
    m = tarfile.TarInfo(f"{top}/raw/null")
    m.type, m.devmajor, m.devminor = tarfile.CHRTYPE, 1, 3
    return _with_member(path, m)


BAD = {
    # name: (how to make the served bytes, server setting, check named, words of the message)
    "wrong-md5": (None, "wrong_md5", "record checksum", "does not match the record's"),
    "truncated": (None, "truncate", "download", "truncated download"),
    "tampered": (lambda p: _tampered(p, fix_sums=False), None, "SHA256SUMS", "does not match its SHA-256"),
    "tampered-sums-fixed": (lambda p: _tampered(p, fix_sums=True), None, "git blob id", "does not hash to its git blob id"),
    "dotdot": (_dotdot, None, "unsafe archive", "leaves its folder (..)"),
    "symlink": (_symlink, None, "unsafe archive", "is a symbolic link"),
    "absolute": (_absolute, None, "unsafe archive", "has an absolute path"),
    "device": (_device, None, "unsafe archive", "is a device"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_bundle_is_refused_with_its_own_message_and_data_unchanged(case, built, clone):
    path, _, _ = built
    make, setting, check, words = BAD[case]
    content = make(path) if make else path.read_bytes()
    before = tree(clone)
    with FakeZenodo() as server:
        doi = server.add_record("4242", {path.name: content})
        if setting:
            getattr(server, setting).add(path.name)
        with pytest.raises(zenodo.FetchError) as exc:
            zenodo.fetch(doi, api=server.api, data_dir=clone, raw=clone / "raw", progress=False)
    assert exc.value.check == check
    assert words in str(exc.value) and "data/ was left unchanged" in str(exc.value)
    assert tree(clone) == before
    assert sorted(p.name for p in clone.iterdir()) == ["README.md", "catalog.json", "manifest.json", "runs"]
    assert not (clone.parent / "escaped.txt").exists()


def test_a_bundle_whose_sha256_file_disagrees_is_refused(built, clone):
    path, digest, _ = built
    before = tree(clone)
    with FakeZenodo() as server:
        doi = server.add_record("7", {path.name: path.read_bytes(), path.name + ".sha256": b"0" * 64 + b"  x\n"})
        with pytest.raises(zenodo.FetchError, match="bundle SHA-256 failed"):
            zenodo.fetch(doi, api=server.api, data_dir=clone, raw=clone / "raw", progress=False)
    assert tree(clone) == before


def test_the_good_bundle_restores_a_verified_data_raw(built, clone):
    path, digest, src = built
    with FakeZenodo() as server:
        doi = server.add_record("13738999", {path.name: path.read_bytes(),
                                             path.name + ".sha256": f"{digest}  {path.name}\n".encode()})
        got = zenodo.fetch(doi, api=server.api, data_dir=clone, raw=clone / "raw", progress=False)
    manifest = fetch.load_manifest(clone / "manifest.json")
    report = fetch.verify(manifest, clone / "raw", progress=False)
    assert report.ok and len(report.ok_files) == len(manifest.files) == got.files
    assert tree(clone / "raw" / "container-chonks") == tree(src / "raw" / "container-chonks")
    fetched = json.loads((clone / "raw" / fetch.FETCH_REPORT).read_text())
    assert fetched["source"] == {"doi": doi, "record": "13738999", "bundle": path.name, "sha256": digest}
    assert (clone / "runs" / "local-ssd-1" / "raw" / "records.jsonl").read_text() == '{"pull_s": 2.5}\n'
    assert (clone / "runs" / "earlier" / "run.json").exists()
    assert got.runs == ["local-ssd-1"]
    assert not [p for p in clone.iterdir() if p.name.startswith(".doi-fetch-")], "temporary folder left behind"


def test_record_lookup_errors_name_the_record(clone):
    with FakeZenodo() as server:
        with pytest.raises(zenodo.FetchError, match="no such record"):
            zenodo.fetch("10.5281/zenodo.99", api=server.api, data_dir=clone, progress=False)
        server.add_record("5", {"pullstudy-data-1.tar.gz": b"x"}, doi="10.5281/zenodo.6")
        with pytest.raises(zenodo.FetchError, match="the record's DOI is '10.5281/zenodo.6'"):
            zenodo.fetch("https://doi.org/10.5281/zenodo.5", api=server.api, data_dir=clone, progress=False)
    with pytest.raises(zenodo.SettingError, match="not a Zenodo DOI"):
        zenodo.parse_doi("10.1000/xyz")


def test_make_data_with_a_doi_restores_data_raw(built, clone):
    """The documented command: `make data DOI=…` against the server set by PULLSTUDY_ZENODO_API."""
    path, digest, _ = built
    with FakeZenodo() as server:
        doi = server.add_record("31", {path.name: path.read_bytes()})
        env = os.environ | {"PULLSTUDY_DATA_DIR": str(clone), "PULLSTUDY_ZENODO_API": server.api}
        env.pop("PULLSTUDY_RAW_DIR", None)
        done = subprocess.run(["make", "-s", "data", f"DOI={doi}"], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"doi:{doi}" in done.stdout and digest in done.stdout
    assert fetch.verify(fetch.load_manifest(clone / "manifest.json"), clone / "raw", progress=False).ok


def test_command_line_failure_is_one_line(built, clone):
    path, _, _ = built
    with FakeZenodo() as server:
        doi = server.add_record("8", {path.name: path.read_bytes()})
        server.truncate.add(path.name)
        env = os.environ | {"PULLSTUDY_DATA_DIR": str(clone), "PULLSTUDY_ZENODO_API": server.api}
        done = subprocess.run([sys.executable, "-m", "pullstudy.data.zenodo", "fetch", doi, "--quiet"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "truncated download" in errors[0]


def test_a_sandbox_doi_is_looked_up_on_the_sandbox(monkeypatch):
    """`make deposit` reserves a sandbox DOI (10.5072) by default; fetching it must not ask zenodo.org."""
    monkeypatch.delenv(zenodo.API_ENV, raising=False)
    assert zenodo.records_api("10.5072/zenodo.5") == zenodo.SANDBOX_API
    assert zenodo.records_api("doi:10.5281/zenodo.5") == zenodo.ZENODO_API
    monkeypatch.setenv(zenodo.API_ENV, "http://127.0.0.1:8000/api/")
    assert zenodo.records_api("10.5072/zenodo.5") == "http://127.0.0.1:8000/api"


@pytest.mark.notebooks
def test_the_bundle_of_make_archive_restores_the_whole_data_folder(tmp_path):
    """Acceptance: `make archive` on this machine's data/raw, served as a record, then `make data DOI=…` in
    an empty clone's data/ restores every file the bundle has, `make verify-data` passes there, and a study
    notebook runs on the restored data (the whole `make reproduce` is the fresh-clone check)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLSTUDY_")}
    made = subprocess.run(["make", "-s", "archive"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0, made.stderr
    path = PROJECT_ROOT / "dist" / f"pullstudy-data-{bundle.default_version()}.tar.gz"
    digest = (path.parent / (path.name + ".sha256")).read_text().split()[0]
    assert f"sha256 {digest}" in made.stdout
    clone = tmp_path / "data"
    clone.mkdir()
    for name in ("manifest.json", "catalog.json", "README.md"):
        shutil.copyfile(PROJECT_ROOT / "data" / name, clone / name)
    with FakeZenodo() as server:
        doi = server.add_record("1400", {path.name: path.read_bytes(),
                                         path.name + ".sha256": (path.parent / (path.name + ".sha256")).read_bytes()})
        env |= {"PULLSTUDY_DATA_DIR": str(clone), "PULLSTUDY_ZENODO_API": server.api}
        done = subprocess.run(["make", "-s", "data", f"DOI={doi}"], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    verified = subprocess.run(["make", "-s", "verify-data"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    here = fetch.available_files(fetch.load_manifest(PROJECT_ROOT / "data" / "manifest.json"))
    assert fetch.available_files(fetch.load_manifest(clone / "manifest.json"), clone / "raw") == here
    ran = subprocess.run([sys.executable, "-m", "pullstudy.report.runner", "--only", "03-local-ssd", "--no-progress",
                          "--force", "--results", str(tmp_path / "results")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    claims = (tmp_path / "results" / "claims.csv").read_text()
    assert "ssd-speedup" in claims

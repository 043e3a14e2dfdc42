"""make archive (pullstudy.data.bundle): deterministic bytes, verified members, the secret scan and its allow-list."""

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile

import pytest

from cite_support import small_data
from pullstudy.data import bundle
from pullstudy import paths


@pytest.fixture
def data(tmp_path):
    return small_data(tmp_path / "src")


def _members(path):
    with tarfile.open(path, "r:gz") as tar:
        return tar.getmembers(), {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_two_archives_give_the_same_bytes_and_a_normalised_tar(data, tmp_path):
    d, raw = data
    a, digest_a, _ = bundle.archive(tmp_path / "a", data_dir=d, raw=raw)
    # touch every input (new mtimes and modes): the bytes must not change
    for p in raw.rglob("*.log"):
        p.chmod(0o600)
        p.touch()
    b, digest_b, _ = bundle.archive(tmp_path / "b", data_dir=d, raw=raw)
    assert a.read_bytes() == b.read_bytes()
    assert digest_a == digest_b == hashlib.sha256(a.read_bytes()).hexdigest()
    assert (tmp_path / "a" / (a.name + ".sha256")).read_text() == f"{digest_a}  {a.name}\n"
    head = a.read_bytes()[:10]
    assert head[3] & 0x08 == 0, "gzip header carries a file name"
    assert head[4:8] == b"\0\0\0\0", "gzip header carries a time"
    members, _ = _members(a)
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(m.mtime == bundle.BUNDLE_MTIME and m.uid == m.gid == 0 and m.uname == m.gname == ""
               and m.mode == 0o644 and m.isreg() for m in members)


def test_bundle_holds_verified_raw_files_metadata_and_checksums(data, tmp_path):
    d, raw = data
    path, _, b = bundle.archive(tmp_path, data_dir=d, raw=raw, version="1.2.3")
    assert path.name == "pullstudy-data-1.2.3.tar.gz"
    _, content = _members(path)
    top = "pullstudy-data-1.2.3/"
    manifest = json.loads((d / "manifest.json").read_text())
    for f in manifest["files"]:
        blob = content[f"{top}raw/{f['source']}/{f['path']}"]
        assert hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest() == f["git_blob"]
    for name in ("manifest.json", "catalog.json", "README.md", "bundle.json", "SHA256SUMS"):
        assert top + name in content
    sums = dict(reversed(line.split("  ", 1)) for line in content[top + "SHA256SUMS"].decode().splitlines())
    assert set(sums) == {n[len(top):] for n in content} - {"SHA256SUMS"}
    assert all(hashlib.sha256(content[top + n]).hexdigest() == h for n, h in sums.items())
    info = json.loads(content[top + "bundle.json"])
    assert info["version"] == "1.2.3" and info["allowed_findings"]
    assert b"MIT" in content[top + "README.md"]


def test_recorded_runs_are_included(data, tmp_path):
    d, raw = data
    run = tmp_path / "runs" / "local-ssd-abc"
    (run / "raw").mkdir(parents=True)
    (run / "run.json").write_text('{"id": "local/local-ssd-abc"}')
    (run / "raw" / "records.jsonl").write_text('{"pull_s": 1.5}\n')
    path, _, b = bundle.archive(tmp_path / "out", data_dir=d, raw=raw, runs=[run])
    _, content = _members(path)
    assert content[f"{b.top}/runs/local-ssd-abc/raw/records.jsonl"] == b'{"pull_s": 1.5}\n'
    assert b.runs == ["local-ssd-abc"]
    with pytest.raises(bundle.BundleError, match="no run.json"):
        bundle.archive(tmp_path / "out", data_dir=d, raw=raw, runs=[tmp_path])


@pytest.mark.parametrize("line, kind", [
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "private-key"),
    ("    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=", "kubeconfig-credential"),
    ('curl -H "Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6Ij"', "bearer-token"),
    ('{"password": "hunter2-but-longer"}', "password"),
    ("ZENODO_TOKEN=abcdefghijklmnopqrstuvwxyz0123", "api-token"),
    ('    secret-key = "JDte@84$^SLaq#Bm*qxxkR<Xr7<f0k<])P<rnu:Q"', "certificate-secret-key"),
])
def test_a_secret_in_a_run_fails_the_archive_naming_file_line_and_kind(data, tmp_path, line, kind):
    d, raw = data
    run = tmp_path / "myrun"
    run.mkdir()
    (run / "run.json").write_text("{}")
    (run / "notes.txt").write_text(f"first line\nsecond line\n{line}\n")
    out = tmp_path / "out"
    with pytest.raises(bundle.SecretsFound) as exc:
        bundle.archive(out, data_dir=d, raw=raw, runs=[run])
    assert exc.value.findings == [("runs/myrun/notes.txt", 3, kind)]
    assert "runs/myrun/notes.txt:3:" in str(exc.value)
    secret_part = line.split()[-1].strip('"{}')
    assert secret_part not in str(exc.value), "the message must never repeat the secret"
    assert not out.exists() or not any(out.iterdir()), "nothing is written when the scan fails"


def test_the_allowlist_covers_only_its_file_line_and_kind(data, tmp_path):
    d, raw = data
    allow = json.loads((d / bundle.ALLOWLIST).read_text())
    first = allow["allowed"][0]
    log = raw / first["file"].removeprefix("raw/")
    # the same certificate line one line further down is no longer the allowed finding
    lines = log.read_text().splitlines(keepends=True)
    lines.insert(0, "shifted\n")
    (d / bundle.ALLOWLIST).write_text(json.dumps({"allowed": allow["allowed"]}))
    log.write_text("".join(lines))
    with pytest.raises(bundle.BundleError, match="do not match their git blob id"):
        bundle.archive(tmp_path, data_dir=d, raw=raw)  # an altered upstream file is refused first
    (d / "manifest.json").write_text((d / "manifest.json").read_text().replace(
        next(f["git_blob"] for f in json.loads((d / "manifest.json").read_text())["files"]
             if first["file"].endswith(f["path"])), bundle.git_blob_id_of_file(log)))
    with pytest.raises(bundle.SecretsFound) as exc:
        bundle.archive(tmp_path, data_dir=d, raw=raw)
    assert exc.value.findings == [(first["file"], first["line"] + 1, "certificate-secret-key")]


def test_an_allowlist_entry_needs_a_reason(data, tmp_path):
    d, raw = data
    allow = json.loads((d / bundle.ALLOWLIST).read_text())
    allow["allowed"][0]["reason"] = " "
    (d / bundle.ALLOWLIST).write_text(json.dumps(allow))
    with pytest.raises(bundle.BundleError, match="entry 0 has no reason"):
        bundle.archive(tmp_path, data_dir=d, raw=raw)


def test_the_real_data_folder_has_no_secret_outside_the_allowlist():
    """The scan over every file of data/raw here: only the upstream CURVE certificates, each allow-listed,
    and every allow-list entry is still found (a stale entry would hide nothing but mislead)."""
    b = bundle.collect()
    allow = bundle.load_allowlist(paths.data_dir() / bundle.ALLOWLIST)
    refused, allowed = bundle.scan(b.members, allow)
    assert refused == []
    present = {(e["file"], e["line"], e["kind"]) for e in allowed}
    here = {k for k in allow if k[0] in b.members}
    assert here and here <= present
    assert all(k[2] == "certificate-secret-key" and "/logs/" in k[0] for k in allow)


def test_readme_names_the_allowlisted_files():
    text = (paths.PROJECT_ROOT / "data" / "README.md").read_text()
    assert "secret-allowlist.json" in text and "CURVE" in text


def test_command_line_prints_the_digest_and_fails_in_one_line(data, tmp_path):
    d, raw = data
    env = {"PULLSTUDY_DATA_DIR": str(d), "PULLSTUDY_RAW_DIR": str(raw), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "pullstudy.data.bundle", "--out", str(tmp_path / "dist")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    digest = (tmp_path / "dist" / f"pullstudy-data-{bundle.default_version()}.tar.gz.sha256").read_text().split()[0]
    assert f"sha256 {digest}" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "pullstudy.data.bundle", "--out", str(tmp_path / "x"), "--runs",
                          str(tmp_path)], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "run.json" in bad.stderr
    assert "Traceback" not in bad.stderr

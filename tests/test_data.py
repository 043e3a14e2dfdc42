"""make data / make verify-data: every file verified by git blob id, damage named, nothing half-written."""

import gzip
import json
import os
import subprocess

import pytest

from pullstudy.data import fetch
from pullstudy.paths import PROJECT_ROOT


def test_git_blob_ids_match_git():
    assert fetch.git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert fetch.git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


@pytest.fixture
def mirror(tmp_path):
    """A small manifest and a mirror holding: a plain file, a .gz file, a corrupted file; one file absent."""
    contents = {"a/plain.json": b'{"x": 1}\n', "b/packed.json": b"line\n" * 1000,
                "c/corrupt.json": b"the real content\n", "d/absent.json": b"never mirrored\n"}
    files = [{"source": "up", "path": p, "git_blob": fetch.git_blob_id(c), "size": len(c)} for p, c in contents.items()]
    manifest = {"sources": {"up": {"repository": "https://example.invalid/up", "commit": "0" * 40,
                                   "url_template": "http://127.0.0.1:9/{commit}/{path}"}},
                "files": files}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    m = tmp_path / "mirror" / "up"
    (m / "a").mkdir(parents=True)
    (m / "a/plain.json").write_bytes(contents["a/plain.json"])
    (m / "b").mkdir()
    (m / "b/packed.json.gz").write_bytes(gzip.compress(contents["b/packed.json"]))
    (m / "c").mkdir()
    (m / "c/corrupt.json").write_bytes(b"the real c0ntent\n")
    return tmp_path


def _run(mirror, *args):
    return fetch.main([*args, "--manifest", str(mirror / "manifest.json"), "--raw", str(mirror / "raw"), "--quiet"])


def test_fetch_reports_missing_and_corrupt_and_writes_only_good_files(mirror, capsys, monkeypatch):
    monkeypatch.delenv("PULLSTUDY_OFFLINE", raising=False)  # try the (refused, loopback) download too
    code = _run(mirror, "fetch", "--mirror", str(mirror / "mirror"))
    out = capsys.readouterr().out
    assert code == 1, "a corrupted mirror file must fail make data"
    raw = mirror / "raw" / "up"
    assert (raw / "a/plain.json").read_bytes() == b'{"x": 1}\n'
    assert (raw / "b/packed.json").read_bytes() == b"line\n" * 1000
    assert not (raw / "c/corrupt.json").exists() and not (raw / "d/absent.json").exists()
    assert not list((mirror / "raw").rglob("*.part")), "no half-written files"
    assert "CORRUPT up/c/corrupt.json" in out and "2 of 4 files verified" in out
    report = json.loads((mirror / "raw" / fetch.FETCH_REPORT).read_text())
    assert report["status"]["up/d/absent.json"] == "unavailable"
    assert "not in the mirror" in report["detail"]["up/d/absent.json"]
    assert "download failed" in report["detail"]["up/d/absent.json"]


def test_fetch_is_idempotent_and_verify_names_damage(mirror, capsys):
    (mirror / "mirror/up/c/corrupt.json").write_bytes(b"the real content\n")
    assert _run(mirror, "fetch", "--mirror", str(mirror / "mirror"), "--offline") == 0
    assert _run(mirror, "fetch", "--mirror", str(mirror / "mirror"), "--offline") == 0
    assert "3 already present" in capsys.readouterr().out
    assert _run(mirror, "verify") == 0
    out = capsys.readouterr().out
    assert "3 of 3 expected files intact" in out and "1 not expected here" in out

    raw = mirror / "raw" / "up"
    body = bytearray((raw / "b/packed.json").read_bytes())
    body[100] ^= 1  # one byte
    (raw / "b/packed.json").write_bytes(bytes(body))
    (raw / "a/plain.json").unlink()
    (raw / "stray.txt").write_text("not in the manifest")
    assert _run(mirror, "verify") == 1
    out = capsys.readouterr().out
    assert "ALTERED up/b/packed.json" in out
    assert "MISSING up/a/plain.json" in out
    assert "UNKNOWN up/stray.txt" in out


def test_fetch_without_mirror_folder_is_a_clear_error(mirror, capsys):
    assert _run(mirror, "fetch", "--mirror", str(mirror / "nowhere")) == 2
    err = capsys.readouterr().err
    assert "--mirror" in err and "does not exist" in err and "nowhere" in err


def test_manifest_with_missing_fields_is_rejected(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"sources": {"up": {}}, "files": [{"source": "up", "path": "x"}]}))
    with pytest.raises(ValueError, match="git_blob"):
        fetch.load_manifest(tmp_path / "m.json")


def test_make_data_target_uses_the_mirror_variable(mirror):
    """`make data` itself, as a user runs it: mirror from the environment, failure on corruption."""
    env = dict(os.environ, PULLSTUDY_DATA_MIRROR=str(mirror / "mirror"), PULLSTUDY_OFFLINE="1",
               DATA_ARGS=f"--manifest {mirror / 'manifest.json'} --raw {mirror / 'raw'}")
    proc = subprocess.run(["make", "-s", "data"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "CORRUPT up/c/corrupt.json" in proc.stdout
    assert (mirror / "raw/up/a/plain.json").is_file()


def test_every_manifest_file_in_data_raw_is_intact(raw):
    """The real data/raw, as make data left it: verify-data passes, and finds no stranger."""
    report = fetch.verify(fetch.load_manifest(), raw, progress=False)
    assert report.ok, report.summary()
    assert len(report.ok_files) > 100


def test_committed_manifest_covers_both_sources():
    m = fetch.load_manifest()
    assert {f.source for f in m.files} == {"container-chonks", "performance-study"}
    assert all(len(f.git_blob) == 40 for f in m.files)
    assert m.url(m.files[0]).startswith("https://")

"""The application images' catalogue, their layers, and the apps workload's grid: no root, no service.

The layer builder is exercised on small trees written here (a Debian root filesystem needs root and
mmdebstrap: tests/test_app_containers.py builds the real one).
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import pytest

from pullstudy.images import apps, rootfs
from pullstudy.sources.local import measure as local
from pullstudy.sources.local import source as source_local

pytestmark = pytest.mark.system()  # needs no Debian package


def test_the_catalogue_has_the_images_the_issue_asks_for_each_with_a_ready_line():
    assert {"shell", "python-data", "ml-torch", "many-files"} <= set(apps.CATALOGUE)
    assert apps.ML_APP in apps.CATALOGUE and set(apps.CI_APPS) <= set(apps.CATALOGUE)
    for app in apps.CATALOGUE.values():
        assert app.ready and app.command and app.timeout_s > 0
        assert app.repository == f"pullstudy/app-{app.name}"
        scripts = [s for s in app.stages if isinstance(s, rootfs.FilesStage)]
        assert len(scripts) == 1 and app.command[-1] in [p for p, _, _ in scripts[0].files]
        assert all(app.ready in text for _, text, _ in scripts[0].files)  # the script prints it
    torch = apps.get("ml-torch")
    assert any("python3-torch" in s.packages for s in torch.stages if isinstance(s, rootfs.DebianStage))


def test_the_definition_hash_follows_the_definition_only():
    shell = apps.get("shell")
    assert shell.definition_hash == apps.get("shell").definition_hash
    other = dataclasses.replace(shell, command=("/bin/sh", "-c", "echo ready"))
    assert other.definition_hash != shell.definition_hash
    base = shell.stages[0]
    assert rootfs.stage_key(base, None) == rootfs.stage_key(dataclasses.replace(base), None)
    assert rootfs.stage_key(base, None) != rootfs.stage_key(dataclasses.replace(base, packages=("busybox-static",)), None)
    assert rootfs.stage_key(base, None) != rootfs.stage_key(base, "below")  # a stage depends on the one below
    # the images sharing a Debian base share its layer (same key), as real images share a base
    keys = {rootfs.stage_key(apps.get(n).stages[0], None) for n in ("python-data", "ml-torch", "many-files")}
    assert len(keys) == 1


def test_an_unknown_application_is_a_one_line_error_naming_the_catalogue():
    with pytest.raises(ValueError, match=r"no application image 'tensorflow'; the catalogue .* has: shell"):
        apps.get("tensorflow")
    with pytest.raises(ValueError, match=r"no application image 'nope'"):
        local.LocalGrid(sizes_bytes=(), layers=(), workload="apps", apps=("nope",))
    with pytest.raises(ValueError, match=r"needs workload='apps'"):
        local.LocalGrid(sizes_bytes=(1,), layers=(1,), apps=("shell",))
    with pytest.raises(ValueError, match=r"workload must be one of"):
        local.LocalGrid(sizes_bytes=(1,), layers=(1,), workload="everything")


def test_an_apps_grid_lists_its_images_and_is_named_by_them():
    grid = local.LocalGrid(sizes_bytes=(), layers=(), workload="apps", storage=("disk",),
                           snapshotters=("overlayfs", "stargz"), repetitions=2)
    assert grid.apps == apps.DEFAULT_APPS  # all of them by default
    assert [i["app"] for i in grid.images()] == list(apps.DEFAULT_APPS)
    assert grid.pulls() == len(apps.DEFAULT_APPS) * 2 * 2
    name = source_local.run_name("04-image-streaming", grid)
    assert name.startswith("04-image-streaming_apps-shell-python-data") and "_overlayfs-stargz_r2_" in name


def test_runs_recorded_before_workloads_existed_keep_their_names():
    """The workload fields are left out of a read-all grid's record, so its digest (and folder) is unchanged."""
    grid = local.LocalGrid(sizes_bytes=(4_000_000,), layers=(2,), repetitions=2)
    doc = local.grid_json(grid)
    assert "workload" not in doc and "apps" not in doc
    full = json.loads(json.dumps(dataclasses.asdict(grid)))
    assert {k: v for k, v in full.items() if k not in ("workload", "apps")} == doc
    assert "workload" in local.grid_json(local.LocalGrid(sizes_bytes=(), layers=(), workload="apps"))


# --- layers of a stage: the difference of two trees -------------------------------------------------

def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _members(layer: rootfs.Layer) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(layer.path, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_a_stage_layer_holds_what_changed_and_whiteouts_for_what_went(tmp_path):
    below = _tree(tmp_path / "below", {"etc/keep": "same", "etc/changed": "old", "usr/lib/gone/a": "x",
                                       "usr/lib/gone/b": "y", "var/old": "z"})
    above = _tree(tmp_path / "above", {"etc/keep": "same", "etc/changed": "new!", "usr/lib/new": "n"})
    (above / "dev").mkdir()
    (above / "dev" / "null").write_text("not a device here, but /dev's contents are the runtime's")
    diff = rootfs._diff(above, below)
    assert "etc/keep" not in diff.entries and {"etc/changed", "usr/lib/new", "etc", "usr/lib"} <= set(diff.entries)
    assert not any(e.startswith("dev/") for e in diff.entries)
    assert sorted(diff.whiteouts) == ["usr/lib/gone", "var"]  # the topmost removed entries only
    layer = rootfs._write_layer(tmp_path / "layer", diff, above, "runtime", "test", ())
    members = _members(layer)
    assert {"usr/lib/.wh.gone", ".wh.var", "etc/changed", "usr/lib/new"} <= set(members)
    assert "etc/keep" not in members and layer.files == 2
    assert all(m.mtime <= rootfs.EPOCH and m.uname == "" for m in members.values())
    with tarfile.open(layer.path, "r:gz") as tar:
        assert tar.extractfile("etc/changed").read() == b"new!"
    doc = json.loads((tmp_path / "layer" / "layer.json").read_text())
    assert doc["digest"] == layer.digest and doc["size"] == layer.path.stat().st_size


def test_a_layer_is_the_same_bytes_every_time_and_its_digests_are_right(tmp_path):
    import gzip
    import hashlib

    tree = _tree(tmp_path / "tree", {"a/b": "1", "c": "2" * 5000})
    one = rootfs._write_layer(tmp_path / "one", rootfs._diff(tree, None), tree, "base", "test", ())
    two = rootfs._write_layer(tmp_path / "two", rootfs._diff(tree, None), tree, "base", "test", ())
    assert one.digest == two.digest and one.diff_id == two.diff_id
    blob = one.path.read_bytes()
    assert one.digest == "sha256:" + hashlib.sha256(blob).hexdigest() and one.size == len(blob)
    assert one.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()


def test_the_application_layer_holds_its_files_and_is_cached(tmp_path):
    stage = rootfs.FilesStage("application", (("/app/run.sh", "#!/bin/sh\necho ready\n", 0o755),))
    first = rootfs.build_layers([stage], tmp_path)
    again = rootfs.build_layers([stage], tmp_path)
    assert first[0].built and not again[0].built and first[0].digest == again[0].digest
    members = _members(first[0])
    assert members["app"].isdir() and members["app/run.sh"].mode == 0o755
    with tarfile.open(first[0].path, "r:gz") as tar:
        assert tar.extractfile("app/run.sh").read() == b"#!/bin/sh\necho ready\n"


def test_a_torn_cache_entry_is_built_again(tmp_path):
    stage = rootfs.FilesStage("application", (("/x", "y", 0o644),))
    layer = rootfs.build_layers([stage], tmp_path)[0]
    with open(layer.path, "ab") as f:
        f.write(b"torn")
    assert rootfs.build_layers([stage], tmp_path)[0].built


def test_without_mmdebstrap_the_build_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(rootfs.BuildError, match=r"apt-get install mmdebstrap"):
        rootfs.build_layers([apps.get("shell").stages[0]], tmp_path)


def test_the_access_log_is_counted_by_request_kind():
    from pullstudy.sources.local.registry_process import Traffic

    log = io.StringIO(
        'time="..." level=warning msg="something else"\n'
        '127.0.0.1 - - [01/Dec/2026:22:41:46 +0000] "GET /v2/a/manifests/t HTTP/1.1" 200 500 "" "ctr"\n'
        '127.0.0.1 - - [01/Dec/2026:22:41:46 +0000] "HEAD /v2/a/blobs/sha256:1 HTTP/1.1" 200 0 "" "ctr"\n'
        '127.0.0.1 - - [01/Dec/2026:22:41:46 +0000] "GET /v2/a/blobs/sha256:1 HTTP/1.1" 200 1000 "" "ctr"\n'
        '127.0.0.1 - - [01/Dec/2026:22:41:46 +0000] "GET /v2/a/blobs/sha256:2 HTTP/1.1" 206 50 "" "go"\n').getvalue()
    t = Traffic.parse(log)
    assert (t.requests, t.bytes, t.blob_bytes, t.blob_requests, t.range_requests) == (4, 1550, 1050, 2, 1)

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

import numpy as np
import pytest

from pullstudy.images import apps, rootfs
from pullstudy.paths import PROJECT_ROOT
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


# --- the analysis of an apps run (records written here) ----------------------------------------------

def _app_record(seq: int, app: str, snapshotter: str, pull_s: float, run_s: float | None, fraction: float,
                status: str = "ready", size: int = 50_000_000) -> dict:
    tag = f"3-layers-size-{size}-bytes"
    lazy = snapshotter == "stargz"
    return {
        "study": "local", "run": "t", "condition": f"storage=disk,link=rate-limited,snapshotter={snapshotter}",
        "backend": "local", "cluster_nodes": 1, "node": "here",
        "image": f"10.200.0.2:5000/pullstudy/app-{app}{'-esgz' if lazy else ''}:{tag}", "tag": tag, "layers": 3,
        "size_bytes": size, "content": app, "image_size_reported": 2000 if lazy else size // 3,
        "pull_s": pull_s, "pull_wait_s": pull_s, "cache_hit": False,
        "pulling_at": "2026-12-01T12:00:00+00:00", "pulled_at": "2026-12-01T12:00:01+00:00", "started_at": None,
        "source": f"raw/records.jsonl:{seq + 1}", "pod": None, "scheduled_at": None, "study_image": True,
        "fetch_s": None, "unpack_s": None, "read_s": None, "read_bytes": None, "repetition": seq % 4, "sequence": seq,
        "storage": "disk", "link": "rate-limited", "link_mbit_measured": 95.0, "containerd_version": "1.6.20~ds1",
        "snapshotter": snapshotter, "root_fstype": "ext4", "root_device": "/dev/x", "workload": "apps",
        "create_s": 0.05, "run_s": run_s, "run_status": status, "exit_code": 0 if status == "ready" else None,
        "registry_bytes": int(fraction * 1e6), "registry_blob_bytes": int(fraction * 1e6), "image_blob_bytes": 1_000_000,
        "fraction_read": fraction,
    }


@pytest.fixture
def app_run(tmp_path):
    """ml-torch: eager 10 s pull + 2 s run; lazy 1 s pull + 6 s run reading 40 %; one lazy start timed out."""
    rows, seq = [], 0
    for k in range(4):
        jitter = 1 + k / 100
        for app, (pe, re, pl, rl) in {"ml-torch": (10, 2, 1, 6), "shell": (0.5, 0.05, 0.1, 0.1)}.items():
            rows.append(_app_record(seq, app, "overlayfs", pe * jitter, re * jitter, 1.0))
            rows.append(_app_record(seq + 1, app, "stargz", pl * jitter, rl * jitter, 0.4))
            seq += 2
    rows.append(_app_record(seq, "ml-torch", "stargz", 1.0, None, 0.1, status="timeout"))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return local.load_local_run(tmp_path)


def test_time_to_useful_work_of_an_app_is_pull_create_and_run(app_run):
    from pullstudy.studies import local_conditions, local_apps

    work = local_conditions.with_time_to_useful_work(app_run)
    ready = work["run_status"] == "ready"
    assert np.allclose(work.loc[ready, "ttuw_s"], (work["pull_s"] + work["create_s"] + work["run_s"])[ready])
    assert work.loc[~ready, "ttuw_s"].isna().all()  # never ready: no time to useful work
    starts, excluded = local_apps.ready_starts(app_run)
    assert len(starts) == 16 and excluded == {
        "application container did not print its ready line before its timeout (stopped)": 1}


def test_the_hellobench_table_compares_eager_and_lazy_per_image(app_run):
    from pullstudy.studies import local_apps

    table = local_apps.hellobench_table(app_run, n_boot=500)
    assert list(table["app"]) == ["shell", "ml-torch"]  # catalogue order
    torch = table.set_index("app").loc["ml-torch"]
    assert (torch.n_eager, torch.n_lazy) == (4, 4)
    assert torch.pull_speedup == pytest.approx(10, rel=0.05) and torch.pull_speedup_ci_low > 5
    assert torch.ttuw_speedup == pytest.approx(12.05 / 7.05, rel=0.05)  # (10+.05+2) / (1+.05+6)
    assert torch.fraction_read_eager == 1 and torch.fraction_read_lazy == pytest.approx(0.4)
    rows = local_apps.claim_rows(app_run, table, notebook="04-image-streaming")
    ml, soci = rows
    assert ml.claim_id == "streaming-ml" and ml.verdict == "not testable here"
    assert "reported, not judged" in ml.reason and "95 Mbit/s" in ml.reason and "stargz" in ml.reason
    assert "ml-torch" in ml.measured and "lazily read 40%" in ml.measured and ml.value == pytest.approx(torch.pull_speedup)
    assert soci.claim_id == "soci-example" and "not built here" in soci.reason and "2 local application images" in soci.measured
    from pullstudy.studies import figures

    spec = figures.app_start_chart(table).to_dict()
    assert spec["title"]["text"].startswith("Time to useful work") and "seconds" in spec["encoding"]["y"]["title"]


def test_without_the_ml_image_the_streaming_ml_row_says_why(app_run):
    from pullstudy.studies import local_apps

    shell_only = app_run[app_run["content"] == "shell"]
    ml, _ = local_apps.claim_rows(shell_only, local_apps.hellobench_table(shell_only, n_boot=200))
    assert ml.verdict == "not testable here" and "no ready start of the ML image 'ml-torch'" in ml.reason


def test_notebook_04_asks_for_the_apps_grid_by_parameters():
    from pullstudy.report import parameters

    grid = source_local.notebook_grid("04-image-streaming", {"local_grid": None, "workload": "apps",
                                                             "local_apps": ["shell"], "link_mbit": 50.0})
    assert grid["workload"] == "apps" and grid["apps"] == ["shell"] and grid["rate_mbit"] == 50
    assert set(grid["snapshotters"]) == {"overlayfs", "stargz"}
    # the synthetic default at the default speed is the default grid itself (same folder as before)
    assert source_local.notebook_grid("04-image-streaming", {"local_grid": None, "workload": "synthetic",
                                                             "link_mbit": 100.0}) is None
    assert source_local.notebook_grid("04-image-streaming", {"local_grid": None, "link_mbit": 20.0})["rate_mbit"] == 20
    check = dict(parameters.notebook_parameters(PROJECT_ROOT / "notebooks" / "04-image-streaming.ipynb"))
    assert (check["workload"], check["local_apps"], check["link_mbit"]) == ("synthetic", None, 100.0)
    with pytest.raises(parameters.ParameterError, match=r"parameter workload='everything' is not allowed"):
        parameters.check("04-image-streaming", "workload", "everything")
    with pytest.raises(parameters.ParameterError, match=r"local_apps=\['tensorflow'\]|holds 'tensorflow'"):
        parameters.check("04-image-streaming", "local_apps", ["tensorflow"])
    assert parameters.check("04-image-streaming", "local_apps", "shell") == ["shell"]
    with pytest.raises(parameters.ParameterError, match=r"link_mbit=0"):
        parameters.check("04-image-streaming", "link_mbit", 0)
    values = {**check, "local_apps": ["shell"], "workload": "synthetic"}
    with pytest.raises(parameters.ParameterError, match=r"set workload='apps'"):
        parameters.validate("04-image-streaming", values)

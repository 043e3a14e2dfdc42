"""Real containers of the smallest application image (shell), under both snapshotters, on this machine.

Builds the shell image with mmdebstrap (busybox-static and tzdata from Debian's package registry, a few
seconds, then cached), pushes it to a real registry, pulls it cold, starts it with containerd and runc
and waits for its ready line. Every test checks that nothing is left: processes (ours and containerd's
shims), mounts, network namespaces, tasks and containers. The bigger images run in `make run`, not here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from conftest import CATEGORY_NEEDS, LAZY_PACKAGES
from pullstudy.images import apps
from pullstudy.sources.local import containers, lifecycle, stargz, measure as local
from pullstudy.sources.local.containerd import Containerd
from pullstudy.sources.local.registry_process import Registry

if os.geteuid() != 0:
    pytest.skip("containers need root (containerd, runc, mounts)", allow_module_level=True)

from test_local_source import _mounts, _netns, clean_machine, spawned  # noqa: E402,F401 - fixtures

APP_PACKAGES = (*CATEGORY_NEEDS["local"], "mmdebstrap")
pytestmark = [pytest.mark.local, pytest.mark.system(*APP_PACKAGES)]
LAZY = [pytest.mark.system(*APP_PACKAGES, *LAZY_PACKAGES),
        pytest.mark.skipif(stargz.unavailable_reason() is not None,
                           reason=f"lazy pulling unavailable here: {stargz.unavailable_reason()}")]


def _shims() -> list[str]:
    """Command lines of containerd shims serving one of our private containerds."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if "containerd-shim" in cmd and "pullstudy-ctd-" in cmd:
            found.append(cmd)
    return found


@pytest.fixture(scope="module")
def shell():
    """The shell image, built (or taken from the cache) once."""
    return apps.build("shell")


def test_the_shell_image_is_built_once_then_taken_from_the_cache(shell):
    again = apps.build("shell")
    assert not again.built  # a second build reads the cache
    assert [layer.digest for layer in again.layers] == [layer.digest for layer in shell.layers]
    assert len(shell.layers) == 2  # base (busybox, tzdata) and application
    assert shell.layers[0].files > 500 and shell.layers[1].files == 1
    assert any(p.startswith("busybox-static=") for p in shell.layers[0].packages)


@pytest.mark.parametrize("snapshotter", ["overlayfs", pytest.param("stargz", marks=LAZY)])
def test_a_container_starts_prints_ready_and_leaves_nothing(tmp_path, snapshotter, clean_machine):
    grid = local.LocalGrid(sizes_bytes=(), layers=(), workload="apps", apps=("shell",), storage=("disk",),
                           links=("loopback",), snapshotters=(snapshotter,), repetitions=2)
    mounts, namespaces = _mounts(), _netns()
    local.run(grid, tmp_path, name="shell", progress=False)
    df = local.load_local_run(tmp_path)
    assert len(df) == 2 and (df["run_status"] == "ready").all() and (df["exit_code"] == 0).all()
    assert (df["workload"] == "apps").all() and (df["content"] == "shell").all()
    assert (df["create_s"] > 0).all() and (df["run_s"] > 0).all() and (df["pull_s"] > 0).all()
    assert df["read_s"].isna().all()  # the container's own reads are its run, not a read-everything pass
    blobs = df["image_blob_bytes"]
    if snapshotter == "overlayfs":
        # an eager pull fetches every blob exactly once: the counter equals the image's blob bytes
        assert (df["registry_blob_bytes"] == blobs).all() and (df["fraction_read"] == 1).all()
    else:
        # a lazy pull fetches what the container reads (busybox and its script, not tzdata)
        assert (df["registry_blob_bytes"] < blobs).all() and (df["fraction_read"] < 0.9).all()
    assert not _shims(), "containerd shims left"
    assert not {m for m in _mounts() - mounts if "pullstudy-" in m}
    assert not {n for n in _netns() - namespaces if n.startswith("pullstudy-")}
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["status"] == "complete" and doc["grid"]["workload"] == "apps"
    print("\n" + df[["snapshotter", "pull_s", "create_s", "run_s", "registry_blob_bytes", "image_blob_bytes",
                     "fraction_read"]].to_string())


def test_a_container_that_never_gets_ready_is_stopped_at_its_timeout_and_recorded(tmp_path, monkeypatch,
                                                                                 clean_machine):
    never = dataclasses.replace(apps.get("shell"), name="never-ready", command=("/bin/sleep", "600"), timeout_s=2)
    monkeypatch.setitem(apps.CATALOGUE, "never-ready", never)
    grid = local.LocalGrid(sizes_bytes=(), layers=(), workload="apps", apps=("never-ready",), storage=("disk",),
                           links=("loopback",), repetitions=1)
    local.run(grid, tmp_path, name="never", progress=False)
    row = json.loads((tmp_path / "raw" / "records.jsonl").read_text().splitlines()[0])
    assert row["run_status"] == "timeout" and row["run_s"] is None and row["create_s"] > 0
    assert "run_output" in row  # what it printed (nothing here) is kept with the record
    assert not _shims(), "the timed-out container's shim is left"


def test_run_container_cleans_up_a_timeout_and_an_early_exit(tmp_path, shell, clean_machine):
    with Registry() as reg, lifecycle.ScratchDir("/var/tmp", "pullstudy-disk-") as disk, \
            Containerd(disk.path / "root") as ctd:
        pushed = apps.push(shell, reg.host)
        local.cold_pull(ctd, pushed.reference)
        slept = containers.run_container(ctd, pushed.reference, ["/bin/sleep", "600"], timeout_s=1)
        assert slept.status == "timeout" and slept.run_s is None and not slept.ready
        assert containers.leftovers(ctd) == {"tasks": [], "containers": []} and not _shims()
        failed = containers.run_container(ctd, pushed.reference, ["/bin/sh", "-c", "echo oops; exit 3"])
        assert failed.status == "exited" and failed.exit_code == 3 and "oops" in failed.output
        missing = containers.run_container(ctd, pushed.reference, ["/no/such/program"])
        assert missing.status == "exited" and "no such file" in missing.output.lower()
        assert containers.leftovers(ctd) == {"tasks": [], "containers": []}
    assert not _shims()


@pytest.mark.parametrize("snapshotters", [pytest.param(("overlayfs", "stargz"), marks=LAZY, id="both")])
def test_the_study_grid_behind_the_shaped_link_leaves_nothing_running_mounted_or_in_a_namespace(
        tmp_path, monkeypatch, snapshotters, clean_machine):
    """What `make run ... -p workload=apps` does, with the shell image only: the local source measures the
    notebook's apps grid (rate-limited link, both snapshotters) and afterwards nothing of it is left."""
    from pullstudy.sources.local import source as source_local

    monkeypatch.setenv("PULLSTUDY_RUNS_DIR", str(tmp_path))
    grid = {**source_local.notebook_grid("04-image-streaming", {"workload": "apps", "local_apps": ["shell"],
                                                                 "link_mbit": 100.0}), "repetitions": 1}
    mounts, namespaces = _mounts(), _netns()
    records, folder, report = source_local.measure("04-image-streaming", grid, progress=False)
    assert len(records) == 2 and (records["run_status"] == "ready").all()
    assert (records["link"] == "rate-limited").all() and records["link_mbit_measured"].between(50, 110).all()
    conditions = json.loads((folder / "conditions.json").read_text())
    lazy = [c for c in conditions if c["snapshotter"] == "stargz"][0]
    assert lazy["stargz_background_fetch"] is False  # the bytes fetched are what the container read
    assert not _shims()
    assert not {m for m in _mounts() - mounts if "pullstudy-" in m or "fuse" in m}
    assert not {n for n in _netns() - namespaces if n.startswith("pullstudy-")}
    again = source_local.measure("04-image-streaming", grid, progress=False)
    assert again[2].startswith("reused")  # a finished run of the grid is not measured again

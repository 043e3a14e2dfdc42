"""The local backend for real: a docker-registry, containerd, tmpfs and a tbf-shaped veth on this machine.

Every test checks that what it started is gone afterwards: processes (by pid and process group, from
/proc), mounts (/proc/self/mountinfo) and network namespaces (``ip netns list``). Nothing leaves
127.0.0.1 and the test's own namespaces. Timings are measured and reported, never asserted, except
the link's rate (the point of the shaping) and orderings that hold by a wide margin.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import requests

from pullstudy.data import catalog
from pullstudy.images import crafter
from pullstudy.records import RECORD_COLUMNS, empty_records
from pullstudy.sources.local import source as source_local
from pullstudy.sources.local import stargz, measure as local, lifecycle, link as link_module
from pullstudy.sources.local.lifecycle import ConditionUnavailable, MissingBinary, PortInUse, Tmpfs
from pullstudy.sources.local.containerd import Containerd
from pullstudy.sources.local.link import RateLimitedLink
from pullstudy.sources.local.registry_process import Registry
from pullstudy.images.oci import RetryPolicy
from conftest import CATEGORY_NEEDS, LAZY_PACKAGES

pytestmark = pytest.mark.local  # needs docker-registry, containerd, iproute2 (conftest), unless marked narrower

if os.geteuid() != 0:
    pytest.skip("the local backend needs root (tmpfs, network namespaces, containerd)", allow_module_level=True)

MB = 1_000_000
REGISTRY_ONLY = pytest.mark.system("docker-registry")
NOTHING = pytest.mark.system()  # no Debian package: fakes PATH, or reads settings
# lazy pulling: the packages (missing: skipped or, in CI, failed by conftest), then the daemon, FUSE and root
STARGZ_MARKS = [pytest.mark.system(*CATEGORY_NEEDS["local"], *LAZY_PACKAGES),
                pytest.mark.skipif(stargz.unavailable_reason() is not None,
                                   reason=f"lazy pulling unavailable here: {stargz.unavailable_reason()}")]


def needs_stargz(test):
    for mark in reversed(STARGZ_MARKS):
        test = mark(test)
    return test


FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.02, deadline_s=5, timeout_s=10)


# --- what is left behind ------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a pid, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[1] == pgid and st[0] != "Z":
                members.append(int(entry.name))
    return members


def assert_no_processes(pids: list[int]) -> None:
    alive = [p for p in pids if (_stat(p) or ("Z",))[0] != "Z"]
    assert not alive, f"processes left running: {alive}"
    groups = {p: _group_members(p) for p in pids}  # each child leads its own group
    assert not any(groups.values()), f"process groups left: {groups}"


def _mounts() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def _scratch() -> set[str]:
    """Our temporary folders (configs, sockets, logs, registry storage, the disk condition's root)."""
    return {str(p) for d in (tempfile.gettempdir(), "/var/tmp") for p in Path(d).glob("pullstudy-*")
            if p.name.split("-")[1] in ("registry", "ctd", "tmpfs", "link", "disk", "sgz", "esgz")}


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def spawned(monkeypatch):
    """Pids of every child process the services start during the test."""
    pids: list[int] = []
    original = lifecycle.Process.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        pids.append(self.pid)

    monkeypatch.setattr(lifecycle.Process, "__init__", recording)
    return pids


@pytest.fixture
def clean_machine(spawned):
    """Asserts after the test: no process, mount or namespace of ours is left."""
    mounts, namespaces, scratch = _mounts(), _netns(), _scratch()
    yield spawned
    assert_no_processes(spawned)
    assert not _scratch() - scratch, "temporary folders left"
    assert not {m for m in _mounts() - mounts if "pullstudy-" in m}, "mounts left"
    assert not {n for n in _netns() - namespaces if n.startswith(f"pullstudy-{os.getpid()}-")}, "network namespaces left"


# --- services -----------------------------------------------------------------------------------------

@REGISTRY_ONLY
def test_registry_starts_answers_and_leaves_nothing(clean_machine):
    with Registry() as reg:
        assert requests.get(f"{reg.url}/v2/", timeout=5).status_code == 200
        assert reg.host == f"127.0.0.1:{reg.port}" and reg.version.startswith("2.")
        assert _stat(reg.pid)[1] == reg.pid  # its own process group
        tmp = reg.tmp
    assert not tmp.exists()
    assert clean_machine == [reg.pid]


@REGISTRY_ONLY
def test_a_port_in_use_is_a_clear_error(clean_machine):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=rf"port {port} on 127.0.0.1 is already in use .* port=None"):
            with Registry(port=port):
                pass


@NOTHING
def test_missing_binaries_name_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingBinary, match=r"docker-registry not found on PATH: .*`apt-get install docker-registry`"):
        Registry().__enter__()
    with pytest.raises(MissingBinary, match=r"`apt-get install containerd`"):
        Containerd(tmp_path / "root").__enter__()
    with pytest.raises(MissingBinary, match=r"ip not found on PATH: .*`apt-get install iproute2`"):
        RateLimitedLink(10).__enter__()
    assert not lifecycle._live  # nothing half-started stays registered


def test_without_root_tmpfs_and_namespaces_are_unavailable(monkeypatch, clean_machine):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for make, what in [(lambda: Tmpfs("1m"), "mounting a tmpfs"),
                       (lambda: RateLimitedLink(10), "a network namespace"),
                       (lambda: Registry(netns="pullstudy-none", bind="10.200.0.2"), "network namespace"),
                       (lambda: Containerd("/nonexistent"), "containerd")]:
        with pytest.raises(ConditionUnavailable, match=rf"{what}.* needs root \(running as uid 1000\)"):
            with make():
                pass


def test_containerd_wipe_is_a_real_cold_start(clean_machine):
    with Registry() as reg, Tmpfs("256m") as fs, Containerd(fs.path / "root") as ctd:
        image = crafter.craft(reg.host, "wipe/test", layers=2, size_bytes=1 * MB, content="random")
        ctd.ctr("images", "pull", "--plain-http", image.reference)
        assert ctd.ctr("snapshots", "ls").stdout.count("\n") > 1  # header + the unpacked layers
        assert ctd.content_bytes() >= image.compressed_bytes
        assert (ctd.version, ctd.snapshotter, ctd.root_fstype, ctd.root_device) == \
               ("1.6.20~ds1", "overlayfs", "tmpfs", "pullstudy-tmpfs")
        before = ctd.pid
        ctd.wipe()
        assert ctd.pid != before and _stat(before) is None
        for what in (("images", "ls", "-q"), ("content", "ls", "-q"), ("snapshots", "ls")):
            assert ctd.ctr(*what).stdout.strip() in ("", "KEY PARENT KIND"), what
        assert ctd.content_bytes() == 0
        assert not (fs.path / "root" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots" / "1").exists()
    assert not (fs.path.exists() or str(fs.path) in _mounts())


def test_rate_limited_link_achieves_its_configured_rate(clean_machine, record_property):
    with RateLimitedLink(50) as link:
        assert link.netns in _netns()
        assert link.host_address.startswith("10.200.") and link.ns_address.startswith("10.200.")
        mbit = link.measure(4 * 1024 * 1024)
        down = link.measurements[-1]
        up = link.measurements[0]
        with Registry(netns=link) as reg:  # a registry inside the namespace, on the veth address
            assert reg.host.startswith(link.ns_address)
            image = crafter.craft(reg.host, "link/test", layers=1, size_bytes=3 * MB, content="random")
            blob = f"{reg.url}/v2/link/test/blobs/{image.layer_digests[0]}"
            via_registry = link.measure(url=blob)
        name, dev = link.netns, link.host_dev
    record_property("link_mbit", {"configured": 50, "tiny_server_down": mbit, "tiny_server_up": up["mbit"],
                                  "registry_blob": via_registry})
    print(f"\nlink 50 Mbit/s: measured {mbit:.1f} down, {up['mbit']:.1f} up, {via_registry:.1f} via a registry blob")
    for measured in (mbit, up["mbit"], via_registry):
        assert 35 <= measured <= 65
    assert down["bytes"] == 4 * 1024 * 1024
    assert name not in _netns()
    assert subprocess.run(["ip", "link", "show", dev], capture_output=True).returncode != 0


def test_a_delay_without_netem_is_unavailable_not_simulated(clean_machine):
    try:
        with RateLimitedLink(50, delay_ms=20) as link:
            assert "delay" not in link.unavailable  # this kernel has netem: the delay is real
    except ConditionUnavailable as exc:
        assert exc.reason.startswith("netem unavailable on this kernel")


# --- the study runner ---------------------------------------------------------------------------------

GRID = local.LocalGrid(sizes_bytes=(4 * MB, 24 * MB), layers=(1, 4), contents=("zeros", "random"),
                       repetitions=2, storage=("disk", "tmpfs"), links=("loopback",), seed=7)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The integration grid, run once: 2 sizes x 2 layer counts x 2 contents x 2 storages x 2 repetitions."""
    out = tmp_path_factory.mktemp("local-run")
    pids: list[int] = []
    original = lifecycle.Process.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        pids.append(self.pid)

    mounts, namespaces, scratch = _mounts(), _netns(), _scratch()
    lifecycle.Process.__init__ = recording
    try:
        start = time.monotonic()
        local.run(GRID, out, name="tiny", progress=False)
        seconds = time.monotonic() - start
    finally:
        lifecycle.Process.__init__ = original
    assert not _scratch() - scratch, "temporary folders left"
    return out, pids, seconds, mounts, namespaces


def test_every_pull_is_recorded_with_the_one_schema(tiny_run):
    out, pids, seconds, mounts, namespaces = tiny_run
    lines = (out / "raw" / "records.jsonl").read_bytes()
    assert lines.endswith(b"\n")
    raw = [json.loads(line) for line in lines.splitlines()]
    assert len(raw) == 2 * 2 * 2 * 2 * 2 == GRID.pulls()
    df = local.load_local_run(out)
    assert list(df.columns) == RECORD_COLUMNS + local.EXTRA_COLUMNS
    archived = empty_records().dtypes
    for col in RECORD_COLUMNS:
        same = str(df[col].dtype) == str(archived[col]) or str(df[col].dtype).split("[")[0] == str(archived[col]).split("[")[0]
        assert same, (col, df[col].dtype, archived[col])
    assert set(df["study"]) == {"local"} and set(df["run"]) == {"tiny"} and set(df["backend"]) == {"local"}
    assert set(df["condition"]) == {"storage=disk,link=loopback,snapshotter=overlayfs",
                                    "storage=tmpfs,link=loopback,snapshotter=overlayfs"}
    assert (df["cluster_nodes"] == 1).all() and (~df["cache_hit"]).all() and df["study_image"].all()
    assert (df["pull_wait_s"] == df["pull_s"]).all()
    assert (df["tag"] == [f"{n}-layers-size-{s}-bytes" for n, s in zip(df["layers"], df["size_bytes"])]).all()
    assert (df.groupby(["image", "condition", "repetition"]).size() == 1).all()
    assert sorted(df["sequence"].tolist()) == list(range(len(df)))
    assert (df["pulled_at"] > df["pulling_at"]).all()
    assert set(df["snapshotter"]) == {"overlayfs"} and set(df["containerd_version"]) == {"1.6.20~ds1"}
    fstype = df.groupby("storage")["root_fstype"].agg(set)
    assert fstype["tmpfs"] == {"tmpfs"} and not fstype["disk"] & {"tmpfs", "ramfs"}
    # the order of images x conditions is shuffled within each repetition
    order = df.sort_values("sequence")[["image", "condition"]].apply(tuple, axis=1).tolist()
    assert order[:16] != sorted(order[:16]) and order[:16] != order[16:]


def test_fetch_and_unpack_add_up_and_sizes_behave(tiny_run):
    df = local.load_local_run(tiny_run[0])
    gap = (df["fetch_s"] + df["unpack_s"] - df["pull_s"]).abs()
    assert (gap <= (0.1 * df["pull_s"]).clip(lower=0.05)).all()
    medians = df.groupby("size_bytes")["pull_s"].median()
    assert medians[24 * MB] > medians[4 * MB]
    random_ = df[df["content"] == "random"]
    ratio = random_["image_size_reported"] / random_["size_bytes"]
    assert ratio.between(1.0, 1.01).all()  # incompressible: what is transferred is what is unpacked
    zeros = df[df["content"] == "zeros"]
    assert (zeros["image_size_reported"] * 50 < zeros["size_bytes"]).all()
    print("\n" + local.summarize(df).to_string())


def test_a_run_leaves_no_process_mount_or_namespace_and_a_catalog_entry(tiny_run):
    out, pids, seconds, mounts, namespaces = tiny_run
    assert len(pids) > GRID.pulls()  # containerd restarted for every pull
    assert_no_processes(pids)
    assert not {m for m in _mounts() - mounts if "pullstudy-tmpfs-" in m}
    assert not {n for n in _netns() - namespaces if n.startswith(f"pullstudy-{os.getpid()}-")}
    conditions = json.loads((out / "conditions.json").read_text())
    assert [c["available"] for c in conditions] == [True, True]
    doc = json.loads((out / "run.json").read_text())
    assert doc["status"] == "complete" and doc["records"] == GRID.pulls()
    entry = local.catalog_entry(out)
    assert isinstance(entry, catalog.Run) and entry.id == "local/tiny" and entry.provider == "local"
    assert entry.node_counts == (1,) and "ext4" in entry.ephemeral_storage and "tmpfs" in entry.ephemeral_storage
    assert doc["versions"]["containerd"] == "1.6.20~ds1" and doc["grid"]["repetitions"] == 2
    assert local.load_local_run(out / "run.json").equals(local.load_local_run(out))
    print(f"\ntiny run: {GRID.pulls()} pulls in {seconds:.1f} s")


def _small(**changes) -> local.LocalGrid:
    base = dict(sizes_bytes=(2 * MB,), layers=(1,), contents=("random",), repetitions=1, storage=("tmpfs",),
                links=("loopback",))
    return local.LocalGrid(**{**base, **changes})


def test_an_error_mid_run_leaves_complete_records_and_nothing_running(tmp_path, monkeypatch, clean_machine):
    real, calls = local._append, []

    def failing(fd, record):
        if len(calls) == 3:
            raise RuntimeError("injected failure after 3 pulls")
        calls.append(record)
        real(fd, record)

    monkeypatch.setattr(local, "_append", failing)
    grid = _small(links=("loopback", "rate-limited"), repetitions=3, rate_mbit=200)
    with pytest.raises(RuntimeError, match="injected failure after 3 pulls"):
        local.run(grid, tmp_path, name="broken", progress=False)
    lines = (tmp_path / "raw" / "records.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 3 and all(line.endswith(b"\n") and json.loads(line) for line in lines)
    assert {json.loads(x)["link"] for x in lines} <= {"loopback", "rate-limited"}
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["status"] == "failed" and "injected failure" in doc["error"] and doc["records"] == 3
    assert len(local.load_local_run(tmp_path)) == 3  # from the raw lines: no records.csv was written
    shaped = [c for c in json.loads((tmp_path / "conditions.json").read_text()) if c["link"] == "rate-limited"]
    assert shaped[0]["available"] and 140 <= shaped[0]["link_mbit_measured"] <= 260


def test_a_full_disk_stops_the_run_naming_the_condition(tmp_path, clean_machine):
    grid = _small(sizes_bytes=(8 * MB,), tmpfs_size=3 * 1024 * 1024)
    with pytest.raises(local.LocalRunError, match=r"disk full under condition storage=tmpfs,link=loopback,snapshotter=overlayfs .*"
                                                  r"this pull was not recorded"):
        local.run(grid, tmp_path, name="full", progress=False)
    assert (tmp_path / "raw" / "records.jsonl").read_bytes() == b""


def test_a_registry_error_mid_push_is_retried_then_stops_cleanly(tmp_path, monkeypatch, clean_machine):
    real_send, seen = crafter._send, []

    def flaky(client, method, url, expect, data=None, headers=None):
        seen.append(method)
        if method == "PATCH" and seen.count("PUT") >= 2:  # the first image's layer and config are in
            raise crafter._Transient(f"{method} {url}: HTTP 503 (injected)")
        return real_send(client, method, url, expect, data, headers)

    monkeypatch.setattr(crafter, "_send", flaky)
    craft = functools.partial(crafter.craft, retry=FAST, sleep=lambda s: None)
    with pytest.raises(local.LocalRunError, match=r"pushing the random image of 1 layers, 3000000 bytes .* "
                                                  r"gave up after 3 attempts.*no record written"):
        local.run(_small(sizes_bytes=(2 * MB, 3 * MB)), tmp_path, name="push", progress=False, craft=craft)
    assert seen.count("PATCH") >= 4  # one good upload, then 3 attempts of the failing one
    assert (tmp_path / "raw" / "records.jsonl").read_bytes() == b""
    assert not (tmp_path / "conditions.json").exists()


def test_a_condition_this_machine_lacks_is_reported_and_skipped(tmp_path, clean_machine, monkeypatch):
    monkeypatch.setattr(link_module.RateLimitedLink, "_open", _no_namespaces)
    local.run(_small(links=("loopback", "rate-limited")), tmp_path, name="partial", progress=False)
    conditions = {c["condition"]: c for c in json.loads((tmp_path / "conditions.json").read_text())}
    assert conditions["storage=tmpfs,link=loopback,snapshotter=overlayfs"]["available"] is True
    lacking = conditions["storage=tmpfs,link=rate-limited,snapshotter=overlayfs"]
    assert lacking["available"] is False and lacking["reason"] == "no namespaces here (test)"
    df = local.load_local_run(tmp_path)
    assert list(df["link"]) == ["loopback"]


def _no_namespaces(self):
    raise ConditionUnavailable("no namespaces here (test)")


def test_without_root_no_condition_runs_and_the_reasons_are_written(tmp_path, monkeypatch, clean_machine):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(local.LocalRunError, match=r"no condition of the grid can be provided on this machine: "
                                                  r"storage=tmpfs,link=loopback,snapshotter=overlayfs: mounting a tmpfs needs root"):
        local.run(_small(sizes_bytes=(1 * MB,)), tmp_path, name="noroot", progress=False)
    [cond] = json.loads((tmp_path / "conditions.json").read_text())
    assert cond["available"] is False and "needs root" in cond["reason"]


_INTERRUPTED = textwrap.dedent("""
    import sys
    from pullstudy.sources.local import measure as local, lifecycle
    original = lifecycle.Process.__init__
    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        with open(sys.argv[2], "a") as f:
            f.write(f"{self.pid}\\n")
    lifecycle.Process.__init__ = recording
    grid = local.LocalGrid(sizes_bytes=(2_000_000,), layers=(1,), contents=("random",), repetitions=200,
                           storage=("tmpfs", "disk"), links=("loopback", "rate-limited"), rate_mbit=200,
                           disk_dir=sys.argv[3], snapshotters=tuple(sys.argv[4].split(",")))
    local.run(grid, sys.argv[1], name="interrupted", progress=False)
""")


@pytest.mark.parametrize("signum,snapshotters", [
    (signal.SIGINT, "overlayfs"), (signal.SIGTERM, "overlayfs"),
    pytest.param(signal.SIGTERM, "stargz", marks=STARGZ_MARKS, id="SIGTERM-lazy")])
def test_ctrl_c_or_sigterm_stops_everything_and_keeps_complete_records(tmp_path, signum, snapshotters):
    out, pid_file = tmp_path / "out", tmp_path / "pids"
    mounts, namespaces, scratch = _mounts(), _netns(), _scratch()
    disk = tmp_path / "disk"
    disk.mkdir()
    child = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, str(out), str(pid_file), str(disk), snapshotters],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    records = out / "raw" / "records.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if records.exists() and records.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    time.sleep(0.15)  # somewhere in the middle of a pull
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0
    if signum == signal.SIGTERM:
        assert child.returncode == -signal.SIGTERM  # died of the signal, as without our handlers
    else:
        assert b"KeyboardInterrupt" in err or child.returncode == -signal.SIGINT
    pids = [int(x) for x in pid_file.read_text().split()]
    assert_no_processes(pids)
    assert not {m for m in _mounts() - mounts if "pullstudy-" in m or str(disk) in m}, "mounts left"
    assert not {n for n in _netns() - namespaces if n.startswith(f"pullstudy-{child.pid}-")}, "namespaces left"
    assert list(disk.iterdir()) == []  # the disk condition's containerd root is gone too
    assert not _scratch() - scratch, "temporary folders left"
    lines = records.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3 and all(line.endswith(b"\n") and json.loads(line) for line in lines)
    doc = json.loads((out / "run.json").read_text())
    assert doc["status"] == "interrupted" and doc["records"] == len(lines)


@NOTHING
def test_local_study_names_runs_by_grid(tmp_path):
    a = local.LocalGrid(sizes_bytes=(4_000_000,), layers=(1,), repetitions=2)
    b = local.LocalGrid(sizes_bytes=(4_000_000,), layers=(2,), repetitions=2)
    assert source_local.run_name("03-local-ssd", a) != source_local.run_name("03-local-ssd", b)


@pytest.mark.system("docker-registry", "containerd")
def test_a_failed_local_run_does_not_block_the_next_one(tmp_path, monkeypatch, clean_machine):
    """`make run BACKEND=local` without docker-registry fails; once it is installed the same run measures."""
    monkeypatch.setenv("PULLSTUDY_RUNS_DIR", str(tmp_path / "runs"))
    spec = {"sizes_bytes": [2 * MB], "layers": [1], "contents": ["random"], "storage": ["tmpfs"], "repetitions": 2}
    installed = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-installed"))
    with pytest.raises(MissingBinary, match="`apt-get install docker-registry`"):
        source_local.measure("03-local-ssd", spec, progress=False)
    [folder] = (tmp_path / "runs").iterdir()
    assert json.loads((folder / "run.json").read_text())["status"] == "failed" and local.recorded(folder) == []
    monkeypatch.setenv("PATH", installed)
    records, again, report = source_local.measure("03-local-ssd", spec, progress=False)
    assert again == folder and len(records) == 2 and report.startswith("measured 2 cold pulls")
    assert json.loads((folder / "run.json").read_text())["status"] == "complete"


@pytest.mark.system("docker-registry", "containerd")
def test_an_unfinished_local_run_is_resumed_keeping_its_records_and_another_grid_refused(
        tmp_path, monkeypatch, clean_machine):
    spec = {"sizes_bytes": [2 * MB], "layers": [1], "contents": ["random", "zeros"], "storage": ["tmpfs"],
            "repetitions": 2}
    folder = tmp_path / "run"
    real = local._append

    def failing(fd, record):
        if len(local.recorded(folder)) == 3:
            raise RuntimeError("injected failure after 3 pulls")
        real(fd, record)

    monkeypatch.setattr(local, "_append", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        source_local.measure("03-local-ssd", spec, run_dir=folder, progress=False)
    first = (folder / "raw" / "records.jsonl").read_bytes()
    assert first.count(b"\n") == 3
    monkeypatch.setattr(local, "_append", real)
    records, _, report = source_local.measure("03-local-ssd", spec, run_dir=folder, progress=False)
    assert "measured 1 cold pulls" in report and "recorded 3 of 4 pulls, kept" in report
    assert (folder / "raw" / "records.jsonl").read_bytes().startswith(first)  # the complete records stay as they were
    assert len(records) == 4 and list(records["sequence"]) == [0, 1, 2, 3]
    assert len(set(zip(records["repetition"], records["condition"], records["content"], records["tag"]))) == 4
    doc = json.loads((folder / "run.json").read_text())
    assert doc["status"] == "complete" and doc["records"] == 4 and doc["resumed_with_records"] == 3
    with pytest.raises(local.LocalRunError, match=r"4 records of a different grid \(differs in repetitions"):
        source_local.measure("03-local-ssd", {**spec, "repetitions": 3}, run_dir=folder, progress=False)
    assert source_local.measure("03-local-ssd", spec, run_dir=folder, progress=False)[2].startswith("reused")


# --- lazy pulling (the stargz snapshotter, built by `make stargz`) -------------------------------------

@needs_stargz
def test_a_lazy_pull_fetches_the_table_of_contents_and_reads_fetch_the_files(clean_machine):
    with Registry() as reg, lifecycle.ScratchDir("/var/tmp", "pullstudy-disk-") as disk, \
            stargz.StargzSnapshotter() as sgz, Containerd(disk.path / "root", snapshotter="stargz",
                                                        remote_snapshotter=sgz) as ctd:
        image = crafter.craft(reg.host, "lazy/test", layers=3, size_bytes=6 * MB, content="random", seed=3)
        spec = {"repository": "lazy/test", "tag": image.tag}
        stargz.convert_images(reg.host, [spec], progress=False)
        ref = f"{reg.host}/{stargz.lazy_repository('lazy/test')}:{image.tag}"
        timing = local.lazy_pull(ctd, ref)
        assert timing.fetch_s is None and timing.unpack_s is None and timing.pull_s > 0
        assert timing.fetched_bytes < 64 * 1024  # manifest and config only: the layers stay remote
        assert sum("fuse" in line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                   if str(disk.path) in line) == 3  # one remote mount per layer
        seconds, nbytes = local.read_image(ctd)
        assert nbytes == 6 * MB and seconds > 0
        assert ctd.content_bytes() < 64 * 1024  # what was read came through the snapshotter, not the store
        assert sgz.version.startswith("0.")
        pid = sgz.process.pid
        os.kill(pid, signal.SIGKILL)  # a crashed daemon leaves its FUSE mounts: stop() must remove them
        time.sleep(0.2)
    assert not [m for m in _mounts() if str(disk.path) in m]


@needs_stargz
def test_a_lazy_grid_records_both_snapshotters_in_the_one_schema(tmp_path, clean_machine):
    grid = _small(sizes_bytes=(2 * MB, 12 * MB), contents=("random", "zeros"), storage=("disk",),
                  snapshotters=("overlayfs", "stargz"), repetitions=2)
    local.run(grid, tmp_path, name="lazy", progress=False)
    df = local.load_local_run(tmp_path)
    assert len(df) == grid.pulls() == 2 * 2 * 2 * 2
    assert list(df.columns) == RECORD_COLUMNS + local.EXTRA_COLUMNS
    assert (df["read_bytes"] == df["size_bytes"]).all()  # every file of every image read, whichever snapshotter
    lazy_ = df[df["snapshotter"] == "stargz"]
    eager = df[df["snapshotter"] == "overlayfs"]
    assert lazy_["fetch_s"].isna().all() and lazy_["unpack_s"].isna().all()
    assert eager["fetch_s"].notna().all() and eager["unpack_s"].notna().all()
    assert set(lazy_["image"].str.split("/").str[1]) == {"pullstudy"}
    assert lazy_["image"].str.contains("-esgz:").all() and not eager["image"].str.contains("-esgz").any()
    assert (lazy_["image_size_reported"] < 64 * 1024).all()
    big_random = eager[(eager["content"] == "random") & (eager["size_bytes"] == 12 * MB)]
    assert (big_random["image_size_reported"] >= 12 * MB).all()  # the eager pull transferred the image
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["image_streaming"] is True and doc["versions"]["snapshotters"] == ["overlayfs", "stargz"]
    assert doc["versions"]["stargz_snapshotter"].startswith("0.")
    print("\n" + local.summarize(df).to_string())


def test_without_the_snapshotter_lazy_is_unavailable_with_the_remedy(tmp_path, monkeypatch, clean_machine):
    monkeypatch.setattr(stargz, "daemon_binary", lambda: None)
    local.run(_small(snapshotters=("overlayfs", "stargz")), tmp_path, name="nolazy", progress=False)
    conditions = {c["condition"]: c for c in json.loads((tmp_path / "conditions.json").read_text())}
    lacking = conditions["storage=tmpfs,link=loopback,snapshotter=stargz"]
    assert lacking["available"] is False and "make stargz" in lacking["reason"]
    assert "golang-github-containerd-stargz-snapshotter-dev" in lacking["reason"]
    assert conditions["storage=tmpfs,link=loopback,snapshotter=overlayfs"]["available"] is True
    assert set(local.load_local_run(tmp_path)["snapshotter"]) == {"overlayfs"}
    assert json.loads((tmp_path / "run.json").read_text())["image_streaming"] is False


@NOTHING
def test_the_lazy_reasons_name_each_missing_part(monkeypatch):
    monkeypatch.setattr(stargz, "daemon_binary", lambda: None)
    monkeypatch.setattr(stargz.shutil, "which", lambda name: None)
    monkeypatch.setattr(stargz.os, "access", lambda path, mode: False)
    monkeypatch.setattr(stargz.os, "geteuid", lambda: 1000)
    reason = stargz.unavailable_reason()
    for part in ("make stargz", "apt-get install stargz-snapshotter", "/dev/fuse", "needs root"):
        assert part in reason


@NOTHING
def test_the_daemon_is_found_by_setting_beside_python_or_not_at_all(monkeypatch, tmp_path):
    daemon = tmp_path / "pullstudy-stargz"
    daemon.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PULLSTUDY_STARGZ", str(daemon))
    assert stargz.daemon_binary() is None  # not executable
    daemon.chmod(0o755)
    assert stargz.daemon_binary() == str(daemon)
    monkeypatch.delenv("PULLSTUDY_STARGZ")
    monkeypatch.setattr(stargz.shutil, "which", lambda name: None)
    monkeypatch.setattr(stargz.sys, "executable", str(tmp_path / "python"))
    assert stargz.daemon_binary() == str(daemon)
    daemon.unlink()
    assert stargz.daemon_binary() is None

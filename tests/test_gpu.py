"""The layered GPU check (study 06): every parser on recorded outputs and on broken ones.

No GPU, no Docker daemon and no Kubernetes API server runs on the machines these tests run on: the
host, runtime and node layers are fed recorded command outputs through a fake runner (or real,
hanging subprocesses for the timeout path), and the Kubernetes layer is fed real archived node
objects and fake API objects that record the calls made to them.
"""

from __future__ import annotations

from pathlib import Path
import copy
import json
import os
import stat
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from pullstudy.studies import gpu
from pullstudy.studies.gpu import checks as C
from pullstudy.studies.gpu import host, kube, usernetes_node, node_objects, report, runtime
from pullstudy.studies.gpu.archive import (archive_checks, archived_node_files, cluster_nodes,
                                           cluster_summary, select_files)

FIXTURES = Path(__file__).parent / "fixtures"  # recorded command outputs

GKE = "performance-study/experiments/google/gke/gpu"
EKS = "performance-study/experiments/aws/eks/gpu"

# ---------------------------------------------------------------- recorded outputs (formats as the tools print them)

NVIDIA_SMI_L_V100 = (FIXTURES / "gpu" / "nvidia_smi_l_v100.txt").read_text()

NVIDIA_SMI_L_MIG = (FIXTURES / "gpu" / "nvidia_smi_l_mig.txt").read_text()

NVIDIA_SMI_BANNER = (FIXTURES / "gpu" / "nvidia_smi_banner.txt").read_text()

NVIDIA_SMI_NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                        "Make sure that the latest NVIDIA driver is installed and running.\n")

# `docker info --format '{{json .}}'` of a rootless daemon with the nvidia runtime (fields trimmed).
DOCKER_INFO_ROOTLESS = json.dumps({
    "ID": "5f0e1c9a-3b1e-4c6e-9a57-8f1f3c2f7d10", "Containers": 1, "ContainersRunning": 1, "Images": 2,
    "Driver": "overlay2", "CgroupDriver": "systemd", "CgroupVersion": "2", "KernelVersion": "6.8.0-1015-gcp",
    "OperatingSystem": "Ubuntu 24.04.1 LTS", "ServerVersion": "27.3.1", "Name": "usernetes-gpu-0",
    "DockerRootDir": "/home/ubuntu/.local/share/docker",
    "Runtimes": {"io.containerd.runc.v2": {"path": "runc", "status": {}}, "runc": {"path": "runc", "status": {}},
                 "nvidia": {"path": "nvidia-container-runtime", "status": {}}},
    "DefaultRuntime": "runc",
    "SecurityOptions": ["name=seccomp,profile=builtin", "name=rootless", "name=cgroupns"],
    "CDISpecDirs": ["/etc/cdi", "/var/run/cdi"],
    "ClientInfo": {"Version": "27.3.1", "Context": "rootless"},
})
# The same daemon before the NVIDIA Container Toolkit was configured, and a rootful one.
DOCKER_INFO_NO_NVIDIA = json.dumps({**json.loads(DOCKER_INFO_ROOTLESS), "Runtimes": {
    "io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}}})
DOCKER_INFO_ROOTFUL = json.dumps({**json.loads(DOCKER_INFO_ROOTLESS), "DockerRootDir": "/var/lib/docker",
                                  "SecurityOptions": ["name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"]})
# Recorded on this machine: the docker CLI without a daemon prints JSON with an empty ServerVersion.
DOCKER_INFO_NO_DAEMON = ('{"ID":"","Containers":0,"Driver":"","ServerVersion":"","Runtimes":null,"DefaultRuntime":"",'
                         '"SecurityOptions":null,"CDISpecDirs":null,"ClientInfo":{"Debug":false,"Version":"28.2.2"}}')
NO_DAEMON_ERR = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n"

DAEMON_JSON_NVIDIA = (FIXTURES / "gpu" / "daemon_json_nvidia.txt").read_text()

# `nvidia-ctk cdi generate` output for a 2-GPU host (mounts and hooks trimmed).
CDI_SPEC = (FIXTURES / "gpu" / "cdi_spec.txt").read_text()
CDI_SPEC_EMPTY = (FIXTURES / "gpu" / "cdi_spec_empty.txt").read_text()

# `containerd config dump` in a containerd 1.7 node (config version 2), CRI plugin trimmed.
CONTAINERD_17 = (FIXTURES / "gpu" / "containerd_17.txt").read_text()
CONTAINERD_17_NO_CDI = CONTAINERD_17.replace("enable_cdi = true", "enable_cdi = false")
CONTAINERD_20 = (FIXTURES / "gpu" / "containerd_20.txt").read_text()

LS_DEV_CHAR = (FIXTURES / "gpu" / "ls_dev_char.txt").read_text()
LS_DEV = (FIXTURES / "gpu" / "ls_dev.txt").read_text()

TOOLKIT_CONFIG = (FIXTURES / "gpu" / "toolkit_config.txt").read_text()
TOOLKIT_NO_CGROUPS = TOOLKIT_CONFIG.replace("#no-cgroups = false", "no-cgroups = true")

SUBUID = (FIXTURES / "gpu" / "subuid.txt").read_text()

MNIST_LOG = (FIXTURES / "gpu" / "mnist_log.txt").read_text()


# ---------------------------------------------------------------- helpers


class FakeRunner:
    """Stands in for run_command: answers recorded outputs by argv prefix and records every call."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int | None, str, str]], missing=()):
        self.answers, self.missing, self.calls = answers, set(missing), []

    def __call__(self, argv, timeout_s=20.0):
        argv = tuple(argv)
        self.calls.append((argv, timeout_s))
        if argv[0] in self.missing:
            return C.CommandResult(argv, None, missing=True)
        for prefix, (rc, out, err) in sorted(self.answers.items(), key=lambda kv: -len(kv[0])):
            if argv[: len(prefix)] == prefix:
                return C.CommandResult(argv, rc, out, err)
        return C.CommandResult(argv, 1, "", f"no recorded output for {' '.join(argv)}")


def fake_nvml(count=8, missing=False, name="Tesla V100-SXM2-16GB"):
    """A stand-in for the pynvml module with the functions the host check calls."""
    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    def init():
        if missing:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    return SimpleNamespace(
        NVMLError=NVMLError, nvmlInit=init, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetName=lambda h: name.encode(),
        nvmlDeviceGetUUID=lambda h: f"GPU-0000000{h}-0cc5-7959-855b-28f0d7bac243",
        nvmlSystemGetDriverVersion=lambda: "560.35.03", nvmlSystemGetCudaDriverVersion=lambda: 12080)


def load(raw, rel):
    return json.loads((raw / rel).read_text())["items"]


# ---------------------------------------------------------------- checks and commands


def test_a_check_refuses_unknown_status_and_keeps_remedies_for_fails_only():
    with pytest.raises(ValueError, match="status"):
        C.Check(C.HOST, "x", "ok", "")
    assert C.Check(C.HOST, "x", "pass", "fine", "a fix").remedy == ""
    assert C.failed(C.HOST, "x", "bad", "driver").remedy == C.REMEDY["driver"]


def test_evidence_is_trimmed_and_never_carries_a_secret():
    token = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlc2lnbmF0dXJl"
    check = C.Check(C.KUBE, "x", "skip", f"user: admin token: {token} client-key-data: LS0tLS1CRUdJTi " + "y" * 2000)
    assert token not in check.evidence and "LS0tLS1CRUdJTi" not in check.evidence
    assert "<redacted>" in check.evidence and len(check.evidence) <= C.EVIDENCE_CHARS
    assert "gke-gpu-cluster-32-default-pool-2c8d69ed-0w1c" in C.trim("node gke-gpu-cluster-32-default-pool-2c8d69ed-0w1c")


def test_a_missing_tool_is_reported_not_raised():
    result = C.run_command(["no-such-tool-pullstudy", "-L"])
    assert result.missing and not result.ok
    assert "not found on PATH" in result.why_not()


def test_a_hanging_command_is_stopped_at_its_timeout_with_its_children():
    start = time.monotonic()
    result = C.run_command(["sh", "-c", "sleep 30 & sleep 30"], timeout_s=0.5)
    assert result.timed_out and not result.ok
    assert time.monotonic() - start < 10
    assert "did not finish within 0.5 s" in result.why_not()


# ---------------------------------------------------------------- host layer


def test_nvidia_smi_list_parser_reads_gpus_and_mig_devices():
    gpus = host.parse_nvidia_smi_list(NVIDIA_SMI_L_V100)
    assert [g["index"] for g in gpus] == [0, 1, 2, 3]
    assert {g["name"] for g in gpus} == {"Tesla V100-SXM2-16GB"}
    assert gpus[2]["uuid"] == "GPU-8e2712fe-6590-250e-8b90-280dbc470b41"
    mig = host.parse_nvidia_smi_list(NVIDIA_SMI_L_MIG)
    assert [g["mig"] for g in mig] == [2, 0]
    assert host.parse_nvidia_smi_list(NVIDIA_SMI_NO_DRIVER) == []


def test_nvidia_smi_banner_and_nvml_cuda_version():
    assert host.parse_nvidia_smi_banner(NVIDIA_SMI_BANNER) == ("560.35.03", "12.6")
    assert host.parse_nvidia_smi_banner("") == (None, None)
    assert host.cuda_version(12080) == "12.8" and host.cuda_version(11040) == "11.4"


def test_host_layer_passes_with_nvml():
    checks, inventory = host.host_checks(nvml=fake_nvml(8), run=FakeRunner({}))
    assert [c.status for c in checks] == ["pass", "pass"]
    assert inventory.count == 8 and inventory.source == "NVML"
    assert "8× Tesla V100-SXM2-16GB" in checks[0].evidence
    assert "driver 560.35.03, CUDA 12.8" in checks[1].evidence


def test_host_layer_falls_back_to_nvidia_smi_when_nvml_has_no_library():
    run = FakeRunner({("nvidia-smi", "-L"): (0, NVIDIA_SMI_L_V100, ""), ("nvidia-smi",): (0, NVIDIA_SMI_BANNER, "")})
    checks, inventory = host.host_checks(nvml=fake_nvml(missing=True), run=run)
    assert [c.status for c in checks] == ["pass", "pass"]
    assert inventory.source == "nvidia-smi -L" and inventory.count == 4
    assert "driver 560.35.03, CUDA 12.6" in checks[1].evidence


def test_host_layer_without_nvml_and_nvidia_smi_is_a_skip_with_the_reason():
    checks, inventory = host.host_checks(nvml=fake_nvml(missing=True), run=FakeRunner({}, missing={"nvidia-smi"}))
    assert inventory is None and [c.status for c in checks] == ["skip", "skip"]
    assert "NVML Shared Library Not Found" in checks[0].evidence
    assert "`nvidia-smi` not found on PATH" in checks[0].evidence


def test_host_layer_fails_with_the_driver_remedy_when_nvidia_smi_cannot_reach_the_driver():
    run = FakeRunner({("nvidia-smi", "-L"): (9, NVIDIA_SMI_NO_DRIVER, "")})
    checks, _ = host.host_checks(nvml=fake_nvml(missing=True), run=run)
    assert checks[0].status == "fail" and "couldn't communicate with the NVIDIA driver" in checks[0].evidence
    assert checks[0].remedy == C.REMEDY["driver"]


def test_host_layer_reports_a_hung_nvidia_smi_as_a_fail_not_a_hang(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    start = time.monotonic()
    checks, inventory = host.host_checks(nvml=fake_nvml(missing=True), timeout_s=0.5)
    assert time.monotonic() - start < 10 and inventory is None
    assert checks[0].status == "fail" and "did not finish within 0.5 s" in checks[0].evidence
    assert checks[0].remedy == C.REMEDY["hung"]


def test_host_layer_with_no_gpu_listed_fails():
    checks, _ = host.host_checks(nvml=fake_nvml(count=0))
    assert checks[0].status == "fail" and "lists no GPU" in checks[0].evidence


# ---------------------------------------------------------------- container runtime layer


def test_docker_info_of_a_rootless_daemon_with_the_nvidia_runtime_passes():
    info = runtime.parse_docker_info(DOCKER_INFO_ROOTLESS)
    assert info["rootless"] and info["reachable"] and info["runtimes"]["nvidia"] == "nvidia-container-runtime"
    assert runtime.runtime_check(info).status == "pass"
    assert runtime.rootless_check(info).status == "pass"


def test_docker_without_the_nvidia_runtime_fails_with_the_remedy():
    check = runtime.runtime_check(runtime.parse_docker_info(DOCKER_INFO_NO_NVIDIA))
    assert check.status == "fail" and "io.containerd.runc.v2 (runc), runc;" in check.evidence
    assert check.remedy == C.REMEDY["nvidia_runtime"] and "bpf_prog_query" in check.remedy


def test_rootless_off_fails_with_the_remedy():
    check = runtime.rootless_check(runtime.parse_docker_info(DOCKER_INFO_ROOTFUL))
    assert check.status == "fail" and "no name=rootless" in check.evidence
    assert check.remedy == C.REMEDY["rootless"]


def test_no_docker_daemon_is_a_skip_with_the_reason():
    run = FakeRunner({("docker", "info"): (1, DOCKER_INFO_NO_DAEMON, NO_DAEMON_ERR)})
    info, why = runtime.docker_info(run)
    assert info is None and "Cannot connect to the Docker daemon" in why
    info, why = runtime.docker_info(FakeRunner({}, missing={"docker"}))
    assert info is None and "`docker` not found on PATH" in why
    with pytest.raises(ValueError, match="not JSON"):
        runtime.parse_docker_info("Client: Docker Engine")


def test_the_rootless_daemon_reads_its_own_daemon_json_not_the_system_one():
    info = runtime.parse_docker_info(DOCKER_INFO_ROOTLESS)
    files = {"/etc/docker/daemon.json": DAEMON_JSON_NVIDIA}
    argv = ["dockerd", "--data-root", "/home/ubuntu/.local/share/docker"]
    check = runtime.daemon_config_check(info, argv, "/home/ubuntu", read=files.get)
    assert check.status == "fail" and "/home/ubuntu/.config/docker/daemon.json" in check.evidence
    assert "/etc/docker/daemon.json names nvidia, but this daemon does not read it" in check.evidence
    assert check.remedy == C.REMEDY["daemon_config"]
    files["/home/ubuntu/.config/docker/daemon.json"] = DAEMON_JSON_NVIDIA
    assert runtime.daemon_config_check(info, argv, "/home/ubuntu", read=files.get).status == "pass"


def test_an_explicit_config_file_flag_wins():
    argv = ["dockerd", "--config-file=/opt/usernetes/daemon.json", "--experimental"]
    assert runtime.daemon_config_path(argv, True, "/home/u") == ("/opt/usernetes/daemon.json", "explicit --config-file")
    assert runtime.config_file_flag(["dockerd", "--config-file", "/x.json"]) == "/x.json"
    path, how = runtime.daemon_config_path(None, True, "/home/u", "/home/u/.cfg")
    assert path == "/home/u/.cfg/docker/daemon.json" and "rootless" in how
    assert runtime.parse_daemon_config(DAEMON_JSON_NVIDIA)["runtimes"] == ["nvidia"]
    assert runtime.parse_daemon_config("")["runtimes"] == []


def test_cdi_spec_lists_one_device_per_gpu():
    spec = runtime.parse_cdi_spec(CDI_SPEC)
    assert spec["kind"] == "nvidia.com/gpu" and spec["indices"] == [0, 1] and spec["has_all"]
    assert len(spec["devices"]) == 4
    check = runtime.cdi_check({"/etc/cdi/nvidia.yaml": CDI_SPEC}, 2, C.RUNTIME, "on the host", "cdi_host")
    assert check.status == "pass" and "2 GPU indices" in check.evidence


def test_an_empty_or_stale_or_missing_cdi_spec_fails_with_the_remedy():
    empty = runtime.cdi_check({"/etc/cdi/nvidia.yaml": CDI_SPEC_EMPTY}, None, C.RUNTIME, "on the host", "cdi_host")
    assert empty.status == "fail" and "lists no device" in empty.evidence and empty.remedy == C.REMEDY["cdi_host"]
    blank = runtime.cdi_check({"/etc/cdi/nvidia.yaml": ""}, None, C.RUNTIME, "on the host", "cdi_host")
    assert blank.status == "fail"
    stale = runtime.cdi_check({"/etc/cdi/nvidia.yaml": CDI_SPEC}, 8, C.RUNTIME, "on the host", "cdi_host")
    assert stale.status == "fail" and "driver reports 8 GPUs" in stale.evidence
    none = runtime.cdi_check({}, 2, C.NODE, "inside the node", "cdi_node")
    assert none.status == "fail" and none.remedy == C.REMEDY["cdi_node"]
    broken = runtime.cdi_check({"/etc/cdi/x.yaml": "devices: [\n"}, 2, C.RUNTIME, "on the host", "cdi_host")
    assert broken.status == "fail" and "not valid YAML" in broken.evidence


def test_subuid_ranges():
    assert runtime.parse_subuid(SUBUID) == [("ubuntu", 100000, 65536), ("vsoch", 165536, 65536)]
    assert runtime.subuid_check(SUBUID, "vsoch", 1001).status == "pass"
    missing = runtime.subuid_check(SUBUID, "alice", 1002)
    assert missing.status == "fail" and missing.remedy == C.REMEDY["subuid"]
    assert runtime.subuid_check(SUBUID, "root", 0).status == "skip"


def test_no_cgroups_true_fails_with_the_claims_reason():
    assert runtime.parse_toolkit_config(TOOLKIT_CONFIG)["no_cgroups"] is None
    assert runtime.no_cgroups_check(TOOLKIT_CONFIG, C.RUNTIME, "on the host").status == "pass"
    bad = runtime.no_cgroups_check(TOOLKIT_NO_CGROUPS, C.RUNTIME, "on the host")
    assert bad.status == "fail" and "no-cgroups = true" in bad.evidence and "cgroups are needed" in bad.remedy
    assert runtime.no_cgroups_check(None, C.RUNTIME, "on the host").status == "skip"


def test_dev_char_symlinks():
    links = runtime.parse_dev_char_listing(LS_DEV_CHAR)
    assert links["195:0"] == "../nvidia0" and links["195:255"] == "../nvidiactl"
    devices = runtime.nvidia_device_nodes(LS_DEV.split())
    assert devices == ["nvidia0", "nvidia1", "nvidiactl"]
    assert runtime.dev_char_check(links, devices, C.NODE, "inside the node").status == "pass"
    del links["195:1"]
    check = runtime.dev_char_check(links, devices, C.NODE, "inside the node")
    assert check.status == "fail" and "no link to nvidia1" in check.evidence
    assert "create-dev-char-symlinks --create-all" in check.remedy
    assert runtime.dev_char_check({}, [], C.RUNTIME, "on the host").status == "skip"


def test_the_runtime_layer_on_this_machine_never_crashes():
    for check in runtime.runtime_checks(None, run=FakeRunner({("docker", "info"): (1, DOCKER_INFO_NO_DAEMON, NO_DAEMON_ERR)})):
        assert check.layer == C.RUNTIME and check.status in C.STATUSES


# ---------------------------------------------------------------- usernetes node layer


def test_containerd_cdi_settings():
    v17 = usernetes_node.parse_containerd_config(CONTAINERD_17)
    assert v17["enable_cdi"] and not v17["cdi_default"] and v17["cdi_spec_dirs"] == ["/etc/cdi", "/var/run/cdi"]
    assert set(v17["runtimes"]) == {"nvidia", "runc"} and v17["default_runtime"] == "runc"
    assert usernetes_node.containerd_check(CONTAINERD_17, "containerd config dump").status == "pass"
    off = usernetes_node.containerd_check(CONTAINERD_17_NO_CDI, "containerd config dump")
    assert off.status == "fail" and off.remedy == C.REMEDY["containerd_cdi"]
    v20 = usernetes_node.parse_containerd_config(CONTAINERD_20)
    assert v20["enable_cdi"] and v20["cdi_default"]
    assert usernetes_node.containerd_check("version = [", "x").status == "fail"


def node_runner(override=None):
    answers = {
        ("docker", "exec", "usernetes-node-1", "true"): (0, "", ""),
        ("docker", "exec", "usernetes-node-1", "sh", "-c"): (0, f"{usernetes_node.MARK}/etc/cdi/nvidia.yaml\n{CDI_SPEC}", ""),
        ("docker", "exec", "usernetes-node-1", "containerd", "config", "dump"): (0, CONTAINERD_17, ""),
        ("docker", "exec", "usernetes-node-1", "ls", "-l", "/dev/char"): (0, LS_DEV_CHAR, ""),
        ("docker", "exec", "usernetes-node-1", "ls", "/dev"): (0, LS_DEV, ""),
        ("docker", "exec", "usernetes-node-1", "cat", "/etc/nvidia-container-runtime/config.toml"): (0, TOOLKIT_CONFIG, ""),
    }
    answers.update(override or {})
    return FakeRunner(answers)


def test_node_layer_reads_the_node_through_docker_exec_with_timeouts():
    run = node_runner()
    checks = usernetes_node.node_checks("usernetes-node-1", 2, run=run, timeout_s=7)
    assert [c.name for c in checks] == list(usernetes_node.NAMES)
    assert [c.status for c in checks] == ["pass"] * 4, [c.evidence for c in checks]
    assert all(argv[:3] == ("docker", "exec", "usernetes-node-1") and t == 7 for argv, t in run.calls)


def test_node_layer_fails_without_the_nodes_own_cdi_spec_and_containerd_cdi():
    run = node_runner({("docker", "exec", "usernetes-node-1", "sh", "-c"): (0, "", ""),
                         ("docker", "exec", "usernetes-node-1", "containerd", "config", "dump"): (0, CONTAINERD_17_NO_CDI, "")})
    cdi, containerd, *_ = usernetes_node.node_checks("usernetes-node-1", 2, run=run)
    assert cdi.status == "fail" and cdi.remedy == C.REMEDY["cdi_node"]
    assert containerd.status == "fail" and "enable_cdi = false" in containerd.evidence


def test_node_layer_without_a_node_is_skipped_with_the_reason():
    assert {c.status for c in usernetes_node.node_checks(None, 2, run=FakeRunner({}))} == {"skip"}
    gone = FakeRunner({("docker", "exec"): (1, "", "Error response from daemon: No such container: usernetes-node-1\n")})
    checks = usernetes_node.node_checks("usernetes-node-1", 2, run=gone)
    assert {c.status for c in checks} == {"skip"} and "No such container" in checks[0].evidence
    assert usernetes_node.split_marked_files(f"{usernetes_node.MARK}/a.yaml\nx: 1\n{usernetes_node.MARK}/b.json\n{{}}\n") == {"/a.yaml": "x: 1\n", "/b.json": "{}\n"}


# ---------------------------------------------------------------- node objects (archived, real)


def test_archived_eks_node_list_has_eight_gpus_per_p3dn_node(raw):
    table = node_objects.node_table(load(raw, f"{EKS}/nodes-8.json"), provider="EKS")
    assert len(table) == 8 and table["gpu_node"].all()
    assert (table["gpu_capacity"] == 8).all() and (table["gpu_allocatable"] == 8).all()
    assert (table["expected_gpus"] == 8).all() and not table["degraded"].any()
    assert "aws.amazon.com" in table["expected_source"].iloc[0]
    assert set(table["kubelet"]) == {"v1.27.15-eks-1552ad0"} and set(table["container_runtime"]) == {"containerd://1.7.20"}


def test_archived_gke_list_taken_before_the_gpus_were_advertised_names_the_degraded_nodes(raw):
    table = node_objects.node_table(load(raw, f"{GKE}/size32/metadata/nodes-32.json"), provider="GKE")
    assert table["gpu_node"].sum() == 32 and table["degraded"].sum() == 27
    bad = table.set_index("node").loc["gke-gpu-cluster-32-default-pool-2c8d69ed-99nx"]
    assert bad["degraded"] and bad["expected_gpus"] == 8 and "labels not applied yet" in bad["problem"]
    ok = table.set_index("node").loc["gke-gpu-cluster-32-default-pool-2c8d69ed-5bmd"]
    assert not ok["degraded"] and ok["gpu_allocatable"] == 8


def test_a_pool_that_attached_four_v100s_is_not_degraded(raw):
    table = node_objects.node_table(load(raw, f"{GKE}/size4/metadata/nodes-4.json"), provider="GKE")
    assert (table["gpu_allocatable"] == 4).all() and (table["expected_gpus"] == 4).all()
    assert not table["degraded"].any() and "4 or 8 allowed" in table["expected_source"].iloc[0]


def test_acceptance_a_node_with_fewer_gpus_than_its_instance_type_is_degraded_and_named(raw):
    items = copy.deepcopy(load(raw, f"{GKE}/size8/metadata/nodes-8-8-26-2024.json"))
    victim = items[3]["metadata"]["name"]
    items[3]["status"]["capacity"]["nvidia.com/gpu"] = "7"
    items[3]["status"]["allocatable"]["nvidia.com/gpu"] = "7"
    table = node_objects.node_table(items, provider="GKE")
    assert table.loc[table["degraded"], "node"].tolist() == [victim]
    check = kube.gpus_per_node_check(table, C.ARCHIVE, "gke/size8/nodes-8-8-26-2024")
    assert check.status == "fail" and victim in check.evidence and "allocatable 7 < expected 8" in check.evidence
    eks = copy.deepcopy(load(raw, f"{EKS}/nodes-8.json"))
    eks[0]["status"]["allocatable"]["nvidia.com/gpu"] = "6"
    eks_table = node_objects.node_table(eks, provider="EKS")
    assert eks_table.loc[eks_table["degraded"], "node"].tolist() == [eks[0]["metadata"]["name"]]
    assert "allocatable 6 < capacity 8" in eks_table.loc[0, "problem"]


def as_instance_type(items, instance_type, pool_label="eks.amazonaws.com/nodegroup"):
    """Real node objects relabelled as another instance type (and pool label), e.g. one the table lacks."""
    items = copy.deepcopy(items)
    for item in items:
        labels = item["metadata"]["labels"]
        for key in node_objects.INSTANCE_LABELS:
            labels[key] = instance_type
        labels[pool_label] = labels.pop("eks.amazonaws.com/nodegroup")
    return items


def lower(items, i, gpus):
    """Node i advertises ``gpus`` GPUs, capacity and allocatable alike (a GPU lost to the node, not the plugin)."""
    items[i]["status"]["capacity"]["nvidia.com/gpu"] = str(gpus)
    items[i]["status"]["allocatable"]["nvidia.com/gpu"] = str(gpus)
    return items[i]["metadata"]["name"]


def test_a_node_below_its_peers_is_degraded_even_when_its_instance_type_is_not_in_the_table(raw):
    """Real EKS node list relabelled as p4d.24xlarge (not in the table): the old code expected nothing there."""
    items = as_instance_type(load(raw, f"{EKS}/nodes-16.json"), "p4d.24xlarge")
    assert node_objects.spec_for("p4d.24xlarge", None) is None
    victim = lower(items, 6, 7)
    table = node_objects.node_table(items, provider="EKS")
    assert table.loc[table["degraded"], "node"].tolist() == [victim]
    bad = table.set_index("node").loc[victim]
    assert bad["expected_gpus"] == 8 and "allocatable 7 < expected 8" in bad["problem"]
    assert "peers: 15 of 16 peer nodes advertise 8" in bad["expected_source"]
    check = kube.gpus_per_node_check(table, C.ARCHIVE, "eks/p4d")
    assert check.status == "fail" and victim in check.evidence


def test_an_aks_nd40rs_v2_pool_is_checked_by_its_peers_and_the_table(raw):
    """Standard_ND40rs_v2 (8 V100) as AKS labels it: one node with 7 of 8 GPUs, as the size-32 README reports."""
    items = as_instance_type(load(raw, f"{EKS}/nodes-8.json"), "Standard_ND40rs_v2", "kubernetes.azure.com/agentpool")
    victim = lower(items, 2, 7)
    table = node_objects.node_table(items, provider="AKS")
    assert table.loc[table["degraded"], "node"].tolist() == [victim]
    source = table.set_index("node").loc[victim, "expected_source"]
    assert "peers: 7 of 8" in source and "ndv2-series" in source
    # the whole pool short by one: no peer stands out, the table still flags every node
    whole = as_instance_type(load(raw, f"{EKS}/nodes-8.json"), "standard_nd40rs_v2", "kubernetes.azure.com/agentpool")
    for i in range(len(whole)):
        lower(whole, i, 7)
    assert node_objects.node_table(whole, provider="AKS")["degraded"].all()


def test_peer_count_needs_two_advertising_nodes_and_breaks_ties_upwards():
    assert node_objects.peer_count([8, None, None]) == (None, "")
    assert node_objects.peer_count([8, 8, 7])[0] == 8
    count, why = node_objects.peer_count([7, 8])
    assert count == 8 and "a tie" in why
    assert node_objects.peer_count([4, 4, 4, 8])[0] == 4


def test_peers_are_the_same_instance_type_and_pool_only(raw):
    """Two pools in one list: a pool of 4-GPU nodes is not judged against a pool of 8-GPU nodes."""
    eight = as_instance_type(load(raw, f"{EKS}/nodes-8.json"), "x.8gpu")
    four = as_instance_type(load(raw, f"{EKS}/nodes-8.json"), "x.4gpu")
    for i, item in enumerate(four):
        item["metadata"]["name"] = f"four-{i}"
        item["metadata"]["labels"]["eks.amazonaws.com/nodegroup"] = "small"
        lower(four, i, 4)
    table = node_objects.node_table(eight + four, provider="EKS")
    assert not table["degraded"].any()
    assert set(table.loc[table["node"].str.startswith("four-"), "expected_gpus"]) == {4}


def test_not_ready_and_tainted_gpu_nodes_are_named(raw):
    items = copy.deepcopy(load(raw, f"{EKS}/nodes-8.json"))
    ready = next(c for c in items[1]["status"]["conditions"] if c["type"] == "Ready")
    ready["status"] = "False"
    items[2]["spec"]["taints"] = [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]
    items[4]["spec"]["taints"] = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    check = kube.readiness_check(node_objects.node_table(items))
    assert check.status == "fail" and "2 of 8" in check.evidence
    assert items[1]["metadata"]["name"] in check.evidence and items[2]["metadata"]["name"] in check.evidence
    assert items[4]["metadata"]["name"] not in check.evidence


def test_kubernetes_client_models_go_through_the_same_code_path(raw):
    """Replay: the archived JSON deserialized into client models, as list_node() would return them."""
    from kubernetes.client import ApiClient
    text = (raw / f"{GKE}/size4/metadata/nodes-4-second.json").read_text()
    models = ApiClient().deserialize(text, "V1NodeList", "application/json")
    assert type(models).__name__ == "V1NodeList"
    from_models = node_objects.node_table(kube.plain(models)["items"], provider="GKE")
    from_json = node_objects.node_table(json.loads(text)["items"], provider="GKE")
    pd.testing.assert_frame_equal(from_models, from_json)
    assert (from_models["gpu_allocatable"] == 8).all()


# ---------------------------------------------------------------- archive mode


def test_archived_gpu_node_files_come_from_the_manifest_and_missing_ones_are_named(raw):
    files = archived_node_files()
    assert len(files) == 20 and set(files["provider"]) == {"GKE", "EKS", "AKS"}
    assert "aks/size32/broken-nodes" in set(files["cluster"])
    for row in files[~files["available"]].itertuples():
        assert row.reason
    assert set(select_files(files, None)["cluster"]) == set(files.loc[files["available"], "cluster"])
    with pytest.raises(ValueError, match="not among the archived GPU node lists"):
        select_files(files, ["gke/size64/nodes-64"])


def test_archive_report_per_cluster(raw, tmp_path):
    items = copy.deepcopy(load(raw, f"{EKS}/nodes-16.json"))
    items[5]["status"]["capacity"]["nvidia.com/gpu"] = "8"
    items[5]["status"]["allocatable"]["nvidia.com/gpu"] = "4"
    broken = tmp_path / "nodes-16.json"
    broken.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    files = pd.DataFrame([{"key": "k", "cluster": "eks/nodes-16-broken", "provider": "EKS", "path": str(broken),
                           "available": True, "reason": ""},
                          {"key": "k2", "cluster": "eks/nodes-8", "provider": "EKS",
                           "path": str(raw / f"{EKS}/nodes-8.json"), "available": True, "reason": ""}])
    table = cluster_nodes(files)
    summary = cluster_summary(table).set_index("cluster")
    assert summary.loc["eks/nodes-16-broken", "degraded"] == 1
    assert summary.loc["eks/nodes-16-broken", "degraded_nodes"] == items[5]["metadata"]["name"]
    assert summary.loc["eks/nodes-16-broken", "gpus_per_node"] == "8 (15 nodes), 4 (1 nodes)"
    assert summary.loc["eks/nodes-8", "degraded"] == 0 and summary.loc["eks/nodes-8", "allocatable_gpus"] == 64
    statuses = {c.name: c.status for c in archive_checks(table)}
    assert statuses["eks/nodes-16-broken: " + kube.ALLOC] == "fail"
    assert statuses["eks/nodes-8: " + kube.ALLOC] == "pass"


def test_selection_takes_one_label_as_a_string_and_names_requested_files_that_are_missing(raw):
    from pullstudy.studies.gpu import archive
    files = archived_node_files()
    one = select_files(files, "gke/size4/nodes-4")  # a string, not its characters
    assert one["cluster"].tolist() == ["gke/size4/nodes-4"]
    wanted = ["gke/size4/nodes-4", "aks/size32/broken-nodes"]
    chosen = select_files(files, wanted)
    note = archive.selection_note(files, chosen, wanted)
    assert note.startswith("**1** node lists analysed") and "Asked for but not available here:** aks/size32/broken-nodes" in note
    assert "Asked for" not in archive.selection_note(files, select_files(files, None), None)


def test_degraded_nodes_and_their_note_from_the_archived_gke_list(raw):
    from pullstudy.studies.gpu import archive
    files = archived_node_files()
    table = cluster_nodes(select_files(files, ["gke/size32/nodes-32", "gke/size4/nodes-4", "gke/size4/nodes-4-second"]))
    bad = archive.degraded_nodes(table)
    assert len(bad) == 27 and set(bad["cluster"]) == {"gke/size32/nodes-32"}
    assert list(bad.columns) == archive.DEGRADED_COLUMNS
    note = archive.degraded_note(table)
    assert "**gke/size32/nodes-32** — 27 of 32 GPU nodes degraded; they were" in note
    assert "`gke-gpu-cluster-32-default-pool-2c8d69ed-99nx`" in note
    assert "no degraded node in the other 2 node lists (gke/size4/nodes-4, gke/size4/nodes-4-second)" in note
    odd = archive.other_attachments(cluster_summary(table))  # the pool that attached 4 V100s, not 8
    assert odd["cluster"].tolist() == ["gke/size4/nodes-4"] and odd["expected_per_node"].tolist() == ["4"]
    assert archive.degraded_note(table.iloc[0:0]) == "No archived node list analysed."


# ---------------------------------------------------------------- kubernetes layer (no API server runs here)

PLUGIN_DS = {
    "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
    "spec": {"selector": {"matchLabels": {"name": "nvidia-device-plugin-ds"}},
             "template": {"spec": {"containers": [{"name": "nvidia-device-plugin-ctr",
                                                   "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"}]}}},
    "status": {"desiredNumberScheduled": 2, "numberReady": 2},
}
OPERATOR_DS = {"metadata": {"name": "nvidia-operator-validator", "namespace": "gpu-operator",
                            "ownerReferences": [{"kind": "ClusterPolicy", "name": "cluster-policy"}]},
               "spec": {"template": {"spec": {"containers": [{"image": "nvcr.io/nvidia/cloud-native/gpu-operator-validator:v24.9.0"}]}}},
               "status": {"desiredNumberScheduled": 2, "numberReady": 0}}


def plugin_pod(node_name, ready=True):
    return {"metadata": {"name": f"nvidia-device-plugin-daemonset-{node_name[-4:]}", "namespace": "kube-system",
                         "ownerReferences": [{"kind": "DaemonSet", "name": "nvidia-device-plugin-daemonset"}]},
            "spec": {"nodeName": node_name},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_device_plugin_ready_on_every_gpu_node():
    gpu_nodes = ["u7s-node-1", "u7s-node-2"]
    ok = kube.device_plugin_check([PLUGIN_DS], [plugin_pod(n) for n in gpu_nodes], gpu_nodes)
    assert ok.status == "pass" and "k8s-device-plugin:v0.17.0" in ok.evidence
    half = kube.device_plugin_check([PLUGIN_DS], [plugin_pod("u7s-node-1"), plugin_pod("u7s-node-2", False)], gpu_nodes)
    assert half.status == "fail" and "u7s-node-2" in half.evidence and half.remedy == C.REMEDY["device_plugin"]
    assert kube.device_plugin_check([], [], gpu_nodes).status == "fail"
    assert kube.device_plugin_check([PLUGIN_DS], [], []).status == "pass"  # judged by the DaemonSet's counts


def test_the_gpu_operator_is_flagged_with_the_claims_remedy():
    assert kube.operator_check([PLUGIN_DS]).status == "pass"
    check = kube.operator_check([PLUGIN_DS, OPERATOR_DS])
    assert check.status == "fail" and "gpu-operator/nvidia-operator-validator" in check.evidence
    assert "inconsistent, broken states" in check.remedy


class FakeCoreV1:
    """Records every call a GPU pod run makes; answers pod reads from a script. No API server involved."""

    def __init__(self, phases, log=NVIDIA_SMI_L_V100.splitlines()[0] + "\n", fail_on=None, waiting=None):
        self.phases, self.log, self.fail_on, self.waiting, self.calls = list(phases), log, fail_on, waiting, []

    def _record(self, call, **kwargs):
        self.calls.append((call, kwargs))
        if self.fail_on == call:
            from kubernetes.client.exceptions import ApiException
            raise ApiException(status=500, reason="Internal Server Error")

    def create_namespaced_pod(self, namespace, body, **kw):
        self._record("create", namespace=namespace, body=body)

    def read_namespaced_pod(self, name, namespace, **kw):
        self._record("read", name=name)
        phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        status = {"phase": phase}
        if self.waiting:
            status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": self.waiting}]
        return {"status": status}

    def read_namespaced_pod_log(self, name, namespace, **kw):
        self._record("log", name=name)
        return self.log

    def delete_namespaced_pod(self, name, namespace, **kw):
        self._record("delete", name=name, grace=kw.get("grace_period_seconds"))


def test_the_gpu_pod_manifest_requests_gpus_and_a_dry_run_submits_nothing():
    manifest = kube.gpu_pod_manifest(gpus=2)
    container = manifest["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2" and container["command"] == ["nvidia-smi", "-L"]
    assert manifest["spec"]["restartPolicy"] == "Never" and kube.requested_gpus(manifest) == 2
    core = FakeCoreV1(["Succeeded"])
    check = kube.run_gpu_pod(core, manifest, dry_run=True)
    assert check.status == "skip" and "dry run" in check.evidence and core.calls == []


def test_the_gpu_pod_that_sees_its_gpu_passes_and_is_deleted():
    core = FakeCoreV1(["Pending", "Running", "Succeeded"])
    manifest = kube.gpu_pod_manifest(gpus=1, name="pullstudy-gpu-check-test")
    check = kube.run_gpu_pod(core, manifest, sleep=lambda s: None)
    assert check.status == "pass" and "listed 1 GPUs: Tesla V100-SXM2-16GB" in check.evidence
    assert [c[0] for c in core.calls] == ["create", "read", "read", "read", "log", "delete"]
    assert core.calls[-1][1] == {"name": "pullstudy-gpu-check-test", "grace": 0}


def test_the_gpu_pod_is_deleted_when_the_api_fails_midway():
    core = FakeCoreV1(["Pending"], fail_on="read")
    check = kube.run_gpu_pod(core, kube.gpu_pod_manifest(), sleep=lambda s: None)
    assert check.status == "fail" and "ApiException 500" in check.evidence
    assert [c[0] for c in core.calls] == ["create", "read", "delete"]


def test_an_unschedulable_gpu_pod_times_out_names_the_reason_and_is_deleted():
    now = [0.0]
    core = FakeCoreV1(["Pending"], waiting="0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    check = kube.run_gpu_pod(core, kube.gpu_pod_manifest(), timeout_s=10, poll_s=2,
                             sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert check.status == "fail" and "Insufficient nvidia.com/gpu" in check.evidence and "after 10 s" in check.evidence
    assert check.remedy == C.REMEDY["device_plugin"]
    assert core.calls[-1][0] == "delete" and "log" not in [c[0] for c in core.calls]


def test_a_gpu_pod_that_lists_fewer_gpus_than_requested_fails():
    check = kube.pod_result_check(kube.gpu_pod_manifest(gpus=4), "Succeeded", NVIDIA_SMI_L_V100.splitlines()[0], "")
    assert check.status == "fail" and check.remedy == C.REMEDY["workload"]


def test_without_a_cluster_the_kubernetes_layer_is_skipped_and_the_kubeconfig_never_leaks(tmp_path):
    checks, table = kube.kube_checks(None)
    assert table is None and {c.status for c in checks} == {"skip"}
    assert "no kubeconfig given" in checks[0].evidence
    token = "kF9sQ2xLm8pZr4TvWb7YcN1dHj6Ga3Ue"
    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: u7s
  cluster: {{server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}}
users:
- name: admin
  user: {{token: {token}}}
contexts:
- name: u7s
  context: {{cluster: u7s, user: admin}}
current-context: u7s
""")
    checks, table = kube.kube_checks(str(config), run_workload_pod=True)
    assert table is None and {c.status for c in checks} == {"skip"}
    assert all(token not in c.evidence for c in checks)
    assert "did not answer" in checks[0].evidence and str(config) in checks[0].evidence
    checks, _ = kube.kube_checks(str(tmp_path / "absent"))
    assert "does not exist" in checks[0].evidence


def test_a_dry_run_builds_the_pod_without_a_cluster():
    checks, _ = kube.kube_checks(None, run_workload_pod=True, dry_run=True)
    pod = next(c for c in checks if c.name == kube.POD)
    assert pod.status == "skip" and "dry run: manifest for pod pullstudy-gpu-check-" in pod.evidence
    assert "1 nvidia.com/gpu" in pod.evidence


def test_every_live_layer_runs_on_this_machine_without_crashing():
    """Whatever this machine has (here: no GPU, no Docker daemon, no cluster), every check comes back."""
    checks = gpu.live_checks(timeout_s=10)
    assert [c.layer for c in checks][:2] == [C.HOST, C.HOST]
    assert {c.layer for c in checks} == set(C.LIVE_LAYERS)
    for check in checks:
        assert check.status in C.STATUSES and check.evidence
        assert (check.remedy != "") == (check.status == "fail")


def test_training_log_epochs():
    mnist = kube.parse_training_log(MNIST_LOG)
    assert mnist["completed"] == 2 and mnist["basis"] == "test-set summaries" and mnist["last_epoch"] == 3
    assert kube.training_check(MNIST_LOG, expected_epochs=2).status == "pass"
    assert kube.training_check(MNIST_LOG, expected_epochs=3).status == "fail"
    generic = "Epoch 1/2 loss=0.71\nEpoch 2/2 loss=0.43\n"
    assert kube.parse_training_log(generic)["completed"] == 2 and kube.training_check(generic).status == "pass"
    assert kube.training_check("Epoch 1/3 loss=0.9\n").status == "fail"
    assert kube.training_check(None).status == "skip"


# ---------------------------------------------------------------- report card and verdict


def _card(**status_of):
    """A report card in which every live check passes, except those named (by check name)."""
    names = [(C.HOST, host.GPUS), (C.HOST, host.VERSIONS)] + [pair for step in report.STEPS.values() for pair in step] \
        + [(C.KUBE, kube.ALLOC), (C.KUBE, kube.READY), (C.KUBE, kube.POD)]
    return report.report_card([C.Check(layer, name, status_of.get(name, "pass"), "seen",
                                       "fix" if status_of.get(name) == "fail" else "") for layer, name in names])


def test_verdict_is_not_testable_here_when_the_live_layers_are_skipped():
    card = report.report_card([C.skipped(C.HOST, host.GPUS, "no NVIDIA driver on this machine"),
                               C.skipped(C.KUBE, kube.ALLOC, "no kubeconfig given (parameter kubeconfig)")])
    verdict = report.gpu_usernetes_verdict(card)
    assert verdict.verdict == "not testable here" and "no NVIDIA driver" in verdict.reason
    assert "no kubeconfig given" in verdict.reason and verdict.value is None


def test_verdict_from_live_checks():
    assert report.gpu_usernetes_verdict(_card()).verdict == "supported"
    missing = report.gpu_usernetes_verdict(_card(**{usernetes_node.CONTAINERD: "fail"}))
    assert missing.verdict == "partly supported" and "containerd inside the node" in missing.reason
    assert report.gpu_usernetes_verdict(_card(**{kube.POD: "fail"})).verdict == "not supported"
    assert report.gpu_usernetes_verdict(_card(**{kube.POD: "fail", usernetes_node.CDI: "fail"})).verdict == "partly supported"
    assert report.gpu_usernetes_verdict(_card(**{kube.POD: "skip"})).verdict == "partly supported"
    assert report.gpu_usernetes_verdict(_card(**{kube.POD: "skip", usernetes_node.CDI: "skip"})).verdict == "not testable here"
    supported = report.gpu_usernetes_verdict(_card())
    assert supported.value == 7 and supported.n == 7


def test_report_card_order_and_charts(raw):
    files = archived_node_files()
    table = cluster_nodes(select_files(files, ["gke/size32/nodes-32", "eks/nodes-8"]))
    checks = [C.skipped(C.KUBE, kube.POD, "x"), C.skipped(C.HOST, host.GPUS, "y")] + archive_checks(table)
    card = report.report_card(checks)
    assert card["layer"].tolist()[:2] == [C.HOST, C.KUBE] and list(card.columns) == report.CARD_COLUMNS
    counts = report.status_counts(card).set_index("layer")
    assert counts.loc[C.ARCHIVE, "fail"] == 1 and counts.loc[C.ARCHIVE, "pass"] == 3
    for chart in (report.report_card_chart(card), report.archive_chart(table)):
        spec = chart.to_dict()
        assert spec["title"]["text"]

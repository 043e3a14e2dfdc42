"""What every GPU check returns, the known remedies, and the one way to run an external command.

A check says which layer it looked at, what it saw and — when it fails — the fix the source found
for that failure (claim ``gpu-usernetes``), so a report card names the first broken layer and what to
do about it. Commands always run with a timeout and are never allowed to crash a check: a missing
tool is a *skip* with the reason, a hung one is reported with how long it was given.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

STATUSES = ("pass", "fail", "skip")
HOST, RUNTIME, NODE, KUBE, ARCHIVE = "host", "container runtime", "usernetes node", "kubernetes", "archive"
#: From the physical machine to the pod; the archive layer (recorded cloud clusters) comes last.
LAYERS = (HOST, RUNTIME, NODE, KUBE, ARCHIVE)
LIVE_LAYERS = (HOST, RUNTIME, NODE, KUBE)
EVIDENCE_CHARS = 600
DEFAULT_TIMEOUT_S = 20.0

#: The fixes the source reports (claim gpu-usernetes), one per failure they address.
REMEDY = {
    "driver": "install the NVIDIA driver on the host first: `nvidia-smi -L` must list every GPU "
              "(the source: driver 560, CUDA 12.8, Ubuntu 24.04)",
    "hung": "the driver did not answer in time: look for Xid errors in `dmesg`, reset the GPU "
            "(`nvidia-smi -r`) or reboot before going further",
    "nvidia_runtime": "install the NVIDIA Container Toolkit and register the nvidia runtime in the daemon "
                      "config the rootless daemon reads: `nvidia-ctk runtime configure --runtime=docker "
                      "--config=$HOME/.config/docker/daemon.json`, then `systemctl --user restart docker`; "
                      "skipping the nvidia runtime fails later with a bpf_prog_query permission error",
    "daemon_config": "a rootless dockerd reads ~/.config/docker/daemon.json (or the file given with "
                     "--config-file), not /etc/docker/daemon.json: put the nvidia runtime in the file it "
                     "reads, or start dockerd-rootless.sh with an explicit --config-file naming it",
    "rootless": "Usernetes runs its nodes in rootless Docker: `dockerd-rootless-setuptool.sh install` as the "
                "user, then DOCKER_HOST=unix://$XDG_RUNTIME_DIR/docker.sock",
    "cdi_host": "generate the CDI spec on the host: `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` "
                "(again after every driver update)",
    "cdi_node": "generate the CDI spec again inside the node: `docker exec <node> nvidia-ctk cdi generate "
                "--output=/etc/cdi/nvidia.yaml`",
    "subuid": "give the user a subordinate id range for rootless Docker: `sudo usermod --add-subuids "
              "100000-165535 --add-subgids 100000-165535 $USER`",
    "dev_char": "create the device char symlinks in advance: `sudo nvidia-ctk system create-dev-char-symlinks "
                "--create-all` (on the host, and in the node)",
    "containerd_cdi": "configure containerd inside the node for CDI: `nvidia-ctk runtime configure "
                      "--runtime=containerd --cdi.enabled` (enable_cdi = true, cdi_spec_dirs = [\"/etc/cdi\", "
                      "\"/var/run/cdi\"]) and restart containerd in the node",
    "no_cgroups": "keep no-cgroups = false in nvidia-container-runtime's config.toml: with no-cgroups = true "
                  "the node starts but GPU pods fail later (cgroups are needed)",
    "device_plugin": "deploy the plain NVIDIA device plugin DaemonSet (NVIDIA/k8s-device-plugin) and wait "
                     "until its pod is ready on every GPU node",
    "gpu_operator": "remove the GPU Operator and deploy the plain NVIDIA device plugin instead: the operator "
                    "gave inconsistent, broken states in rootless Usernetes",
    "allocatable": "the node advertises fewer GPUs than it has: read the device plugin pod's log on that node, "
                   "check the CDI spec and /dev/char symlinks in the node, then restart the plugin pod",
    "not_ready": "the node is NotReady or tainted: `kubectl describe node` gives the condition or taint; a GPU "
                 "pod cannot be scheduled there until it is cleared",
    "workload": "the GPU pod did not see its GPUs: fix the first failing check above (host → runtime → node "
                "→ kubernetes); each layer only passes on what the one below gives it",
}


@dataclass(frozen=True)
class Check:
    """One layer's verdict on one thing: pass / fail / skip, the evidence seen, the fix for a fail."""

    layer: str
    name: str
    status: str
    evidence: str
    remedy: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name!r}: status {self.status!r} not in {STATUSES}")
        if self.layer not in LAYERS:
            raise ValueError(f"check {self.name!r}: layer {self.layer!r} not in {LAYERS}")
        object.__setattr__(self, "evidence", trim(self.evidence))
        if self.status != "fail":
            object.__setattr__(self, "remedy", "")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def passed(layer: str, name: str, evidence: str) -> Check:
    return Check(layer, name, "pass", evidence)


def failed(layer: str, name: str, evidence: str, remedy_key: str) -> Check:
    return Check(layer, name, "fail", evidence, REMEDY[remedy_key])


def skipped(layer: str, name: str, reason: str) -> Check:
    return Check(layer, name, "skip", reason)


# ---------------------------------------------------------------- evidence hygiene

_SECRET_FIELD = re.compile(
    r"(?i)\b(token|password|passwd|secret|client-key-data|client-certificate-data|"
    r"certificate-authority-data|authorization|bearer)\b(\s*[:=]\s*|\s+)(\"[^\"]*\"|'[^']*'|\S+)")
_JWT = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
_LONG_B64 = re.compile(r"[A-Za-z0-9+/=_-]{64,}")


def _redact_blob(match: re.Match) -> str:
    """Key material mixes cases and digits; a long lower-case node name or path does not."""
    blob = match.group(0)
    mixed = any(c.isupper() for c in blob) and any(c.islower() for c in blob) and any(c.isdigit() for c in blob)
    return "<redacted>" if mixed else blob


def scrub(text: str) -> str:
    """Evidence never carries a credential: tokens, keys and long base64 blobs are redacted."""
    text = _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
    text = _JWT.sub("<redacted>", text)
    return _LONG_B64.sub(_redact_blob, text)


def trim(text: object, limit: int = EVIDENCE_CHARS) -> str:
    """One short line of evidence: whitespace collapsed, secrets scrubbed, cut at ``limit``."""
    flat = " ".join(scrub(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


# ---------------------------------------------------------------- external commands


@dataclass(frozen=True)
class CommandResult:
    """What a command did: its output, or why there is none (missing tool, timeout)."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    missing: bool = False
    timed_out: bool = False
    timeout_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def shown(self) -> str:
        return " ".join(self.argv)

    def why_not(self) -> str:
        """Why the command gave no usable output, in one line (for a skip or fail)."""
        if self.missing:
            return f"`{self.argv[0]}` not found on PATH"
        if self.timed_out:
            return f"`{self.shown}` did not finish within {self.timeout_s:g} s"
        detail = first_line(self.stderr) or first_line(self.stdout) or "no output"
        return f"`{self.shown}` exited {self.returncode}: {detail}"


Runner = Callable[..., CommandResult]


def run_command(argv: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> CommandResult:
    """Run ``argv`` (no shell) with a hard timeout; its whole process group is killed if it hangs.

    The child gets its own session, so a grandchild holding the output pipes cannot keep this call
    waiting after the timeout.
    """
    argv = tuple(str(a) for a in argv)
    if shutil.which(argv[0]) is None:
        return CommandResult(argv, None, missing=True)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace",
                                start_new_session=True)
    except OSError as exc:  # e.g. not executable
        return CommandResult(argv, None, stderr=str(exc), missing=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return CommandResult(argv, None, out, err, timed_out=True, timeout_s=timeout_s)
    return CommandResult(argv, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    """End the hung command and everything it started (its own process group, by id)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()

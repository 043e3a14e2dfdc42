"""Host layer: does the machine itself see its GPUs, with which driver and CUDA version?

Everything above (rootless Docker, the Usernetes node, the kubelet) only passes on what the host
driver gives it, so this is checked first. NVML (NVIDIA's maintained binding ``nvidia-ml-py``,
imported as ``pynvml``) is asked first; ``nvidia-smi`` is the fallback where the binding cannot load
the library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .checks import HOST, Check, Runner, failed, passed, run_command, skipped

GPUS, VERSIONS = "GPUs visible to the driver", "driver and CUDA versions"
_GPU_LINE = re.compile(r"^GPU (\d+): (.+?) \(UUID: (GPU-[0-9A-Fa-f-]+)\)\s*$")
_MIG_LINE = re.compile(r"^\s+MIG\s+(\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)]+)\)")
_BANNER = re.compile(r"Driver Version:\s*(\S+)\s+CUDA Version:\s*(\S+)")


@dataclass
class Inventory:
    """The host's GPUs as the driver reports them, and where that came from (NVML or nvidia-smi)."""

    source: str
    gpus: list[dict[str, Any]] = field(default_factory=list)
    driver: str | None = None
    cuda: str | None = None

    @property
    def count(self) -> int:
        return len(self.gpus)

    def models(self) -> str:
        names: dict[str, int] = {}
        for gpu in self.gpus:
            names[gpu["name"]] = names.get(gpu["name"], 0) + 1
        return ", ".join(f"{n}× {name}" for name, n in names.items())


class HostUnavailable(Exception):
    """No NVIDIA driver to ask on this machine (a skip, not a failure)."""


class HostBroken(Exception):
    """A driver is there but does not answer properly (a failure, with the remedy key)."""

    def __init__(self, message: str, remedy: str = "driver") -> None:
        super().__init__(message)
        self.remedy = remedy


# ---------------------------------------------------------------- parsers (text in, data out)


def parse_nvidia_smi_list(text: str) -> list[dict[str, Any]]:
    """``nvidia-smi -L`` → one dict per GPU (index, name, uuid, mig: MIG devices under it)."""
    gpus: list[dict[str, Any]] = []
    for line in text.splitlines():
        gpu = _GPU_LINE.match(line.rstrip())
        if gpu:
            gpus.append({"index": int(gpu.group(1)), "name": gpu.group(2), "uuid": gpu.group(3), "mig": 0})
        elif _MIG_LINE.match(line) and gpus:
            gpus[-1]["mig"] += 1
    return gpus


def parse_nvidia_smi_banner(text: str) -> tuple[str | None, str | None]:
    """The ``Driver Version`` and ``CUDA Version`` of plain ``nvidia-smi``'s header."""
    match = _BANNER.search(text)
    return (match.group(1), match.group(2)) if match else (None, None)


def cuda_version(number: int) -> str:
    """NVML's CUDA driver version as an integer (12080) → "12.8"."""
    return f"{number // 1000}.{(number % 1000) // 10}"


# ---------------------------------------------------------------- the two ways to ask


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_inventory(nvml: Any) -> Inventory:
    """Ask NVML (the ``pynvml`` module, or a stand-in with the same functions)."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        if "LibraryNotFound" in type(exc).__name__ or "NotFound" in str(exc):
            raise HostUnavailable(f"NVML: {exc}") from None
        raise HostBroken(f"NVML could not start: {exc}") from None
    try:
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append({"index": i, "name": _text(nvml.nvmlDeviceGetName(handle)),
                         "uuid": _text(nvml.nvmlDeviceGetUUID(handle)), "mig": 0})
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion()))
    finally:
        nvml.nvmlShutdown()
    return Inventory("NVML", gpus, driver, cuda)


def smi_inventory(run: Runner = run_command, timeout_s: float = 20.0) -> Inventory:
    """Ask ``nvidia-smi -L`` (and plain ``nvidia-smi`` for the versions)."""
    listing = run(["nvidia-smi", "-L"], timeout_s=timeout_s)
    if listing.missing:
        raise HostUnavailable(listing.why_not())
    if listing.timed_out:
        raise HostBroken(listing.why_not(), remedy="hung")
    if not listing.ok:
        raise HostBroken(listing.why_not())
    banner = run(["nvidia-smi"], timeout_s=timeout_s)
    driver, cuda = parse_nvidia_smi_banner(banner.stdout) if banner.ok else (None, None)
    return Inventory("nvidia-smi -L", parse_nvidia_smi_list(listing.stdout), driver, cuda)


def _load_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        raise HostUnavailable(f"nvidia-ml-py not installed ({exc})") from None
    return pynvml


def host_inventory(nvml: Any = None, run: Runner = run_command, timeout_s: float = 20.0) -> Inventory:
    """NVML first, ``nvidia-smi`` when NVML has no library; both absent → HostUnavailable with both reasons."""
    try:
        return nvml_inventory(nvml if nvml is not None else _load_pynvml())
    except HostUnavailable as nvml_reason:
        try:
            return smi_inventory(run, timeout_s)
        except HostUnavailable as smi_reason:
            raise HostUnavailable(f"no NVIDIA driver on this machine: {nvml_reason}; {smi_reason}") from None


# ---------------------------------------------------------------- the checks


def gpus_check(inventory: Inventory) -> Check:
    if inventory.count == 0:
        return failed(HOST, GPUS, f"{inventory.source} answered but lists no GPU", "driver")
    return passed(HOST, GPUS, f"{inventory.count} GPUs via {inventory.source}: {inventory.models()}")


def versions_check(inventory: Inventory) -> Check:
    if not inventory.driver:
        return failed(HOST, VERSIONS, f"{inventory.source} gave no driver version", "driver")
    return passed(HOST, VERSIONS, f"driver {inventory.driver}, CUDA {inventory.cuda or 'unknown'} "
                                  f"(the source's setup: driver 560, CUDA 12.8)")


def host_checks(nvml: Any = None, run: Runner = run_command,
                timeout_s: float = 20.0) -> tuple[list[Check], Inventory | None]:
    """The host layer's checks, and the inventory the upper layers compare against (None if none)."""
    try:
        inventory = host_inventory(nvml, run, timeout_s)
    except HostUnavailable as exc:
        return [skipped(HOST, GPUS, str(exc)), skipped(HOST, VERSIONS, "no driver to ask")], None
    except HostBroken as exc:
        return [failed(HOST, GPUS, str(exc), exc.remedy), skipped(HOST, VERSIONS, "the driver did not answer")], None
    return [gpus_check(inventory), versions_check(inventory)], inventory

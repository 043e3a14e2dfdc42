"""Container-runtime layer: rootless Docker with the nvidia runtime, a CDI spec, subuids, symlinks.

The source found that the nvidia runtime only takes effect when the rootless daemon reads the
daemon config that names it (a rootless dockerd reads ``~/.config/docker/daemon.json`` or an
explicit ``--config-file``, never ``/etc/docker/daemon.json``), that a CDI spec must be generated
on the host, that ``no-cgroups = true`` breaks GPU pods later, and that the ``/dev/char`` symlinks
must exist in advance. The parsers here are pure (text in → data out); the same ones read what
``docker exec`` returns from inside the Usernetes node (:mod:`.node`).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import tomllib
from pathlib import Path
from typing import Any, Iterable

import yaml

from .checks import RUNTIME, Check, Runner, failed, passed, run_command, skipped

DOCKER_INFO = ["docker", "info", "--format", "{{json .}}"]
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
TOOLKIT_CONFIG = "/etc/nvidia-container-runtime/config.toml"
SUBUID_MIN = 65536  # rootless Docker's documented minimum range


# ---------------------------------------------------------------- docker info


def parse_docker_info(text: str) -> dict[str, Any]:
    """``docker info --format '{{json .}}'`` → the fields the GPU path depends on.

    A CLI without a daemon still prints JSON, with an empty ``ServerVersion``: ``reachable`` says which.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"docker info output is not JSON ({exc})") from None
    security = list(raw.get("SecurityOptions") or [])
    return {
        "reachable": bool(raw.get("ServerVersion")),
        "server_version": raw.get("ServerVersion") or "",
        "runtimes": {name: (spec or {}).get("path", "") for name, spec in (raw.get("Runtimes") or {}).items()},
        "default_runtime": raw.get("DefaultRuntime") or "",
        "security_options": security,
        "rootless": any(opt == "name=rootless" for opt in security),
        "root_dir": raw.get("DockerRootDir") or "",
        "cdi_spec_dirs": list(raw.get("CDISpecDirs") or []),
        "cgroup_driver": raw.get("CgroupDriver") or "",
        "cgroup_version": raw.get("CgroupVersion") or "",
    }


def docker_info(run: Runner = run_command, timeout_s: float = 20.0) -> tuple[dict | None, str]:
    """The parsed ``docker info`` of a reachable daemon, else None and why not."""
    result = run(DOCKER_INFO, timeout_s=timeout_s)
    if result.missing or result.timed_out:
        return None, result.why_not()
    try:
        info = parse_docker_info(result.stdout)
    except ValueError as exc:
        return None, f"{result.why_not() if not result.ok else ''} {exc}".strip()
    if not info["reachable"]:
        return None, f"no Docker daemon answered: {result.why_not()}"
    return info, ""


def runtime_check(info: dict) -> Check:
    name = "nvidia runtime registered in Docker"
    runtimes = ", ".join(f"{k} ({v})" if v and v != k else k for k, v in sorted(info["runtimes"].items()))
    evidence = f"runtimes: {runtimes or 'none'}; default {info['default_runtime'] or '?'}"
    if "nvidia" in info["runtimes"]:
        return passed(RUNTIME, name, evidence)
    return failed(RUNTIME, name, evidence, "nvidia_runtime")


def rootless_check(info: dict) -> Check:
    name = "Docker runs rootless"
    evidence = f"SecurityOptions: {', '.join(info['security_options']) or 'none'}; root dir {info['root_dir'] or '?'}"
    if info["rootless"]:
        return passed(RUNTIME, name, evidence)
    return failed(RUNTIME, name, "no name=rootless: the daemon runs as root. " + evidence, "rootless")


# ---------------------------------------------------------------- which daemon.json the daemon reads


def config_file_flag(argv: Iterable[str]) -> str | None:
    """The ``--config-file`` a dockerd was started with, if any."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config-file="):
            return arg.split("=", 1)[1]
        if arg == "--config-file" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def daemon_config_path(argv: Iterable[str] | None, rootless: bool, home: str,
                       xdg_config_home: str | None = None) -> tuple[str, str]:
    """The daemon.json this dockerd reads and how that is known (explicit flag or the default)."""
    flag = config_file_flag(argv or [])
    if flag:
        return flag, "explicit --config-file"
    if rootless:
        base = xdg_config_home or os.path.join(home, ".config")
        return os.path.join(base, "docker", "daemon.json"), "default for a rootless dockerd (no --config-file)"
    return "/etc/docker/daemon.json", "default for a rootful dockerd (no --config-file)"


def parse_daemon_config(text: str) -> dict[str, Any]:
    """daemon.json → the runtimes it names, the default runtime, and whether CDI is enabled."""
    try:
        raw = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"daemon.json is not valid JSON ({exc})") from None
    return {"runtimes": sorted((raw.get("runtimes") or {})), "default_runtime": raw.get("default-runtime", ""),
            "cdi": (raw.get("features") or {}).get("cdi")}


def find_dockerd_argv(uid: int | None = None, proc: Path = Path("/proc")) -> list[str] | None:
    """The command line of a ``dockerd`` run by ``uid`` (read from /proc), if one is visible."""
    uid = os.getuid() if uid is None else uid
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            owner = entry.stat().st_uid
        except OSError:
            continue
        if owner == uid and argv and os.path.basename(argv[0].decode(errors="replace")) == "dockerd":
            return [a.decode(errors="replace") for a in argv if a]
    return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def daemon_config_check(info: dict, argv: list[str] | None, home: str, xdg_config_home: str | None = None,
                        read=_read) -> Check:
    """Does the file this daemon actually reads name the nvidia runtime?"""
    name = "the daemon config dockerd reads names nvidia"
    path, how = daemon_config_path(argv, info["rootless"], home, xdg_config_home)
    seen = "dockerd seen in /proc" if argv else "dockerd not visible in /proc; assuming its default"
    text = read(path)
    if text is None:
        other = _other_config_note(path, read)
        return failed(RUNTIME, name, f"{path} ({how}; {seen}) does not exist{other}", "daemon_config")
    try:
        config = parse_daemon_config(text)
    except ValueError as exc:
        return failed(RUNTIME, name, f"{path}: {exc}", "daemon_config")
    evidence = f"{path} ({how}; {seen}) names runtimes: {', '.join(config['runtimes']) or 'none'}"
    if "nvidia" in config["runtimes"]:
        return passed(RUNTIME, name, evidence)
    return failed(RUNTIME, name, evidence + _other_config_note(path, read), "daemon_config")


def _other_config_note(path: str, read) -> str:
    """Point at the usual mistake: nvidia configured in the file the daemon does not read."""
    other = "/etc/docker/daemon.json"
    if path == other:
        return ""
    text = read(other)
    try:
        names = parse_daemon_config(text)["runtimes"] if text else []
    except ValueError:
        names = []
    return f"; {other} names nvidia, but this daemon does not read it" if "nvidia" in names else ""


# ---------------------------------------------------------------- CDI specs


def parse_cdi_spec(text: str) -> dict[str, Any]:
    """A CDI spec (YAML or JSON) → kind, version and device names ("all" kept apart)."""
    try:
        raw = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"CDI spec is not valid YAML ({exc})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"CDI spec is a {type(raw).__name__}, not a mapping")
    names = [str(d.get("name")) for d in raw.get("devices") or [] if isinstance(d, dict)]
    return {"kind": raw.get("kind", ""), "cdi_version": str(raw.get("cdiVersion", "")),
            "devices": [n for n in names if n != "all"], "has_all": "all" in names,
            "indices": sorted(int(n) for n in names if n.isdigit())}


def read_cdi_specs(dirs: Iterable[str] = CDI_DIRS) -> dict[str, str]:
    """Every spec file in the CDI directories, path → text."""
    specs = {}
    for folder in dirs:
        path = Path(folder)
        for spec in sorted(path.glob("*")) if path.is_dir() else []:
            if spec.suffix in (".yaml", ".yml", ".json") and spec.is_file():
                specs[str(spec)] = spec.read_text(errors="replace")
    return specs


def cdi_check(specs: dict[str, str], expected_gpus: int | None, layer: str, where: str, remedy: str) -> Check:
    """A CDI spec of kind nvidia.com/gpu exists and lists a device per GPU (when the count is known)."""
    name = f"CDI spec for nvidia.com/gpu {where}"
    if not specs:
        return failed(layer, name, f"no CDI spec in {', '.join(CDI_DIRS)} {where}", remedy)
    found = []
    for path, text in specs.items():
        try:
            spec = parse_cdi_spec(text)
        except ValueError as exc:
            found.append(f"{path}: {exc}")
            continue
        if spec["kind"] != "nvidia.com/gpu":
            found.append(f"{path}: kind {spec['kind'] or '?'}")
            continue
        detail = f"{path}: kind nvidia.com/gpu, cdiVersion {spec['cdi_version']}, {len(spec['indices'])} GPU indices"
        if not spec["devices"]:
            return failed(layer, name, f"{path} lists no device", remedy)
        if expected_gpus is not None and len(spec["indices"]) != expected_gpus:
            return failed(layer, name, f"{detail}, but the driver reports {expected_gpus} GPUs (stale spec?)", remedy)
        return passed(layer, name, f"{detail} ({', '.join(spec['devices'][:4])}…)")
    return failed(layer, name, "no spec of kind nvidia.com/gpu: " + "; ".join(found), remedy)


# ---------------------------------------------------------------- subuid, toolkit config, /dev/char


def parse_subuid(text: str) -> list[tuple[str, int, int]]:
    """/etc/subuid → (user or uid, first id, count) per valid line."""
    ranges = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges.append((parts[0], int(parts[1]), int(parts[2])))
    return ranges


def subuid_check(text: str | None, user: str, uid: int) -> Check:
    name = "user has a subuid range"
    if uid == 0:
        return skipped(RUNTIME, name, "running as root: rootless Docker runs as an unprivileged user; "
                                      "run this check as that user")
    if text is None:
        return failed(RUNTIME, name, "/etc/subuid does not exist", "subuid")
    mine = [r for r in parse_subuid(text) if r[0] in (user, str(uid))]
    total = sum(count for _, _, count in mine)
    evidence = f"/etc/subuid: {len(mine)} range(s) for {user}, {total} ids"
    if total >= SUBUID_MIN:
        return passed(RUNTIME, name, evidence)
    return failed(RUNTIME, name, evidence + f" (rootless Docker needs at least {SUBUID_MIN})", "subuid")


def parse_toolkit_config(text: str) -> dict[str, Any]:
    """nvidia-container-runtime's config.toml → ``no-cgroups`` (None when unset) and the runtime mode."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config.toml is not valid TOML ({exc})") from None
    return {"no_cgroups": (raw.get("nvidia-container-cli") or {}).get("no-cgroups"),
            "mode": (raw.get("nvidia-container-runtime") or {}).get("mode", "")}


def no_cgroups_check(text: str | None, layer: str, where: str) -> Check:
    name = f"no-cgroups not set {where}"
    if text is None:
        return skipped(layer, name, f"no {TOOLKIT_CONFIG} {where} (NVIDIA Container Toolkit not installed)")
    try:
        config = parse_toolkit_config(text)
    except ValueError as exc:
        return failed(layer, name, f"{TOOLKIT_CONFIG}: {exc}", "no_cgroups")
    evidence = f"{TOOLKIT_CONFIG}: no-cgroups = {str(config['no_cgroups']).lower()}, mode {config['mode'] or 'auto'}"
    if config["no_cgroups"] is True:
        return failed(layer, name, evidence, "no_cgroups")
    return passed(layer, name, evidence)


_LS_LINK = re.compile(r"\s(\d+:\d+) -> (\S+)\s*$")


def parse_dev_char_listing(text: str) -> dict[str, str]:
    """``ls -l /dev/char`` → {"195:0": "../nvidia0", ...} (symlinks only)."""
    links = {}
    for line in text.splitlines():
        match = _LS_LINK.search(line)
        if line.startswith("l") and match:
            links[match.group(1)] = match.group(2)
    return links


def nvidia_device_nodes(names: Iterable[str]) -> list[str]:
    """The NVIDIA device nodes that need a /dev/char link: nvidiaN and nvidiactl."""
    return sorted(n for n in names if re.fullmatch(r"nvidia\d+|nvidiactl", n))


def dev_char_check(links: dict[str, str], device_nodes: list[str], layer: str, where: str) -> Check:
    name = f"/dev/char symlinks to the NVIDIA devices {where}"
    if not device_nodes:
        return skipped(layer, name, f"no /dev/nvidia* device nodes {where}")
    targets = {os.path.basename(t) for t in links.values()}
    missing = [d for d in device_nodes if d not in targets]
    evidence = f"{len(device_nodes)} device nodes ({', '.join(device_nodes[:6])}), " \
               f"{sum('nvidia' in t for t in targets)} nvidia links in /dev/char"
    if missing:
        return failed(layer, name, f"{evidence}; no link to {', '.join(missing)}", "dev_char")
    return passed(layer, name, evidence)


def host_dev_char(dev: Path = Path("/dev")) -> tuple[dict[str, str], list[str]]:
    """This machine's /dev/char links and NVIDIA device nodes."""
    links = {}
    char = dev / "char"
    for entry in char.iterdir() if char.is_dir() else []:
        if entry.is_symlink():
            links[entry.name] = os.readlink(entry)
    names = [p.name for p in dev.glob("nvidia*")]
    return links, nvidia_device_nodes(names)


# ---------------------------------------------------------------- the layer


def _user() -> tuple[str, int, str]:
    uid = os.getuid()
    try:
        name, home = pwd.getpwuid(uid).pw_name, pwd.getpwuid(uid).pw_dir
    except KeyError:
        name, home = str(uid), os.path.expanduser("~")
    return name, uid, home


def runtime_checks(expected_gpus: int | None, run: Runner = run_command, timeout_s: float = 20.0) -> list[Check]:
    """The container-runtime layer on this machine (``expected_gpus``: the host's count, if known)."""
    user, uid, home = _user()
    info, why = docker_info(run, timeout_s)
    if info is None:
        docker = [skipped(RUNTIME, n, why) for n in ("nvidia runtime registered in Docker", "Docker runs rootless",
                                                     "the daemon config dockerd reads names nvidia")]
    else:
        docker = [runtime_check(info), rootless_check(info),
                  daemon_config_check(info, find_dockerd_argv(uid), home, os.environ.get("XDG_CONFIG_HOME"))]
    dirs = tuple(info["cdi_spec_dirs"]) if info and info["cdi_spec_dirs"] else CDI_DIRS
    specs = read_cdi_specs(dirs)
    links, nodes = host_dev_char()
    cdi = cdi_check(specs, expected_gpus, RUNTIME, "on the host", "cdi_host")
    if not specs and expected_gpus is None and not nodes:
        cdi = skipped(RUNTIME, cdi.name, "no CDI spec and no NVIDIA driver or device on this machine")
    return docker + [cdi, no_cgroups_check(_read(TOOLKIT_CONFIG), RUNTIME, "on the host"),
                     dev_char_check(links, nodes, RUNTIME, "on the host"),
                     subuid_check(_read("/etc/subuid"), user, uid)]

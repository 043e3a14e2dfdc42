"""Usernetes-node layer: the same GPU plumbing again, inside the node container.

The Usernetes node is itself a container (of rootless Docker) running containerd and the kubelet,
so the source had to repeat the host's steps in it: generate the CDI spec again inside the node,
configure the node's containerd for CDI, and have the /dev/char symlinks there. Everything is read
with ``docker exec <node> …`` (with a timeout) and parsed by the same pure functions as the host's.
"""

from __future__ import annotations

import tomllib
from typing import Any

from .checks import NODE, Check, Runner, failed, passed, run_command, skipped
from .runtime import (CDI_DIRS, TOOLKIT_CONFIG, cdi_check, dev_char_check, no_cgroups_check,
                      nvidia_device_nodes, parse_dev_char_listing)

CDI, CONTAINERD = "CDI spec for nvidia.com/gpu inside the node", "containerd in the node has CDI enabled"
DEV_CHAR, NO_CGROUPS = "/dev/char symlinks to the NVIDIA devices inside the node", "no-cgroups not set inside the node"
NAMES = (CDI, CONTAINERD, DEV_CHAR, NO_CGROUPS)
MARK = "### pullstudy-file "
#: Prints every CDI spec in the node, each after a marker line naming it.
CAT_SPECS = "for f in " + " ".join(f"{d}/*.yaml {d}/*.yml {d}/*.json" for d in CDI_DIRS) + \
            f'; do [ -f "$f" ] && echo "{MARK}$f" && cat "$f"; done; true'


def split_marked_files(text: str) -> dict[str, str]:
    """The output of :data:`CAT_SPECS` → path → file text."""
    files: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = line[len(MARK):].strip()
            files[current] = []
        elif current is not None:
            files[current].append(line)
    return {path: "\n".join(lines) + "\n" for path, lines in files.items()}


def _find_tables(tree: Any, path: tuple[str, ...] = ()):
    """Every (path, table) in a TOML tree, depth first."""
    if isinstance(tree, dict):
        yield path, tree
        for key, value in tree.items():
            yield from _find_tables(value, path + (key,))


def parse_containerd_config(text: str) -> dict[str, Any]:
    """containerd's config (``containerd config dump`` or config.toml) → the CDI and runtime settings.

    containerd 1.7 (config version 2) keeps ``enable_cdi`` under the CRI plugin, off by default;
    containerd 2.x (version 3) under ``io.containerd.cri.v1.runtime``, on by default.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"containerd config is not valid TOML ({exc})") from None
    found: dict[str, Any] = {"version": raw.get("version", 1), "enable_cdi": None, "cdi_spec_dirs": [],
                             "runtimes": [], "default_runtime": ""}
    for path, table in _find_tables(raw.get("plugins", {})):
        if "enable_cdi" in table:
            found["enable_cdi"] = bool(table["enable_cdi"])
        if "cdi_spec_dirs" in table:
            found["cdi_spec_dirs"] = list(table["cdi_spec_dirs"])
        if path and path[-1] == "runtimes":
            found["runtimes"] += [k for k, v in table.items() if isinstance(v, dict)]
        if table.get("default_runtime_name"):
            found["default_runtime"] = table["default_runtime_name"]
    found["cdi_default"] = found["enable_cdi"] is None
    if found["enable_cdi"] is None:
        found["enable_cdi"] = int(found["version"]) >= 3
    return found


def containerd_check(text: str | None, source: str) -> Check:
    if text is None:
        return failed(NODE, CONTAINERD, "no containerd config could be read in the node", "containerd_cdi")
    try:
        config = parse_containerd_config(text)
    except ValueError as exc:
        return failed(NODE, CONTAINERD, f"{source}: {exc}", "containerd_cdi")
    how = "default of config version 3" if config["cdi_default"] else "set explicitly"
    evidence = (f"{source}: config version {config['version']}, enable_cdi = {str(config['enable_cdi']).lower()} "
                f"({how}), cdi_spec_dirs {config['cdi_spec_dirs'] or 'default'}, runtimes "
                f"{', '.join(config['runtimes']) or 'none'}")
    if not config["enable_cdi"]:
        return failed(NODE, CONTAINERD, evidence, "containerd_cdi")
    dirs = config["cdi_spec_dirs"]
    if dirs and not set(dirs) & set(CDI_DIRS):
        return failed(NODE, CONTAINERD, evidence + f"; none of {', '.join(CDI_DIRS)} is searched", "containerd_cdi")
    return passed(NODE, CONTAINERD, evidence)


def _exec(run: Runner, node: str, command: list[str], timeout_s: float):
    return run(["docker", "exec", node, *command], timeout_s=timeout_s)


def _containerd_text(run: Runner, node: str, timeout_s: float) -> tuple[str | None, str]:
    dump = _exec(run, node, ["containerd", "config", "dump"], timeout_s)
    if dump.ok:
        return dump.stdout, "containerd config dump"
    cat = _exec(run, node, ["cat", "/etc/containerd/config.toml"], timeout_s)
    return (cat.stdout, "/etc/containerd/config.toml") if cat.ok else (None, cat.why_not())


def node_checks(node: str | None, expected_gpus: int | None, run: Runner = run_command,
                timeout_s: float = 20.0) -> list[Check]:
    """The node layer for the Usernetes node container ``node`` (None: skipped, with the reason)."""
    if not node:
        return [skipped(NODE, n, "no Usernetes node container named (parameter node_container)") for n in NAMES]
    probe = _exec(run, node, ["true"], timeout_s)
    if not probe.ok:
        return [skipped(NODE, n, f"node container {node!r} not reachable: {probe.why_not()}") for n in NAMES]
    specs = _exec(run, node, ["sh", "-c", CAT_SPECS], timeout_s)
    cdi = cdi_check(split_marked_files(specs.stdout) if specs.ok else {}, expected_gpus, NODE,
                    "inside the node", "cdi_node")
    containerd_text, source = _containerd_text(run, node, timeout_s)
    listing = _exec(run, node, ["ls", "-l", "/dev/char"], timeout_s)
    devices = _exec(run, node, ["ls", "/dev"], timeout_s)
    dev_char = dev_char_check(parse_dev_char_listing(listing.stdout) if listing.ok else {},
                              nvidia_device_nodes(devices.stdout.split()) if devices.ok else [],
                              NODE, "inside the node")
    toolkit = _exec(run, node, ["cat", TOOLKIT_CONFIG], timeout_s)
    return [cdi, containerd_check(containerd_text, source), dev_char,
            no_cgroups_check(toolkit.stdout if toolkit.ok else None, NODE, "inside the node")]

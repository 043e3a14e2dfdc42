"""A CNCF distribution registry (Debian ``docker-registry``) on 127.0.0.1, with its own storage.

A process of :mod:`pullstudy.sources.local.lifecycle` (stopped on exit, error or signal); not the
OCI *client* (:mod:`pullstudy.images.oci`), which talks to any registry.
"""
from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from pullstudy.sources.local.lifecycle import (PortInUse, Process, Resource, ServiceError, binary_version,
                                               check_port_free, free_port, http_session, require_binary,
                                               require_root)
from pullstudy.sources.local.link import RateLimitedLink


_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+|-)')


@dataclass
class Traffic:
    """What a registry sent, from its access log (combined log format: one line per answered request)."""

    requests: int = 0
    bytes: int = 0          # response bodies, every request
    blob_bytes: int = 0     # response bodies of GET .../blobs/... (layers and configs, whole or ranges)
    blob_requests: int = 0
    range_requests: int = 0  # 206 answers: a lazy pull's partial reads

    @classmethod
    def parse(cls, text: str) -> "Traffic":
        t = cls()
        for m in _ACCESS.finditer(text):
            n = 0 if m["bytes"] == "-" else int(m["bytes"])
            t.requests += 1
            t.bytes += n
            if m["method"] == "GET" and "/blobs/" in m["path"]:
                t.blob_bytes += n
                t.blob_requests += 1
                t.range_requests += m["status"] == "206"
        return t


class Registry(Resource):
    """The CNCF distribution registry (Debian ``docker-registry``) with a generated config.

    Filesystem storage in a temporary directory (or ``storage_dir``, e.g. another registry's, to serve
    the same images at a second address), plain http, no auth, deletes enabled. ``netns``: a
    :class:`RateLimitedLink` (or a namespace name, then ``bind`` must be its address) to run inside
    that network namespace, bound to the namespace's veth address.
    """

    def __init__(self, bind: str = "127.0.0.1", port: int | None = None, netns=None,
                 storage_dir: str | Path | None = None, readonly: bool = False, start_timeout: float = 15.0):
        self.netns_name = getattr(netns, "netns", netns)
        if isinstance(netns, RateLimitedLink):
            bind = netns.ns_address
        elif netns and bind.startswith("127."):
            raise ValueError(f"a registry in namespace {netns} must bind the namespace's veth address, not {bind}")
        self.bind, self.port, self.readonly, self.start_timeout = bind, port, readonly, start_timeout
        self._storage_arg = Path(storage_dir) if storage_dir else None
        self.process: Process | None = None
        self.tmp: Path | None = None

    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _open(self) -> None:
        binary = require_binary("docker-registry")
        prefix: list[str] = []
        if self.netns_name:
            require_root("a registry in a network namespace")
            prefix = [require_binary("ip"), "netns", "exec", self.netns_name]
        self.version = binary_version([binary, "--version"])
        self.tmp = Path(tempfile.mkdtemp(prefix="pullstudy-registry-"))
        self.storage_dir = self._storage_arg or self.tmp / "storage"
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        fixed = self.port is not None
        if fixed and not self.netns_name:
            check_port_free(self.bind, self.port)
        for _attempt in range(3):  # a free port can be taken between choosing and binding it
            if not fixed:
                self.port = free_port("127.0.0.1" if self.netns_name else self.bind)
            config = self.tmp / "config.yml"
            config.write_text(yaml.safe_dump(self._config()))
            self.process = Process(prefix + [binary, "serve", str(config)], self.tmp / "registry.log")
            if self._wait_ready():
                return
            self.process.stop()
            text = self.process.log_tail()
            if "address already in use" in text:
                if fixed:
                    raise PortInUse(f"port {self.port} on {self.bind} is already in use by another process: "
                                    "choose another port, or port=None for a free one")
                continue
            raise ServiceError(f"docker-registry did not answer on {self.url}/v2/ within {self.start_timeout} s; "
                               f"its log:\n{text}")
        raise ServiceError(f"docker-registry could not bind a free port on {self.bind} in 3 attempts")

    def _config(self) -> dict:
        # the access log (one line per request, with the bytes sent) is how pulls count what they fetched
        return {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": False}},
                "storage": {"filesystem": {"rootdirectory": str(self.storage_dir)}, "delete": {"enabled": True},
                            "maintenance": {"uploadpurging": {"enabled": False},
                                            "readonly": {"enabled": self.readonly}}},
                "http": {"addr": self.host, "secret": secrets.token_hex(16)}}

    def _wait_ready(self) -> bool:
        session, deadline = http_session(), time.monotonic() + self.start_timeout
        try:
            while time.monotonic() < deadline and self.process.alive():
                try:
                    if session.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                        return True
                except requests.RequestException:
                    time.sleep(0.05)
            return False
        finally:
            session.close()

    def traffic_mark(self) -> int:
        """Where the access log ends now: pass it to :meth:`traffic_since`."""
        return self.process.log_path.stat().st_size if self.process and self.process.log_path.exists() else 0

    def traffic_since(self, mark: int, settle_s: float = 0.3) -> "Traffic":
        """The requests the registry answered since ``mark`` and the body bytes it sent.

        A request is logged when its answer is complete, so the log is read until it has stopped
        growing for ``settle_s``.
        """
        path, size, stable_since = self.process.log_path, -1, time.monotonic()
        while True:
            now = path.stat().st_size
            if now != size:
                size, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= settle_s:
                break
            time.sleep(0.05)
        with open(path, "rb") as f:
            f.seek(mark)
            return Traffic.parse(f.read().decode(errors="replace"))

    def _close(self) -> None:
        if self.process:
            self.process.stop()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Registry({self.host}, netns={self.netns_name})"

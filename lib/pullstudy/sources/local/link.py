"""A rate-limited link: the registry behind a veth pair in its own network namespace, shaped by tc.

What the kernel cannot provide (no netem, no namespaces) raises ``ConditionUnavailable``: the
condition is reported unavailable, never simulated.
"""
from __future__ import annotations

import ipaddress
import itertools
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pullstudy.sources.local.lifecycle import (ConditionUnavailable, Process, Resource, ServiceError, _run,
                                               _wait_http, http_session, require_binary, require_root)


# --- the rate-limited link -------------------------------------------------------------------------

_link_counter = itertools.count()
NETEM_UNAVAILABLE = "netem unavailable on this kernel"
_IPV4 = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?)\b")

# A tiny HTTP server run inside the namespace: GET /bytes/N sends N bytes, POST reads the body.
_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/bytes/") else 0
        self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
        chunk = bytes(65536)
        while n > 0:
            self.wfile.write(chunk[:min(n, 65536)]); n -= 65536
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        while n > 0:
            got = self.rfile.read(min(n, 65536))
            if not got: break
            n -= len(got)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


class RateLimitedLink(Resource):
    """A network namespace behind a veth pair shaped by tbf in both directions.

    The pair's /30 (10.200.X.0/30, host .1, namespace .2) exists only on this machine: nothing is
    routed beyond the two ends, so it behaves like a slower loopback. ``delay_ms`` (one-way, each
    direction) needs the kernel's netem; without it the link raises ConditionUnavailable
    ("netem unavailable on this kernel"): a delay is never simulated.
    """

    def __init__(self, rate_mbit: float, delay_ms: float | None = None, burst_bytes: int | None = None,
                 latency_ms: float = 50.0):
        self.rate_mbit, self.delay_ms, self.latency_ms = float(rate_mbit), delay_ms, latency_ms
        rate_bytes = self.rate_mbit * 1e6 / 8
        self.burst_bytes = burst_bytes or max(32 * 1024, int(rate_bytes / 200))  # 5 ms of traffic
        n = next(_link_counter)
        self.netns = f"pullstudy-{os.getpid()}-{n}"
        self.host_dev, self.ns_dev = f"psh{os.getpid():x}x{n:x}", f"psn{os.getpid():x}x{n:x}"  # <= 15 chars
        self.host_address = self.ns_address = None
        self.measured_mbit: float | None = None
        self.measurements: list[dict] = []
        self.unavailable: dict[str, str] = {}
        self._created_ns = self._created_veth = False
        self._servers: list[Process] = []
        self.tmp: Path | None = None

    def _open(self) -> None:
        require_root("a network namespace with a rate-limited veth")
        self.ip, self.tc = require_binary("ip"), require_binary("tc")
        self.tmp = Path(tempfile.mkdtemp(prefix="pullstudy-link-"))
        _run([self.ip, "netns", "add", self.netns])
        self._created_ns = True
        _run([self.ip, "link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev, "netns", self.netns])
        self._created_veth = True
        net = self._choose_subnet()
        self.host_address, self.ns_address = f"{net}.{self._base + 1}", f"{net}.{self._base + 2}"
        _run([self.ip, "addr", "add", f"{self.host_address}/30", "dev", self.host_dev])
        _run([self.ip, "link", "set", self.host_dev, "up"])
        _run([self.ip, "-n", self.netns, "addr", "add", f"{self.ns_address}/30", "dev", self.ns_dev])
        _run([self.ip, "-n", self.netns, "link", "set", self.ns_dev, "up"])
        _run([self.ip, "-n", self.netns, "link", "set", "lo", "up"])
        for ns, dev in ((None, self.host_dev), (self.netns, self.ns_dev)):
            self._shape(ns, dev)

    def _choose_subnet(self) -> str:
        """A /30 in 10.200.0.0/16 that no address or route of this machine overlaps yet."""
        text = (_run([self.ip, "-o", "-4", "addr", "show"]).stdout + "\n"
                + _run([self.ip, "-4", "route", "show", "table", "all"]).stdout)
        used = [ipaddress.ip_network(m, strict=False) for m in _IPV4.findall(text)]
        start = (os.getpid() * 7 + int(self.netns.rsplit("-", 1)[-1])) % 16384
        for i in range(256):
            idx = (start + i) % 16384
            net = ipaddress.ip_network(f"10.200.{idx // 64}.{(idx % 64) * 4}/30")
            if not any(net.overlaps(u) for u in used if u.prefixlen > 0):  # a default route is no conflict
                self._base = (idx % 64) * 4
                return f"10.200.{idx // 64}"
        raise ServiceError("no free /30 in 10.200.0.0/16 for the link's veth pair")

    def _tc(self, ns: str | None, *args: str) -> subprocess.CompletedProcess:
        return _run([self.tc, *(["-n", ns] if ns else []), *args], check=False)

    def _shape(self, ns: str | None, dev: str) -> None:
        rate = f"{self.rate_mbit}mbit"
        proc = self._tc(ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", rate,
                        "burst", str(self.burst_bytes), "latency", f"{self.latency_ms}ms")
        if proc.returncode != 0:
            raise ConditionUnavailable(f"tc tbf on {dev} failed: {proc.stderr.strip()}")
        if self.delay_ms:
            proc = self._tc(ns, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "netem",
                            "delay", f"{self.delay_ms}ms")
            if proc.returncode != 0:
                reason = f"{NETEM_UNAVAILABLE} (tc: {proc.stderr.strip()})"
                self.unavailable["delay"] = reason
                raise ConditionUnavailable(reason)

    def ns_popen(self, argv: list[str], log_name: str) -> Process:
        """A process inside the namespace, stopped with the link."""
        proc = Process([self.ip, "netns", "exec", self.netns, *argv], self.tmp / log_name)
        self._servers.append(proc)
        return proc

    def measure(self, nbytes: int = 4 * 1024 * 1024, url: str | None = None, timeout: float = 60) -> float:
        """Mbit/s actually achieved towards the host: time a download of ``nbytes`` (or of ``url``).

        Without ``url``, a tiny HTTP server is started in the namespace for the duration. The upload
        direction (host -> namespace) is measured too and kept in ``measurements``.
        """
        session = http_session()
        server = None
        try:
            if url is None:
                port = 8000 + secrets.randbelow(1000)
                server = self.ns_popen([sys.executable, "-c", _SERVER, self.ns_address, str(port)], "measure.log")
                base = f"http://{self.ns_address}:{port}"
                _wait_http(session, f"{base}/bytes/0", server, timeout=10)
                url = f"{base}/bytes/{nbytes}"
                up = self._time_upload(session, base, nbytes, timeout)
                self.measurements.append({"direction": "host->namespace", "bytes": nbytes, **up})
            start = time.perf_counter()
            got = 0
            with session.get(url, stream=True, timeout=timeout) as response:
                response.raise_for_status()
                for chunk in response.iter_content(1 << 16):
                    got += len(chunk)
            seconds = time.perf_counter() - start
        finally:
            session.close()
            if server:
                server.stop()
                self._servers.remove(server)
        mbit = got * 8 / seconds / 1e6
        self.measurements.append({"direction": "namespace->host", "bytes": got, "seconds": seconds, "mbit": mbit})
        self.measured_mbit = mbit
        return mbit

    @staticmethod
    def _time_upload(session, base: str, nbytes: int, timeout: float) -> dict:
        body = bytes(nbytes)
        start = time.perf_counter()
        session.post(f"{base}/upload", data=body, timeout=timeout).raise_for_status()
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "mbit": nbytes * 8 / seconds / 1e6}

    def _close(self) -> None:
        for proc in self._servers:
            proc.stop()
        self._servers.clear()
        if self._created_ns:
            _run([self.ip, "netns", "del", self.netns], check=False)  # takes its veth end, and so the pair, along
        if self._created_veth and _run([self.ip, "link", "show", self.host_dev], check=False).returncode == 0:
            _run([self.ip, "link", "del", self.host_dev], check=False)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"RateLimitedLink({self.netns}, {self.rate_mbit} Mbit/s, {self.host_address}<->{self.ns_address})"

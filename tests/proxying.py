"""Forwarding for the tests' fault-injecting HTTP proxies (registry retries, crafter retries)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

_HOP_BY_HOP = ("connection", "transfer-encoding", "content-length", "date", "server")


def forward(handler: BaseHTTPRequestHandler, upstream: str, keep: tuple[str, ...], body: bytes | None = None,
            timeout: float = 10, record: Callable[[int], None] | None = None) -> int:
    """Send the handler's request on to ``upstream`` and its answer back; returns the upstream status.

    Only the request headers named in ``keep`` are passed on; the answer's hop-by-hop headers are not.
    ``record`` sees the status before the client does, so a test's log keeps the order of requests.
    """
    conn = http.client.HTTPConnection(upstream, timeout=timeout)
    headers = {k: v for k, v in handler.headers.items() if k.lower() in keep}
    conn.request(handler.command, handler.path, body=body, headers=headers)
    answer = conn.getresponse()
    data = answer.read()
    if record is not None:
        record(answer.status)
    handler.send_response(answer.status)
    for key, value in answer.getheaders():
        if key.lower() not in _HOP_BY_HOP:
            handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)
    conn.close()
    return answer.status


@contextmanager
def serving(server: HTTPServer) -> Iterator[HTTPServer]:
    """Serve in a background thread for the duration of a test; always shut down and close."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()

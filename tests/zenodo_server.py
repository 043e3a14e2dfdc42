"""A local HTTP server on 127.0.0.1 that answers like Zenodo's REST API, for the fetch and deposit tests.

Records (``GET /api/records/<id>``) have the shape of zenodo.org's: ``id``, ``doi``, ``metadata.doi``,
``links.self`` / ``links.html``, and ``files[]`` with ``key``, ``size``, ``checksum`` ("md5:…") and
``links.self`` (``/api/records/<id>/files/<key>/content``). Deposit: ``POST /api/deposit/depositions``
(a draft with ``links.bucket`` and ``metadata.prereserve_doi``), ``PUT <bucket>/<name>``,
``PUT /api/deposit/depositions/<id>``, ``POST …/actions/publish``; the token must come as
``Authorization: Bearer``. ``faults`` is a list of HTTP statuses to answer the next requests with (429, 503),
``truncate`` a set of file keys whose download stops half-way, ``wrong_md5`` keys the record misstates.
Everything runs in-process on a thread and stops with the context manager.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeZenodo:
    def __init__(self, token: str | None = None):
        self.token = token
        self.records: dict[str, dict] = {}  # id -> {"doi", "files": {key: bytes}}
        self.truncate: set[str] = set()
        self.wrong_md5: set[str] = set()
        self.faults: list[int] = []
        self.requests: list[tuple[str, str]] = []
        self.depositions: dict[int, dict] = {}
        self.buckets: dict[str, dict[str, bytes]] = {}
        self.published: list[int] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.api = f"{self.base}/api"

    def add_record(self, rec_id: str, files: dict[str, bytes], doi: str | None = None) -> str:
        doi = doi or f"10.5281/zenodo.{rec_id}"
        self.records[rec_id] = {"doi": doi, "files": files}
        return doi

    def record_json(self, rec_id: str) -> dict:
        rec = self.records[rec_id]
        files = []
        for key, content in rec["files"].items():
            md5 = hashlib.md5(content + (b"x" if key in self.wrong_md5 else b"")).hexdigest()
            files.append({"id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)), "key": key, "size": len(content),
                          "checksum": f"md5:{md5}",
                          "links": {"self": f"{self.api}/records/{rec_id}/files/{key}/content"}})
        return {"id": int(rec_id), "recid": rec_id, "doi": rec["doi"], "doi_url": f"https://doi.org/{rec['doi']}",
                "conceptdoi": None, "title": "pullstudy data", "files": files,
                "links": {"self": f"{self.api}/records/{rec_id}", "html": f"{self.base}/records/{rec_id}",
                          "files": f"{self.api}/records/{rec_id}/files"},
                "metadata": {"title": "pullstudy data", "doi": rec["doi"], "resource_type": {"type": "dataset"}}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, status: int, body: bytes | dict = b"", headers: dict | None = None):
                if isinstance(body, dict):
                    body = json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._send(401, {"status": 401, "message": "The server could not verify that you are authorized"})
                    return False
                return True

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _fault(self) -> bool:
                if fake.faults:
                    status = fake.faults.pop(0)
                    self._body()
                    self._send(status, {"status": status, "message": "slow down"}, {"Retry-After": "0"})
                    return True
                return False

            def do_GET(self):
                fake.requests.append(("GET", self.path))
                if self._fault():
                    return
                m = re.fullmatch(r"/api/records/(\d+)", self.path)
                if m:
                    if m.group(1) not in fake.records:
                        return self._send(404, {"status": 404, "message": "PID does not exist."})
                    return self._send(200, fake.record_json(m.group(1)))
                m = re.fullmatch(r"/api/records/(\d+)/files/(.+)/content", self.path)
                if m and m.group(1) in fake.records and m.group(2) in fake.records[m.group(1)]["files"]:
                    content = fake.records[m.group(1)]["files"][m.group(2)]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if m.group(2) in fake.truncate:
                        self.wfile.write(content[: len(content) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(content)
                    return
                self._send(404, {"status": 404, "message": "not found"})

            def do_POST(self):
                fake.requests.append(("POST", self.path))
                if self._fault() or not self._authorized():
                    return
                self._body()
                if self.path == "/api/deposit/depositions":
                    dep_id = 1000 + len(fake.depositions) + 1
                    bucket = str(uuid.uuid4())
                    fake.buckets[bucket] = {}
                    dep = {"id": dep_id, "state": "unsubmitted", "submitted": False,
                           "links": {"bucket": f"{fake.api}/files/{bucket}",
                                     "self": f"{fake.api}/deposit/depositions/{dep_id}",
                                     "publish": f"{fake.api}/deposit/depositions/{dep_id}/actions/publish",
                                     "html": f"{fake.base}/deposit/{dep_id}"},
                           "metadata": {"prereserve_doi": {"doi": f"10.5072/zenodo.{dep_id}", "recid": dep_id}}}
                    fake.depositions[dep_id] = dep
                    return self._send(201, dep)
                m = re.fullmatch(r"/api/deposit/depositions/(\d+)/actions/publish", self.path)
                if m and int(m.group(1)) in fake.depositions:
                    fake.published.append(int(m.group(1)))
                    dep = fake.depositions[int(m.group(1))] | {"state": "done", "submitted": True}
                    return self._send(202, dep)
                self._send(404, {"status": 404, "message": "not found"})

            def do_PUT(self):
                fake.requests.append(("PUT", self.path))
                if self._fault() or not self._authorized():
                    return
                body = self._body()
                m = re.fullmatch(r"/api/files/([0-9a-f-]+)/(.+)", self.path)
                if m and m.group(1) in fake.buckets:
                    fake.buckets[m.group(1)][m.group(2)] = body
                    return self._send(201, {"key": m.group(2), "size": len(body),
                                            "checksum": f"md5:{hashlib.md5(body).hexdigest()}"})
                m = re.fullmatch(r"/api/deposit/depositions/(\d+)", self.path)
                if m and int(m.group(1)) in fake.depositions:
                    dep = fake.depositions[int(m.group(1))]
                    meta = json.loads(body)["metadata"]
                    dep["metadata"] = meta | {"prereserve_doi": dep["metadata"]["prereserve_doi"]}
                    return self._send(200, dep)
                self._send(404, {"status": 404, "message": "not found"})

        return Handler

    def __enter__(self):
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

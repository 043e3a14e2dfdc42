"""A small Kubernetes API server on 127.0.0.1 that replays an archived run, for the kube backend's tests.

No API server can be installed on the test machines, so the backend's *real* client (the official
``kubernetes`` package) talks to this one instead. It speaks only the paths the backend uses: the node
list, the version, Events and Pods of a namespace (list, and watch as chunked JSON lines with
``resourceVersion``, ``allowWatchBookmarks`` and ``timeoutSeconds``), Jobs (create, delete, delete by
label) and the collection deletes of clean-up. It requires the kubeconfig's bearer token.

What it replays is an archived run: its Node objects, and its exporter-format events turned back into
core/v1 Event objects (:func:`to_core_event`). Events of pods that are no study Job's are there from the
start; when the backend creates a Job for an image, the archived pods that pulled that image appear
(labelled as the Job's) with all their events. Faults, each on purpose and counted in ``self.faults``:

* the first event watch is cut mid-stream (no terminating chunk) after ``drop_after`` events;
* the second event watch answers ``410 Gone`` (an ERROR event), so the backend must list again;
* every watch sends a BOOKMARK; every 7th event is sent twice;
* one pod's ``Started`` event is held back until its Job is deleted (an event of a deleted pod).

For a grid pullstudy crafted and pushed itself, :meth:`FakeKube.stand_in` lets an archived image's pods
answer for a new reference: their events then name the new image, as a real kubelet's would.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

EVENT_FIELDS = ("metadata", "involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp",
                "count", "type", "eventTime", "reportingComponent", "reportingInstance", "action", "related", "series")
REF_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")


def to_core_event(exported: dict) -> dict:
    """An exporter-format event back as a core/v1 Event (the exporter adds the object's labels and annotations)."""
    ev = {k: exported[k] for k in EVENT_FIELDS if k in exported}
    ev["involvedObject"] = {k: v for k, v in (exported.get("involvedObject") or {}).items() if k in REF_FIELDS}
    ev["apiVersion"], ev["kind"] = "v1", "Event"
    return ev


def read_archived_events(path: Path) -> list[dict]:
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "involvedObject" in obj:
            out.append(to_core_event(obj))
    return out


class FakeKube:
    def __init__(self, nodes: list[dict], events: list[dict], token: str, *, namespace: str = "default",
                 drop_after: int = 40, faults: bool = True) -> None:
        self.nodes, self.token, self.namespace = nodes, token, namespace
        self.drop_after, self.with_faults = drop_after, faults
        self.lock = threading.Condition()
        self.rv = 1000
        self.log: dict[str, list[tuple[int, str, dict]]] = {"events": [], "pods": []}  # rv, type, object
        self.faults: dict[str, int] = {"dropped": 0, "gone": 0, "bookmarks": 0, "duplicates sent": 0,
                                       "event after pod deleted": 0}
        self.watches = {"events": 0, "pods": 0}
        self.jobs: dict[str, dict] = {}
        self.held: dict[str, dict] = {}  # job -> held-back event
        self.requests: list[str] = []
        self.stand_ins: dict[str, str] = {}  # new image -> archived image whose pods answer for it
        by_pod: dict[str, list[dict]] = {}
        for ev in events:
            by_pod.setdefault((ev["involvedObject"] or {}).get("uid", ""), []).append(ev)
        self.study_pods: dict[str, list[str]] = {}  # image -> pod uids that pulled it
        for uid, evs in by_pod.items():
            for ev in evs:
                if ev["reason"] == "Pulled" and ev["involvedObject"].get("kind") == "Pod" and "container-chonks" in ev.get("message", ""):
                    self.study_pods.setdefault(ev["message"].split('"')[1], []).append(uid)
        self.pod_events = by_pod
        study = {u for us in self.study_pods.values() for u in us}
        for ev in events:
            if ev["involvedObject"].get("uid") not in study:
                self._add("events", "ADDED", ev)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeKube":
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _add(self, kind: str, typ: str, obj: dict) -> None:
        with self.lock:
            self.rv += 1
            obj = json.loads(json.dumps(obj))
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            self.log[kind].append((self.rv, typ, obj))
            self.lock.notify_all()

    def _latest(self, kind: str) -> list[dict]:
        state: dict[str, dict | None] = {}
        for _, typ, obj in self.log[kind]:
            state[obj["metadata"]["uid"]] = None if typ == "DELETED" else obj
        return [o for o in state.values() if o is not None]

    def stand_in(self, image: str, archived: str) -> None:
        """Let the pods that pulled ``archived`` answer a Job for ``image`` (their events renamed)."""
        self.stand_ins[image] = archived
        for uid in self.study_pods.get(archived, []):
            for ev in self.pod_events[uid]:
                ev["message"] = ev.get("message", "").replace(f'"{archived}"', f'"{image}"')

    # ---- what a Job does: the archived pods that pulled its image appear, with their events
    def create_job(self, body: dict) -> dict:
        name = body["metadata"]["name"]
        image = body["spec"]["template"]["spec"]["containers"][0]["image"]
        uids = self.study_pods.pop(self.stand_ins.get(image, image), [])
        self.jobs[name] = {"body": body, "pods": []}
        labels = dict(body["spec"]["template"]["metadata"]["labels"], **{"job-name": name})
        for k, uid in enumerate(uids):
            evs = self.pod_events[uid]
            ref = evs[0]["involvedObject"]
            times = {e["reason"]: e.get("firstTimestamp") or e.get("eventTime") for e in evs}
            host = next((e.get("source", {}).get("host") for e in evs if e.get("source", {}).get("host")), None)
            created = times.get("Scheduled") or min(t for t in times.values() if t)
            conds = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": created}]
            if times.get("Started"):
                conds += [{"type": "Initialized", "status": "True", "lastTransitionTime": created},
                          {"type": "ContainersReady", "status": "True", "lastTransitionTime": times["Started"]}]
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": ref["name"], "namespace": ref.get("namespace"), "uid": uid,
                                "labels": labels, "creationTimestamp": created},
                   "spec": {"nodeName": host, "containers": body["spec"]["template"]["spec"]["containers"]},
                   "status": {"phase": "Succeeded", "conditions": conds}}
            self._add("pods", "ADDED", pod)
            self.jobs[name]["pods"].append(pod)
            for ev in evs:
                if self.with_faults and k == 0 and ev["reason"] == "Started" and not self.held:
                    self.held[name] = ev  # sent only after the pod is deleted
                    continue
                self._add("events", "ADDED", ev)
        out = json.loads(json.dumps(body))
        out["metadata"]["uid"] = f"job-{name}"
        return out

    def delete_job(self, name: str) -> None:
        job = self.jobs.pop(name, None)
        if not job:
            return
        for pod in job["pods"]:
            self._add("pods", "DELETED", pod)
        if name in self.held:
            self.faults["event after pod deleted"] += 1
            self._add("events", "ADDED", self.held.pop(name))

    # ---- HTTP
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, doc: dict) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _auth(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._send(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401,
                                     "reason": "Unauthorized", "message": "Unauthorized"})
                    return False
                return True

            def _route(self):
                u = urlparse(self.path)
                fake.requests.append(f"{self.command} {u.path}")
                return u.path.rstrip("/").split("/"), {k: v[-1] for k, v in parse_qs(u.query).items()}

            def do_GET(self):
                if not self._auth():
                    return
                parts, q = self._route()
                path = "/".join(parts)
                if path == "/version":
                    return self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-replay"})
                if path == "/api/v1/nodes":
                    return self._send(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                                            "items": fake.nodes})
                if len(parts) == 6 and parts[1:4] == ["api", "v1", "namespaces"] and parts[5] in ("events", "pods"):
                    kind = parts[5]
                    if q.get("watch") in ("true", "1"):
                        return self._watch(kind, int(q.get("resourceVersion") or 0), float(q.get("timeoutSeconds") or 30))
                    with fake.lock:
                        items, rv = fake._latest(kind), fake.rv
                    return self._send(200, {"kind": "EventList" if kind == "events" else "PodList", "apiVersion": "v1",
                                            "metadata": {"resourceVersion": str(rv)}, "items": items})
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                 "reason": "NotFound", "message": f"{path} not served by the replay server"})

            def _chunk(self, doc: dict) -> None:
                data = (json.dumps(doc) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, kind: str, since: int, timeout: float) -> None:
                with fake.lock:
                    fake.watches[kind] += 1
                    number = fake.watches[kind]
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                faults = fake.with_faults and kind == "events"
                if faults and number == 2:
                    fake.faults["gone"] += 1
                    self._chunk({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                             "code": 410, "reason": "Expired",
                                                             "message": f"too old resource version: {since}"}})
                    self.wfile.write(b"0\r\n\r\n")
                    return
                deadline, sent, bookmarked = time.monotonic() + timeout, 0, False
                while time.monotonic() < deadline:
                    with fake.lock:
                        new = [e for e in fake.log[kind] if e[0] > since]
                        if not new:
                            fake.lock.wait(0.1)
                    for rv, typ, obj in new:
                        self._chunk({"type": typ, "object": obj})
                        sent += 1
                        since = rv
                        if faults and sent % 7 == 0:
                            fake.faults["duplicates sent"] += 1
                            self._chunk({"type": typ, "object": obj})
                        if faults and number == 1 and sent >= fake.drop_after:
                            fake.faults["dropped"] += 1
                            self.close_connection = True
                            self.connection.shutdown(2)  # cut: no terminating chunk
                            return
                    if not bookmarked and new:
                        bookmarked = True
                        fake.faults["bookmarks"] += 1
                        self._chunk({"type": "BOOKMARK", "object": {"kind": "Event" if kind == "events" else "Pod",
                                                                    "apiVersion": "v1",
                                                                    "metadata": {"resourceVersion": str(since)}}})
                self.wfile.write(b"0\r\n\r\n")

            def _body(self) -> dict:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}") if n else {}

            def do_POST(self):
                if not self._auth():
                    return
                parts, _ = self._route()
                body = self._body()
                if parts[-1] == "jobs":
                    return self._send(201, fake.create_job(body))
                self._send(404, {"kind": "Status", "apiVersion": "v1", "code": 404, "status": "Failure"})

            def do_DELETE(self):
                if not self._auth():
                    return
                parts, q = self._route()
                self._body()
                if parts[-2] == "jobs":
                    fake.delete_job(parts[-1])
                self._send(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

        return Handler


def kubeconfig(path: Path, url: str, token: str) -> Path:
    """A kubeconfig for the replay server holding ``token`` (tests check it leaks nowhere)."""
    import yaml

    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "replay",
           "clusters": [{"name": "replay", "cluster": {"server": url}}],
           "users": [{"name": "replay", "user": {"token": token}}],
           "contexts": [{"name": "replay", "context": {"cluster": "replay", "user": "replay"}}]}
    path.write_text(yaml.safe_dump(doc))
    return path

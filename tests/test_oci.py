"""pullstudy.images.oci against a real CNCF distribution registry (Debian `docker-registry`) on 127.0.0.1.

The tests push their own images (blobs, configs, manifests, image indexes) through oras, fetch them
back through pullstudy.images.oci and compare. A second registry runs with `auth: token` behind a
small local token server, so the anonymous bearer-token flow is exercised for real. A small local
proxy injects 503/429 answers to exercise the retries. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import oras.container
import oras.provider
import pandas as pd
import pytest
import requests
import yaml

from proxying import forward, serving
from pullstudy.images import oci_manifests, oci
from pullstudy.images.oci import RetryPolicy

pytestmark = pytest.mark.registry  # needs docker-registry (conftest), unless marked otherwise

REGISTRY_BIN = "/usr/bin/docker-registry"
FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05, deadline_s=5.0, timeout_s=5.0)
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
TOKEN_SERVICE, TOKEN_ISSUER = "pullstudy-test-registry", "pullstudy-test-token-issuer"


# --- a real registry process -------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalRegistry:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Terminate, then kill: the process must never outlive the tests."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_registry(tmp: Path, auth: dict | None = None, binary: str = REGISTRY_BIN) -> LocalRegistry:
    """Our own registry process (not the Debian service) on a free loopback port; waits for /v2/."""
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} not found: the registry tests need the CNCF distribution registry, "
                    "install it with `apt-get install docker-registry`")
    tmp.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a free port can be taken between choosing and binding it
        port = _free_port()
        config = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
                  "storage": {"filesystem": {"rootdirectory": str(tmp / "storage")}},
                  "http": {"addr": f"127.0.0.1:{port}", "secret": "pullstudy-test-not-a-secret"}}
        if auth:
            config["auth"] = auth
        (tmp / "config.yml").write_text(yaml.safe_dump(config))
        log = tmp / "registry.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([binary, "serve", str(tmp / "config.yml")], stdout=out, stderr=subprocess.STDOUT)
        reg = LocalRegistry(proc, port, log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"http://{reg.host}/v2/", timeout=1).status_code in (200, 401):
                    return reg
            except requests.ConnectionError:
                time.sleep(0.05)
        reg.stop()
        if "address already in use" not in log.read_text():
            break
    pytest.fail(f"docker-registry did not answer on {reg.host}/v2/ within 10 s; its log:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.mark.system()  # no registry
def test_missing_binary_fails_with_the_install_command(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install docker-registry"):
        start_registry(tmp_path, binary=str(tmp_path / "no-such-docker-registry"))


# --- pushing test images through oras ----------------------------------------------------------

def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json_bytes(doc: dict) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode()


@dataclass
class Pushed:
    manifest: dict
    config: dict
    digest: str
    size: int  # of the manifest as stored, for index entries


@dataclass
class Pusher:
    """Pushes blobs with oras's upload_blob and manifests with upload_manifest (OCI manifests) or,
    for media types upload_manifest cannot send (indexes, Docker types), with a PUT through the same
    oras client (auth included)."""

    host: str
    tmp: Path
    clients: dict = field(default_factory=dict)

    def client(self, repo: str) -> oras.provider.Registry:
        # one oras client per repository: oras holds one bearer token, scoped to one repository
        return self.clients.setdefault(repo, oras.provider.Registry(hostname=self.host, insecure=True))

    def blob(self, repo: str, data: bytes, media_type: str) -> dict:
        path = self.tmp / _digest(data).replace(":", "-")
        path.write_bytes(data)
        desc = {"mediaType": media_type, "digest": _digest(data), "size": len(data)}
        response = self.client(repo).upload_blob(str(path), oras.container.Container(f"{self.host}/{repo}"), desc)
        assert response.status_code in (200, 201, 202), response.text
        return desc

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        url = f"http://{self.host}/v2/{repo}/manifests/{ref}"
        response = self.client(repo).do_request(url, "PUT", data=body, headers={"Content-Type": media_type})
        assert response.status_code == 201, response.text
        return _digest(body)

    def image(self, repo: str, tag: str | None, arch: str = "amd64", layers: tuple[bytes, ...] = (b"a", b"b"),
              docker: bool = False, config_bytes: bytes | None = None, variant: str | None = None) -> Pushed:
        config = {"architecture": arch, "os": "linux", "config": {"Env": ["PATH=/usr/bin"]},
                  "rootfs": {"type": "layers", "diff_ids": [_digest(x) for x in layers]},
                  "history": [{"created_by": f"/bin/sh -c #(nop) ADD layer {i} ({arch})"} for i in range(len(layers))]
                  + [{"created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": True}]}
        if variant:
            config["variant"] = variant
        config_type, layer_type = (DOCKER_CONFIG, DOCKER_LAYER) if docker else (OCI_CONFIG, OCI_LAYER)
        manifest = {"schemaVersion": 2,
                    "mediaType": oci.DOCKER_MANIFEST if docker else oci.OCI_MANIFEST,
                    "config": self.blob(repo, config_bytes or _json_bytes(config), config_type),
                    "layers": [self.blob(repo, x, layer_type) for x in layers]}
        if tag and not docker:  # oras's own manifest upload: OCI image manifests only
            container = oras.container.Container(f"{self.host}/{repo}:{tag}")
            response = self.client(repo).upload_manifest(manifest, container)
            assert response.status_code == 201, response.text
            return Pushed(manifest, config, response.headers["Docker-Content-Digest"], len(response.request.body))
        body = _json_bytes(manifest)
        digest = self.put_manifest(repo, tag or _digest(body), body, manifest["mediaType"])
        return Pushed(manifest, config, digest, len(body))

    def index(self, repo: str, tag: str, images: dict[str, Pushed], docker: bool = False) -> str:
        entries = []
        for platform, pushed in images.items():
            os_, arch, *variant = platform.split("/")
            entry = {"mediaType": pushed.manifest["mediaType"], "digest": pushed.digest, "size": pushed.size,
                     "platform": {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}}
            entries.append(entry)
        media_type = oci.DOCKER_LIST if docker else oci.OCI_INDEX
        return self.put_manifest(repo, tag, _json_bytes({"schemaVersion": 2, "mediaType": media_type,
                                                         "manifests": entries}), media_type)


def push_study_images(pusher: Pusher) -> dict[str, Pushed]:
    """The images every fetch test uses; layer b"b" is shared by alpha and beta, as in real sets."""
    pushed = {
        "alpha": pusher.image("study/alpha", "v1", layers=(b"layer-a" * 100, b"b")),
        "beta": pusher.image("study/beta", "v1", layers=(b"b", b"layer-c", b"layer-d"), docker=True),
    }
    amd, arm = (pusher.image("study/multi", None, arch, layers=(f"m-{arch}".encode(),)) for arch in ("amd64", "arm64"))
    pushed |= {"multi/amd64": amd, "multi/arm64": arm}
    pusher.index("study/multi", "v1", {"linux/amd64": amd, "linux/arm64": arm})
    damd = pusher.image("study/dlist", None, "amd64", layers=(b"d-amd64",), docker=True)
    darm = pusher.image("study/dlist", None, "arm64", layers=(b"d-arm64",), docker=True, variant="v8")
    pushed |= {"dlist/amd64": damd, "dlist/arm64": darm}
    pusher.index("study/dlist", "v1", {"linux/arm64/v8": darm, "linux/amd64": damd}, docker=True)
    pushed["bad"] = pusher.image("study/badconfig", "v1", config_bytes=b"this is {not json")
    return pushed


@pytest.fixture(scope="module")
def study(local_registry, tmp_path_factory):
    pusher = Pusher(local_registry.host, tmp_path_factory.mktemp("blobs"))
    return local_registry.host, push_study_images(pusher)


# --- fetching ---------------------------------------------------------------------------------

def _fetch(images, out, **kw):
    return oci.fetch(images, out, insecure=True, retry=FAST, progress=False, **kw)


def test_fetched_manifest_config_and_layers_equal_what_was_pushed(study, tmp_path):
    host, pushed = study
    result = _fetch([f"{host}/study/alpha:v1", f"{host}/study/beta:v1", f"{host}/study/multi:v1",
                     f"{host}/study/dlist:v1"], tmp_path)
    assert result.ok, result.failure_table()
    got = {image.uri.split("/", 2)[2]: image for image in result.images}
    for name, key in [("alpha", "alpha"), ("beta", "beta"), ("multi", "multi/amd64"), ("dlist", "dlist/amd64")]:
        image, want = got[name], pushed[key]
        assert image.manifest == want.manifest
        assert image.config == want.config
        assert image.layers == want.manifest["layers"]
        assert image.digest == want.digest
        assert image.platform == "linux/amd64"
        assert image.tag == "v1" and image.uri == f"{host}/study/{name}"
        assert image.path == tmp_path / host / "study" / name / oci_manifests.LAYOUT_FILE
        stored = json.loads(image.path.read_text())
        assert stored == {"manifests": {"v1": want.manifest}, "configs": {"v1": want.config}, "tags": ["v1"]}
    assert got["alpha"].index_digest is None and got["multi"].index_digest is not None


def test_a_digest_reference_is_stored_under_its_digest(study, tmp_path):
    host, pushed = study
    arm = pushed["multi/arm64"]
    result = _fetch([f"{host}/study/multi@{arm.digest}"], tmp_path)  # a platform manifest: nothing to choose
    assert result.ok, result.failure_table()
    assert (result.images[0].tag, result.images[0].manifest, result.images[0].platform) == \
        (arm.digest, arm.manifest, "linux/arm64")
    assert oci_manifests.read_set(tmp_path).layers["tag"].tolist() == [arm.digest]


@pytest.mark.system()  # no registry
@pytest.mark.parametrize("image, uri, tag", [
    ("ubuntu:22.04", "docker.io/library/ubuntu", "22.04"),
    ("ghcr.io/converged-computing/ensemble-osu", "ghcr.io/converged-computing/ensemble-osu", "latest"),
    ("127.0.0.1:5000/a/b:v1@sha256:" + "0" * 64, "127.0.0.1:5000/a/b", "v1"),
])
def test_references_are_split_as_docker_does(image, uri, tag):
    ref = oci.parse_reference(image)
    assert (ref.uri, ref.tag) == (uri, tag)
    assert ref.api_host == ("registry-1.docker.io" if uri.startswith("docker.io") else uri.split("/")[0])


@pytest.mark.parametrize("platform", ["linux/arm64", "linux/arm64/v8"])
def test_an_index_is_followed_to_the_requested_platform(study, tmp_path, platform):
    host, pushed = study
    result = _fetch([f"{host}/study/multi:v1", f"{host}/study/dlist:v1"], tmp_path, platform=platform)
    if platform.endswith("/v8"):  # the OCI index entry has no variant: only the Docker list matches
        assert [f.image for f in result.failures] == [f"{host}/study/multi:v1"]
        assert "no manifest for platform linux/arm64/v8" in result.failures[0].reason
        assert [i.manifest for i in result.images] == [pushed["dlist/arm64"].manifest]
        return
    assert result.ok, result.failure_table()
    assert [i.manifest for i in result.images] == [pushed["multi/arm64"].manifest, pushed["dlist/arm64"].manifest]
    assert [i.platform for i in result.images] == ["linux/arm64", "linux/arm64/v8"]


def test_each_failing_image_has_a_clear_reason_and_the_others_complete(study, tmp_path):
    host, pushed = study
    images = [f"{host}/study/alpha:v1", f"{host}/study/alpha:no-such-tag", f"{host}/nobody/nothing:v1",
              f"{host}/study/badconfig:v1", f"{host}/study/beta:v1", "Not A Reference!"]
    result = _fetch(images, tmp_path)
    assert [i.image for i in result.images] == [images[0], images[4]]
    table = result.failure_table()
    assert list(table.columns) == ["image", "reason"]
    reasons = dict(zip(table["image"], table["reason"]))
    assert list(reasons) == [images[1], images[2], images[3], images[5]]
    assert reasons[images[1]] == f"unknown tag no-such-tag in {host}/study/alpha (MANIFEST_UNKNOWN: manifest unknown); " \
                                 "it has tags v1"
    # distribution answers MANIFEST_UNKNOWN for an unknown repository too: its tag list tells them apart
    assert reasons[images[2]].startswith(f"unknown repository nobody/nothing on {host} (manifest v1 (MANIFEST_UNKNOWN")
    assert reasons[images[3]].startswith(f"config blob {pushed['bad'].manifest['config']['digest']} is not JSON")
    assert reasons[images[5]].startswith("not an image reference")
    # nothing is written for a failing image
    assert not (tmp_path / host / "study" / "badconfig").exists()
    assert not (tmp_path / host / "nobody").exists()
    assert json.loads((tmp_path / host / "study" / "alpha" / oci_manifests.LAYOUT_FILE).read_text())["tags"] == ["v1"]


def test_a_platform_missing_from_the_index_fails_that_image_only(study, tmp_path):
    host, _ = study
    result = _fetch([f"{host}/study/multi:v1", f"{host}/study/alpha:v1"], tmp_path, platform="linux/s390x")
    assert [i.image for i in result.images] == [f"{host}/study/alpha:v1"]  # a single-platform image has no choice
    assert result.images[0].platform == "linux/amd64"
    assert result.failures == [oci.Failure(f"{host}/study/multi:v1", "no manifest for platform linux/s390x "
                                                "in the image index (it has: linux/amd64, linux/arm64)")]


def test_read_set_reads_the_fetched_folder_as_an_archived_set(study, tmp_path):
    host, pushed = study
    result = _fetch([f"{host}/study/alpha:v1", f"{host}/study/beta:v1", f"{host}/study/multi:v1"], tmp_path / "fresh")
    assert result.ok
    image_set = oci_manifests.read_set(tmp_path / "fresh")
    assert image_set.problems == []
    rows = []
    for name, key in [("alpha", "alpha"), ("beta", "beta"), ("multi", "multi/amd64")]:
        uri = f"{host}/study/{name}"
        for position, layer in enumerate(pushed[key].manifest["layers"]):
            rows.append(("fresh", uri, "v1", f"{uri}:v1", position, layer["digest"], layer["size"], layer["mediaType"]))
    expected = pd.DataFrame(rows, columns=oci_manifests.LAYER_COLUMNS)
    pd.testing.assert_frame_equal(image_set.layers.reset_index(drop=True), expected, check_dtype=False)
    assert image_set.layers["digest"].value_counts()[_digest(b"b")] == 2  # the shared layer
    assert len(image_set.history) == 3 + 4 + 2  # every build step, the empty CMD included


# --- retries (a local proxy in front of the registry answers 503/429 first) --------------------

class FlakyProxy(ThreadingHTTPServer):
    """Forwards to the registry, but answers ``fail_status`` to the next ``fail_next`` manifest requests."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.fail_next, self.fail_status = upstream, 0, 503
        self.seen: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: FlakyProxy

    def log_message(self, *args):
        pass

    def _answer(self):
        with self.server.lock:
            fail = "/manifests/" in self.path and self.server.fail_next > 0
            self.server.fail_next -= fail
        if fail:
            status = self.server.fail_status
            self._record(status)
            self.send_response(status)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            forward(self, self.server.upstream, ("accept", "authorization"), timeout=5, record=self._record)

    def _record(self, status: int):
        """Before answering, so the client never sees an answer the test cannot count yet."""
        with self.server.lock:
            self.server.seen.append((self.command, self.path, status))

    do_GET = do_HEAD = _answer


@pytest.fixture
def proxy(study):
    with serving(FlakyProxy(study[0])) as server:
        yield server


@pytest.mark.parametrize("status", [503, 429])
def test_transient_answers_are_retried(study, proxy, tmp_path, status):
    _, pushed = study
    proxy.fail_next, proxy.fail_status = 2, status
    result = _fetch([f"{proxy.host}/study/multi:v1"], tmp_path)
    assert result.ok, result.failure_table()
    assert result.images[0].manifest == pushed["multi/amd64"].manifest
    manifest_answers = [s for m, p, s in proxy.seen if "/manifests/" in p]
    assert manifest_answers == [status, status, 200, 200]  # the index (after two retries), then the amd64 manifest


def test_retries_are_bounded_and_the_failure_says_so(study, proxy, tmp_path):
    proxy.fail_next = 1000
    result = _fetch([f"{proxy.host}/study/alpha:v1", f"{study[0]}/study/alpha:v1"], tmp_path)
    assert [i.image for i in result.images] == [f"{study[0]}/study/alpha:v1"]
    reason = result.failures[0].reason
    assert reason.startswith(f"HTTP 503 for GET http://{proxy.host}/v2/study/alpha/manifests/v1; gave up after 3 attempts")
    assert len(proxy.seen) == FAST.attempts


def test_not_found_is_not_retried(study, proxy, tmp_path):
    result = _fetch([f"{proxy.host}/study/alpha:no-such-tag"], tmp_path)
    assert "unknown tag no-such-tag" in result.failures[0].reason
    assert [(p.split("?")[0].rsplit("/", 1)[-1], s) for _, p, s in proxy.seen] == [("no-such-tag", 404), ("list", 200)]


@pytest.mark.system()  # no registry
def test_connection_errors_are_retried_with_backoff_then_reported(tmp_path):
    port, waits = _free_port(), []  # nothing listens there
    client = oci.Client(f"127.0.0.1:{port}", insecure=True, retry=FAST, sleep=waits.append)
    with pytest.raises(oci.FetchError, match=rf"cannot reach 127.0.0.1:{port}: \[Errno 111\] Connection refused"
                                                  r" .* gave up after 3 attempts"):
        oci.fetch_image(f"127.0.0.1:{port}/study/alpha:v1", client=client)
    assert waits == [0.01, 0.02]


@pytest.mark.system()  # no registry
def test_retry_policy_backs_off_exponentially_within_its_caps():
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=4)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]
    assert policy.delay(1, retry_after="3") == 3 and policy.delay(1, retry_after="3600") == 4


# --- anonymous bearer tokens, for real: registry with `auth: token` + a local token server -----

class TokenServer(ThreadingHTTPServer):
    """Issues anonymous RS256 JWTs (x5c header) the way a public registry's token service does.

    Grants pull+push on any repository except ``private/*`` (a token without access) and
    ``denied/*`` (no token: 401). oras keeps the first token of a repository, so the pusher's token
    must already allow push.
    """

    daemon_threads = True

    def __init__(self, tmp: Path):
        if not shutil.which("openssl"):
            pytest.fail("openssl not found: the token tests sign JWTs with it, `apt-get install openssl`")
        self.key, self.cert = tmp / "token.key", tmp / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=pullstudy-test-token", "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True)
        self.x5c = "".join(line for line in self.cert.read_text().splitlines() if not line.startswith("-----"))
        self.issued: list[str] = []
        self.requests: list[dict] = []
        super().__init__(("127.0.0.1", 0), _TokenHandler)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/token"

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, _ = scope.split(":")
            if not name.startswith("private/"):
                access.append({"type": kind, "name": name, "actions": ["pull", "push"]})
        now = int(time.time())
        claims = {"iss": TOKEN_ISSUER, "sub": "", "aud": TOKEN_SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()  # noqa: E731
        signing_input = ".".join(b64(json.dumps(part).encode()) for part in
                                 ({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}, claims))
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                                   check=True, capture_output=True).stdout
        token = f"{signing_input}.{b64(signature)}"
        self.issued.append(token)
        return token


class _TokenHandler(BaseHTTPRequestHandler):
    server: TokenServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        self.server.requests.append({"query": query, "authorization": self.headers.get("Authorization")})
        if any(scope.startswith("repository:denied/") for scope in query.get("scope", [])):
            body, status = b'{"details": "access to the requested resource is not authorized"}', 401
        else:
            token = self.server.token(query.get("scope", []))
            body, status = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(tmp)
    thread = threading.Thread(target=tokens.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    reg = None
    try:
        reg = start_registry(tmp, auth={"token": {"realm": tokens.realm, "service": TOKEN_SERVICE,
                                                  "issuer": TOKEN_ISSUER, "rootcertbundle": str(tokens.cert)}})
        yield reg, tokens
    finally:
        if reg:
            reg.stop()
        tokens.shutdown()
        tokens.server_close()


@pytest.mark.system("docker-registry", "openssl")
def test_anonymous_bearer_token_flow_against_a_token_auth_registry(token_registry, tmp_path, capsys):
    reg, tokens = token_registry
    challenge = requests.get(f"http://{reg.host}/v2/tok/alpha/manifests/v1", timeout=5)
    assert challenge.status_code == 401  # the registry really demands a token
    assert challenge.headers["WWW-Authenticate"].startswith(f'Bearer realm="{tokens.realm}"')

    (tmp_path / "blobs").mkdir()
    pushed = push_study_images(Pusher(reg.host, tmp_path / "blobs"))  # oras push, with anonymous tokens too
    tokens.requests.clear()
    images = [f"{reg.host}/study/alpha:v1", f"{reg.host}/study/multi:v1", f"{reg.host}/private/secret:v1",
              f"{reg.host}/denied/secret:v1"]
    result = _fetch(images, tmp_path / "out")

    assert [i.image for i in result.images] == images[:2]
    assert result.images[0].manifest == pushed["alpha"].manifest and result.images[0].config == pushed["alpha"].config
    assert result.images[1].manifest == pushed["multi/amd64"].manifest
    reasons = dict(zip(*result.failure_table().to_dict("list").values()))
    assert list(reasons) == images[2:]
    assert reasons[images[2]].startswith(f"manifest v1 of {reg.host}/private/secret: access denied, HTTP 401 "
                                         "(UNAUTHORIZED: authentication required), even with an anonymous token")
    assert reasons[images[3]].startswith(f"authentication failed for GET http://{reg.host}/v2/denied/secret/manifests/v1")
    # anonymous: no credentials were sent to the token service; one token per image (one client each);
    # the 401 that came back with a token was not retried; a refused token is asked twice by oras
    # (anonymous, then its credentials path, here also without credentials), never more
    assert all(r["authorization"] is None for r in tokens.requests)
    assert [r["query"]["scope"] for r in tokens.requests] == [["repository:study/alpha:pull"],
                                                              ["repository:study/multi:pull"],
                                                              ["repository:private/secret:pull"],
                                                              ["repository:denied/secret:pull"],
                                                              ["repository:denied/secret:pull"]]
    assert all(r["query"]["service"] == [TOKEN_SERVICE] for r in tokens.requests)
    # no token anywhere: results, messages, files
    issued = tokens.issued[-3:]
    assert len(tokens.issued) > 3  # the pushes' tokens came before
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    captured = capsys.readouterr()
    shown = repr(result) + captured.out + captured.err
    for token in issued:
        for part in token.split("."):
            assert part not in written and part not in shown


# --- the command line -------------------------------------------------------------------------

def test_cli_fetches_the_platform_and_lists_failures(study, tmp_path):
    host, pushed = study
    proc = subprocess.run([sys.executable, "-m", "pullstudy.images.oci", "fetch", "--out", str(tmp_path),
                           "--platform", "linux/arm64", "--insecure", f"{host}/study/multi:v1",
                           f"{host}/study/alpha:nope"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"fetched 1 of 2 images into {tmp_path}" in proc.stdout
    assert f"FAILED  {host}/study/alpha:nope: unknown tag nope" in proc.stdout
    stored = json.loads((tmp_path / host / "study" / "multi" / oci_manifests.LAYOUT_FILE).read_text())
    assert stored["manifests"]["v1"] == pushed["multi/arm64"].manifest


@pytest.mark.system()  # no registry
def test_cli_rejects_a_malformed_platform(tmp_path):
    with pytest.raises(SystemExit) as exc:
        oci.main(["fetch", "--out", str(tmp_path), "--platform", "amd64", "x/y:z"])
    assert exc.value.code == 2

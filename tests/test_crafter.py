"""pullstudy.images.crafter against a real CNCF distribution registry and a real containerd, on 127.0.0.1.

Images are crafted and pushed, then read back blob by blob (digests, diff_ids, tar contents) and
pulled + unpacked by containerd (``ctr images pull``/``check``), which proves they are valid images.
A small local proxy injects registry failures (500, 400, dropped connections) into the uploads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

import pullstudy
from proxying import forward, serving
from pullstudy.images import crafter
from pullstudy.sources.local import registry_process, containerd as containerd_module
from pullstudy.images.crafter import CraftError
from pullstudy.records import decode_tag
from pullstudy.images.oci import RetryPolicy

pytestmark = pytest.mark.registry  # needs docker-registry (conftest), unless marked otherwise

REGISTRY_BIN = "/usr/bin/docker-registry"
FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05, deadline_s=5.0, timeout_s=5.0)
MB = 1_000_000


# --- a real registry process, managed as the local backend manages it ---------------------------------

@pytest.fixture(scope="module")
def reg():
    with registry_process.Registry() as registry:  # a missing binary fails naming `apt-get install docker-registry`
        yield registry


def _craft(reg, repository, **kw) -> crafter.CraftedImage:
    return crafter.craft(reg.host, repository, retry=FAST, **kw)


@pytest.fixture(scope="module")
def images(reg):
    """The small images most tests look at, each content mode in its own repository (one tag format)."""
    return {"zeros": _craft(reg, "craft/zeros", layers=3, size_bytes=3 * MB, content="zeros"),
            "random": _craft(reg, "craft/random", layers=2, size_bytes=2 * MB, content="random"),
            "mixed": _craft(reg, "craft/mixed", layers=2, size_bytes=4 * MB, content="mixed", mixed_ratio=0.25)}


def _get(reg, repository: str, what: str, ref: str, **headers) -> requests.Response:
    return requests.get(f"http://{reg.host}/v2/{repository}/{what}/{ref}", headers=headers, timeout=10)


def _manifest_and_config(reg, image) -> tuple[dict, dict]:
    manifest = _get(reg, image.repository, "manifests", image.tag, Accept=crafter.OCI_MANIFEST).json()
    return manifest, _get(reg, image.repository, "blobs", manifest["config"]["digest"]).json()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- what was pushed ------------------------------------------------------------------------------

def test_tag_is_the_upstream_format_and_decodes_back(images):
    for image in images.values():
        assert image.tag == f"{image.layers}-layers-size-{image.size_bytes}-bytes"
        assert decode_tag(image.tag) == (image.layers, image.size_bytes)
        assert image.reference.endswith(f"/{image.repository}:{image.tag}")


def test_sizes_add_up(reg, images):
    for image in images.values():
        manifest, config = _manifest_and_config(reg, image)
        sizes = crafter.split_sizes(image.size_bytes, image.layers)
        assert sum(sizes) == image.size_bytes and max(sizes) - min(sizes) <= 1
        # each tar: 512-byte header, the file padded to 512, the 1024-byte end marker
        assert image.uncompressed_bytes == sum(512 + n + (-n % 512) + 1024 for n in sizes)
        assert image.compressed_bytes == sum(layer["size"] for layer in manifest["layers"])
        assert [layer["digest"] for layer in manifest["layers"]] == list(image.layer_digests)
        assert config["rootfs"] == {"type": "layers", "diff_ids": list(image.diff_ids)}
    assert crafter.split_sizes(10, 3) == [3, 3, 4]  # the remainder on the last layers


def test_manifest_config_labels_and_media_types(reg, images):
    image = images["mixed"]
    manifest, config = _manifest_and_config(reg, image)
    assert manifest["mediaType"] == crafter.OCI_MANIFEST and manifest["config"]["mediaType"] == crafter.OCI_CONFIG
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    labels = config["config"]["Labels"]
    assert {k: labels[k] for k in ("org.pullstudy.content", "org.pullstudy.seed", "org.pullstudy.version",
                                   "org.pullstudy.mixed-ratio")} == \
        {"org.pullstudy.content": "mixed", "org.pullstudy.seed": "0", "org.pullstudy.version": pullstudy.__version__,
         "org.pullstudy.mixed-ratio": "0.25"}
    assert labels.items() <= manifest["annotations"].items()
    assert len(config["history"]) == image.layers and (config["os"], config["architecture"]) == \
        tuple(crafter.host_platform().split("/"))


def test_blobs_read_back_match_digests_and_diff_ids_and_hold_one_file(reg, images):
    for content, image in images.items():
        names = [s.name for s in crafter.plan_layers(image.layers, image.size_bytes, content, 0, 0.25, 0)]
        for digest, diff_id, name, size in zip(image.layer_digests, image.diff_ids, names,
                                               crafter.split_sizes(image.size_bytes, image.layers)):
            blob = _get(reg, image.repository, "blobs", digest).content
            assert _sha(blob) == digest
            tar = gzip.decompress(blob)
            assert _sha(tar) == diff_id
            with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
                [member] = archive.getmembers()
                data = archive.extractfile(member).read()
            assert (member.name, member.size, member.isreg(), member.mode, member.mtime) == (name, size, True, 0o644, 0)
            nonzero_blocks = sum(any(data[i:i + 65536]) for i in range(0, len(data), 65536))
            expected = {"zeros": 0, "random": -(-size // 65536), "mixed": round(-(-size // 65536) * 0.25)}[content]
            assert abs(nonzero_blocks - expected) <= 1


def test_compression_zeros_tiny_random_none_mixed_by_the_ratio(images):
    ratio = {c: i.compressed_bytes / i.uncompressed_bytes for c, i in images.items()}
    assert ratio["zeros"] < 0.005
    assert ratio["random"] >= 0.99
    assert ratio["zeros"] < ratio["mixed"] < ratio["random"]
    assert ratio["mixed"] == pytest.approx(0.25, abs=0.03)
    mixed = images["mixed"]
    random_bytes = sum(s.random_bytes for s in crafter.plan_layers(mixed.layers, mixed.size_bytes, "mixed", 0, 0.25, 0))
    assert mixed.compressed_bytes == pytest.approx(random_bytes, rel=0.02)  # the zeros cost next to nothing


@pytest.mark.system()  # no registry
def test_mixed_blocks_follow_the_ratio_exactly():
    for ratio in (0, 0.1, 0.25, 1 / 3, 0.5, 0.9, 1):
        spec = crafter.LayerSpec(0, "m.bin", 1_000_003, "mixed", 0, ratio)
        streamed = sum(len(c) for c in spec._file_chunks() if any(bytes(c[:64])))
        assert spec.random_bytes == streamed
        assert spec.random_bytes == pytest.approx(ratio * spec.file_bytes, abs=crafter.MIXED_BLOCK)


# --- determinism and uniqueness -------------------------------------------------------------------

def test_same_arguments_give_the_same_image_another_seed_another(reg, images):
    for content in ("zeros", "random"):
        first = images[content]
        again = _craft(reg, f"again/{content}", layers=first.layers, size_bytes=first.size_bytes, content=content)
        assert again.reused_layers == 0  # another repository: streamed anew, not taken from memory
        assert (again.manifest_digest, again.layer_digests, again.diff_ids) == \
            (first.manifest_digest, first.layer_digests, first.diff_ids)
        other = _craft(reg, f"again/{content}", layers=first.layers, size_bytes=first.size_bytes, content=content,
                       seed=1)
        assert not set(other.layer_digests) & set(first.layer_digests)
        assert not set(other.diff_ids) & set(first.diff_ids)


def test_a_repeated_craft_reuses_the_pushed_layers(reg, images):
    first = images["random"]
    again = _craft(reg, first.repository, layers=first.layers, size_bytes=first.size_bytes, content="random")
    assert again.reused_layers == first.layers and again.manifest_digest == first.manifest_digest


def test_every_layer_is_unique(images):
    digests = [d for image in images.values() for d in image.layer_digests]
    diff_ids = [d for image in images.values() for d in image.diff_ids]
    assert len(set(digests)) == len(digests) and len(set(diff_ids)) == len(diff_ids)


def test_shared_layers_are_a_common_base(reg):
    small = _craft(reg, "shared/base", layers=2, size_bytes=2 * MB, content="random", seed=7, shared_layers=1)
    large = _craft(reg, "shared/base", layers=3, size_bytes=3 * MB, content="random", seed=7, shared_layers=1)
    assert small.layer_digests[0] == large.layer_digests[0]
    assert large.reused_layers == 1  # pushed once
    assert len(set(small.layer_digests[1:] + large.layer_digests[1:])) == 3
    other_seed = _craft(reg, "shared/base", layers=2, size_bytes=2 * MB, content="random", seed=8, shared_layers=1)
    assert other_seed.layer_digests[0] != small.layer_digests[0]


def test_bad_arguments_are_refused_before_anything_is_pushed(reg):
    for kw, message in [({"content": "ones"}, "content 'ones'"), ({"shared_layers": 3}, "shared_layers"),
                        ({"mixed_ratio": 1.5}, "mixed_ratio"), ({"layers": 0}, "at least one layer")]:
        with pytest.raises(ValueError, match=message):
            _craft(reg, "bad/args", **({"layers": 2, "size_bytes": 10} | kw))


def test_craft_grid_puts_each_content_in_its_repository(reg):
    grid = [(2, 1 * MB, "zeros"), (2, 1 * MB, "random"), (1, 1000)]
    crafted = crafter.craft_grid(reg.host, "grid/{content}", grid, retry=FAST, progress=False, seed=3)
    assert [(i.repository, i.tag, i.content) for i in crafted] == [
        ("grid/zeros", "2-layers-size-1000000-bytes", "zeros"), ("grid/random", "2-layers-size-1000000-bytes", "random"),
        ("grid/zeros", "1-layers-size-1000-bytes", "zeros")]
    with pytest.raises(ValueError, match=r"would hold both zeros and random"):
        crafter.craft_grid(reg.host, "grid/all", grid, progress=False)


# --- containerd accepts and unpacks the images ------------------------------------------------------

@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    """containerd on a private socket, its root in a tmp dir (services.Containerd: always stopped)."""
    with containerd_module.Containerd(tmp_path_factory.mktemp("ctd-root")) as ctd:
        yield ctd


def _ctr(ctd, *args: str) -> str:
    return ctd.ctr(*args, timeout=60).stdout


@pytest.mark.system("docker-registry", "containerd")
def test_containerd_pulls_checks_and_unpacks_the_images(containerd, images):
    sock, root = containerd, containerd.root_dir
    for image in images.values():
        _ctr(sock, "images", "pull", "--plain-http", image.reference)
    checked = {line.split()[0]: line.split() for line in _ctr(sock, "images", "check").splitlines()[1:]}
    for content, image in images.items():
        row = checked[image.reference]
        assert row[2] == image.manifest_digest and row[3:5] == ["complete", f"({image.layers + 1}/{image.layers + 1})"]
        assert row[-1] == "true"  # unpacked
    unpacked = {p.name: p.stat().st_size
                for p in root.glob("io.containerd.snapshotter.v1.overlayfs/snapshots/*/fs/*.bin")}
    for content, image in images.items():
        for spec in crafter.plan_layers(image.layers, image.size_bytes, content, 0, 0.25, 0):
            assert unpacked[spec.name] == spec.file_bytes


# --- streaming: memory stays flat ---------------------------------------------------------------------

def test_a_200_mb_random_image_is_crafted_in_bounded_memory(reg):
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        image = _craft(reg, "memory/random", layers=2, size_bytes=200 * MB, content="random")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert image.compressed_bytes >= image.size_bytes
    assert peak < 64 * 2**20, f"peak memory growth {peak / 2**20:.0f} MiB for a 200 MB image"  # ~4 chunks of 8 MiB


# --- registry failures --------------------------------------------------------------------------------

class FaultProxy(ThreadingHTTPServer):
    """Forwards to the registry, but the PATCHes numbered in ``fail`` (1-based) get ``mode`` instead:
    an HTTP status, or ``"drop"`` (the connection is closed without an answer)."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _FaultHandler)
        self.upstream, self.fail, self.mode = upstream, set(), 500
        self.patches, self.seen, self.lock = 0, [], threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _FaultHandler(BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            if self.command == "PATCH":
                self.server.patches += 1
            fail = self.command == "PATCH" and (self.server.patches in self.server.fail or "all" in self.server.fail)
        if fail and self.server.mode == "drop":
            self.server.seen.append((self.command, "dropped"))
            self.close_connection = True
            return
        if fail:
            self.server.seen.append((self.command, self.server.mode))
            self.send_response(self.server.mode)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        # the proxy's Host is kept, so that the registry's Location headers lead back through the proxy
        forward(self, self.server.upstream, ("host", "accept", "authorization", "content-type", "content-range"),
                body=body if self.command in ("POST", "PATCH", "PUT") else None,
                record=lambda status: self.server.seen.append((self.command, status)))

    do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = _answer


@pytest.fixture
def proxy(reg):
    with serving(FaultProxy(reg.host)) as server:
        yield server


def _through(proxy, repository, waits=None, **kw):
    kw = {"layers": 2, "size_bytes": 2 * MB, "content": "random", "chunk_bytes": 256 * 1024} | kw
    return crafter.craft(proxy.host, repository, retry=FAST, sleep=(waits if waits is not None else []).append, **kw)


@pytest.mark.parametrize("mode", [500, "drop"])
def test_a_failure_mid_blob_restarts_that_blob_and_the_image_is_whole(reg, proxy, mode):
    proxy.fail, proxy.mode = {3}, mode  # the 3rd of the first layer's 4 PATCHes: half of it is in
    waits = []
    image = _through(proxy, f"flaky/{mode}", waits, seed=11)
    direct = _craft(reg, f"flaky-direct/{mode}", layers=2, size_bytes=2 * MB, content="random", seed=11)
    assert image.manifest_digest == direct.manifest_digest  # the same bytes: nothing lost, nothing doubled
    assert waits == [FAST.backoff_s]
    posts = [s for m, s in proxy.seen if m == "POST"]
    assert posts == [202, 202, 202, 202]  # layer 1, layer 1 from scratch, layer 2, config
    assert ("PATCH", "dropped" if mode == "drop" else 500) in proxy.seen


def test_a_registry_that_always_fails_gives_a_clear_error_and_no_manifest(reg, proxy):
    proxy.fail = {"all"}
    waits = []
    with pytest.raises(CraftError) as caught:
        _through(proxy, "broken/always", waits)
    message = str(caught.value)
    assert message.startswith(f"pushing layer 1 of 2 (pullstudy-s0-random-2-layers-size-2000000-bytes-layer-0001.bin) "
                              f"of {proxy.host}/broken/always:2-layers-size-2000000-bytes: PATCH /v2/broken/always/")
    assert "HTTP 500" in message and "gave up after 3 attempts" in message and "no manifest was pushed" in message
    assert waits == [0.01, 0.02]
    assert not any(m == "PUT" for m, _ in proxy.seen)
    assert _get(reg, "broken/always", "manifests", "2-layers-size-2000000-bytes").status_code == 404


def test_a_client_error_is_not_retried(reg, proxy):
    proxy.fail, proxy.mode = {1}, 400
    with pytest.raises(CraftError, match=r"layer 1 of 2 .* HTTP 400"):
        _through(proxy, "broken/client")
    assert [m for m, _ in proxy.seen].count("PATCH") == 1
    assert _get(reg, "broken/client", "manifests", "2-layers-size-2000000-bytes").status_code == 404

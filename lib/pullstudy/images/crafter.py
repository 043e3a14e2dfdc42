"""Synthetic OCI images for pull experiments, streamed straight into a registry.

An image has ``layers`` layers; each layer is a gzip-compressed tar stream holding one regular file,
and the files' sizes add up to ``size_bytes`` (split as evenly as possible, the remainder going one
byte each to the *last* layers, so that a shared base keeps its size). The tag is the upstream format
``<layers>-layers-size-<size_bytes>-bytes`` (written by :func:`pullstudy.records.image_tag`, read by :func:`pullstudy.records.decode_tag`).

Sizes. ``size_bytes`` counts file contents only, as upstream's ``head -c N /dev/zero`` did. Each
layer's tar adds a 512-byte header (plus a PAX extended header for files of 8 GiB and more), zero
padding of the file to a multiple of 512 bytes, and the 1024-byte end-of-archive marker, as Go's
``archive/tar`` writes it (no padding to a 10 KiB record). ``CraftedImage.uncompressed_bytes`` is
the total of the tar streams (what ``rootfs.diff_ids`` hash); ``compressed_bytes`` the total of the
blobs (what a pull transfers).

Content modes:

- ``zeros``: as upstream (``head -c N /dev/zero``): a GB compresses to about a MB.
- ``random``: incompressible bytes from numpy's PCG64 (its raw 64-bit stream, which numpy keeps
  stable across versions): transfer size equals the image size.
- ``mixed``: a ``mixed_ratio`` fraction random, the rest zeros, interleaved in 64 KiB blocks (twice
  gzip's 32 KiB window), so the compressor sees both and the compressed size is about the ratio.

Determinism. Every byte of a layer follows from the seed and the layer's name, so the same
arguments give byte-identical tar streams (same ``diff_ids``) and, with the same zlib, the same
blobs, config and manifest digest. Layer names (the file inside the tar) carry the seed, content
mode and tag, so every layer of every image is unique; with ``shared_layers=N`` the first N layers
are named by seed, content mode and index only, so images crafted with the same seed share them as
a common base (when their per-layer size is the same too, since the size is part of the content).

Compression. gzip level 6 (Go's and docker's default) for zeros and mixed. Random content uses
level 0 (stored deflate blocks) by default: deflate at any level emits stored blocks for random
input anyway (same bytes on the wire within 0.03 %, same decompression work for the puller), but
level 1 runs at ~50 MB/s here while level 0 runs at memory speed. ``compresslevel`` overrides both.

Streaming. Nothing is held whole: tar bytes are generated in 1 MiB blocks, hashed (diff_id),
compressed, hashed again (blob digest) and sent with the distribution API's chunked upload (POST,
PATCH chunks of ``chunk_bytes`` with Content-Range, PUT ``?digest=``) through the project's oras
client session. A layer's digest is only known once it is uploaded, so layers are never checked
for existence first (that would mean generating them twice); the config blob, whose digest is
known, is checked with HEAD. Layers already pushed by this process are remembered, so a shared
base is checked with HEAD and uploaded once.

Failures. A 5xx/429 answer or a broken connection during a blob's upload restarts that blob from
scratch (its bytes are regenerated, identical), a bounded number of times with backoff, then
:class:`CraftError` names the image and the layer. The manifest is pushed last, only after every
blob is in, and read back by tag to check it.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
import queue
import tarfile
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import requests
from tqdm.auto import tqdm

from pullstudy import __version__
from pullstudy.records import image_tag
from .oci import TRANSIENT_STATUS, Client, FetchError, RetryPolicy, parse_platform

ZEROS, RANDOM, MIXED = "zeros", "random", "mixed"
CONTENTS = (ZEROS, RANDOM, MIXED)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MiB = 1 << 20
DEFAULT_CHUNK_BYTES = 8 * MiB
GENERATE_BYTES = 1 * MiB        # tar bytes generated per step (a multiple of 8: whole PCG64 words)
MIXED_BLOCK = 64 * 1024         # interleaving unit of mixed content
EPOCH = "1970-01-01T00:00:00Z"  # every timestamp: a fixed one keeps digests reproducible
LABEL = "org.pullstudy."
DEFAULT_LEVEL = {ZEROS: 6, MIXED: 6, RANDOM: 0}
_ZERO_BLOCK = memoryview(bytes(GENERATE_BYTES))
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class CraftError(Exception):
    """An image could not be crafted or pushed; the message names the image and, if one, the layer."""


class _Transient(Exception):
    """A failure worth restarting the blob upload for (5xx, 429, a broken connection)."""


@dataclass(frozen=True)
class CraftedImage:
    """What was pushed, with the measured sizes and the time it took."""

    reference: str              # registry/repository:tag
    tag: str
    repository: str
    manifest_digest: str
    layers: int
    size_bytes: int             # file contents, as built (the tag's figure)
    content: str
    compressed_bytes: int       # sum of the layer blobs: what a pull transfers
    uncompressed_bytes: int     # sum of the layer tar streams: what a pull writes out
    layer_digests: tuple[str, ...]
    diff_ids: tuple[str, ...]
    seconds: float
    reused_layers: int = 0      # layers found already pushed by this process (HEAD), not uploaded again

    @property
    def pinned(self) -> str:
        """registry/repository@digest: the reference that cannot move."""
        return f"{self.reference.rsplit(':', 1)[0]}@{self.manifest_digest}"


def split_sizes(size_bytes: int, layers: int) -> list[int]:
    """File sizes as even as possible; the remainder goes to the last layers, keeping a base's size."""
    base, extra = divmod(size_bytes, layers)
    return [base + (i >= layers - extra) for i in range(layers)]


def host_platform() -> str:
    """containerd pulls a single-platform manifest only if its config's platform is the host's."""
    return f"linux/{_ARCH.get(_platform.machine().lower(), _platform.machine().lower())}"


# --- one layer: its plan and its bytes ------------------------------------------------------------

@dataclass(frozen=True)
class LayerSpec:
    """Everything that decides a layer's bytes; two equal specs give identical layers."""

    index: int
    name: str           # the file's path in the tar, also the key of its random stream
    file_bytes: int
    content: str
    seed: int
    mixed_ratio: float

    @property
    def header(self) -> bytes:
        info = tarfile.TarInfo(self.name)
        info.size, info.mode, info.mtime, info.type = self.file_bytes, 0o644, 0, tarfile.REGTYPE
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")  # PAX only when the size needs it

    @property
    def tar_bytes(self) -> int:
        return len(self.header) + self.file_bytes + (-self.file_bytes % 512) + 1024

    @property
    def random_bytes(self) -> int:
        """How many of the file's bytes are random."""
        if self.content == ZEROS:
            return 0
        if self.content == RANDOM:
            return self.file_bytes
        full, tail = divmod(self.file_bytes, MIXED_BLOCK)
        # the random blocks among the first K number int(K * ratio): _mixed_is_random telescopes
        return int(full * self.mixed_ratio) * MIXED_BLOCK + tail * _mixed_is_random(full, self.mixed_ratio)

    def describe(self) -> str:
        """The history entry's created_by: what the layer holds, in the spirit of a Dockerfile line."""
        if self.content == ZEROS:
            return f"head -c {self.file_bytes} /dev/zero > /{self.name}"
        what = "random bytes" if self.content == RANDOM else f"bytes, {self.mixed_ratio:g} of them random in 64 KiB blocks"
        return f"pullstudy crafter: {self.file_bytes} {what} (PCG64, seed {self.seed}) > /{self.name}"

    def tar_chunks(self) -> Iterator[bytes | memoryview]:
        """The layer's uncompressed tar stream, in blocks of at most GENERATE_BYTES."""
        yield self.header
        yield from self._file_chunks()
        yield bytes(-self.file_bytes % 512 + 1024)

    def _file_chunks(self) -> Iterator[bytes | memoryview]:
        if self.content == ZEROS:
            for start in range(0, self.file_bytes, GENERATE_BYTES):
                yield _ZERO_BLOCK[:min(GENERATE_BYTES, self.file_bytes - start)]
            return
        bits = self._bit_generator()
        if self.content == RANDOM:
            for start in range(0, self.file_bytes, GENERATE_BYTES):
                yield _random_block(bits, min(GENERATE_BYTES, self.file_bytes - start))
            return
        for k, start in enumerate(range(0, self.file_bytes, MIXED_BLOCK)):
            n = min(MIXED_BLOCK, self.file_bytes - start)
            yield _random_block(bits, n) if _mixed_is_random(k, self.mixed_ratio) else _ZERO_BLOCK[:n]

    def _bit_generator(self) -> np.random.PCG64:
        key = hashlib.sha256(f"pullstudy-crafter/{self.seed}/{self.name}".encode()).digest()
        return np.random.PCG64(np.random.SeedSequence(int.from_bytes(key, "big")))


def _random_block(bits: np.random.PCG64, n: int) -> memoryview:
    """n bytes of the raw PCG64 stream (little-endian words, the same on every machine)."""
    words = bits.random_raw(-(-n // 8)).astype("<u8", copy=False)
    return memoryview(words.view(np.uint8))[:n]


def _mixed_is_random(k: int, ratio: float) -> bool:
    """Whether block k of mixed content is random: spreads ``ratio`` of the blocks evenly (Bresenham)."""
    return int((k + 1) * ratio) > int(k * ratio)


def plan_layers(layers: int, size_bytes: int, content: str, seed: int, mixed_ratio: float,
                shared_layers: int) -> list[LayerSpec]:
    """The layers of one image: sizes, unique names (shared ones named without the image's tag)."""
    kind = f"mixed{mixed_ratio:g}" if content == MIXED else content
    tag = image_tag(layers, size_bytes)
    specs = []
    for i, n in enumerate(split_sizes(size_bytes, layers)):
        owner = "shared" if i < shared_layers else tag
        specs.append(LayerSpec(i, f"pullstudy-s{seed}-{kind}-{owner}-layer-{i + 1:04d}.bin", n, content, seed,
                               mixed_ratio))
    return specs


class _LayerStream:
    """Compressed bytes of a layer, hashing both sides on the way; sizes and digests once exhausted."""

    def __init__(self, spec: LayerSpec, level: int, advance: Callable[[int], None]):
        self.spec, self.level, self.advance = spec, level, advance
        self.diff_id = self.digest = None
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        raw, packed = hashlib.sha256(), hashlib.sha256()
        gz = zlib.compressobj(self.level, zlib.DEFLATED, 31)  # 31: gzip wrapper, mtime 0
        size = 0
        for chunk in self.spec.tar_chunks():
            raw.update(chunk)
            self.advance(len(chunk))
            out = gz.compress(chunk)
            if out:
                packed.update(out)
                size += len(out)
                yield out
        out = gz.flush()
        packed.update(out)
        self.size = size + len(out)
        yield out
        self.diff_id, self.digest = f"sha256:{raw.hexdigest()}", f"sha256:{packed.hexdigest()}"


# --- the distribution API: chunked blob upload ------------------------------------------------------

def _send(client: Client, method: str, url: str, expect: int, data: bytes | None = None,
          headers: dict | None = None) -> requests.Response:
    """One request with oras's auth handling but no retry of its own: a failed upload restarts whole."""
    try:
        response = client.request_once(url, method, data, headers)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise _Transient(f"{method} {_path(url)}: connection failed ({type(exc).__name__})") from None
    except ValueError as exc:
        raise CraftError(f"{method} {_path(url)}: authentication failed ({exc})") from None
    if response.status_code == expect:
        return response
    problem = f"{method} {_path(url)}: HTTP {response.status_code} {_errors(response)}".rstrip()
    if response.status_code in TRANSIENT_STATUS:
        raise _Transient(problem)
    raise CraftError(problem)


def _upload_blob(client: Client, repository: str, pieces: Iterable[bytes], digest: Callable[[], str],
                 chunk_bytes: int) -> None:
    """POST an upload session, PATCH the pieces in chunks of about chunk_bytes, PUT the digest.

    The PATCHes run in a thread while the next chunk is generated: crafting and sending overlap.
    """
    base = f"{client.prefix}://{client.hostname}"
    sender = _Sender(client, base, _location(base, _send(client, "POST", f"{base}/v2/{repository}/blobs/uploads/",
                                                         202, headers={"Content-Length": "0"})))
    try:
        with sender:
            for chunk in _chunks(pieces, chunk_bytes):
                sender.put(chunk)
        _send(client, "PUT", _with_query(sender.location, digest=digest()), 201, headers={"Content-Length": "0"})
    except BaseException:
        _cancel(client, sender.location)
        raise


def _chunks(pieces: Iterable[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """The pieces regrouped into chunks of at least chunk_bytes (the last one smaller)."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        if len(buffer) >= chunk_bytes:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


class _Sender:
    """PATCHes chunks in order from a background thread; at most two chunks wait (bounded memory).

    The first error stops the sending; it is raised in the producer at its next ``put`` or on exit.
    """

    def __init__(self, client: Client, base: str, location: str):
        self.client, self.base, self.location, self.offset = client, base, location, 0
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._run, name="pullstudy-crafter-upload", daemon=True)

    def __enter__(self) -> "_Sender":
        self.thread.start()
        return self

    def put(self, chunk: bytes) -> None:
        if self.error is None:
            self.queue.put(chunk)
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error

    def _run(self) -> None:
        for chunk in iter(self.queue.get, None):
            if self.error is not None:
                continue  # keep draining, so the producer never blocks on a dead sender
            try:
                self.location = _patch(self.client, self.base, self.location, chunk, self.offset)
                self.offset += len(chunk)
            except BaseException as exc:  # noqa: BLE001 - handed over to the producer's thread
                self.error = exc


def _patch(client: Client, base: str, location: str, chunk: bytes, offset: int) -> str:
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
               "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
    return _location(base, _send(client, "PATCH", location, 202, chunk, headers))


def _cancel(client: Client, location: str) -> None:
    """Best effort: tell the registry to drop a half-done upload session."""
    try:
        client.session.delete(location, timeout=5)
    except requests.RequestException:
        pass


def _location(base: str, response: requests.Response) -> str:
    where = response.headers.get("Location")
    if not where:
        raise CraftError(f"{response.request.method} {_path(response.url)}: no Location in the registry's answer")
    return urllib.parse.urljoin(base + "/", where)


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _path(url: str) -> str:
    """The URL's path only: upload-state queries are noise (and could hold a signed token)."""
    return urllib.parse.urlsplit(url).path


def _errors(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "(" + "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) + ")" if errors else ""
    except (ValueError, AttributeError):
        return ""


def _retrying(what: str, attempt: Callable[[], object], retry: RetryPolicy, sleep: Callable[[float], None],
              undo: Callable[[], None] = lambda: None):
    """Run a whole blob upload; on a transient failure start it over, at most ``retry.attempts`` times."""
    for number in range(1, retry.attempts + 1):
        try:
            return attempt()
        except _Transient as exc:
            problem = str(exc)
            undo()
        except CraftError as exc:
            undo()
            raise CraftError(f"{what}: {exc}") from None
        if number < retry.attempts:
            sleep(retry.delay(number))
    raise CraftError(f"{what}: {problem}; gave up after {retry.attempts} attempts, each restarting the upload "
                     "from scratch; no manifest was pushed")


def _blob_exists(client: Client, repository: str, digest: str, size: int) -> bool:
    url = f"{client.prefix}://{client.hostname}/v2/{repository}/blobs/{digest}"
    response = client.do_request(url, "HEAD")
    return response.status_code == 200 and response.headers.get("Content-Length") in (None, str(size))


# --- an image -------------------------------------------------------------------------------------

# Layers this process has pushed: spec + level + zlib -> (digest, diff_id, size). Their digest is
# known without generating them again, so a repeated or shared layer is checked with HEAD first.
_PUSHED: dict[tuple, tuple[str, str, int]] = {}


@dataclass
class _Pushed:
    digest: str
    diff_id: str
    size: int
    reused: bool = False


def _push_layer(client: Client, repository: str, spec: LayerSpec, level: int, chunk_bytes: int,
                what: str, retry: RetryPolicy, sleep, advance: Callable[[int], None]) -> _Pushed:
    key = (spec, level, zlib.ZLIB_RUNTIME_VERSION)
    if key in _PUSHED:
        digest, diff_id, size = _PUSHED[key]
        if _blob_exists(client, repository, digest, size):
            advance(spec.tar_bytes)
            return _Pushed(digest, diff_id, size, reused=True)
    done = [0]

    def counted(n: int) -> None:
        done[0] += n
        advance(n)

    def undo() -> None:  # a restarted upload counts its bytes again
        advance(-done[0])
        done[0] = 0

    def attempt() -> _LayerStream:
        stream = _LayerStream(spec, level, counted)
        _upload_blob(client, repository, stream, lambda: stream.digest, chunk_bytes)
        return stream

    stream = _retrying(what, attempt, retry, sleep, undo)
    _PUSHED[key] = (stream.digest, stream.diff_id, stream.size)
    return _Pushed(stream.digest, stream.diff_id, stream.size)


def _push_bytes(client: Client, repository: str, data: bytes, what: str, retry: RetryPolicy, sleep) -> str:
    """A small blob whose digest is known: HEAD first, upload only if missing."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    if not _blob_exists(client, repository, digest, len(data)):
        _retrying(what, lambda: _upload_blob(client, repository, [data], lambda: digest, len(data) + 1), retry, sleep)
    return digest


def _labels(content: str, seed: int, mixed_ratio: float, shared_layers: int, level: int, layers: int,
            size_bytes: int) -> dict[str, str]:
    labels = {"content": content, "seed": str(seed), "version": __version__, "layers": str(layers),
              "size-bytes": str(size_bytes), "shared-layers": str(shared_layers), "compresslevel": str(level)}
    if content == MIXED:
        labels["mixed-ratio"] = f"{mixed_ratio:g}"
    return {LABEL + k: v for k, v in labels.items()}


def _config(specs: Sequence[LayerSpec], diff_ids: Sequence[str], labels: dict, platform: str) -> bytes:
    os_, arch, variant = parse_platform(platform)
    config = {"created": EPOCH, "os": os_, "architecture": arch,
              "config": {"Labels": labels, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
              "history": [{"created": EPOCH, "created_by": s.describe(), "comment": "pullstudy crafter"} for s in specs]}
    if variant:
        config["variant"] = variant
    return _canonical(config)


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _check_arguments(layers: int, size_bytes: int, content: str, seed: int, mixed_ratio: float,
                     shared_layers: int, chunk_bytes: int) -> None:
    if layers < 1 or size_bytes < 0:
        raise ValueError(f"an image needs at least one layer and a size >= 0 (got {layers} layers, {size_bytes} bytes)")
    if content not in CONTENTS:
        raise ValueError(f"content {content!r} is not one of {', '.join(CONTENTS)}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, not {seed}")
    if not 0 <= mixed_ratio <= 1:
        raise ValueError(f"mixed_ratio is a fraction in [0, 1], not {mixed_ratio}")
    if not 0 <= shared_layers <= layers:
        raise ValueError(f"shared_layers must be within 0..{layers}, not {shared_layers}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, not {chunk_bytes}")


def craft(registry: str, repository: str, *, layers: int, size_bytes: int, content: str = ZEROS, seed: int = 0,
          mixed_ratio: float = 0.5, shared_layers: int = 0, insecure: bool = True,
          chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool | tqdm = False, compresslevel: int | None = None,
          platform: str | None = None, retry: RetryPolicy = RetryPolicy(),
          sleep: Callable[[float], None] = time.sleep, credentials: tuple[str, str] | None = None) -> CraftedImage:
    """Build ``registry/repository:<layers>-layers-size-<size_bytes>-bytes`` and push it, streamed.

    ``progress`` is True for a bar of this image, or a tqdm bar to advance (``craft_grid``'s).
    ``credentials``: (username, password) for a registry that asks for them; never logged.
    """
    _check_arguments(layers, size_bytes, content, seed, mixed_ratio, shared_layers, chunk_bytes)
    start = time.monotonic()
    level = DEFAULT_LEVEL[content] if compresslevel is None else compresslevel
    tag = image_tag(layers, size_bytes)
    reference = f"{registry}/{repository}:{tag}"
    specs = plan_layers(layers, size_bytes, content, seed, mixed_ratio, shared_layers)
    own_bar = progress is True
    bar = tqdm(total=sum(s.tar_bytes for s in specs), desc=tag, unit="B", unit_scale=True, unit_divisor=1024,
               leave=False) if own_bar else (None if isinstance(progress, bool) else progress)
    client = Client(registry, insecure=insecure, retry=retry, sleep=sleep, credentials=credentials)
    try:
        pushed = [_push_layer(client, repository, s, level, chunk_bytes,
                              f"pushing layer {s.index + 1} of {layers} ({s.name}) of {reference}", retry, sleep,
                              bar.update if bar is not None else _ignore) for s in specs]
        labels = _labels(content, seed, mixed_ratio, shared_layers, level, layers, size_bytes)
        config = _config(specs, [p.diff_id for p in pushed], labels, platform or host_platform())
        digest = _push_config_and_manifest(client, repository, tag, reference, config,
                                           [(p.digest, p.size) for p in pushed], labels, retry, sleep)
    except FetchError as exc:  # the client's own bounded retries gave up (HEAD, manifest)
        raise CraftError(f"crafting {reference}: {exc}") from None
    finally:
        if own_bar:
            bar.close()
    return CraftedImage(reference, tag, repository, digest, layers, size_bytes, content,
                        sum(p.size for p in pushed), sum(s.tar_bytes for s in specs),
                        tuple(p.digest for p in pushed), tuple(p.diff_id for p in pushed),
                        time.monotonic() - start, sum(p.reused for p in pushed))


def _push_config_and_manifest(client: Client, repository: str, tag: str, reference: str, config: bytes,
                              layers: Sequence[tuple[str, int]], labels: dict, retry: RetryPolicy, sleep) -> str:
    """The last steps of every push: the config blob, then the OCI manifest naming it and the layers
    ((digest, size), bottom first), put by tag and read back; returns the manifest digest."""
    manifest = _canonical({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _push_bytes(client, repository, config,
                                                                  f"pushing the config of {reference}",
                                                                  retry, sleep), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": size} for digest, size in layers],
        "annotations": labels | {"org.opencontainers.image.created": EPOCH}})
    return _put_manifest(client, repository, tag, manifest, reference)


def _ignore(_: int) -> None:
    pass


def _put_manifest(client: Client, repository: str, tag: str, manifest: bytes, reference: str) -> str:
    """PUT the manifest (last: every blob is in), then GET it back by tag and check it is ours."""
    url = f"{client.prefix}://{client.hostname}/v2/{repository}/manifests/{tag}"
    digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
    response = client.do_request(url, "PUT", data=manifest, headers={"Content-Type": OCI_MANIFEST})
    if response.status_code != 201:
        raise CraftError(f"pushing the manifest of {reference}: HTTP {response.status_code} {_errors(response)}")
    if response.headers.get("Docker-Content-Digest", digest) != digest:
        raise CraftError(f"pushing the manifest of {reference}: the registry stored it as "
                         f"{response.headers['Docker-Content-Digest']}, not {digest}")
    back = client.do_request(url, "GET", headers={"Accept": OCI_MANIFEST})
    got = f"sha256:{hashlib.sha256(back.content).hexdigest()}" if back.status_code == 200 else None
    if got != digest or json.loads(back.content) != json.loads(manifest):
        raise CraftError(f"verifying {reference}: reading the tag back gave HTTP {back.status_code}, "
                         f"digest {got}, not the pushed {digest}")
    return digest


def craft_grid(registry: str, repository: str, grid: Iterable[Sequence], *, progress: bool = True,
               **options) -> list[CraftedImage]:
    """Craft every (layers, size_bytes[, content]) of ``grid``, with one progress bar over all bytes.

    The tag has no room for the content mode, so images differing only in content need their own
    repositories: put ``{content}`` in ``repository`` (``study-{content}``), which is filled in per image.
    ``options`` go to :func:`craft` (seed, mixed_ratio, shared_layers, content as the default, ...).
    """
    items = [(int(g[0]), int(g[1]), g[2] if len(g) > 2 else options.get("content", ZEROS)) for g in grid]
    options.pop("content", None)
    where: dict[str, str] = {}
    for layers, size, content in items:
        ref = f"{repository.format(content=content)}:{image_tag(layers, size)}"
        if where.setdefault(ref, content) != content:
            raise ValueError(f"{ref} would hold both {where[ref]} and {content} images: put {{content}} in the "
                             "repository name, e.g. 'study-{content}'")
    total = sum(s.tar_bytes for layers, size, content in items
                for s in plan_layers(layers, size, content, options.get("seed", 0), options.get("mixed_ratio", 0.5), 0))
    crafted = []
    with tqdm(total=total, desc="craft", unit="B", unit_scale=True, unit_divisor=1024, disable=not progress) as bar:
        for layers, size, content in items:
            bar.set_postfix_str(f"{content} {image_tag(layers, size)}")
            crafted.append(craft(registry, repository.format(content=content), layers=layers, size_bytes=size,
                                 content=content, progress=bar, **options))
    return crafted


# --- images of layer blobs on disk (pullstudy.images.apps) ------------------------------------------

def _file_chunks(path, chunk_bytes: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            yield block


def push_layers(registry: str, repository: str, tag: str, layers: Sequence, *, command: Sequence[str] = (),
                labels: dict | None = None, insecure: bool = True, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                platform: str | None = None, retry: RetryPolicy = RetryPolicy(),
                sleep: Callable[[float], None] = time.sleep) -> CraftedImage:
    """Push layer blobs already on disk (``path``, ``digest``, ``diff_id``, ``size``, ``tar_bytes``,
    ``created_by`` each, bottom first) as ``registry/repository:tag`` with ``command`` as its Cmd.

    The same streaming push as :func:`craft`: a blob the registry has (HEAD) is not sent again, the
    rest go in chunks with bounded restarts, the manifest last, read back by tag.
    """
    start = time.monotonic()
    reference = f"{registry}/{repository}:{tag}"
    client = Client(registry, insecure=insecure, retry=retry, sleep=sleep)
    reused = 0
    try:
        for i, layer in enumerate(layers):
            if _blob_exists(client, repository, layer.digest, layer.size):
                reused += 1
                continue
            _retrying(f"pushing layer {i + 1} of {len(layers)} ({layer.created_by[:60]}) of {reference}",
                      lambda layer=layer: _upload_blob(client, repository, _file_chunks(layer.path, chunk_bytes),
                                                       lambda: layer.digest, chunk_bytes), retry, sleep)
        os_, arch, variant = parse_platform(platform or host_platform())
        labels = dict(labels or {})
        config = {"created": EPOCH, "os": os_, "architecture": arch,
                  "config": {"Labels": labels, "Cmd": list(command), "WorkingDir": "/",
                             "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
                  "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
                  "history": [{"created": EPOCH, "created_by": layer.created_by, "comment": "pullstudy apps"}
                              for layer in layers]}
        if variant:
            config["variant"] = variant
        digest = _push_config_and_manifest(client, repository, tag, reference, _canonical(config),
                                           [(layer.digest, layer.size) for layer in layers], labels, retry, sleep)
    except FetchError as exc:
        raise CraftError(f"pushing {reference}: {exc}") from None
    total = sum(layer.tar_bytes for layer in layers)
    return CraftedImage(reference, tag, repository, digest, len(layers), total, "app",
                        sum(layer.size for layer in layers), total, tuple(layer.digest for layer in layers),
                        tuple(layer.diff_id for layer in layers), time.monotonic() - start, reused)

"""Manifests, configs and layer lists of images, fetched from OCI registries into a container set folder.

Registry access goes through the maintained `oras` client (its ``Registry`` does the requests, the
``401`` + ``WWW-Authenticate: Bearer`` dance and the anonymous token fetch); this module adds what a
study needs on top: picking one platform out of an image index, bounded retries, checked digests,
a clear reason for every image that fails while the others complete, and storage in the layout of
:mod:`pullstudy.images.oci_manifests`, so fresh and archived container sets are read alike.

Fetching uses anonymous access only. A push (the crafter's, for the kube backend's grid) may be given
credentials by its caller, who takes them from the environment; credentials and tokens live in memory
only, never in a result, a message or a file.

    python -m pullstudy.images.oci fetch --out DIR [--platform linux/amd64] [--insecure] IMAGE...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import oras.container
import oras.provider
import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm

from . import oci_manifests

DEFAULT_PLATFORM = "linux/amd64"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}
MAX_INDEX_DEPTH = 2
# The distribution reference grammar (github.com/distribution/reference), which oras's parser does not enforce.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# A registry host has a dot or a port (localhost:5000), as oras's parser expects.
_HOST = r"(?:(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9a-fA-F:]+\])(?::\d+)?|[A-Za-z0-9-]+:\d+)"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?")

# oras decorates Registry.do_request with its own retry (up to 5 tries sleeping 3..83 s, on any error
# but never on 429/503): we take the undecorated function and put a bounded retry around it.
_ORAS_DO_REQUEST = oras.provider.Registry.do_request.__wrapped__


class FetchError(Exception):
    """One image could not be fetched; the message says why, without secrets."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient errors (connection errors, 429, 5xx), bounded in count and time."""

    attempts: int = 5            # requests in all, the first one included
    backoff_s: float = 0.5       # wait before the 2nd attempt; doubled for each further one
    max_backoff_s: float = 8.0   # cap on one wait, also on a server's Retry-After
    deadline_s: float = 60.0     # no new attempt once this much time has passed for one request
    timeout_s: float = 30.0      # connect and read timeout of each attempt

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        wait = self.backoff_s * 2 ** (attempt - 1)
        if retry_after and retry_after.strip().isdigit():
            wait = max(wait, float(retry_after))
        return min(wait, self.max_backoff_s)


@dataclass(frozen=True)
class Reference:
    """An image reference split the way the manifests layout needs it."""

    image: str        # as given
    registry: str     # host[:port], as in the uri
    repository: str
    tag: str          # key in the layout: the tag, or the digest when no tag was given
    digest: str | None

    @property
    def uri(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """Docker Hub's API lives on another host than its name."""
        return "registry-1.docker.io" if self.registry in DOCKER_HUB else self.registry

    @property
    def container(self) -> oras.container.Container:
        """For oras's URL builders; the tag or digest is passed to each call."""
        return oras.container.Container(f"{self.api_host}/{self.repository}")


def parse_reference(image: str) -> Reference:
    """``[registry/]repository[:tag][@digest]``; no registry means Docker Hub, as for `docker pull`."""
    if not _REFERENCE.fullmatch(image):
        raise FetchError(f"not an image reference: {image!r} is not [registry/]repository[:tag][@digest] "
                         "(lower-case repository, e.g. ghcr.io/org/name:tag)")
    parsed = oras.container.Container(image)
    repository = f"{parsed.namespace}/{parsed.repository}" if parsed.namespace else parsed.repository
    if parsed.registry in DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    has_tag = ":" in image.split("@", 1)[0].rsplit("/", 1)[-1]
    tag = parsed.tag if has_tag or not parsed.digest else parsed.digest
    return Reference(image, parsed.registry, repository, tag, parsed.digest)


@dataclass
class FetchedImage:
    """One image as stored: its platform manifest (not the index), config and where it was written."""

    image: str
    uri: str
    tag: str
    digest: str                  # of the platform manifest
    platform: str                # os/architecture[/variant] from the config
    manifest: dict
    config: dict
    index_digest: str | None = None   # the image index followed to get here, if any
    path: Path | None = None

    @property
    def layers(self) -> list[dict]:
        return self.manifest["layers"]


@dataclass
class Failure:
    image: str
    reason: str


@dataclass
class FetchResult:
    """What was fetched and, for every image that was not, why."""

    out: Path
    images: list[FetchedImage] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def failure_table(self) -> pd.DataFrame:
        return pd.DataFrame([(f.image, f.reason) for f in self.failures], columns=["image", "reason"])


class _TimeoutAdapter(HTTPAdapter):
    """oras passes no timeout: without one a stalled registry would hang the study forever."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


class Client(oras.provider.Registry):
    """oras's Registry with a bounded retry, a timeout, and errors that name the cause.

    oras keeps one bearer token per client, and a token is scoped to one repository: use one
    client per repository (``fetch`` uses one per image).
    """

    def __init__(self, hostname: str, insecure: bool = False, retry: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep, credentials: tuple[str, str] | None = None):
        super().__init__(hostname=hostname, insecure=insecure, auth_backend="token")
        if credentials:  # (username, password): oras trades them for the registry's bearer token
            self.auth.set_basic_auth(*credentials)
        self.retry, self._sleep = retry, sleep
        adapter = _TimeoutAdapter(retry.timeout_s)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def request_once(self, url, method="GET", data=None, headers=None, json=None, stream=False):
        """oras's request (auth included) and nothing more: for callers that retry a larger unit, such
        as a whole blob upload that must restart from its first byte."""
        return _ORAS_DO_REQUEST(self, url, method, data, dict(headers or {}), json, stream)

    def do_request(self, url, method="GET", data=None, headers=None, json=None, stream=False):
        """oras's request (auth included), retried on connection errors, 429 and 5xx only."""
        start, what = time.monotonic(), f"{method} {_redact_url(url)}"
        for attempt in range(1, self.retry.attempts + 1):
            retry_after = None
            try:
                response = self.request_once(url, method, data, headers, json, stream)
                if response.status_code not in TRANSIENT_STATUS:
                    return response
                problem = f"HTTP {response.status_code}{_error_codes(response)}"
                retry_after = response.headers.get("Retry-After")
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"cannot reach {_host(url)}: {_short(exc)}"
            except ValueError as exc:
                if "authentication" not in str(exc):
                    raise
                # oras: a 401 it could not answer with a token
                raise FetchError(f"authentication failed for {what}: {_redact(str(exc))} "
                                 "(no anonymous token was issued: the repository is private, does not "
                                 "exist, or needs credentials)") from None
            wait = self.retry.delay(attempt, retry_after)
            elapsed = time.monotonic() - start
            if attempt == self.retry.attempts or elapsed + wait > self.retry.deadline_s:
                break
            self._sleep(wait)
        raise FetchError(f"{problem} for {what}; gave up after {attempt} attempts in {elapsed:.1f} s")


def fetch(images: Iterable[str], out: str | Path, platform: str = DEFAULT_PLATFORM, insecure: bool = False,
          retry: RetryPolicy = RetryPolicy(), progress: bool = True) -> FetchResult:
    """Fetch every image into ``out`` (manifests layout); one failing image does not stop the others."""
    parse_platform(platform)  # a bad platform is the caller's error, not every image's
    result = FetchResult(Path(out))
    images = list(images)
    for image in tqdm(images, desc="manifests", unit="image", disable=not progress):
        try:
            fetched = fetch_image(image, platform, insecure, retry)
        except FetchError as exc:
            result.failures.append(Failure(image, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - recorded with its reason, never dropped
            result.failures.append(Failure(image, _redact(f"unexpected {type(exc).__name__}: {exc}")))
            continue
        fetched.path = oci_manifests.write_image(result.out, fetched.uri, fetched.tag, fetched.manifest, fetched.config)
        result.images.append(fetched)
    return result


def fetch_image(image: str, platform: str = DEFAULT_PLATFORM, insecure: bool = False,
                retry: RetryPolicy = RetryPolicy(), client: Client | None = None) -> FetchedImage:
    """One image's platform manifest and config; raises FetchError with the reason."""
    ref = parse_reference(image)
    wanted = parse_platform(platform)
    client = client or Client(ref.api_host, insecure=insecure, retry=retry)
    manifest, digest = _get_manifest(client, ref, ref.digest or ref.tag)
    index_digest = None
    for _ in range(MAX_INDEX_DEPTH):
        if not _is_index(manifest):
            break
        index_digest = index_digest or digest
        manifest, digest = _get_manifest(client, ref, _choose(manifest, wanted, platform)["digest"])
    if _is_index(manifest):
        raise FetchError(f"image indexes nested deeper than {MAX_INDEX_DEPTH} levels")
    if manifest.get("schemaVersion") != 2 or not isinstance(manifest.get("layers"), list) \
            or not isinstance(manifest.get("config"), dict) or "digest" not in manifest["config"]:
        raise FetchError(f"not a schema 2 image manifest (schemaVersion {manifest.get('schemaVersion')}, "
                         f"mediaType {manifest.get('mediaType')})")
    config = _get_config(client, ref, manifest["config"]["digest"])
    actual = "/".join(str(config[k]) for k in ("os", "architecture", "variant") if config.get(k))
    return FetchedImage(image, ref.uri, ref.tag, digest, actual, manifest, config, index_digest)


def parse_platform(text: str) -> tuple[str, str, str | None]:
    """``os/architecture[/variant]``, e.g. linux/amd64 or linux/arm64/v8."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {text!r} is not os/architecture[/variant], e.g. linux/amd64")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _choose(index: dict, wanted: tuple[str, str, str | None], platform: str) -> dict:
    """The index entry for the wanted platform; a variant is compared only when one was asked for."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict) and "digest" in m]
    for entry in entries:
        p = entry.get("platform") or {}
        if (p.get("os"), p.get("architecture")) == wanted[:2] and wanted[2] in (None, p.get("variant")):
            return entry
    have = sorted({"/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
                   for p in (e.get("platform") or {} for e in entries)} - {""})
    raise FetchError(f"no manifest for platform {platform} in the image index "
                     f"(it has: {', '.join(have) or 'no platforms'})")


def _is_index(manifest: dict) -> bool:
    return manifest.get("mediaType") in oci_manifests.INDEX_TYPES or "manifests" in manifest


def _get_manifest(client: Client, ref: Reference, reference: str) -> tuple[dict, str]:
    """GET a manifest by tag or digest (``Registry.get_manifest`` hides the status we need to explain a 404)."""
    url = f"{client.prefix}://{ref.container.manifest_url(reference)}"
    response = client.do_request(url, "GET", headers={"Accept": ACCEPT})
    _check(client, response, ref, "manifest", reference)
    return _verified_json(response.content, reference, "manifest")  # as served: raw inputs are kept as they came


def _get_config(client: Client, ref: Reference, digest: str) -> dict:
    response = client.get_blob(ref.container, digest)
    _check(client, response, ref, "config blob", digest)
    return _verified_json(response.content, digest, "config blob")[0]


def _verified_json(body: bytes, reference: str, what: str) -> tuple[dict, str]:
    """A JSON object whose bytes hash to the digest it was asked for by (when asked for by digest)."""
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if reference.startswith("sha256:") and digest != reference:
        raise FetchError(f"{what} {reference} arrived with digest {digest}: corrupted in transit or by the registry")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FetchError(f"{what} {reference} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise FetchError(f"{what} {reference} is JSON but not an object")
    return doc, digest


def _check(client: Client, response: requests.Response, ref: Reference, what: str, reference: str) -> None:
    """Turn a non-200 answer into the reason a researcher can act on."""
    status = response.status_code
    if status == 200:
        return
    codes = _error_codes(response)
    if status == 404 and "NAME_UNKNOWN" in codes:
        raise FetchError(f"unknown repository {ref.repository} on {ref.registry}{codes}")
    if status == 404 and what == "manifest":
        kind = "digest" if reference.startswith("sha256:") else "tag"
        tags = _tags(client, ref)
        if tags is None:
            raise FetchError(f"unknown repository {ref.repository} on {ref.registry} "
                             f"(manifest {reference}{codes}; its tag list is not found either)")
        have = f"; it has tags {', '.join(sorted(tags)[:5])}{', ...' if len(tags) > 5 else ''}" if tags else ""
        raise FetchError(f"unknown {kind} {reference} in {ref.uri}{codes}{have}")
    if status == 404:
        raise FetchError(f"{what} {reference} not found in {ref.uri}{codes}")
    if status in (401, 403):
        raise FetchError(f"{what} {reference} of {ref.uri}: access denied, HTTP {status}{codes}, even with an "
                         "anonymous token: the repository is private, does not exist, or needs credentials")
    raise FetchError(f"{what} {reference} of {ref.uri}: HTTP {status}{codes}")


def _tags(client: Client, ref: Reference) -> list[str] | None:
    """Some tags of the repository, or None if it has none because it does not exist.

    A registry may answer MANIFEST_UNKNOWN for a repository that does not exist (distribution does):
    the tag list tells an unknown repository from an unknown tag.
    """
    try:
        response = client.do_request(f"{client.prefix}://{ref.container.tags_url(N=100)}", "GET")
        if response.status_code == 404:
            return None
        return list(response.json().get("tags") or []) if response.status_code == 200 else []
    except Exception:  # noqa: BLE001 - only a better message was at stake
        return []


def _error_codes(response: requests.Response) -> str:
    """The registry's own error codes and messages (OCI distribution error body), if any."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return ""
    text = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict))
    return f" ({_redact(text)[:300]})" if text else ""


def _host(url: str) -> str:
    return re.sub(r"^\w+://", "", url).split("/", 1)[0]


def _short(exc: Exception) -> str:
    """The OS-level reason of a connection error, not urllib3's page of wrappers."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if match:
        return match.group(0).strip()
    return f"{type(exc).__name__}" + (" (timed out)" if isinstance(exc, requests.Timeout) else "")


def _redact_url(url: str) -> str:
    return re.sub(r"\?\S*", "", url)


def _redact(text: str) -> str:
    """No token, password or signed URL query in a message."""
    text = re.sub(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+", r"\1 <redacted>", text)
    return re.sub(r"(https?://[^\s?'\"]+)\?[^\s'\")]*", r"\1?<redacted>", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pullstudy.images.oci", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("fetch", help="fetch manifests + configs into a container set folder")
    cmd.add_argument("--out", required=True, type=Path, help="container set folder (manifests layout)")
    cmd.add_argument("--platform", default=DEFAULT_PLATFORM, help="os/architecture[/variant] to pick from an index")
    cmd.add_argument("--insecure", action="store_true", help="plain http (a local registry on 127.0.0.1)")
    cmd.add_argument("images", nargs="+", metavar="IMAGE")
    args = parser.parse_args(argv)
    try:
        parse_platform(args.platform)
    except ValueError as exc:
        parser.error(str(exc))
    result = fetch(args.images, args.out, args.platform, args.insecure)
    print(f"fetched {len(result.images)} of {len(args.images)} images into {args.out}")
    for image in result.images:
        print(f"  ok      {image.image}  {image.platform}  {len(image.layers)} layers  {image.digest}")
    for failure in result.failures:
        print(f"  FAILED  {failure.image}: {failure.reason}")
    if not args.insecure and any("SSL" in f.reason for f in result.failures):
        # The usual cause: a local registry that speaks plain HTTP, answered with TLS.
        print("  hint: a TLS (SSL) error usually means the registry speaks plain HTTP, as a local one on "
              "127.0.0.1 does: if you trust it, run again with --insecure")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

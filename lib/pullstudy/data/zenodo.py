"""The data bundle and Zenodo: ``make data DOI=10.5281/zenodo.N`` fetches it back, ``make deposit`` deposits it.

**Fetch by DOI.** The record is resolved through Zenodo's records API (``GET <api>/records/<id>``; the base
URL is the setting ``PULLSTUDY_ZENODO_API``, default https://zenodo.org/api, so the tests run against a
local server). Then, in this order, each failing with a message naming the check:

1. *record checksum*: each file is downloaded (progress bar) and must match the record's ``md5:`` checksum;
   a connection that ends before the announced length is a *truncated download*;
2. *bundle SHA-256*: the bundle must match its ``.sha256`` when the record carries one;
3. *unsafe archive*: the tar is unpacked member by member into a temporary folder inside data/; an absolute
   path, a ``..`` component, a link, a device or anything but a regular file or folder refuses the bundle;
4. *SHA256SUMS*: every unpacked file is listed and matches, and nothing listed is missing;
5. *git blob id*: every ``raw/<source>/<path>`` must be a file of data/manifest.json (this project's, not the
   bundle's) and hash to its git blob id.

Only when all pass are the files moved into data/raw (and recorded runs into data/runs), and
data/raw/FETCH-REPORT.json written (with the DOI and the bundle's SHA-256), so ``make verify-data`` works as
after any ``make data``. Any failure leaves data/ exactly as it was.

*Why pooch for the downloads*: it is the fetch-and-verify library of scientific Python (numpy, scipy,
scikit-image use it), and does what a download here needs: it streams to a temporary file, checks the hash
(``md5:`` as Zenodo reports it) before the file is given its name, deletes it on mismatch, and shows a tqdm
bar. Its own DOI support (``doi:10.5281/zenodo.N/file``) is not used: it resolves through doi.org and a
hard-coded zenodo.org, so it could not be pointed at a sandbox or a test server, and it does not check the
record's DOI. Resolving the record and the deposit API (which pooch does not cover) use ``requests``,
already installed with pooch.

**Deposit** (``make deposit``): a deposition *draft* through the REST API, sandbox by default
(``PULLSTUDY_ZENODO_API`` or ``--api``); the token comes only from ``ZENODO_TOKEN`` and is sent only in the
Authorization header: it is never printed, logged or written, and is removed from any server message shown.
It uploads the bundle to the deposition's bucket (checking the MD5 the server reports), sets the metadata of
data/zenodo-deposit.json (version of the bundle, ``isSupplementTo`` the paper with ``PAPER_DOI``), reserves
the DOI and writes it into data/README.md and CITATION.cff for the author to commit. It publishes only with
``--publish`` (``PUBLISH=1``). 429 and 5xx answers are retried with exponential backoff (``Retry-After``
honoured), at most ``RETRIES`` times.

Exit codes: 0 done; 1 a check failed (the message names it); 2 a setting is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pooch
import requests

from pullstudy import paths
from .bundle import default_version, sha256_of_file
from .fetch import FETCH_REPORT, DataConfigError, FetchReport, git_blob_id_of_file, load_manifest

ZENODO_API = "https://zenodo.org/api"
SANDBOX_API = "https://sandbox.zenodo.org/api"
API_ENV = "PULLSTUDY_ZENODO_API"
DOI_ENV = "PULLSTUDY_DATA_DOI"
TOKEN_ENV = "ZENODO_TOKEN"
TIMEOUT_S = 60
RETRIES = 5
BACKOFF_S = 1.0
BACKOFF_CAP_S = 30.0
BUNDLE_RE = re.compile(r"pullstudy-data-[0-9A-Za-z][0-9A-Za-z.+_-]*\.tar\.gz")
DOI_RE = re.compile(r"(?i)^(?:https?://(?:dx\.)?doi\.org/|doi:)?(10\.(?:5281|5072)/zenodo\.(\d+))$")


class FetchError(Exception):
    """A check of fetch-by-DOI failed; ``check`` names it. data/ has not been changed."""

    def __init__(self, check: str, message: str):
        self.check = check
        super().__init__(f"{check} failed: {message}; data/ was left unchanged")


class SettingError(ValueError):
    """A parameter or environment variable is wrong; the message names it and the remedy."""


class DepositError(Exception):
    """The deposit API refused a step; the message names the step (never the token)."""


def api_base(default: str = ZENODO_API) -> str:
    return os.environ.get(API_ENV, default).rstrip("/")


def parse_doi(doi: str) -> tuple[str, str]:
    """(DOI, record id) of a Zenodo DOI (10.5281/zenodo.N, the sandbox's 10.5072/zenodo.N, or a doi.org URL)."""
    m = DOI_RE.match(doi.strip())
    if not m:
        raise SettingError(f"DOI {doi!r}: not a Zenodo DOI; pass DOI=10.5281/zenodo.<record id> "
                           f"(or set {DOI_ENV})")
    return m.group(1).lower(), m.group(2)


# ---------------------------------------------------------------------------------------------- fetch

def records_api(doi: str) -> str:
    """Where a DOI's record is looked up: ``PULLSTUDY_ZENODO_API`` if set, else zenodo.org, or the sandbox for
    a sandbox DOI (10.5072, what ``make deposit`` reserves by default)."""
    return api_base(SANDBOX_API if parse_doi(doi)[0].startswith("10.5072/") else ZENODO_API)


@dataclass
class Fetched:
    doi: str
    record: str
    bundle: str
    sha256: str
    files: int
    runs: list[str]


def resolve(doi: str, api: str) -> dict:
    """The record of a DOI from the records API, checked to be that DOI's record."""
    doi, rec_id = parse_doi(doi)
    url = f"{api}/records/{rec_id}"
    try:
        r = requests.get(url, timeout=TIMEOUT_S, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise FetchError("record lookup", f"{url}: {exc.__class__.__name__} ({exc}); check the network or {API_ENV}")
    if r.status_code == 404:
        raise FetchError("record lookup", f"{url}: no such record (HTTP 404); check the DOI {doi}")
    if r.status_code != 200:
        raise FetchError("record lookup", f"{url}: HTTP {r.status_code}; try again later")
    try:
        record = r.json()
        files = record["files"]
        assert isinstance(files, list)
    except (ValueError, KeyError, AssertionError):
        raise FetchError("record lookup", f"{url}: not a Zenodo record (no files list); check {API_ENV}") from None
    got = str(record.get("doi") or record.get("metadata", {}).get("doi") or "").lower()
    if got != doi:
        raise FetchError("record lookup", f"{url}: the record's DOI is {got or 'missing'!r}, not {doi}")
    return record


def _download(record: dict, into: Path, progress: bool) -> tuple[Path, Path | None]:
    """Download the bundle (and its .sha256 if the record has one), each checked against the record's MD5."""
    by_key = {f.get("key"): f for f in record["files"]}
    bundles = sorted(k for k in by_key if isinstance(k, str) and BUNDLE_RE.fullmatch(k))
    if len(bundles) != 1:
        raise FetchError("record lookup", f"the record holds {len(bundles)} pullstudy-data-<version>.tar.gz files "
                         f"({', '.join(bundles) or 'none'}), not one")
    wanted = [bundles[0]] + ([bundles[0] + ".sha256"] if bundles[0] + ".sha256" in by_key else [])
    out = []
    for key in wanted:
        f = by_key[key]
        checksum, url = f.get("checksum", ""), (f.get("links") or {}).get("self")
        if not (isinstance(checksum, str) and checksum.startswith("md5:") and url):
            raise FetchError("record checksum", f"{key}: the record gives no md5 checksum or download link")
        try:
            path = pooch.retrieve(url, known_hash=checksum, fname=key, path=into, progressbar=progress,
                                  downloader=pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_S))
        except ValueError as exc:
            if "hash" in str(exc).lower():
                raise FetchError("record checksum", f"{key}: its MD5 does not match the record's {checksum} "
                                 "(corrupted on the way or altered); try again, or tell the record's owner") from None
            raise
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
            raise FetchError("download", f"{key}: truncated download, the connection ended early ({exc.__class__.__name__}); "
                             "try again") from None
        except requests.HTTPError as exc:
            raise FetchError("download", f"{key}: {url}: HTTP {exc.response.status_code}") from None
        out.append(Path(path))
    return out[0], (out[1] if len(out) > 1 else None)


def _check_sha256_file(bundle: Path, sha_file: Path | None) -> str:
    digest = sha256_of_file(bundle)
    if sha_file is not None:
        expected = sha_file.read_text().split()[0] if sha_file.read_text().split() else ""
        if expected != digest:
            raise FetchError("bundle SHA-256", f"{bundle.name} hashes to {digest}, its .sha256 says {expected or 'nothing'}")
    return digest


def unpack_safely(bundle: Path, dest: Path) -> Path:
    """Unpack regular files only, member by member, into ``dest``; return the bundle's top folder.

    Refuses an absolute name, a ``..`` component, a name outside one top folder, and every member that is
    not a regular file or folder (symbolic and hard links, devices, FIFOs): the archive could otherwise
    write outside ``dest`` or make a later write do so. Nothing is extracted by tarfile itself."""
    top = None
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            for m in tar:
                name = m.name
                parts = Path(name).parts
                if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
                    raise FetchError("unsafe archive", f"{bundle.name}: member {name!r} has an absolute path")
                if ".." in parts or "\\" in name:
                    raise FetchError("unsafe archive", f"{bundle.name}: member {name!r} leaves its folder (..)")
                if not (m.isreg() or m.isdir()):
                    kind = ("symbolic link" if m.issym() else "hard link" if m.islnk() else
                            "device" if (m.ischr() or m.isblk()) else "FIFO" if m.isfifo() else "special file")
                    raise FetchError("unsafe archive", f"{bundle.name}: member {name!r} is a {kind}; a data bundle "
                                     "holds regular files only")
                if top is None:
                    top = parts[0]
                if parts[0] != top or (m.isreg() and len(parts) < 2):
                    raise FetchError("unsafe archive", f"{bundle.name}: member {name!r} is outside the top folder {top!r}")
                target = dest.joinpath(*parts)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                with target.open("xb") as fh:
                    shutil.copyfileobj(src, fh, 1 << 20)
                target.chmod(0o644)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, FileExistsError):
            raise FetchError("unsafe archive", f"{bundle.name}: a member appears twice ({exc.filename})") from None
        raise FetchError("archive", f"{bundle.name}: not a readable tar.gz ({exc}); truncated or damaged") from None
    if top is None:
        raise FetchError("archive", f"{bundle.name}: empty archive")
    return dest / top


def _check_sums(top: Path) -> dict[str, Path]:
    """SHA256SUMS must list every other file exactly; returns member name -> unpacked path."""
    sums_path = top / "SHA256SUMS"
    if not sums_path.is_file():
        raise FetchError("SHA256SUMS", f"{top.name}/SHA256SUMS is missing")
    listed = {}
    for i, line in enumerate(sums_path.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise FetchError("SHA256SUMS", f"line {i} is not '<sha256>  <file>'")
        listed[name] = digest
    present = {p.relative_to(top).as_posix(): p for p in top.rglob("*") if p.is_file()}
    present.pop("SHA256SUMS")
    for name in sorted(set(listed) | set(present)):
        if name not in present:
            raise FetchError("SHA256SUMS", f"{name} is listed but not in the bundle")
        if name not in listed:
            raise FetchError("SHA256SUMS", f"{name} is in the bundle but not listed")
        if sha256_of_file(present[name]) != listed[name]:
            raise FetchError("SHA256SUMS", f"{name} does not match its SHA-256 (altered)")
    return present


def fetch(doi: str, *, api: str | None = None, data_dir: Path | None = None, raw: Path | None = None,
          progress: bool = True) -> Fetched:
    """Fetch, verify and install the data bundle of ``doi`` (see the module docstring)."""
    api = (api or records_api(doi)).rstrip("/")
    data_dir = Path(data_dir) if data_dir else paths.data_dir()
    raw = Path(raw) if raw else paths.raw_dir()
    try:
        manifest = load_manifest(data_dir / "manifest.json")
    except DataConfigError as exc:
        raise SettingError(str(exc)) from None
    doi, rec_id = parse_doi(doi)
    record = resolve(doi, api)
    data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".doi-fetch-", dir=data_dir))
    try:
        bundle, sha_file = _download(record, work / "download", progress)
        digest = _check_sha256_file(bundle, sha_file)
        top = unpack_safely(bundle, work / "unpacked")
        members = _check_sums(top)
        by_key = {f.key: f for f in manifest.files}
        raw_files, run_files = {}, {}
        for name, path in members.items():
            if name.startswith("raw/"):
                key = name[len("raw/"):]
                f = by_key.get(key)
                if f is None:
                    raise FetchError("git blob id", f"{name} is not a file of {data_dir / 'manifest.json'} (a bundle of "
                                     "other data, or of a newer manifest: update pullstudy)")
                if git_blob_id_of_file(path) != f.git_blob:
                    raise FetchError("git blob id", f"{name} does not hash to its git blob id {f.git_blob} (not the "
                                     "upstream file)")
                raw_files[key] = path
            elif name.startswith("runs/"):
                run_files[name[len("runs/"):]] = path
        if not raw_files:
            raise FetchError("git blob id", "the bundle holds no raw/ data file")
        runs_dir = data_dir / "runs"
        run_names = sorted({n.split("/", 1)[0] for n in run_files})
        for run in run_names:
            if (runs_dir / run).exists():
                raise FetchError("install", f"{runs_dir / run} exists: remove or rename it to take the bundle's run")
        # every check passed: move into place (same file system: each file appears whole)
        for key, path in sorted(raw_files.items()):
            dest = raw / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
        for run in run_names:
            runs_dir.mkdir(parents=True, exist_ok=True)
            os.replace(top / "runs" / run, runs_dir / run)
        report = FetchReport(total=len(manifest.files))
        for f in manifest.files:
            if f.key in raw_files:
                report.status[f.key] = "downloaded"
            elif (raw / f.source / f.path).is_file() and git_blob_id_of_file(raw / f.source / f.path) == f.git_blob:
                report.status[f.key] = "verified"
            else:
                report.status[f.key] = "unavailable"
                report.detail[f.key] = f"not in the data bundle of doi:{doi}"
        doc = report.to_json() | {"source": {"doi": doi, "record": rec_id, "bundle": bundle.name, "sha256": digest}}
        part = raw / (FETCH_REPORT + ".part")
        part.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(part, raw / FETCH_REPORT)
        return Fetched(doi, rec_id, bundle.name, digest, len(raw_files), run_names)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------- deposit

class _Client:
    """Zenodo REST calls with the token in the Authorization header only, 429/5xx retried with a bound."""

    def __init__(self, api: str, token: str, log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep):
        self.api, self._token, self.log, self.sleep = api, token, log, sleep
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<ZENODO_TOKEN>") if self._token else text

    def call(self, step: str, method: str, url: str, **kw) -> dict:
        for attempt in range(RETRIES + 1):
            try:
                r = self.session.request(method, url, timeout=TIMEOUT_S, **kw)
            except requests.RequestException as exc:
                raise DepositError(self._redact(f"{step}: {method} {url}: {exc.__class__.__name__}")) from None
            if r.status_code == 429 or r.status_code >= 500:
                if attempt == RETRIES:
                    raise DepositError(f"{step}: HTTP {r.status_code} after {RETRIES} retries; try again later")
                wait = min(BACKOFF_CAP_S, BACKOFF_S * 2 ** attempt)
                retry_after = r.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = min(BACKOFF_CAP_S, float(retry_after))
                self.log(f"deposit: {step}: HTTP {r.status_code}, retry {attempt + 1} of {RETRIES} in {wait:g} s")
                if "data" in kw and hasattr(kw["data"], "seek"):
                    kw["data"].seek(0)
                self.sleep(wait)
                continue
            if r.status_code >= 400:
                detail = self._redact(r.text[:300].replace("\n", " "))
                hint = f" (check {TOKEN_ENV})" if r.status_code in (401, 403) else ""
                raise DepositError(f"{step}: HTTP {r.status_code}{hint}: {detail}")
            return r.json() if r.content else {}
        raise AssertionError("unreachable")


def deposit_metadata(bundle: Path, paper_doi: str | None = None, data_dir: Path | None = None) -> dict:
    """data/zenodo-deposit.json for this bundle: its version, and isSupplementTo the paper when given."""
    data_dir = Path(data_dir) if data_dir else paths.data_dir()
    meta = json.loads((data_dir / "zenodo-deposit.json").read_text())["metadata"]
    m = re.fullmatch(r"pullstudy-data-(.+)\.tar\.gz", bundle.name)
    if not m:
        raise SettingError(f"{bundle}: not a bundle of `make archive` (pullstudy-data-<version>.tar.gz)")
    meta["version"] = m.group(1)
    if paper_doi:
        meta["related_identifiers"] = meta["related_identifiers"] + [
            {"identifier": paper_doi, "relation": "isSupplementTo", "scheme": "doi", "resource_type": "publication"}]
    meta["prereserve_doi"] = True
    return meta


README_BEGIN, README_END = "<!-- data-doi: written by make deposit -->", "<!-- /data-doi -->"
CFF_BEGIN, CFF_END = "  # data-doi: written by make deposit", "  # /data-doi"


def write_doi(doi: str, version: str, readme: Path, citation: Path) -> None:
    """Put the reserved DOI into data/README.md and CITATION.cff (replacing an earlier one)."""
    block = (f"{README_BEGIN}\n## This data bundle\n\nThe bundle `pullstudy-data-{version}.tar.gz` is deposited "
             f"as doi:[{doi}](https://doi.org/{doi}); fetch and verify it with `make data DOI={doi}`.\n{README_END}")
    text = readme.read_text()
    if README_BEGIN in text:
        text = re.sub(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)
    entry = (f"{CFF_BEGIN}\n  - type: data\n    title: \"pullstudy data bundle {version}\"\n    authors:\n"
             f"      - name: \"The pullstudy authors\"\n    doi: {doi}\n    version: \"{version}\"\n"
             f"    license: MIT\n{CFF_END}")
    cff = citation.read_text()
    if CFF_BEGIN in cff:
        cff = re.sub(re.escape(CFF_BEGIN) + r".*?" + re.escape(CFF_END), lambda _: entry, cff, flags=re.S)
    elif re.search(r"^references:\s*$", cff, flags=re.M):
        cff = re.sub(r"^references:\s*$", lambda _: "references:\n" + entry, cff, count=1, flags=re.M)
    else:
        cff = cff.rstrip("\n") + "\nreferences:\n" + entry + "\n"
    citation.write_text(cff)


def deposit(bundle: Path, *, api: str | None = None, token: str | None = None, publish: bool = False,
            paper_doi: str | None = None, data_dir: Path | None = None, citation: Path | None = None,
            log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Create a draft, upload, set metadata, reserve the DOI, write it down; publish only if asked.
    Returns {id, doi, html, published} (never the token)."""
    api = (api or api_base(SANDBOX_API)).rstrip("/")
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if not token:
        raise SettingError(f"{TOKEN_ENV} is not set: create a token with the deposit:write scope on "
                           f"{api.removesuffix('/api')}/account/settings/applications/ and export {TOKEN_ENV}")
    bundle = Path(bundle)
    if not bundle.is_file():
        raise SettingError(f"{bundle}: not found; run `make archive` first")
    data_dir = Path(data_dir) if data_dir else paths.data_dir()
    citation = Path(citation) if citation else paths.PROJECT_ROOT / "CITATION.cff"
    meta = deposit_metadata(bundle, paper_doi, data_dir)
    client = _Client(api, token, log, sleep)
    log(f"deposit: creating a draft on {api}")
    draft = client.call("create draft", "POST", f"{api}/deposit/depositions", json={})
    dep_id, links = draft["id"], draft["links"]
    log(f"deposit: uploading {bundle.name} ({bundle.stat().st_size} bytes) to draft {dep_id}")
    with bundle.open("rb") as fh:
        up = client.call("upload", "PUT", f"{links['bucket']}/{bundle.name}", data=fh,
                         headers={"Content-Type": "application/octet-stream"})
    md5 = hashlib.md5(bundle.read_bytes()).hexdigest()
    if up.get("checksum") not in (f"md5:{md5}", md5):
        raise DepositError(f"upload: the server stored {up.get('checksum')!r}, the bundle is md5:{md5}; run again")
    updated = client.call("set metadata", "PUT", f"{api}/deposit/depositions/{dep_id}", json={"metadata": meta})
    reserved = (updated.get("metadata", {}).get("prereserve_doi") or draft.get("metadata", {}).get("prereserve_doi") or {})
    doi = reserved.get("doi")
    if not doi:
        raise DepositError("reserve DOI: the server returned no pre-reserved DOI")
    write_doi(doi, meta["version"], data_dir / "README.md", citation)
    log(f"deposit: reserved doi:{doi}; written into {data_dir / 'README.md'} and {citation} (commit them)")
    published = False
    if publish:
        client.call("publish", "POST", links.get("publish") or f"{api}/deposit/depositions/{dep_id}/actions/publish")
        published = True
        log(f"deposit: published doi:{doi}")
    else:
        log(f"deposit: draft {dep_id} kept unpublished; review it at {links.get('html', api)}, then "
            "`make deposit PUBLISH=1` or publish it there")
    return {"id": dep_id, "doi": doi, "html": links.get("html"), "published": published}


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pullstudy.data.zenodo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="fetch and verify the data bundle of a DOI into data/raw")
    p_fetch.add_argument("doi", nargs="?", default=os.environ.get(DOI_ENV), help=f"the DOI (default: ${DOI_ENV})")
    p_fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    p_dep = sub.add_parser("deposit", help="deposit a bundle as a Zenodo draft (sandbox by default)")
    p_dep.add_argument("bundle", nargs="?", default=None,
                       help="the bundle (default: dist/pullstudy-data-<package version>.tar.gz, from `make archive`)")
    p_dep.add_argument("--citation", default=None, help="the CITATION.cff to write the DOI into (default: the project's)")
    p_dep.add_argument("--publish", action="store_true", help="publish the draft (cannot be undone)")
    p_dep.add_argument("--paper-doi", default=None, help="the paper this data supplements")
    for p in (p_fetch, p_dep):
        p.add_argument("--api", default=None, help=f"API base URL (default: ${API_ENV}, else "
                       f"{ZENODO_API} to fetch, {SANDBOX_API} to deposit)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.getLogger("pooch").setLevel(logging.WARNING)
    try:
        if args.command == "fetch":
            if not args.doi:
                raise SettingError(f"no DOI: pass DOI=10.5281/zenodo.<record id> or set {DOI_ENV}")
            got = fetch(args.doi, api=args.api, progress=not args.quiet)
            print(f"data: doi:{got.doi} (record {got.record}): {got.bundle} sha256 {got.sha256}; {got.files} files "
                  f"verified (record MD5, SHA256SUMS, git blob ids) and installed in data/raw"
                  + (f"; runs {', '.join(got.runs)} in data/runs" if got.runs else ""))
            return 0
        target = Path(args.bundle) if args.bundle else paths.PROJECT_ROOT / "dist" / f"pullstudy-data-{default_version()}.tar.gz"
        done = deposit(target, api=args.api, publish=args.publish, paper_doi=args.paper_doi, citation=args.citation)
        print(f"deposit: draft {done['id']}, doi:{done['doi']}" + (" (published)" if done["published"] else " (draft)"))
        return 0
    except SettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FetchError, DepositError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted; data/ was left unchanged, run it again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Helpers of the citable-data tests: a small data folder made of real upstream files.

The tests of make archive, fetch by DOI and deposit run on a subset of the real manifest (one app run of
pulling-test: its events, node list and Flux app logs, whose CURVE certificate the allow-list covers), so a
bundle is built in well under a second and is still made of the real files under their real paths.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pullstudy import paths
from pullstudy.data.fetch import FETCH_REPORT

SUBSET = "experiments/pulling-test/metadata/streaming/4/"


def small_data(root: Path, raw_src: Path | None = None) -> tuple[Path, Path]:
    """(data dir, raw dir) under ``root``: the real manifest restricted to SUBSET, its files copied from
    the real data/raw, the real catalog, README and the allow-list entries of those files."""
    raw_src = Path(raw_src) if raw_src else paths.raw_dir()
    data = root / "data"
    raw = data / "raw"
    raw.mkdir(parents=True)
    manifest = json.loads((paths.PROJECT_ROOT / "data" / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["source"] == "container-chonks" and f["path"].startswith(SUBSET)]
    assert manifest["files"], "the real manifest no longer has the subset the tests use"
    status = {}
    for f in manifest["files"]:
        src = raw_src / f["source"] / f["path"]
        if not src.is_file():
            raise FileNotFoundError(f"{src}: needed by the citable-data tests; run `make data`")
        dest = raw / f["source"] / f["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        status[f"{f['source']}/{f['path']}"] = "verified"
    (data / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (raw / FETCH_REPORT).write_text(json.dumps({"complete": True, "stopped": None, "status": status,
                                                 "detail": {}, "quarantined": {}}))
    for name in ("catalog.json", "README.md"):
        shutil.copyfile(paths.PROJECT_ROOT / "data" / name, data / name)
    allow = json.loads((paths.PROJECT_ROOT / "data" / "secret-allowlist.json").read_text())
    allow["allowed"] = [e for e in allow["allowed"] if SUBSET in e["file"]]
    (data / "secret-allowlist.json").write_text(json.dumps(allow, indent=1))
    return data, raw


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its content, to show a folder was left exactly as it was."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}

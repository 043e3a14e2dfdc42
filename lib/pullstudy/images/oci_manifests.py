"""Image manifests and configs as the upstream stored them, read into tidy layer tables.

One folder per container set; below it ``<registry>/<org>/<name>/manifests-config-layers.json``
holds ``{"manifests": {tag: manifest}, "configs": {tag: config}, "tags": [...]}``. Archived sets
and sets fetched fresh by :mod:`pullstudy.images.oci` share this layout, so one reader serves both.

A file that is not valid JSON, lacks its manifests, or holds a tag without a usable image manifest
or config is reported (path and reason) and left out; the other images are still read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

LAYOUT_FILE = "manifests-config-layers.json"
INDEX_TYPES = {
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
}
LAYER_COLUMNS = ["set", "uri", "tag", "image", "position", "digest", "size", "media_type"]
HISTORY_COLUMNS = ["set", "image", "position", "created_by", "content_digest", "empty_layer"]


@dataclass
class ImageSet:
    """The layers and build history of every image of a set, and what could not be read."""

    name: str
    layers: pd.DataFrame
    history: pd.DataFrame
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file or image, reason)

    @property
    def images(self) -> list[str]:
        return list(dict.fromkeys(self.layers["image"]))


def normalize_created_by(command: str) -> str:
    """A build step with white space removed and lower-cased, so identical steps match across builds."""
    return "".join(command.split()).lower()


def content_digest(command: str) -> str:
    return hashlib.sha256(normalize_created_by(command).encode()).hexdigest()


def _image_rows(set_name: str, uri: str, doc: dict, path: Path, problems: list) -> tuple[list, list]:
    layers, history = [], []
    manifests, configs = doc.get("manifests"), doc.get("configs") or {}
    if not isinstance(manifests, dict) or not manifests:
        problems.append((str(path), "no manifests in the file"))
        return layers, history
    for tag, manifest in manifests.items():
        image = f"{uri}:{tag}"
        if not isinstance(manifest, dict) or manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            problems.append((image, "an image index, not an image manifest (no platform was chosen)"))
            continue
        if manifest.get("schemaVersion") != 2 or not isinstance(manifest.get("layers"), list):
            problems.append((image, f"not a schema 2 image manifest (schemaVersion {manifest.get('schemaVersion')})"))
            continue
        bad = [i for i, layer in enumerate(manifest["layers"]) if not {"digest", "size"} <= set(layer or {})]
        if bad:
            problems.append((image, f"layer entries {bad} lack digest or size"))
            continue
        for i, layer in enumerate(manifest["layers"]):
            layers.append((set_name, uri, tag, image, i, layer["digest"], int(layer["size"]), layer.get("mediaType")))
        config = configs.get(tag)
        if not isinstance(config, dict) or not isinstance(config.get("history"), list):
            problems.append((image, "no config history: left out of the content similarity"))
            continue
        for i, step in enumerate(config["history"]):
            if "created_by" in step:
                history.append((set_name, image, i, step["created_by"], content_digest(step["created_by"]),
                                bool(step.get("empty_layer", False))))
    return layers, history


def read_set(folder: str | Path, name: str | None = None) -> ImageSet:
    """Every image below ``folder``; its uri is the file's folder relative to ``folder``."""
    folder = Path(folder)
    name = name or folder.name
    if not folder.is_dir():
        raise FileNotFoundError(f"container set folder {folder} does not exist (run `make data`?)")
    layers, history, problems = [], [], []
    for path in sorted(folder.rglob(LAYOUT_FILE)):
        uri = path.parent.relative_to(folder).as_posix()
        try:
            doc = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append((str(path), f"not valid JSON ({exc})"))
            continue
        if not isinstance(doc, dict):
            problems.append((str(path), "not a JSON object"))
            continue
        rows, steps = _image_rows(name, uri, doc, path, problems)
        layers += rows
        history += steps
    return ImageSet(name, pd.DataFrame(layers, columns=LAYER_COLUMNS),
                    pd.DataFrame(history, columns=HISTORY_COLUMNS), problems)


def write_image(folder: str | Path, uri: str, tag: str, manifest: dict, config: dict | None) -> Path:
    """Add one image's manifest and config to ``<folder>/<uri>/manifests-config-layers.json`` atomically."""
    path = Path(folder) / uri / LAYOUT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(path.read_text()) if path.is_file() else {"manifests": {}, "configs": {}, "tags": []}
    doc["manifests"][tag] = manifest
    if config is not None:
        doc["configs"][tag] = config
    if tag not in doc["tags"]:
        doc["tags"].append(tag)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{LAYOUT_FILE}.", suffix=".part")
    with os.fdopen(fd, "w") as out:
        json.dump(doc, out, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return path

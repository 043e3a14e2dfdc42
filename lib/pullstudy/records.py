"""The pull record: its schema, its types, the upstream image tag format and the image keys.

Every source of pull records (the archived kubelet events, a grid measured on this machine, later a
live cluster) ends in this one table, one row per image pull on one node, and every analysis reads
it. Owning the schema here, rather than in the kubelet-event parser, lets a backend produce records
without importing a parser, and keeps the tag format (``9-layers-size-1176249324-bytes``) in one
place: :func:`image_tag` writes it, :func:`decode_tag` reads it, and :func:`image_key` says when two
runs pulled "the same image" whatever registry served it.
"""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd

RECORD_COLUMNS = [
    "study", "run", "condition", "backend", "cluster_nodes", "node", "image", "tag", "layers", "size_bytes",
    "content", "image_size_reported", "pull_s", "pull_wait_s", "cache_hit", "pulling_at", "pulled_at",
    "started_at", "source",
    # Extensions of the design's schema: which pod, when it was scheduled, whether the image is one the
    # experiment set out to pull (rather than a system pod's).
    "pod", "scheduled_at", "study_image",
]
TIME_COLUMNS = ["pulling_at", "pulled_at", "started_at", "scheduled_at"]
INT_COLUMNS = ["layers", "size_bytes", "image_size_reported", "cluster_nodes"]
FLOAT_COLUMNS = ["pull_s", "pull_wait_s"]
BOOL_COLUMNS = ["cache_hit", "study_image"]
STRING_COLUMNS = [c for c in RECORD_COLUMNS
                  if c not in set(TIME_COLUMNS) | set(INT_COLUMNS) | set(FLOAT_COLUMNS) | set(BOOL_COLUMNS)]

GB = 1e9
TIME_UNIT = "us"  # RFC 3339 timestamps in the events carry at most microseconds
_TAG_FORMAT = re.compile(r"^(?P<layers>\d+)-layers-size-(?P<size>\d+)-bytes$")


def typed_records(df: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column whatever the input, so frames from any source concatenate cleanly."""
    df = df.copy()
    for col in INT_COLUMNS:
        df[col] = pd.array(df[col].tolist(), dtype="Int64") if len(df) else df[col].astype("Int64")
    for col in FLOAT_COLUMNS:
        df[col] = df[col].astype("float64")
    for col in BOOL_COLUMNS:
        df[col] = df[col].astype("bool")
    for col in TIME_COLUMNS:  # one unit too: an all-empty column would otherwise come out in seconds
        df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601").dt.as_unit(TIME_UNIT)
    for col in STRING_COLUMNS:
        df[col] = df[col].astype("string")
    return df[RECORD_COLUMNS]


def empty_records() -> pd.DataFrame:
    return typed_records(pd.DataFrame(columns=RECORD_COLUMNS))


def image_tag(layers: int, size_bytes: int) -> str:
    """The upstream tag format, ``9-layers-size-1176249324-bytes`` (read back by :func:`decode_tag`)."""
    return f"{layers}-layers-size-{size_bytes}-bytes"


def decode_tag(tag: str | None) -> tuple[int | None, int | None]:
    """Layers and uncompressed bytes from the upstream tag format, or (None, None) for any other tag."""
    m = _TAG_FORMAT.match(tag or "")
    return (int(m["layers"]), int(m["size"])) if m else (None, None)


def split_image(ref: str) -> tuple[str, str | None]:
    """(repository, tag) of an image reference; the tag is None for digest-only references."""
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, None


def _key(repo: str, tag) -> str:
    """The tag for a synthetic image, else ``<repository name>:<tag>`` (``name:`` when untagged)."""
    tag = None if tag is None or pd.isna(tag) else str(tag)
    return tag if tag is not None and "-layers-size-" in tag else f"{repo.rsplit('/', 1)[-1]}:{tag or ''}"


def ref_key(ref: str) -> str:
    """The image key (see :func:`image_key`) of one image reference."""
    return _key(*split_image(ref))


def image_key(records: pd.DataFrame) -> pd.Series:
    """What makes two runs' images "the same image" whatever registry served them.

    Synthetic images are named by their tag (``9-layers-size-…-bytes``) and live in differently
    named repositories per registry; application images are known by repository name and tag.
    """
    return pd.Series([_key(split_image(i)[0], t) for i, t in zip(records["image"], records["tag"])],
                     index=records.index,
                     dtype="string")


def analysable_pulls(records: pd.DataFrame, time: str = "pull_wait_s", *,
                     require_size: bool = True) -> tuple[pd.DataFrame, Counter]:
    """The experiment's own image pulls with a timing figure, and a count of what was left out and why."""
    excluded: Counter = Counter()
    is_study = records["study_image"].astype(bool)
    excluded["not one of the study's images (system pods)"] = int((~is_study).sum())
    df = records[is_study]
    excluded["cache hit (image already present on the node)"] = int(df["cache_hit"].sum())
    df = df[~df["cache_hit"]]
    no_time = df[time].isna()
    excluded[f"no {time} figure in the kubelet message"] = int(no_time.sum())
    df = df[~no_time]
    if require_size:
        no_size = df["size_bytes"].isna()
        excluded["image tag does not encode layers and size"] = int(no_size.sum())
        df = df[~no_size]
    df = df.copy()
    df["size_gb"] = df["size_bytes"].astype("Float64") / GB
    df["image_key"] = image_key(df)
    return df.reset_index(drop=True), Counter({k: v for k, v in excluded.items() if v})

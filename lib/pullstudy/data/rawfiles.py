"""Reading raw text files as archived: plain or gzip (by magic bytes), and never binary."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path


def read_raw_bytes(path: str | Path, what: str, error: type[Exception]) -> bytes:
    """The file's content, decompressed if it is gzip; ``error`` names the file when it is not ``what``.

    The name is not trusted: a ``.json`` may be gzip and a ``.gz`` may be truncated, so the content decides.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise error(f"{path}: broken or truncated gzip stream ({exc}); fetch it again with `make data`") from None
    if b"\0" in raw:
        raise error(f"{path}: binary content (NUL bytes), not {what}")
    return raw

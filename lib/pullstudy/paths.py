"""Where the project's folders are, so notebooks run from any working directory."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The data folder (catalog, manifest); ``PULLSTUDY_DATA_DIR`` overrides it for tests."""
    return Path(os.environ.get("PULLSTUDY_DATA_DIR", PROJECT_ROOT / "data"))


def raw_dir() -> Path:
    """Where ``make data`` puts verified upstream files, under their upstream paths."""
    return Path(os.environ.get("PULLSTUDY_RAW_DIR", data_dir() / "raw"))


def quarantine_dir(raw: Path | None = None) -> Path:
    """Where ``make data`` moves files of data/raw that fail verification: beside data/raw, out of the
    notebooks' reach (``data/quarantine/<source>/<path>`` for the default data/raw)."""
    raw = Path(raw) if raw is not None else raw_dir()
    return Path(os.environ.get("PULLSTUDY_QUARANTINE_DIR", raw.parent / "quarantine"))


def results_dir() -> Path:
    return Path(os.environ.get("PULLSTUDY_RESULTS_DIR", PROJECT_ROOT / "results"))


def notebooks_dir() -> Path:
    return PROJECT_ROOT / "notebooks"

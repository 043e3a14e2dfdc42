import os
from pathlib import Path

import pytest

from pullstudy.paths import raw_dir

RUN1_4 = "container-chonks/experiments/pulling/metadata/run1/4/events-size-4-1731219229.json"


@pytest.fixture(scope="session")
def raw() -> Path:
    """data/raw as filled by `make data` (make test runs it first); its absence is an error, not a skip."""
    path = raw_dir()
    if not (path / RUN1_4).is_file():
        pytest.fail(f"archived data not found under {path}: run `make data` "
                    f"(with PULLSTUDY_DATA_MIRROR={os.environ.get('PULLSTUDY_DATA_MIRROR', '<unset>')})")
    return path


@pytest.fixture(scope="session")
def run1_4_lines(raw) -> list[str]:
    return (raw / RUN1_4).read_text().splitlines()

"""Shared fixtures, and the Debian packages some tests need.

Some tests start real services (the CNCF registry, containerd, network namespaces, the stargz
snapshotter). `make test` installs their Debian packages when it runs as root with apt (`make system`);
elsewhere each test that needs a missing package is skipped with the install command as its reason,
and one line at the end of the run counts them. With ``PULLSTUDY_REQUIRE_SYSTEM=1`` (set by .ci/run)
such a test fails instead: in CI a missing package must not silently drop coverage.

What a test needs: the packages named by its closest ``@pytest.mark.system(...)`` (none for
``system()``); a ``registry`` or ``local`` test without one needs its category's (CATEGORY_NEEDS).
"""

import os
import shutil
from pathlib import Path

import pytest

from pullstudy.paths import raw_dir

RUN1_4 = "container-chonks/experiments/pulling/metadata/run1/4/events-size-4-1731219229.json"

# Debian package -> what shows it is installed: commands on PATH, or (starting with "/") a path.
# The Makefile's `system` target installs the same list (a test checks they agree).
SYSTEM_PACKAGES = {
    "docker-registry": ("docker-registry",),
    "containerd": ("containerd", "ctr"),
    "iproute2": ("ip", "tc"),
    "openssl": ("openssl",),
    "golang-go": ("go",),
    "golang-github-containerd-stargz-snapshotter-dev": ("/usr/share/gocode/src/github.com/containerd/stargz-snapshotter",),
    "stargz-snapshotter": ("ctr-remote",),
    "chromium": ("chromium",),  # the offline report's browser test (tests/test_report_browser.py)
    "mmdebstrap": ("mmdebstrap",),  # root filesystems of the application images (pullstudy.images.rootfs)
}
CATEGORY_NEEDS = {"registry": ("docker-registry",), "local": ("docker-registry", "containerd", "iproute2")}
LAZY_PACKAGES = ("golang-go", "golang-github-containerd-stargz-snapshotter-dev", "stargz-snapshotter")
REQUIRE_ENV = "PULLSTUDY_REQUIRE_SYSTEM"
SKIP_PREFIX = "needs the Debian packages"
_missing_by_test = pytest.StashKey[dict]()


def missing_packages(packages, path: str | None = None) -> list[str]:
    """The packages of ``packages`` not installed here; ``path`` replaces $PATH (tests fake it)."""
    def present(probe: str) -> bool:
        return os.path.exists(probe) if probe.startswith("/") else shutil.which(probe, path=path) is not None
    return [p for p in packages if not all(present(probe) for probe in SYSTEM_PACKAGES[p])]


def install_command(packages) -> str:
    return f"apt-get install {' '.join(packages)}"


def needs_of(item: pytest.Item) -> tuple[str, ...]:
    """The Debian packages a test needs: its closest system marker, else its category's."""
    marker = item.get_closest_marker("system")
    if marker is not None:
        needs = tuple(marker.args)
    else:
        needs = tuple(dict.fromkeys(p for cat, pkgs in CATEGORY_NEEDS.items() if item.get_closest_marker(cat)
                                    for p in pkgs))
    unknown = sorted(set(needs) - set(SYSTEM_PACKAGES))
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: system marker names unknown packages {unknown}; "
                                f"known: {sorted(SYSTEM_PACKAGES)}")
    return needs


def skip_reason(missing) -> str:
    return (f"{SKIP_PREFIX} {', '.join(missing)}: install them with `{install_command(missing)}` "
            "(as root, `make system` does)")


def require_system(missing, env=None) -> None:
    """Skip for the missing packages, or fail when the environment requires them (CI)."""
    if not missing:
        return
    env = os.environ if env is None else env
    if env.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{skip_reason(missing)}; {REQUIRE_ENV}=1 forbids skipping this test", pytrace=False)
    pytest.skip(skip_reason(missing))


def pytest_configure(config):
    config.stash[_missing_by_test] = {}


def pytest_collection_modifyitems(config, items):
    for item in items:  # a misspelt package name stops the run at once, not one test at a time
        if needs_of(item):  # `make test-fast` leaves these out: -m "not needs_packages"
            item.add_marker("needs_packages")


@pytest.hookimpl(tryfirst=True)  # before skipif marks, so a missing package is named (and fails in CI)
def pytest_runtest_setup(item):
    missing = missing_packages(needs_of(item))
    if missing:
        item.config.stash[_missing_by_test][item.nodeid] = missing
    require_system(missing)


def pytest_unconfigure(config):
    """The run's last line: how many tests a missing package skipped, and the command that installs them."""
    terminalreporter = config.pluginmanager.get_plugin("terminalreporter")
    if terminalreporter is None:
        return
    by_test = config.stash.get(_missing_by_test, {})
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.nodeid in by_test]
    if skipped:
        packages = list(dict.fromkeys(p for r in skipped for p in by_test[r.nodeid]))
        terminalreporter.write_line(
            f"{len(skipped)} tests skipped for missing system packages ({', '.join(packages)}): "
            f"install them with `sudo {install_command(packages)}` or `sudo make system`, then `make test`",
            yellow=True, bold=True)


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

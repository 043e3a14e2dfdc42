"""The tests that need Debian packages: skipped with the install command, counted, failed in CI.

The conftest logic runs here on a fake PATH (an empty folder, or one with stand-in commands): the
packages stay installed on the machine, their absence is what PATH shows.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import conftest
from pullstudy.paths import PROJECT_ROOT

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.system()  # needs none: it fakes their absence


def _fake_path(tmp_path: Path, *commands: str) -> str:
    """A PATH holding only stand-ins for ``commands``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in commands:
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def test_missing_packages_follow_path(tmp_path):
    empty = _fake_path(tmp_path)
    assert conftest.missing_packages(["docker-registry", "containerd"], path=empty) == ["docker-registry", "containerd"]
    half = _fake_path(tmp_path, "docker-registry", "containerd")  # ctr (also containerd's) still missing
    assert conftest.missing_packages(["docker-registry", "containerd"], path=half) == ["containerd"]
    full = _fake_path(tmp_path, "ctr")
    assert conftest.missing_packages(["docker-registry", "containerd"], path=full) == []


def test_a_path_probe_is_a_file_check(tmp_path, monkeypatch):
    monkeypatch.setitem(conftest.SYSTEM_PACKAGES, "golang-github-containerd-stargz-snapshotter-dev",
                        (str(tmp_path / "gocode"),))
    lib = ["golang-github-containerd-stargz-snapshotter-dev"]
    assert conftest.missing_packages(lib) == lib
    (tmp_path / "gocode").mkdir()
    assert conftest.missing_packages(lib) == []


def test_missing_skips_with_the_command_or_fails_when_required():
    with pytest.raises(pytest.skip.Exception, match=r"`apt-get install docker-registry openssl`"):
        conftest.require_system(["docker-registry", "openssl"], env={})
    with pytest.raises(pytest.fail.Exception, match=r"`apt-get install openssl`.*PULLSTUDY_REQUIRE_SYSTEM=1 forbids skipping"):
        conftest.require_system(["openssl"], env={"PULLSTUDY_REQUIRE_SYSTEM": "1"})
    conftest.require_system([], env={"PULLSTUDY_REQUIRE_SYSTEM": "1"})  # nothing missing: runs


INNER = """
import pytest

pytestmark = pytest.mark.registry

def test_uses_the_registry():
    pass

@pytest.mark.system("docker-registry", "containerd")
def test_uses_containerd_too():
    pass

@pytest.mark.system()
def test_needs_nothing():
    pass

@pytest.mark.local
@pytest.mark.system("openssl")
def test_closest_marker_wins():
    pass
"""


@pytest.fixture
def suite(pytester):
    """A small suite under the project's conftest and markers."""
    pytester.makeconftest((Path(conftest.__file__)).read_text())
    pytester.makepyprojecttoml((PROJECT_ROOT / "pyproject.toml").read_text())
    pytester.makepyfile(test_inner=INNER)
    return pytester


def test_missing_packages_skip_exactly_the_tests_that_need_them_and_are_counted(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_path(tmp_path, "openssl"))
    monkeypatch.delenv("PULLSTUDY_REQUIRE_SYSTEM", raising=False)
    result = suite.runpytest("-ra")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines([
        "*SKIPPED*needs the Debian packages docker-registry: install them with `apt-get install docker-registry`*",
        "*SKIPPED*needs the Debian packages docker-registry, containerd: install them with "
        "`apt-get install docker-registry containerd`*",
        "2 tests skipped for missing system packages (docker-registry, containerd): install them with "
        "`sudo apt-get install docker-registry containerd` or `sudo make system`, then `make test`",
    ])


def test_in_ci_a_missing_package_fails_the_tests_instead(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_path(tmp_path))
    monkeypatch.setenv("PULLSTUDY_REQUIRE_SYSTEM", "1")
    result = suite.runpytest()
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines(["*PULLSTUDY_REQUIRE_SYSTEM=1 forbids skipping this test*"])
    assert "skipped for missing system packages" not in result.stdout.str()


def test_nothing_missing_no_summary_line(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_path(tmp_path, "docker-registry", "containerd", "ctr", "openssl"))
    result = suite.runpytest()
    result.assert_outcomes(passed=4)
    assert "skipped for missing system packages" not in result.stdout.str()


def test_an_unknown_package_name_is_a_usage_error(pytester):
    pytester.makeconftest((Path(conftest.__file__)).read_text())
    pytester.makepyprojecttoml((PROJECT_ROOT / "pyproject.toml").read_text())
    pytester.makepyfile(test_typo='import pytest\n\n@pytest.mark.system("docker-registri")\ndef test_x():\n    pass\n')
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "test_typo.py::test_x: system marker names unknown packages ['docker-registri']" in result.stderr.str()


def test_make_system_checks_and_installs_the_same_packages():
    """`make system` (the one install step of make test, make run and .ci/run) and conftest agree."""
    recipe = subprocess.run(["make", "-n", "system"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=True).stdout
    listed = re.search(r"^SYSTEM_PACKAGES := (.*)$", (PROJECT_ROOT / "Makefile").read_text(), re.M).group(1)
    make_packages = listed.replace("$(STARGZ_LIB)", "golang-github-containerd-stargz-snapshotter-dev").split()
    assert sorted(make_packages) == sorted(conftest.SYSTEM_PACKAGES)
    for package, probes in conftest.SYSTEM_PACKAGES.items():
        assert f'need="$need {package}"' in recipe, package
        for probe in probes:
            assert re.search(rf"(command -v|test -d) {re.escape(probe)}[ ;}}]", recipe), probe
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "make system" in ci and "export PULLSTUDY_REQUIRE_SYSTEM=1" in ci
    for target in ("test", "run"):
        prerequisites = re.search(rf"^{target}: (.*)$", (PROJECT_ROOT / "Makefile").read_text(), re.M).group(1)
        assert prerequisites.split()[0] == "system", target

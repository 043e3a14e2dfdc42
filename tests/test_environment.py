"""The pins are written once (pyproject.toml); environment.yml must say the same."""

import tomllib

import yaml

from pullstudy.paths import PROJECT_ROOT


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = {}
    for req in reqs:
        assert "==" in req, f"pyproject.toml: {req!r} is not pinned with =="
        name, version = req.split("==")
        pins[name.lower()] = version
    return pins


def _environment_pins() -> tuple[dict[str, str], dict]:
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for req in pip:
        if req.startswith("-e"):
            continue
        name, version = req.split("==")
        pins[name.lower()] = version
    return pins, env


def test_environment_yml_has_exactly_the_pyproject_pins():
    env_pins, _ = _environment_pins()
    assert env_pins == _pyproject_pins()


def test_environment_yml_python_matches_requires_python():
    _, env = _environment_pins()
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert "python=3.11" in env["dependencies"]
    assert project["requires-python"].startswith(">=3.11")
    assert "-e ." in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))

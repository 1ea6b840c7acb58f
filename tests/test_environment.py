"""The environment description is consistent: pyproject pins == lock pins; environment.yml installs the same."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version
    return pins


def test_pyproject_pins_match_the_lock():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = _lock()
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    for dep in deps:
        name, version = dep.split("==")
        assert lock.get(_norm(name)) == version, f"{dep} vs lock {lock.get(_norm(name))}"
    # histomicstk is in the lock (installed with --no-deps), not in pyproject (its GDAL extra cannot install)
    assert lock["histomicstk"] == "1.4.0"
    assert not any(d.startswith("histomicstk") for d in deps)
    # torch and torchvision are a matching registry pair, not the CPU-only wheel
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.2"


def test_environment_yml_uses_the_same_lock():
    text = (REPO / "environment.yml").read_text()
    assert "python=3.11" in text
    assert "requirements.lock" in text


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "./run_tests.sh" in readme
    assert "./run_tests.sh" in ci

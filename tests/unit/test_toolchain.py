"""The toolchain targets the Lambda runtime's Python: lint, types, requires-python and the venv."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from devstack.resources import load_template

ROOT = Path(__file__).resolve().parents[2]


def test_lint_types_and_requires_python_target_the_runtime() -> None:
    runtime = load_template()["Globals"]["Function"]["Runtime"]
    assert runtime == "python3.13"
    version = runtime.removeprefix("python")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == f">={version}"
    assert project["tool"]["ruff"]["target-version"] == "py" + version.replace(".", "")
    assert project["tool"]["mypy"]["python_version"] == version
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == version  # the venv runs it too


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    return dict(pin.split("==", 1) for pin in pins if not pin.startswith("-r"))


def test_checkov_has_its_own_fully_pinned_environment_outside_the_projects_constraints() -> None:
    checkov = _pins("requirements-checkov.txt")
    assert checkov["checkov"] == "3.1.47"
    assert all(version for version in checkov.values())
    pinned = {**_pins("requirements-dev.txt"), **_pins("constraints.txt")}
    project = {name.split("[")[0].lower() for name in pinned}
    assert not {"checkov", "openai", "igraph"} & project
    assert pinned.get("networkx") != "2.6.3"  # cfn-lint still needs networkx, not at checkov's old pin
    makefile = (ROOT / "Makefile").read_text()
    assert "-r requirements-checkov.txt" in makefile and "$(CHECKOV_STAMP)" in makefile.split("\ntest:")[1]

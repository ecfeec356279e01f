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

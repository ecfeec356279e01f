"""The test suite's own layout: shared helpers live in tests/support, and the fast loop is documented."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_tests_import_helpers_only_from_tests_support() -> None:
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests."):
                where = path.relative_to(ROOT)
                assert node.module.startswith("tests.support"), f"{where} imports {node.module}"


def test_make_unit_is_documented_next_to_make_test_and_deselects_the_slow_tests() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^unit:.*\n\t(.+)$", makefile, re.M)
    assert recipe is not None
    assert "tests/unit" in recipe.group(1) and "not slow and not integration" in recipe.group(1)
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `make ")]
    names = [row.split("`")[1] for row in rows]
    assert names.index("make unit") + 1 == names.index("make test")


def test_test_modules_have_unique_names() -> None:
    # The test folders are not packages: two test files of one name cannot be collected together.
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(names) == sorted(set(names)), sorted({n for n in names if names.count(n) > 1})


@pytest.mark.slow
def test_loadgroup_keeps_a_group_on_one_worker(tmp_path: Path) -> None:
    # The suite's groups (one devstack, the process tests, one cold start per function) rely on it;
    # without tests/support/xdist_groups.py, pytest 9.2 and pytest-xdist 3.8 spread them.
    (tmp_path / "test_groups.py").write_text(
        "import os, pytest\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "@pytest.mark.xdist_group('together')\n"
        "def test_grouped(i):\n"
        "    print('RAN-ON', os.environ['PYTEST_XDIST_WORKER'])\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_free(i):\n"
        "    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plugin = ["-p", "tests.support.xdist_groups", "-p", "no:cacheprovider"]
    answer = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *plugin,
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-rA",
            "-q",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stdout[-3000:] + answer.stderr[-3000:]
    # -rA shows each passed test's output: where the grouped ones ran.
    workers = [line.split()[-1] for line in answer.stdout.splitlines() if line.startswith("RAN-ON")]
    assert len(workers) == 6 and len(set(workers)) == 1, answer.stdout[-3000:]

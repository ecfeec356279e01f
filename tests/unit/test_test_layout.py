"""The test suite's own layout: shared helpers live in tests/support, and the fast loop is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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

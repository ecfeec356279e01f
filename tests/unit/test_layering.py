"""The layer's rooms by kind import downwards only: edges -> use cases -> core -> adapters -> base.

A room may import a room of its own kind or of a kind below it, never one above: a newcomer then
finds a thing by its kind, and a change to a use case cannot break an adapter. Imports under
``if TYPE_CHECKING:`` run only for the type checker and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ucoauth

PACKAGE = Path(ucoauth.__file__).parent
KINDS = ("edges", "usecases", "core", "adapters", "base")
RANK = {kind: index for index, kind in enumerate(KINDS)}


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def upward_imports(kind: str, source: str) -> list[str]:
    """The imports of a module of ``kind`` (its ``source``) that reach a kind above it."""
    problems = []
    for line, module in _runtime_imports(ast.parse(source)):
        names = module.split(".")
        if names[0] == "ucoauth" and len(names) > 1 and RANK.get(names[1], len(KINDS)) < RANK[kind]:
            problems.append(f"{line}: {module}")
    return problems


def test_every_module_lives_in_a_room_of_its_kind() -> None:
    top = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert top == sorted(["__init__.py", *KINDS])


def test_no_room_imports_a_kind_above_its_own() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) > 1 and (problems := upward_imports(parts[0], path.read_text())):
            found["/".join(parts)] = problems
    assert found == {}


def test_the_check_sees_an_upward_import_and_not_a_type_only_one() -> None:
    source = (
        "from ucoauth.base import settings\n"
        "def f():\n    from ucoauth.usecases import tokens\n"
        "if TYPE_CHECKING:\n    from ucoauth.edges import web\n"
    )
    assert upward_imports("adapters", source) == ["3: ucoauth.usecases.tokens"]
    assert upward_imports("usecases", source) == []

"""One reset for every process-wide cache: ``ucoauth.reset()`` forgets them all, imports nothing,
and no module of the package keeps a cache the reset does not know about."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import reduce
from importlib import import_module
from pathlib import Path

import pytest

import ucoauth
from devstack.resources import LocalResources
from tests.support.fake_ultracart import FakeUltraCart
from ucoauth.adapters import aws as uc_aws
from ucoauth.adapters import services, ultracart
from ucoauth.base import settings
from ucoauth.usecases import tokens, uninstall
from ucoauth.usecases.tokens import AccessToken

PACKAGE = Path(ucoauth.__file__).parent


def _module_level_caches(source: str) -> list[str]:
    """Names of module-level locks and lru_cache'd functions: the marks of a process-wide cache."""
    found: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and "Lock()" in ast.unparse(node):
            found.append(ast.unparse(node).split("=")[0].strip())
        if isinstance(node, ast.FunctionDef) and any(
            "cache" in ast.unparse(decorator) for decorator in node.decorator_list
        ):
            found.append(node.name)
    return found


def test_every_listed_cache_names_a_callable() -> None:
    for module_name, forget in ucoauth.CACHES:
        assert callable(reduce(getattr, forget.split("."), import_module(module_name))), forget


def test_every_module_with_a_process_wide_cache_is_listed() -> None:
    listed = {module for module, _ in ucoauth.CACHES}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("ucoauth", *path.relative_to(PACKAGE).with_suffix("").parts))
        caches = _module_level_caches(path.read_text())
        assert not caches or module in listed, f"{module} keeps {caches} but ucoauth.CACHES misses it"


def test_reset_forgets_every_cache(aws: LocalResources, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given every cache filled, the package's clients built from a session of its own (not the
    # one the tests keep per process: a session given to set_session outlives a reset)
    uc_aws.set_session(None)
    for name, value in aws.function_environment("UninstallWebhookFunction").items():
        monkeypatch.setenv(name, value)
    settings.get_settings()
    services.get_services()
    uc_aws.dynamodb()
    ultracart.set_client(FakeUltraCart())  # type: ignore[arg-type]
    uninstall._webhook_verifier(services.get_services())
    tokens._cache["DEMO1"] = (2e9, AccessToken("DEMO1", "token", "Bearer", None, ""))
    assert settings.get_settings.cache_info().currsize == 1

    # When
    ucoauth.reset()

    # Then nothing is remembered
    assert settings.get_settings.cache_info().currsize == 0
    assert services._services is None
    assert uc_aws._clients == {}
    assert uc_aws._session is None
    assert ultracart._injected is None
    assert ultracart._clients == {}
    assert uninstall._verifier is None
    assert tokens._cache == {}


def test_reset_imports_nothing() -> None:
    code = (
        "import sys, ucoauth; before = set(sys.modules); ucoauth.reset(); "
        "print(sorted(set(sys.modules) - before))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert answer.stdout.strip() == "[]"


def test_a_configuration_reset_forgets_the_settings_and_services_and_keeps_the_clients(
    aws: LocalResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in aws.function_environment("TokenApiFunction").items():
        monkeypatch.setenv(name, value)
    first = services.get_services()
    client = uc_aws.dynamodb()
    assert {module for module, _ in ucoauth.CACHES} >= ucoauth.CONFIGURATION_CACHES

    ucoauth.reset(configuration_only=True)

    assert settings.get_settings.cache_info().currsize == 0
    assert services._services is None
    assert services.get_services() is not first
    assert uc_aws.dynamodb() is client
    ucoauth.reset()

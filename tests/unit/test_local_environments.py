"""The local stack runs each handler with exactly its function's environment from the template."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.invoke import HandlerLoader, Invoker
from devstack.resources import FunctionCode, LocalResources
from devstack.stack import function_environments
from ucoauth.base.settings import ENVIRONMENT, FUNCTION_SECTIONS, function_variables

PROBE = """
import os
from ucoauth.base.settings import ENVIRONMENT, get_settings

def handler(event, context):
    settings = get_settings()
    return {"seen": {n: os.environ[n] for n in ENVIRONMENT if n in os.environ}, "table": settings.table_name}
"""


def test_each_invocation_sees_its_own_functions_variables_and_nothing_else(
    aws: LocalResources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the template's environments (local values only where a function has the variable)
    local = {
        "ULTRACART_CLIENT_ID": "local-client",
        "OAUTH_REDIRECT_URI": "http://localhost:3000/oauth/callback",
    }
    environments = function_environments(aws, local)
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "app.py").write_text(PROBE)
    code = FunctionCode(tmp_path / "probe", "app.handler")
    invoker = Invoker(HandlerLoader(dict.fromkeys(FUNCTION_SECTIONS, code)), environments=environments)
    shared = {name: value for env in environments.values() for name, value in env.items()}
    for name, value in shared.items():
        monkeypatch.setenv(name, value)

    for logical_id in FUNCTION_SECTIONS:
        # When the function runs
        answer = invoker.invoke(logical_id, {})
        # Then it sees exactly its own variables, with the template's (and local) values
        assert set(answer["seen"]) == set(function_variables(logical_id)), logical_id
        assert answer["seen"] == environments[logical_id]
        assert answer["table"] == aws.table_name
        # and the process gets its environment back afterwards
        assert {n: os.environ[n] for n in ENVIRONMENT if n in os.environ} == shared
    assert environments["OAuthBrowserFunction"]["OAUTH_REDIRECT_URI"] == local["OAUTH_REDIRECT_URI"]
    # The token API's install links start next to the callback: the same (local) address.
    assert environments["TokenApiFunction"]["OAUTH_REDIRECT_URI"] == local["OAUTH_REDIRECT_URI"]
    assert "OAUTH_REDIRECT_URI" not in environments["AdminApiFunction"]
    assert environments["TokenApiFunction"]["ULTRACART_CLIENT_ID"] == "local-client"
    assert "ULTRACART_CLIENT_ID" not in environments["UninstallWebhookFunction"]


WARM_PROBE = """
from ucoauth.adapters.services import get_services

def handler(event, context):
    return {"services": id(get_services()), "table": get_services().settings.table_name}
"""


def test_each_function_keeps_its_own_warm_services_between_its_invocations(
    aws: LocalResources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a warm Lambda container keeps its process: what a function built on its first request
    # (its settings, its services, the data keys it opened) is there on its next one, and is
    # never another function's.
    environments = function_environments(aws, {"ULTRACART_CLIENT_ID": "local-client"})
    (tmp_path / "warm").mkdir()
    (tmp_path / "warm" / "app.py").write_text(WARM_PROBE)
    code = FunctionCode(tmp_path / "warm", "app.handler")
    invoker = Invoker(HandlerLoader(dict.fromkeys(FUNCTION_SECTIONS, code)), environments=environments)
    first = invoker.invoke("TokenApiFunction", {})
    other = invoker.invoke("RefreshWorkerFunction", {})
    again = invoker.invoke("TokenApiFunction", {})
    assert again["services"] == first["services"]
    assert other["services"] != first["services"]
    assert invoker.invoke("RefreshWorkerFunction", {})["services"] == other["services"]
    assert first["table"] == other["table"] == aws.table_name

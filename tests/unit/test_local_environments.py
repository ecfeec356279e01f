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

"""Fixtures for integration tests: real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

import ucoauth
from devstack.resources import LocalResources
from ucoauth.adapters.services import Services, set_services
from ucoauth.base.settings import Settings
from ucsandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    """One local UltraCart per test session (per xdist worker), on a free port."""
    with Sandbox() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Iterator[Sandbox]:
    """The started sandbox, fresh for each test: default settings, no faults, tokens or log."""
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.reset()


# -- the package wired to moto's server and the sandbox, over real HTTP --------------------------


@pytest.fixture
def live_env(aws_server: LocalResources, sandbox: Sandbox) -> dict[str, str]:
    """The functions' environment from template.yaml, pointed at moto's server and the sandbox."""
    env = aws_server.every_function_environment(
        overrides={
            "ULTRACART_BASE_URL": sandbox.base_url,
            "ULTRACART_CLIENT_ID": sandbox.client_id,
            "OAUTH_REDIRECT_URI": "http://localhost:3000/oauth/callback",
            "ULTRACART_CONNECT_TIMEOUT": "1",
            "ULTRACART_READ_TIMEOUT": "2",
        },
    )
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    return env


@pytest.fixture
def live(live_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    """Services as a Lambda would build them, talking to moto's server and the sandbox."""
    for name, value in live_env.items():
        monkeypatch.setenv(name, value)
    ucoauth.reset()
    services = Services.from_settings(Settings.from_env(live_env))
    set_services(services)
    yield services
    ucoauth.reset()


@pytest.fixture
def live_in_scope(
    live_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Services]]:
    """``live_in_scope(scope, **variables)``: the ``live`` services, built as a deployment whose
    ``UltraCartBudgetScope`` is ``scope`` (and with these variables) builds them."""

    def build(scope: str, **variables: str) -> Services:
        env = {**live_env, "ULTRACART_BUDGET_SCOPE": scope, **variables}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        ucoauth.reset()
        services = Services.from_settings(Settings.from_env(env))
        set_services(services)
        return services

    yield build
    ucoauth.reset()

"""Unit fixtures: the package's Services wired to moto's in-process mock and a fake UltraCart.

Unit tests open no network connection: moto's mock answers boto3 in-process, the fake UltraCart
answers the client, and any attempt to connect a socket fails the test (``no_network``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import ucoauth
from devstack.resources import LocalResources
from tests.support.clock import Clock
from tests.support.fake_ultracart import FakeUltraCart
from tests.support.network import refuse_connections
from ucoauth.adapters.services import Services, set_services
from ucoauth.base.settings import Settings


@pytest.fixture(autouse=True)
def no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """No socket connection (even loopback) for the test's duration, except in the tests marked
    ``integration`` (real HTTP on 127.0.0.1; ``make unit`` deselects them)."""
    if request.node.get_closest_marker("integration") is None:
        refuse_connections(monkeypatch)


@pytest.fixture
def fake_uc() -> FakeUltraCart:
    return FakeUltraCart()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(aws: LocalResources) -> Settings:
    # One Services serves every handler the tests invoke: every function's variables.
    return Settings.from_env(aws.every_function_environment())


@pytest.fixture
def services(
    aws: LocalResources, settings: Settings, fake_uc: FakeUltraCart, clock: Clock
) -> Iterator[Services]:
    ucoauth.reset()
    built = Services.from_settings(settings)
    built.ultracart_factory = lambda: fake_uc
    built.clock = clock
    built.sleep = clock.sleep
    set_services(built)
    yield built
    ucoauth.reset()

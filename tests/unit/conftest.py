"""Unit fixtures: the package's Services wired to moto's in-process mock and a fake UltraCart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import ucoauth
from devstack.resources import LocalResources
from tests.support.clock import Clock
from tests.support.fake_ultracart import FakeUltraCart
from ucoauth.services import Services, set_services
from ucoauth.settings import Settings


@pytest.fixture
def fake_uc() -> FakeUltraCart:
    return FakeUltraCart()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(aws: LocalResources) -> Settings:
    return Settings.from_env(aws.function_environment("RefreshWorkerFunction"))


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

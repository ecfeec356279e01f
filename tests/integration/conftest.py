"""Fixtures for integration tests: real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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

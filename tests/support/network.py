"""No network for unit tests: every socket connection attempt raises :class:`NetworkUsedError`."""

from __future__ import annotations

import socket
from typing import NoReturn

import pytest


class NetworkUsedError(AssertionError):
    """A test that must not use the network tried to open a connection."""


def refuse_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every socket connection (even loopback) fail until ``monkeypatch`` is undone."""

    def refuse(address: object) -> NoReturn:
        raise NetworkUsedError(f"unit tests must not open connections (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", lambda _self, address: refuse(address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda _self, address: refuse(address))
    monkeypatch.setattr(socket, "create_connection", lambda address, *_, **__: refuse(address))

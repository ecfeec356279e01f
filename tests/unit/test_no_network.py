"""Unit tests run without the network: a connection attempt fails the test that makes it."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from tests.support.network import NetworkUsedError


def test_a_connection_attempt_fails_the_test() -> None:
    with pytest.raises(NetworkUsedError):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(NetworkUsedError), socket.socket() as raw:
        raw.connect(("192.0.2.1", 443))
    with pytest.raises(NetworkUsedError):
        urllib.request.urlopen("http://192.0.2.1/", timeout=1)

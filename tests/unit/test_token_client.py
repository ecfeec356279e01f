"""ucoauth_client without the network: cache, retries, errors, the signature, Python 3.10 syntax."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.clock import Clock
from tests.support.token_client import CLIENT_DIR, CannedOpener, local_session
from ucoauth_client import (
    AccessDenied,
    InvalidRequest,
    NotInstalled,
    ReauthorizationRequired,
    TokenClient,
    TokenClientError,
    Unavailable,
)

NOW = 1_800_000_000.0


def body(version: int = 1, expires_in: float | None = 400, token: str = "tok-secret-1") -> dict[str, Any]:
    expires = None
    if expires_in is not None:
        expires = datetime.fromtimestamp(NOW + expires_in, tz=UTC).isoformat().replace("+00:00", "Z")
    return {
        "merchant_id": "DEMO1",
        "access_token": token,
        "token_type": "bearer",
        "expires_at": expires,
        "scope": "order_read",
        "version": version,
    }


def client(opener: CannedOpener, clock: Clock, **options: Any) -> TokenClient:
    return TokenClient(
        url="https://abc123.execute-api.eu-west-1.amazonaws.com",
        session=local_session(),
        opener=opener,
        clock=clock,
        sleep=clock.sleep,
        rng=lambda: 0.5,
        **options,
    )


def test_a_request_is_sigv4_signed_for_execute_api_in_the_urls_region() -> None:
    opener = CannedOpener([(200, body(), {})])
    client(opener, Clock(NOW)).get("DEMO1")
    (sent,) = opener.requests
    assert sent.full_url == (
        "https://abc123.execute-api.eu-west-1.amazonaws.com/tokens/DEMO1?min_valid_seconds=60"
    )
    authorization = sent.get_header("Authorization")
    assert authorization is not None
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization


def test_the_cache_serves_until_the_token_gets_short() -> None:
    clock = Clock(NOW)
    opener = CannedOpener([(200, body(expires_in=400), {}), (200, body(version=2, token="tok-2"), {})])
    tokens = client(opener, clock)
    first = tokens.get("DEMO1")
    clock.now += 300  # 100 s left: at least 0 + 60
    assert tokens.get("DEMO1") is first
    assert len(opener.requests) == 1
    assert tokens.get("DEMO1", min_valid_seconds=60).version == 2  # 100 < 60 + 60: asks again
    assert len(opener.requests) == 2


def test_a_token_of_unknown_expiry_is_cached_for_a_while() -> None:
    clock = Clock(NOW)
    opener = CannedOpener([(200, body(expires_in=None), {}), (200, body(expires_in=None, version=2), {})])
    tokens = client(opener, clock)
    assert tokens.get("DEMO1").expires_at is None
    clock.now += 299
    assert tokens.get("DEMO1").version == 1
    clock.now += 2
    assert tokens.get("DEMO1").version == 2


def test_newer_than_skips_a_cached_token_of_that_version() -> None:
    clock = Clock(NOW)
    opener = CannedOpener([(200, body(version=4), {}), (200, body(version=5, token="tok-5"), {})])
    tokens = client(opener, clock)
    refused = tokens.get("DEMO1")
    fresh = tokens.get("DEMO1", newer_than=refused.version)
    assert fresh.version == 5 and opener.requests[1].full_url.endswith("&newer_than=4")
    assert tokens.get("DEMO1", newer_than=4) is fresh  # a sibling thread already has it
    assert len(opener.requests) == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, InvalidRequest),
        (403, AccessDenied),
        (404, NotInstalled),
        (409, ReauthorizationRequired),
        (418, TokenClientError),
    ],
)
def test_statuses_map_to_typed_errors(status: int, error: type[Exception]) -> None:
    opener = CannedOpener([(status, {"error": "x"}, {})])
    with pytest.raises(error) as raised:
        client(opener, Clock(NOW)).get("DEMO1")
    assert isinstance(raised.value, TokenClientError)


def test_a_503_is_retried_once_after_its_retry_after_with_jitter() -> None:
    clock = Clock(NOW)
    opener = CannedOpener([(503, {"error": "upstream_unavailable"}, {"Retry-After": "2"}), (200, body(), {})])
    assert client(opener, clock).get("DEMO1").version == 1
    assert clock.slept == [2.5]  # 2 s and half of the jitter's 50 %


def test_a_retry_after_longer_than_the_cap_is_not_waited_for() -> None:
    clock = Clock(NOW)
    opener = CannedOpener([(503, {"error": "upstream_unavailable"}, {"Retry-After": "30"})])
    with pytest.raises(Unavailable) as raised:
        client(opener, clock).get("DEMO1")
    assert raised.value.retry_after == 30 and clock.slept == []


def test_errors_and_reprs_never_show_the_token() -> None:
    opener = CannedOpener([(200, body(token="tok-very-secret"), {})])
    token = client(opener, Clock(NOW)).get("DEMO1")
    assert "tok-very-secret" not in repr(token) and "tok-very-secret" not in str(token)
    assert token.authorization == "Bearer tok-very-secret"
    malformed = CannedOpener([(200, {"access_token": "tok-very-secret"}, {})])
    with pytest.raises(TokenClientError) as raised:
        client(malformed, Clock(NOW)).get("DEMO1")
    assert "tok-very-secret" not in str(raised.value)


def test_bad_urls_and_ids_are_refused_before_sending() -> None:
    with pytest.raises(TokenClientError):
        TokenClient(url="file:///etc/passwd")
    with pytest.raises(TypeError):
        TokenClient()
    opener = CannedOpener([])
    for bad in ("", "a/b", "../x", "x" * 65, "DEMO1?x=1"):
        with pytest.raises(InvalidRequest):
            client(opener, Clock(NOW)).get(bad)
    assert opener.requests == []


def test_the_client_parses_as_python_3_10_and_imports_no_sdk() -> None:
    for source in sorted((CLIENT_DIR / "ucoauth_client").rglob("*.py")):
        ast.parse(source.read_text(), filename=str(source), feature_version=(3, 10))
    probe = "import sys, ucoauth_client; print('ultracart' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=CLIENT_DIR, timeout=60
    )
    assert out.stdout.strip() == "False"

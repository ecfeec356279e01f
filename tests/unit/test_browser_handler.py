"""GET /install and GET /oauth/callback through the real handler, with the shared events/."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from devstack.resources import LocalResources
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.lambdas import invoke, load_event
from tests.unit.conftest import Clock, published_events
from ucoauth.errors import PermanentUltraCartError
from ucoauth.services import Services

FN = "OAuthBrowserFunction"


def start_install(services: Services) -> tuple[str, str, dict[str, Any]]:
    """Run GET /install; return (state, cookie nonce, response)."""
    response = invoke(FN, load_event("install.json"))
    state = parse_qs(urlsplit(response["headers"]["Location"]).query)["state"][0]
    cookie = response["cookies"][0]
    nonce = cookie.split(";")[0].split("=", 1)[1]
    return state, nonce, response


def callback(code: str, state: str, nonce: str) -> dict[str, Any]:
    return invoke(FN, load_event("callback-success.json", code=code, state=state, nonce=nonce))  # type: ignore[no-any-return]


def items(aws: LocalResources) -> list[dict[str, Any]]:
    return boto3.client("dynamodb").scan(TableName=aws.table_name)["Items"]


def assert_browser_headers(response: dict[str, Any]) -> None:
    headers = response["headers"]
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_install_redirects_to_ultracart_with_a_bound_state(services: Services, aws: LocalResources) -> None:
    state, nonce, response = start_install(services)
    assert response["statusCode"] == 302
    assert_browser_headers(response)
    location = urlsplit(response["headers"]["Location"])
    query = parse_qs(location.query)
    assert query["response_type"] == ["code"] and query["client_id"] == [
        services.settings.ultracart_client_id
    ]
    assert query["redirect_uri"] == ["https://local.execute-api.us-east-1.amazonaws.com/oauth/callback"]
    assert len(state) >= 22  # >= 128 bits, url-safe
    cookie = response["cookies"][0]
    assert cookie.startswith("__Host-ucoauth_state=")
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in cookie
    assert "Domain" not in cookie
    stored = repr(items(aws))
    assert state not in stored and nonce not in stored


def test_callback_installs_and_shows_the_merchant(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    state, nonce, _ = start_install(services)
    code = fake_uc.new_code("DEMO1")
    response = callback(code, state, nonce)
    assert response["statusCode"] == 200
    assert_browser_headers(response)
    assert "App installed" in response["body"] and "DEMO1" in response["body"]
    for secret in [code, state, nonce, *fake_uc.access_owner, *fake_uc.live_refresh]:
        assert secret not in response["body"]
    assert (
        response["cookies"][0].startswith("__Host-ucoauth_state=;") and "Max-Age=0" in response["cookies"][0]
    )
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == "active" and installation.generation == 1
    events = published_events(aws)
    assert [e["detail-type"] for e in events] == ["Installation Completed"]
    assert events[0]["detail"]["merchant_id"] == "DEMO1"
    dump = repr(items(aws)) + repr(events)
    for secret in [code, state, nonce, *fake_uc.access_owner, *fake_uc.live_refresh]:
        assert secret not in dump


def test_a_reinstall_replaces_and_bumps_the_generation(services: Services, fake_uc: FakeUltraCart) -> None:
    for expected in (1, 2):
        state, nonce, _ = start_install(services)
        response = callback(fake_uc.new_code("DEMO1"), state, nonce)
        assert response["statusCode"] == 200
        assert services.installations.get("DEMO1").generation == expected  # type: ignore[union-attr]
    assert "reconnected" in response["body"]


def test_the_merchant_comes_from_me_when_missing(services: Services, fake_uc: FakeUltraCart) -> None:
    fake_uc.include_merchant_id = False
    state, nonce, _ = start_install(services)
    assert callback(fake_uc.new_code("OLDER1"), state, nonce)["statusCode"] == 200
    assert fake_uc.calls == ["exchange", "me"]
    assert services.installations.get("OLDER1") is not None


def test_a_replayed_state_is_refused_and_ultracart_not_called(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    state, nonce, _ = start_install(services)
    assert callback(fake_uc.new_code("DEMO1"), state, nonce)["statusCode"] == 200
    replay = callback(fake_uc.new_code("DEMO1"), state, nonce)
    assert replay["statusCode"] == 400 and "expired or was already used" in replay["body"]
    assert fake_uc.calls == ["exchange"]


def test_an_expired_state_is_refused(services: Services, fake_uc: FakeUltraCart, clock: Clock) -> None:
    state, nonce, _ = start_install(services)
    clock.now += services.settings.state_ttl_seconds + 1
    response = callback(fake_uc.new_code("DEMO1"), state, nonce)
    assert response["statusCode"] == 400 and fake_uc.calls == []
    assert services.installations.get("DEMO1") is None


def test_a_state_from_another_browser_is_refused(services: Services, fake_uc: FakeUltraCart) -> None:
    state, _, _ = start_install(services)
    _, other_nonce, _ = start_install(services)
    response = callback(fake_uc.new_code("DEMO1"), state, other_nonce)
    assert response["statusCode"] == 400 and fake_uc.calls == []


@pytest.mark.parametrize(
    ("event", "status", "text"),
    [
        ("callback-denied.json", 200, "Installation cancelled"),
        ("callback-expired-link.json", 400, "expired"),
        ("callback-missing-state.json", 400, "missing its code or state"),
        ("callback-unknown-state.json", 400, "expired or was already used"),
        ("callback-no-cookie.json", 400, "same browser"),
        ("callback-repeated-params.json", 400, "more than once"),
        ("callback-xss.json", 400, "expired"),
    ],
)
def test_bad_callbacks_get_a_page_and_store_nothing(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, event: str, status: int, text: str
) -> None:
    response = invoke(FN, load_event(event, state="s" * 43))
    assert response["statusCode"] == status
    assert_browser_headers(response)
    assert text in response["body"] and 'id="retry"' in response["body"]
    assert "<script>" not in response["body"] and "<img" not in response["body"]
    assert fake_uc.calls == [] and items(aws) == []


@pytest.mark.parametrize(
    "query",
    [
        "code=" + "a" * 5000 + "&state=b",
        "code=abc%00defghij&state=abcdefghijk",
        "code=%ff%fe%fdabcdef&state=abcdefghij",
    ],
)
def test_oversize_control_and_non_utf8_parameters_get_400(services: Services, query: str) -> None:
    event = load_event("callback-unknown-state.json")
    event["rawQueryString"] = query
    assert invoke(FN, event)["statusCode"] == 400


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (PermanentUltraCartError("refused", status=400, error="invalid_grant"), 400),
        (transient(500), 502),
        (transient(429), 502),
        (__import__("ucoauth.errors", fromlist=["x"]).TransientUltraCartError("/oauth/token timed out"), 504),
    ],
)
def test_ultracart_failures_get_a_page_not_a_500(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, failure: Exception, status: int
) -> None:
    state, nonce, _ = start_install(services)
    fake_uc.fail_next.append(failure)
    response = callback(fake_uc.new_code("DEMO1"), state, nonce)
    assert response["statusCode"] == status
    assert "Traceback" not in response["body"] and 'id="retry"' in response["body"]
    assert services.installations.get("DEMO1") is None


def test_post_install_redirect(services: Services, fake_uc: FakeUltraCart) -> None:
    from dataclasses import replace

    services.settings = replace(services.settings, post_install_redirect_url="https://app.example/welcome")
    state, nonce, _ = start_install(services)
    response = callback(fake_uc.new_code("DEMO1"), state, nonce)
    assert response["statusCode"] == 302
    assert response["headers"]["Location"] == "https://app.example/welcome?merchant_id=DEMO1"

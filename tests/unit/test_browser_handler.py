"""GET /install and GET /oauth/callback through the real handler, with the shared events/."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from devstack.resources import LocalResources
from tests.support import faults
from tests.support.clock import Clock
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.lambdas import invoke, load_event
from tests.support.observer import published_events
from ucoauth.adapters.services import Services
from ucoauth.base.errors import PermanentUltraCartError, TransientUltraCartError, UltraCartTimeoutError
from ucoauth.usecases.install import RECEIPT_COOKIE, RECEIPT_SECONDS

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


def receipt_of(response: dict[str, Any]) -> str:
    """The receipt nonce a successful callback set (the value of its ``__Host-`` cookie)."""
    found = [str(c) for c in response.get("cookies", []) if str(c).startswith(RECEIPT_COOKIE + "=")]
    assert len(found) == 1, response.get("cookies")
    return found[0].split(";")[0].split("=", 1)[1]


def installed_page(receipt: str | None) -> dict[str, Any]:
    event = load_event("installed.json", receipt=receipt or "")
    if receipt is None:
        event.pop("cookies")
    return invoke(FN, event)  # type: ignore[no-any-return]


def test_callback_installs_and_sends_the_browser_to_a_clean_success_url(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    state, nonce, _ = start_install(services)
    code = fake_uc.new_code("DEMO1")
    response = callback(code, state, nonce)
    assert response["statusCode"] == 303
    assert_browser_headers(response)
    location = response["headers"]["Location"]
    assert location == "https://local.execute-api.us-east-1.amazonaws.com/installed"
    assert "code" not in location and "state" not in location
    state_cookie = next(c for c in response["cookies"] if c.startswith("__Host-ucoauth_state="))
    assert state_cookie.startswith("__Host-ucoauth_state=;") and "Max-Age=0" in state_cookie
    receipt = receipt_of(response)
    assert len(receipt) >= 43
    receipt_cookie = next(c for c in response["cookies"] if c.startswith(RECEIPT_COOKIE))
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/", f"Max-Age={RECEIPT_SECONDS}"):
        assert attribute in receipt_cookie
    assert "Domain" not in receipt_cookie
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == "active" and installation.generation == 1
    events = published_events(aws)
    assert [e["detail-type"] for e in events] == ["Installation Completed"]
    assert events[0]["detail"]["merchant_id"] == "DEMO1"
    stored = items(aws)
    receipts = [i for i in stored if i["pk"]["S"].startswith("RECEIPT#")]
    assert len(receipts) == 1 and receipts[0]["merchant_id"]["S"] == "DEMO1"
    assert int(receipts[0]["expires_at"]["N"]) == services.now() + RECEIPT_SECONDS
    dump = repr(stored) + repr(events)
    for secret in [code, state, nonce, receipt, *fake_uc.access_owner, *fake_uc.live_refresh]:
        assert secret not in dump


def test_the_success_url_shows_the_app_and_the_account_and_survives_a_reload(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    services.settings = services.settings.replace(
        app_name="Acme Sync", app_url="https://app.acme.example/", support_url=""
    )
    state, nonce, _ = start_install(services)
    code = fake_uc.new_code("DEMO1")
    receipt = receipt_of(callback(code, state, nonce))
    for _ in range(2):  # the page itself, then F5
        page = installed_page(receipt)
        assert page["statusCode"] == 200
        assert_browser_headers(page)
        body = page["body"]
        assert "<title>Acme Sync is installed</title>" in body
        assert "<h1>Acme Sync is installed</h1>" in body and "DEMO1" in body
        assert 'href="https://app.acme.example/"' in body and "Open Acme Sync" in body
        assert "Return to UltraCart" in body
        for secret in [code, state, nonce, receipt]:
            assert secret not in body
    assert fake_uc.calls == ["exchange"]


def test_reloading_the_spent_callback_url_shows_success_not_an_error(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    state, nonce, _ = start_install(services)
    code = fake_uc.new_code("DEMO1")
    receipt = receipt_of(callback(code, state, nonce))
    # F5 on /oauth/callback?code=...&state=...: the state cookie is gone, the receipt is not.
    reload = invoke(FN, load_event("callback-reload.json", code=code, state=state, receipt=receipt))
    assert reload["statusCode"] == 303
    assert reload["headers"]["Location"].endswith("/installed")
    # The same with the (stale) state cookie still sent: the state is spent, the receipt proves it.
    event = load_event("callback-reload.json", code=code, state=state, receipt=receipt)
    event["cookies"].append(f"__Host-ucoauth_state={nonce}")
    assert invoke(FN, event)["statusCode"] == 303
    assert fake_uc.calls == ["exchange"]


@pytest.mark.parametrize("receipt", [None, "", "x" * 43, "<script>", "a" * 500])
def test_the_success_url_without_a_valid_receipt_is_a_neutral_page(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, receipt: str | None
) -> None:
    state, nonce, _ = start_install(services)
    callback(fake_uc.new_code("DEMO1"), state, nonce)
    page = installed_page(receipt)
    assert page["statusCode"] == 200
    assert_browser_headers(page)
    assert "This page has expired" in page["body"] and 'class="info"' in page["body"]
    assert "DEMO1" not in page["body"] and 'id="retry"' in page["body"]


def test_two_receipt_cookies_prove_nothing(services: Services, fake_uc: FakeUltraCart) -> None:
    state, nonce, _ = start_install(services)
    receipt = receipt_of(callback(fake_uc.new_code("DEMO1"), state, nonce))
    event = load_event("installed.json", receipt=receipt)
    event["cookies"].append(f"{RECEIPT_COOKIE}={'y' * 43}")
    page = invoke(FN, event)
    assert page["statusCode"] == 200 and "This page has expired" in page["body"]
    assert "DEMO1" not in page["body"]


def test_a_receipt_expires(services: Services, fake_uc: FakeUltraCart, clock: Clock) -> None:
    state, nonce, _ = start_install(services)
    receipt = receipt_of(callback(fake_uc.new_code("DEMO1"), state, nonce))
    clock.now += RECEIPT_SECONDS + 1
    page = installed_page(receipt)
    assert "This page has expired" in page["body"] and "DEMO1" not in page["body"]


def test_a_receipt_is_never_taken_from_the_address(services: Services, fake_uc: FakeUltraCart) -> None:
    state, nonce, _ = start_install(services)
    receipt = receipt_of(callback(fake_uc.new_code("DEMO1"), state, nonce))
    event = load_event("installed.json", receipt="")
    event.pop("cookies")
    event["rawQueryString"] = f"receipt={receipt}&merchant_id=DEMO1"
    page = invoke(FN, event)
    assert "DEMO1" not in page["body"] and "This page has expired" in page["body"]


def test_a_reinstall_replaces_and_bumps_the_generation(services: Services, fake_uc: FakeUltraCart) -> None:
    for expected in (1, 2):
        state, nonce, _ = start_install(services)
        response = callback(fake_uc.new_code("DEMO1"), state, nonce)
        assert response["statusCode"] == 303
        assert services.installations.get("DEMO1").generation == expected  # type: ignore[union-attr]
    assert "reconnected" in installed_page(receipt_of(response))["body"]


def test_the_merchant_comes_from_me_when_missing(services: Services, fake_uc: FakeUltraCart) -> None:
    fake_uc.include_merchant_id = False
    state, nonce, _ = start_install(services)
    assert callback(fake_uc.new_code("OLDER1"), state, nonce)["statusCode"] == 303
    assert fake_uc.calls == ["exchange", "me"]
    assert services.installations.get("OLDER1") is not None


def test_a_replayed_state_is_refused_and_ultracart_not_called(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    state, nonce, _ = start_install(services)
    assert callback(fake_uc.new_code("DEMO1"), state, nonce)["statusCode"] == 303
    replay = callback(fake_uc.new_code("DEMO1"), state, nonce)
    assert replay["statusCode"] == 400 and "already been used" in replay["body"]
    assert fake_uc.calls == ["exchange"]


def test_an_expired_state_is_refused(services: Services, fake_uc: FakeUltraCart, clock: Clock) -> None:
    state, nonce, _ = start_install(services)
    clock.now += services.settings.state_ttl_seconds + 1
    response = callback(fake_uc.new_code("DEMO1"), state, nonce)
    assert response["statusCode"] == 400 and fake_uc.calls == []
    assert "timed out" in response["body"] and "cookies" not in response["body"]
    assert services.installations.get("DEMO1") is None


def test_a_state_from_another_tab_names_the_other_tab(services: Services, fake_uc: FakeUltraCart) -> None:
    # Given two tabs started from /install: the second one's cookie replaced the first one's.
    state, _, _ = start_install(services)
    _, other_nonce, _ = start_install(services)
    # When the first tab comes back from UltraCart
    response = callback(fake_uc.new_code("DEMO1"), state, other_nonce)
    # Then nothing is called and the page says what happened
    assert response["statusCode"] == 400 and fake_uc.calls == []
    assert "another tab" in response["body"] and "expired" not in response["body"]
    assert 'id="retry"' in response["body"]
    # and the other tab's state cookie is left alone, so that installation can still finish
    assert not any(str(c).startswith("__Host-ucoauth_state=") for c in response.get("cookies") or [])


DAMAGED = "incomplete or damaged"


@pytest.mark.parametrize(
    ("event", "status", "text"),
    [
        ("callback-denied.json", 200, "Installation of Your UltraCart app cancelled"),
        ("callback-expired-link.json", 400, "expired"),
        ("callback-missing-state.json", 400, DAMAGED),
        ("callback-unknown-state.json", 400, "already been used"),
        ("callback-no-cookie.json", 400, "timed out"),
        ("callback-repeated-params.json", 400, DAMAGED),
        ("callback-xss.json", 400, DAMAGED),
        ("callback-temporarily-unavailable.json", 503, "usually temporary"),
    ],
)
def test_bad_callbacks_get_a_page_and_store_nothing(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, event: str, status: int, text: str
) -> None:
    response = invoke(FN, load_event(event, state="s" * 43, nonce="n" * 43))
    assert response["statusCode"] == status
    assert_browser_headers(response)
    assert text in response["body"] and 'id="retry"' in response["body"]
    assert "<script>" not in response["body"] and "<img" not in response["body"]
    for technical in ("parameter", "code or state", "cookies enabled", "same browser"):
        assert technical not in response["body"]
    assert fake_uc.calls == [] and items(aws) == []


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        ("temporarily_unavailable", 503, "usually temporary"),
        ("server_error", 502, "usually temporary"),
        ("invalid_request", 400, "expired"),
        ("no_such_error", 400, DAMAGED),
    ],
)
def test_ultracart_error_values_name_their_cause(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, error: str, status: int, text: str
) -> None:
    event = load_event("callback-temporarily-unavailable.json", state="s" * 43, nonce="n" * 43)
    event["rawQueryString"] = f"error={error}&state={'s' * 43}"
    response = invoke(FN, event)
    assert response["statusCode"] == status and text in response["body"]
    assert 'id="retry"' in response["body"] and items(aws) == []


@pytest.mark.parametrize(
    "error", ["unauthorized_client", "invalid_scope", "invalid_client", "unsupported_response_type"]
)
def test_a_misconfigured_app_offers_the_developer_not_a_retry_loop(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, error: str
) -> None:
    services.settings = services.settings.replace(
        app_name="Acme Sync", support_url="mailto:help@acme.example"
    )
    event = load_event("callback-unauthorized-client.json", state="s" * 43, nonce="n" * 43)
    event["rawQueryString"] = f"error={error}&state={'s' * 43}"
    response = invoke(FN, event)
    assert response["statusCode"] == 400
    body = response["body"]
    assert "Acme Sync" in body and "developer" in body and 'href="mailto:help@acme.example"' in body
    assert 'id="retry"' not in body and error not in body
    assert fake_uc.calls == [] and items(aws) == []


def test_ultracart_refusing_the_client_during_the_exchange_is_a_misconfiguration(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    state, nonce, _ = start_install(services)
    fake_uc.fail_next.append(PermanentUltraCartError("refused", status=400, error="invalid_client"))
    response = callback(fake_uc.new_code("DEMO1"), state, nonce)
    assert response["statusCode"] == 400
    assert "developer" in response["body"] and 'id="retry"' not in response["body"]


def test_every_error_page_names_the_app_and_a_way_to_the_developer(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    services.settings = services.settings.replace(
        app_name="Acme <Sync>", support_url="https://acme.example/help"
    )
    for name in ("callback-denied.json", "callback-no-cookie.json", "callback-repeated-params.json"):
        body = invoke(FN, load_event(name, state="s" * 43))["body"]
        assert "Acme &lt;Sync&gt;" in body and "<Sync>" not in body
        assert 'href="https://acme.example/help"' in body


def test_an_unknown_path_gets_the_html_404_page(services: Services, aws: LocalResources) -> None:
    response = invoke(FN, load_event("unknown-path.json"))
    assert response["statusCode"] == 404
    assert_browser_headers(response)
    assert response["headers"]["Content-Type"].startswith("text/html")
    assert "Page not found" in response["body"] and 'id="retry"' in response["body"]
    assert items(aws) == []


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
        (UltraCartTimeoutError("/oauth/token timed out"), 504),
        (TransientUltraCartError("/oauth/token timed out"), 502),  # the type decides, not the text
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
    assert RECEIPT_COOKIE not in repr(response.get("cookies"))
    assert services.installations.get("DEMO1") is None


def test_post_install_redirect(services: Services, fake_uc: FakeUltraCart, aws: LocalResources) -> None:
    services.settings = services.settings.replace(post_install_redirect_url="https://app.example/welcome")
    state, nonce, _ = start_install(services)
    response = callback(fake_uc.new_code("DEMO1"), state, nonce)
    assert response["statusCode"] == 302
    assert response["headers"]["Location"] == "https://app.example/welcome?merchant_id=DEMO1"
    assert RECEIPT_COOKIE not in repr(response["cookies"])
    assert not [i for i in items(aws) if i["pk"]["S"].startswith("RECEIPT#")]


def declined(state: str, nonce: str) -> dict[str, Any]:
    """UltraCart's redirect after the merchant pressed Deny, in a browser holding ``nonce``."""
    event = load_event("callback-success.json", code="unused", state=state, nonce=nonce)
    event["rawQueryString"] = f"error=access_denied&state={state}"
    return invoke(FN, event)  # type: ignore[no-any-return]


def _clears_state_cookie(response: dict[str, Any]) -> bool:
    return any(str(c).startswith("__Host-ucoauth_state=;") for c in response.get("cookies") or [])


def test_a_decline_in_an_older_tab_leaves_the_newer_tabs_installation_alone(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    # Given two tabs started from /install: the second one's cookie replaced the first one's.
    older_state, _, _ = start_install(services)
    newer_state, newer_nonce, _ = start_install(services)
    # When the older tab declines
    response = declined(older_state, newer_nonce)
    # Then it shows the cancelled page and keeps the newer tab's state cookie
    assert response["statusCode"] == 200 and "cancelled" in response["body"]
    assert not _clears_state_cookie(response)
    # and the newer tab still installs
    finished = callback(fake_uc.new_code("DEMO1"), newer_state, newer_nonce)
    assert finished["statusCode"] == 303


def test_a_decline_in_the_tab_that_started_clears_its_state_cookie(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    state, nonce, _ = start_install(services)
    response = declined(state, nonce)
    assert response["statusCode"] == 200 and "cancelled" in response["body"]
    assert _clears_state_cookie(response)
    assert fake_uc.calls == []


def test_a_deny_shows_its_page_even_when_the_state_cannot_be_read(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    state, nonce, _ = start_install(services)
    with faults.aws_faults(faults.throttle("dynamodb", "GetItem")):
        response = declined(state, nonce)
    # The merchant still sees that the installation was cancelled; the cookie stays (unknown).
    assert response["statusCode"] == 200 and "cancelled" in response["body"]
    assert not _clears_state_cookie(response)

"""A merchant installs the app in a real (headless) Chromium against the local stack.

Chromium opens ``http://localhost:PORT/install``, lands on the UltraCart sandbox's consent page,
approves (or denies) and comes back to our page. Screenshots go to ``docs/screenshots/``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.invoke import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from devstack.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("devstack_e2e")]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
STATE_COOKIE = "__Host-ucoauth_state"
RECEIPT_COOKIE = "__Host-ucoauth_receipt"
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 10_000


def _is_callback(response: Any) -> bool:
    return bool(urlsplit(response.url).path == "/oauth/callback")


def _open_consent_page(stack: LocalStack, context: Any) -> Any:
    """Open /install and land on the sandbox's consent page with the state cookie set."""
    assert stack.sandbox is not None
    page = context.new_page()
    page.goto(f"{stack.gateway_url}/install")
    assert page.url.startswith(f"{stack.sandbox.base_url}/oauth/authorize?")
    assert page.title() == "Authorize application - UltraCart"
    cookies = {cookie["name"]: cookie for cookie in context.cookies(stack.gateway_url)}
    # Chromium accepted the __Host- cookie: http://localhost is a secure context.
    cookie = cookies[STATE_COOKIE]
    assert cookie["secure"] is True
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    return page


def _assert_browser_headers(headers: dict[str, str]) -> None:
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"


def _access_token(stack: LocalStack, merchant_id: str) -> str:
    url = f"{stack.gateway_url}/tokens/{merchant_id}"
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY), "execute-api", "us-east-1").add_auth(
        request
    )
    response = requests.get(url, headers=dict(request.headers.items()), timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _install_link(stack: LocalStack, body: dict[str, Any]) -> str:
    """An install link from POST /install-sessions, signed as the app's backend would sign it."""
    url = f"{stack.gateway_url}/install-sessions"
    data = json.dumps(body).encode()
    request = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY), "execute-api", "us-east-1").add_auth(
        request
    )
    response = requests.post(url, headers=dict(request.headers.items()), data=data, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["install_url"])


def test_an_install_link_installs_for_the_account_and_lands_on_the_return_url(
    stack: LocalStack, chromium: Any
) -> None:
    browser = chromium.get()
    assert stack.sandbox is not None
    back = "https://app.acme.example/integrations?connected=ultracart"
    link = _install_link(stack, {"app_account_id": "acme-team-7", "return_url": back})
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    # The app's own page (its origin is not served here): a stub in its place.
    context.route(
        "https://app.acme.example/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<title>Acme</title>ok"),
    )
    try:
        page = context.new_page()
        page.goto(link)
        assert page.url.startswith(f"{stack.sandbox.base_url}/oauth/authorize?")
        page.fill("#merchant_id", "E2E5")
        with page.expect_response(_is_callback) as callback:
            page.click("#approve")
        page.wait_for_load_state()
        assert callback.value.status == 303
        assert page.url == f"{stack.gateway_url}/installed"
        assert page.locator("h1").inner_text() == "Acme Sync is installed"
        assert page.locator("#continue").inner_text() == "Continue to Acme Sync"
        page.click("#continue")
        page.wait_for_load_state()
        assert page.url == back
        # The installation is the account's, and the link served its one install.
        url = f"{stack.gateway_url}/tokens/E2E5"
        signed = AWSRequest(method="GET", url=url)
        SigV4Auth(
            Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY), "execute-api", "us-east-1"
        ).add_auth(signed)
        token = requests.get(url, headers=dict(signed.headers.items()), timeout=10).json()
        assert token["app_account_id"] == "acme-team-7"
        response = requests.get(link, allow_redirects=False, timeout=10)
        assert response.status_code == 410 and "Location" not in response.headers
        again = context.new_page()
        again.goto(link)
        assert again.locator("h1").inner_text() == "This install link was already used"
    finally:
        context.close()


def test_merchant_approves_and_sees_the_success_page(stack: LocalStack, chromium: Any) -> None:
    browser = chromium.get()
    sandbox = stack.sandbox
    assert sandbox is not None
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = _open_consent_page(stack, context)
        nonce = next(c["value"] for c in context.cookies(stack.gateway_url) if c["name"] == STATE_COOKIE)
        page.fill("#merchant_id", "E2E1")
        with page.expect_response(_is_callback) as callback:
            page.click("#approve")
        page.wait_for_load_state()
        response = callback.value
        # The callback answers 303 to a clean URL: no code, no state in the address bar.
        assert response.status == 303
        _assert_browser_headers(response.headers)
        spent_callback_url = response.url
        assert page.url == f"{stack.gateway_url}/installed"

        def assert_success() -> None:
            assert page.title() == "Acme Sync is installed"
            assert page.locator("h1").inner_text() == "Acme Sync is installed"
            assert "E2E1" in page.locator("main").inner_text()
            assert page.locator("#open-app").get_attribute("href") == "https://app.acme.example/"
            assert page.locator("#return").inner_text() == "Return to UltraCart"

        assert_success()
        success_html = page.content()
        # F5 on the success URL shows the success page again.
        reloaded = page.reload()
        assert reloaded is not None and reloaded.status == 200
        assert page.url == f"{stack.gateway_url}/installed"
        assert_success()
        # So does a reload of the spent callback URL (restored tab, back button): no red error.
        page.goto(spent_callback_url)
        assert page.url == f"{stack.gateway_url}/installed"
        assert_success()

        # Nothing secret reached the page: not the code, the state, the cookie nonce or a token.
        html = page.content() + success_html
        codes = [r.form["code"] for r in sandbox.requests("token") if r.merchant_id == "E2E1"]
        states = [
            r.form["state"]
            for r in sandbox.requests("authorize")
            if r.method == "POST" and r.merchant_id == "E2E1"
        ]
        assert len(codes) == 1
        assert len(states) == 1
        receipt = next(c for c in context.cookies(stack.gateway_url) if c["name"] == RECEIPT_COOKIE)
        assert receipt["secure"] is True and receipt["httpOnly"] is True and receipt["sameSite"] == "Lax"
        for secret in [*codes, *states, nonce, receipt["value"], _access_token(stack, "E2E1")]:
            assert secret not in html
        assert re.search(r"[0-9a-f]{32,}", html) is None
        # The state cookie was spent and cleared.
        assert STATE_COOKIE not in {c["name"] for c in context.cookies(stack.gateway_url)}

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "install-success.png"))
    finally:
        context.close()


def test_merchant_denies_and_sees_the_cancelled_page(stack: LocalStack, chromium: Any) -> None:
    browser = chromium.get()
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = _open_consent_page(stack, context)
        page.fill("#merchant_id", "E2E2")
        with page.expect_response(_is_callback) as callback:
            page.click("#deny")
        page.wait_for_load_state()
        response = callback.value
        assert response.status == 200
        _assert_browser_headers(response.headers)
        assert page.title() == "Installation of Acme Sync cancelled \N{EN DASH} Acme Sync"
        assert page.locator("h1").inner_text() == "Installation of Acme Sync cancelled"
        assert page.locator("#retry").get_attribute("href") == f"{stack.gateway_url}/install"
        assert STATE_COOKIE not in {c["name"] for c in context.cookies(stack.gateway_url)}

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "install-declined.png"))
    finally:
        context.close()


@pytest.mark.parametrize(
    ("button", "merchant_id", "status", "heading"),
    [
        ("#approve", "E2E3", 400, "The installation was started again in another tab"),
        ("#deny", "E2E4", 200, "Installation of Acme Sync cancelled"),
    ],
    ids=["approve", "deny"],
)
def test_two_tabs_what_the_older_one_does_leaves_the_newer_one_to_install(
    stack: LocalStack, chromium: Any, button: str, merchant_id: str, status: int, heading: str
) -> None:
    browser = chromium.get()
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        # Given two tabs started from /install: the second one's cookie replaced the first's.
        older = _open_consent_page(stack, context)
        newer = _open_consent_page(stack, context)
        # When the older tab approves (or declines)
        older.fill("#merchant_id", merchant_id)
        with older.expect_response(_is_callback) as callback:
            older.click(button)
        older.wait_for_load_state()
        # Then it says what happened, and leaves the newer tab's state cookie and installation alone
        assert callback.value.status == status
        assert older.locator("h1").inner_text() == heading
        assert STATE_COOKIE in {c["name"] for c in context.cookies(stack.gateway_url)}
        newer.fill("#merchant_id", merchant_id)
        with newer.expect_response(_is_callback) as finished:
            newer.click("#approve")
        newer.wait_for_load_state()
        assert finished.value.status == 303
        assert newer.locator("h1").inner_text() == "Acme Sync is installed"
    finally:
        context.close()

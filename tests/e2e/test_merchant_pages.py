"""Every page a merchant can see, in headless Chromium at phone, narrow and desktop widths, light and dark.

Each page must: fit the viewport without horizontal scrolling (a 64-character merchant id
included), raise no Content-Security-Policy violation, name the app in its title and its one
heading, and follow the colour scheme. Screenshots of a few of them go to ``docs/screenshots/``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack.stack import LocalStack
from ucoauth.adapters.browser_items import Receipt, ReceiptStore

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("devstack_e2e")]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
RECEIPT_COOKIE = "__Host-ucoauth_receipt"
LONG_MERCHANT_ID = "M" + "x7" * 31 + "Z"  # 64 characters: the longest id the app accepts
TIMEOUT_MS = 10_000
LAYOUTS = {
    "phone": {"width": 390, "height": 844},
    "narrow": {"width": 320, "height": 640},
    "desktop": {"width": 1280, "height": 800},
}
# (name, path, status, heading contains)
PAGES = [
    ("success", "/installed", 200, "Acme Sync is installed"),
    ("declined", "/oauth/callback?error=access_denied", 200, "cancelled"),
    ("timed-out", "/oauth/callback?code=abcdefgh12345&state=abcdefgh12345", 400, "timed out"),
    ("temporary", "/oauth/callback?error=temporarily_unavailable", 503, "temporarily unavailable"),
    ("misconfigured", "/oauth/callback?error=unauthorized_client", 400, "cannot be installed"),
    ("damaged", "/oauth/callback?code=abcdefgh12345", 400, "incomplete or damaged"),
    ("not-found", "/instal", 404, "Page not found"),
]
# Which (page, layout, scheme) go into docs/screenshots (README shows them).
SHOTS = {
    ("success", "phone", "dark"): "install-success-phone-dark.png",
    ("timed-out", "desktop", "dark"): "install-timed-out-dark.png",
    ("misconfigured", "phone", "light"): "install-misconfigured-phone.png",
}


@pytest.fixture(scope="module")
def receipt(stack: LocalStack) -> str:
    """A receipt for a 64-character merchant id, stored as a completed install would store it."""
    nonce = secrets.token_urlsafe(32)
    store = ReceiptStore(stack.resources.table_name, client=lambda: stack.client("dynamodb"))
    store.put(
        nonce, Receipt(merchant_id=LONG_MERCHANT_ID, reinstall=False), now=int(time.time()), ttl_seconds=600
    )
    return nonce


@dataclass
class Opened:
    page: Any
    console: list[str]


@pytest.fixture
def browser(chromium: Any) -> Any:
    return chromium.get()


@contextmanager
def _open(browser: Any, stack: LocalStack, receipt: str, layout: str, scheme: str) -> Iterator[Opened]:
    context = browser.new_context(viewport=LAYOUTS[layout], color_scheme=scheme)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_cookies(
        [
            {
                "name": RECEIPT_COOKIE,
                "value": receipt,
                # Chromium refuses a Secure cookie for an http:// url here, but takes it for the
                # host (localhost is a secure context): the same host-only cookie the callback sets.
                "domain": urlsplit(stack.gateway_url).hostname,
                "path": "/",
                "secure": True,
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        yield Opened(page, console)
    finally:
        context.close()


def _layout_problems(page: Any) -> dict[str, Any]:
    """Horizontal overflow, anything of the card outside the viewport, text running out of the card."""
    result: dict[str, Any] = page.evaluate(
        """() => {
            const root = document.documentElement;
            const width = root.clientWidth;
            const outside = [...document.querySelectorAll('main, main *')]
                .map(e => [e.tagName, e.getBoundingClientRect()])
                .filter(([, r]) => r.width > 0 && (r.left < -0.5 || r.right > width + 0.5))
                .map(([tag, r]) => `${tag} ${Math.round(r.left)}..${Math.round(r.right)}`);
            const card = document.querySelector('main');
            return {scrollWidth: root.scrollWidth, clientWidth: width, outside,
                    textOutsideCard: card.scrollWidth > card.clientWidth};
        }"""
    )
    return result


def _luminance(rgb: str) -> float:
    channels = [int(part) / 255 for part in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3]]
    return sum(w * c for w, c in zip((0.2126, 0.7152, 0.0722), channels, strict=True))


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_page_fits_follows_the_scheme_and_keeps_its_csp(
    stack: LocalStack, browser: Any, receipt: str, layout: str, scheme: str
) -> None:
    with _open(browser, stack, receipt, layout, scheme) as opened:
        page = opened.page
        for name, path, status, heading in PAGES:
            response = page.goto(f"{stack.gateway_url}{path}")
            assert response is not None and response.status == status, name
            assert page.locator("html").get_attribute("lang") == "en"
            assert page.locator("h1").count() == 1
            assert heading in page.locator("h1").inner_text(), name
            assert "Acme Sync" in page.title(), name
            if name == "success":
                assert LONG_MERCHANT_ID in page.locator("main").inner_text()
            problems = _layout_problems(page)
            assert problems["scrollWidth"] <= problems["clientWidth"], (name, problems)
            assert problems["outside"] == [], (name, problems)
            assert problems["textOutsideCard"] is False, (name, problems)
            card = page.evaluate("getComputedStyle(document.querySelector('main')).backgroundColor")
            assert (_luminance(card) < 0.2) is (scheme == "dark"), (name, card)
            shot = SHOTS.get((name, layout, scheme))
            if shot:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / shot), full_page=True)
            # Keyboard: the first Tab lands on a link of the page.
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.tagName") == "A", name
        violations = [text for text in opened.console if "Content Security Policy" in text]
        assert violations == []


def test_without_a_receipt_the_success_url_is_a_neutral_page(
    stack: LocalStack, browser: Any, receipt: str
) -> None:
    with _open(browser, stack, receipt, "phone", "light") as opened:
        page = opened.page
        page.context.clear_cookies()
        response = page.goto(f"{stack.gateway_url}/installed")
        assert response is not None and response.status == 200
        assert page.locator("h1").inner_text() == "This page has expired"
        assert LONG_MERCHANT_ID not in page.content()
        assert page.locator("#retry").get_attribute("href") == f"{stack.gateway_url}/install"
        assert page.locator("main").get_attribute("class") == "info"


def test_in_forced_colours_the_button_keeps_its_shape(stack: LocalStack, browser: Any, receipt: str) -> None:
    context = browser.new_context(viewport=LAYOUTS["phone"], forced_colors="active")
    try:
        page = context.new_page()
        page.goto(f"{stack.gateway_url}/oauth/callback?error=access_denied")
        border = page.evaluate(
            "(() => { const s = getComputedStyle(document.querySelector('#retry'));"
            " return [s.borderTopStyle, parseFloat(s.borderTopWidth)]; })()"
        )
        assert border[0] == "solid" and border[1] >= 1
    finally:
        context.close()

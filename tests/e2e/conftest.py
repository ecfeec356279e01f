"""Fixtures for the browser tests: a local stack and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import LocalStack

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# The app as a developer would brand it (template parameters), so the pages show real links.
APP_PARAMETERS = {
    "AppName": "Acme Sync",
    "AppUrl": "https://app.acme.example/",
    "SupportUrl": "mailto:help@acme.example",
    # Where install links may send the merchant back to after the success page.
    "InstallReturnOrigins": "https://app.acme.example",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """The whole local stack on free ports (moto, resources, UltraCart sandbox, gateway)."""
    # environ={}: always the sandbox, whatever ULTRACART_BASE_URL the shell exports.
    with LocalStack(environ={}, parameters=APP_PARAMETERS) as started:
        yield started


@dataclass
class BrowserHandle:
    """The launched browser, or why it could not be launched (the test fails with that)."""

    browser: Any = None
    error: str | None = None

    def get(self) -> Any:
        if self.browser is None:
            pytest.fail(self.error or "Chromium is not running", pytrace=False)
        return self.browser


@pytest.fixture(scope="module")
def chromium() -> Iterator[BrowserHandle]:
    """Headless Chromium (Debian's package, never a downloaded browser), shared by the module."""
    if not CHROMIUM.exists():
        yield BrowserHandle(
            error=f"{CHROMIUM} not found: install Debian's chromium package (make system-deps, "
            "or sudo apt-get install chromium); the browser tests never download a browser"
        )
        return
    from playwright.sync_api import Error, sync_playwright

    playwright = sync_playwright().start()
    try:
        try:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=30_000
            )
        except Error as exc:
            yield BrowserHandle(error=f"could not launch {CHROMIUM}: {exc}")
            return
        try:
            yield BrowserHandle(browser=browser)
        finally:
            browser.close()
    finally:
        playwright.stop()

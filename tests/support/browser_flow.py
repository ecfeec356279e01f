"""The merchant's browser flow over real HTTP against a running local stack (requests, no browser)."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlsplit

import requests

from devstack.stack import LocalStack

TIMEOUT = 10
STATE_COOKIE = "__Host-ucoauth_state"
RECEIPT_COOKIE = "__Host-ucoauth_receipt"


class PageForm(HTMLParser):
    """A page's form (the sandbox's consent or device verification page): its action and inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = values.get("action", "")
        elif tag == "input" and "name" in values:
            self.fields[values["name"]] = values.get("value", "")


@dataclass
class Started:
    authorize_url: str
    cookie_header: str  # the whole Set-Cookie header of /install
    cookie: str  # name=value, to send back


def start_install(stack: LocalStack) -> Started:
    response = requests.get(f"{stack.gateway_url}/install", allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302, response.text
    set_cookie = response.headers["Set-Cookie"]
    return Started(response.headers["Location"], set_cookie, set_cookie.split(";", 1)[0])


def decide(stack: LocalStack, started: Started, merchant_id: str, decision: str) -> str:
    """Load the consent page and press a button; returns where UltraCart sends the browser."""
    page = requests.get(started.authorize_url, timeout=TIMEOUT)
    assert page.status_code == 200
    assert 'id="approve"' in page.text
    assert 'id="deny"' in page.text
    form = PageForm()
    form.feed(page.text)
    action = urlsplit(started.authorize_url)._replace(path=form.action, query="").geturl()
    answer = requests.post(
        action,
        data={**form.fields, "merchant_id": merchant_id, "decision": decision},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def install(stack: LocalStack, merchant_id: str) -> requests.Response:
    """The browser flow with requests: /install, consent (Approve), callback through the gateway."""
    started = start_install(stack)
    callback = decide(stack, started, merchant_id, "approve")
    assert callback.startswith(f"{stack.gateway_url}/oauth/callback?")
    response = requests.get(
        callback, headers={"Cookie": started.cookie}, allow_redirects=False, timeout=TIMEOUT
    )
    assert response.status_code == 303, response.text
    assert response.headers["Location"] == f"{stack.gateway_url}/installed"
    receipt = next(c for c in set_cookies(response) if c.startswith(f"{RECEIPT_COOKIE}="))
    page = requests.get(
        response.headers["Location"], headers={"Cookie": receipt.split(";")[0]}, timeout=TIMEOUT
    )
    assert page.status_code == 200, page.text
    page.history = [response]
    return page


def set_cookies(response: requests.Response) -> list[str]:
    """Every Set-Cookie header of a response, one cookie each."""
    return list(response.raw.headers.getlist("Set-Cookie"))

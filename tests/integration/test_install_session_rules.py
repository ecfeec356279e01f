"""The install sessions' rules over real HTTP to moto's server (each handler as its own role) and
the sandbox: expiry, relinking (both rules), RequireInstallSession."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.lambdas import invoke, load_event
from tests.support.observer import observed_events
from ucoauth.adapters.services import Services
from ucsandbox import Sandbox

pytestmark = pytest.mark.integration
REDIRECT = "http://localhost:3000/oauth/callback"


def new_link(account: str) -> str:
    event = load_event("install-sessions-create.json")
    event["body"] = json.dumps({"app_account_id": account})
    answer = invoke("TokenApiFunction", event)
    assert answer["statusCode"] == 201, answer
    url: str = json.loads(answer["body"])["install_url"]
    return parse_qs(urlsplit(url).query)["session"][0]


def open_install(session: str | None) -> dict[str, Any]:
    event = load_event("install.json")
    event["rawQueryString"] = "" if session is None else f"session={session}"
    answer: dict[str, Any] = invoke("OAuthBrowserFunction", event)
    return answer


def come_back(started: dict[str, Any], sandbox: Sandbox, merchant_id: str) -> dict[str, Any]:
    state = parse_qs(urlsplit(started["headers"]["Location"]).query)["state"][0]
    nonce = started["cookies"][0].split(";")[0].split("=", 1)[1]
    code = sandbox.issue_code(merchant_id, REDIRECT)
    event = load_event("callback-success.json", code=code, state=state, nonce=nonce)
    answer: dict[str, Any] = invoke("OAuthBrowserFunction", event)
    return answer


def test_an_expired_link_gets_a_page(live: Services, sandbox: Sandbox) -> None:
    session = new_link("acct-exp")
    live.clock = lambda: time.time() + 1800
    answer = open_install(session)
    assert answer["statusCode"] == 410 and "Location" not in answer["headers"]
    assert sandbox.requests() == []


@pytest.mark.parametrize("rule", ["allow", "refuse"])
def test_the_relink_rule(live_in_scope: Any, sandbox: Sandbox, aws_server: Any, rule: str) -> None:
    services = live_in_scope("application", INSTALL_RELINK=rule)
    first = new_link("acct-A")
    assert come_back(open_install(first), sandbox, "REL1")["statusCode"] == 303
    before = sandbox.live_grants("REL1")
    second = new_link("acct-B")
    answer = come_back(open_install(second), sandbox, "REL1")
    installation = services.installations.get("REL1")
    assert installation is not None
    relinked = [e for e in observed_events(aws_server) if e["detail-type"] == "Installation Relinked"]
    if rule == "allow":
        assert answer["statusCode"] == 303 and installation.app_account_id == "acct-B"
        assert [
            (e["detail"]["previous_app_account_id"], e["detail"]["app_account_id"]) for e in relinked
        ] == [("acct-A", "acct-B")]
    else:
        assert answer["statusCode"] == 409 and installation.app_account_id == "acct-A"
        assert relinked == [] and installation.generation == 1
        # The grant the refused install obtained was revoked at UltraCart: the first one alone is live.
        assert sandbox.live_grants("REL1") == before


def test_require_install_session(live_in_scope: Any, sandbox: Sandbox) -> None:
    live_in_scope("application", REQUIRE_INSTALL_SESSION="true")
    anonymous = open_install(None)
    assert anonymous["statusCode"] == 403 and "Location" not in anonymous["headers"]
    started = open_install(new_link("acct-R"))
    assert started["statusCode"] == 302
    assert come_back(started, sandbox, "REQ1")["statusCode"] == 303

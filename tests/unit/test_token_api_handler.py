"""GET /tokens/{merchant_id}: statuses and bodies the app's services rely on."""

from __future__ import annotations

import json

import pytest

from tests.support.clock import Clock
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.installs import install
from tests.support.lambdas import invoke, load_event
from ucoauth.services import Services

FN = "TokenApiFunction"


def get(merchant_id: str) -> tuple[int, dict[str, object]]:
    event = load_event("tokens-get.json")
    event["rawPath"] = f"/tokens/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    response = invoke(FN, event)
    assert response["headers"]["Cache-Control"] == "no-store"
    return response["statusCode"], json.loads(response["body"])


def test_an_installed_merchant_gets_its_token(services: Services, fake_uc: FakeUltraCart) -> None:
    install(services, fake_uc)
    status, body = get("DEMO1")
    assert status == 200
    assert set(body) == {"merchant_id", "access_token", "token_type", "expires_at", "scope"}
    assert body["access_token"] in fake_uc.access_owner
    assert body["token_type"] == "bearer" and str(body["expires_at"]).endswith("Z")


def test_a_token_without_expiry_has_null_expires_at(services: Services, fake_uc: FakeUltraCart) -> None:
    fake_uc.expires_in = None
    install(services, fake_uc)
    assert get("DEMO1")[1]["expires_at"] is None


def test_the_shared_event_for_an_unknown_merchant_is_404(services: Services) -> None:
    response = invoke(FN, load_event("tokens-unknown-merchant.json"))
    assert response["statusCode"] == 404
    assert json.loads(response["body"]) == {"error": "not_installed"}


@pytest.mark.parametrize("bad", ["bad id<>", "..", "x" * 200, "a/b", "%00"])
def test_malformed_ids_are_400_never_5xx(services: Services, bad: str) -> None:
    status, body = get(bad)
    assert status in (400, 404)
    if status == 400:
        assert body == {"error": "invalid_merchant_id"}


def test_the_shared_event_for_a_bad_id_is_400(services: Services) -> None:
    response = invoke(FN, load_event("tokens-bad-merchant-id.json"))
    assert response["statusCode"] == 400


def test_reauthorization_required_is_409(services: Services, fake_uc: FakeUltraCart, clock: Clock) -> None:
    install(services, fake_uc)
    fake_uc.live_refresh.clear()
    clock.now += 3600 - 100
    assert get("DEMO1") == (409, {"error": "reauthorization_required"})
    assert get("DEMO1") == (409, {"error": "reauthorization_required"})


def test_upstream_unavailable_is_503_only_once_expired(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    clock.now += 3600 - 100
    fake_uc.fail_next.append(transient(500))
    assert get("DEMO1")[0] == 200  # still valid: the stored token is served
    clock.now += 200
    fake_uc.fail_next.append(transient(500))
    assert get("DEMO1") == (503, {"error": "upstream_unavailable"})

"""GET /tokens/{merchant_id}: statuses and bodies the app's services rely on."""

from __future__ import annotations

import json

import pytest

from tests.support.clock import Clock
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.installs import install
from tests.support.lambdas import call_handler, invoke, load_event
from ucoauth.adapters.services import Services

FN = "TokenApiFunction"


def get(merchant_id: str, query: str = "", *, nested: bool = False) -> tuple[int, dict[str, object]]:
    return answer(merchant_id, query, nested=nested)[:2]


def answer(
    merchant_id: str, query: str = "", *, nested: bool = False, timeout_seconds: float | None = None
) -> tuple[int, dict[str, object], dict[str, str]]:
    """The token function's answer; ``nested`` runs it from inside another invocation (or with
    ``timeout_seconds`` left)."""
    event = load_event("tokens-get.json")
    event["rawPath"] = f"/tokens/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    event["rawQueryString"] = query
    if query:
        # What HttpApi does with a repeated name: one comma-joined value.
        joined: dict[str, str] = {}
        for name, _, value in (part.partition("=") for part in query.split("&")):
            joined[name] = f"{joined[name]},{value}" if name in joined else value
        event["queryStringParameters"] = joined
    if nested or timeout_seconds is not None:
        response = call_handler(FN, event, timeout_seconds=timeout_seconds)
    else:
        response = invoke(FN, event)
    assert response["headers"]["Cache-Control"] == "no-store"
    return response["statusCode"], json.loads(response["body"]), response["headers"]


def test_an_installed_merchant_gets_its_token(services: Services, fake_uc: FakeUltraCart) -> None:
    install(services, fake_uc)
    status, body = get("DEMO1")
    assert status == 200
    assert set(body) == {
        "merchant_id",
        "access_token",
        "token_type",
        "expires_at",
        "scope",
        "version",
        "app_account_id",
    }
    assert body["app_account_id"] is None  # installed without an install session
    installation = services.installations.get("DEMO1")
    assert installation is not None and body["version"] == installation.version
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
    clock.now += 3600 - 30
    assert get("DEMO1") == (409, {"error": "reauthorization_required"})
    assert get("DEMO1") == (409, {"error": "reauthorization_required"})


def test_upstream_unavailable_is_503_only_once_expired(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    clock.now += 3600 - 30
    fake_uc.fail_next.append(transient(500))
    assert get("DEMO1")[0] == 200  # still valid: the stored token is served
    clock.now += 200
    fake_uc.fail_next.append(transient(500))
    assert get("DEMO1") == (503, {"error": "upstream_unavailable"})


# -- min_valid_seconds: a token valid at least N more seconds ------------------------------------


def test_min_valid_seconds_refreshes_a_token_that_would_expire_sooner(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    first = get("DEMO1")[1]
    clock.now += 3600 - 1000  # 1,000 s left: beyond the inline margin, so a plain read keeps it
    assert get("DEMO1")[1]["access_token"] == first["access_token"]
    assert get("DEMO1", "min_valid_seconds=900")[1]["access_token"] == first["access_token"]
    assert fake_uc.calls.count("refresh") == 0

    status, body = get("DEMO1", "min_valid_seconds=1200")

    assert status == 200 and fake_uc.calls.count("refresh") == 1
    assert body["access_token"] != first["access_token"]
    assert isinstance(body["version"], int) and isinstance(first["version"], int)
    assert body["version"] > first["version"]
    assert get("DEMO1", "min_valid_seconds=3300")[1]["access_token"] == body["access_token"]
    assert fake_uc.calls.count("refresh") == 1


def test_min_valid_seconds_that_cannot_be_met_now_is_503_not_a_shorter_token(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    clock.now += 3600 - 1000
    fake_uc.fail_next.append(transient(503))
    status, body, headers = answer("DEMO1", "min_valid_seconds=1200")
    assert (status, body) == (503, {"error": "upstream_unavailable"})
    assert int(headers["Retry-After"]) >= 1
    assert get("DEMO1")[0] == 200  # without the demand the stored token still serves


def test_a_demand_longer_than_ultracarts_tokens_live_does_not_refresh_on_every_call(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    fake_uc.expires_in = 600  # UltraCart issues 10-minute tokens
    install(services, fake_uc)
    first = get("DEMO1", "min_valid_seconds=3300")[1]
    assert fake_uc.calls.count("refresh") == 0  # capped at the lifetime less the margin: 540 s
    clock.now += 350
    second = get("DEMO1", "min_valid_seconds=3300")[1]
    assert fake_uc.calls.count("refresh") == 1 and second["access_token"] != first["access_token"]
    for _ in range(3):
        assert get("DEMO1", "min_valid_seconds=3300")[1] == second
    assert fake_uc.calls.count("refresh") == 1


@pytest.mark.parametrize(
    "query",
    [
        "min_valid_seconds=-1",
        "min_valid_seconds=3301",
        "min_valid_seconds=abc",
        "min_valid_seconds=1.5",
        "min_valid_seconds=",
        "min_valid_seconds=%2B5",
        "min_valid_seconds=%205",
        "min_valid_seconds=" + "9" * 40,
        "min_valid_seconds=1&min_valid_seconds=2",
        "newer_than=abc",
        "newer_than=-1",
        "newer_than=1&newer_than=1",
        "newer_than=" + "9" * 40,
        "token=abc",
        "min_valid_seconds=10&extra=1",
        "%ff=1",
    ],
)
def test_a_bad_repeated_or_unknown_parameter_is_400_and_nothing_happens(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, query: str
) -> None:
    install(services, fake_uc)
    clock.now += 3600 - 30  # a plain read would refresh inline now
    before = services.installations.get("DEMO1")

    assert get("DEMO1", query) == (400, {"error": "invalid_parameter"})

    assert fake_uc.calls.count("refresh") == 0
    assert services.installations.get("DEMO1") == before


# -- newer_than: the token UltraCart refused (401) is replaced once ------------------------------


def test_newer_than_the_stored_version_refreshes_once_and_later_callers_get_that_token(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    install(services, fake_uc)
    refused = get("DEMO1")[1]

    status, fresh = get("DEMO1", f"newer_than={refused['version']}")

    assert status == 200 and fake_uc.calls.count("refresh") == 1
    assert fresh["access_token"] != refused["access_token"]
    assert isinstance(fresh["version"], int) and isinstance(refused["version"], int)
    assert fresh["version"] > refused["version"]
    # Every other process that saw the same 401 asks with the same version: no second refresh.
    for _ in range(3):
        assert get("DEMO1", f"newer_than={refused['version']}") == (200, fresh)
    assert fake_uc.calls.count("refresh") == 1
    # An older version than the stored one is already satisfied.
    assert get("DEMO1", f"newer_than={fresh['version'] - 1}") == (200, fresh)
    assert fake_uc.calls.count("refresh") == 1


def test_newer_than_while_another_caller_refreshes_never_returns_the_refused_token(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    install(services, fake_uc)
    refused = get("DEMO1")[1]
    during: list[tuple[int, dict[str, object]]] = []
    # The holder is stuck inside its UltraCart call for the waiter's whole wait.
    fake_uc.during_refresh = lambda: during.append(
        get("DEMO1", f"newer_than={refused['version']}", nested=True)
    )

    status, fresh = get("DEMO1", f"newer_than={refused['version']}")

    assert status == 200 and fresh["access_token"] != refused["access_token"]
    assert during == [(503, {"error": "upstream_unavailable"})]
    assert fake_uc.calls.count("refresh") == 1


def test_newer_than_when_ultracart_fails_is_503_not_the_refused_token(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    install(services, fake_uc)
    refused = get("DEMO1")[1]
    fake_uc.fail_next.append(transient(500))
    status, body, headers = answer("DEMO1", f"newer_than={refused['version']}")
    assert (status, body) == (503, {"error": "upstream_unavailable"})
    assert "Retry-After" in headers


def test_newer_than_for_an_unknown_merchant_is_404(services: Services) -> None:
    assert get("NOBODY", "newer_than=3") == (404, {"error": "not_installed"})


def test_newer_than_without_time_to_store_an_answer_sends_nothing_and_is_503(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    install(services, fake_uc)
    refused = get("DEMO1")[1]

    status, body, headers = answer("DEMO1", f"newer_than={refused['version']}", timeout_seconds=8)

    assert (status, body) == (503, {"error": "upstream_unavailable"})
    assert int(headers["Retry-After"]) >= 1
    assert fake_uc.calls.count("refresh") == 0
    assert get("DEMO1", f"newer_than={refused['version']}")[0] == 200  # with time, it refreshes
    assert fake_uc.calls.count("refresh") == 1

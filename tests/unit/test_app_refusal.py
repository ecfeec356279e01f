"""UltraCart refusing the app itself (its client secret or id) is the app's fault, never a merchant's.

The package's real UltraCart client reads UltraCart's answers (tests/support/app_gate.py puts
UltraCart's client check in front of the fake UltraCart, no network). While the app is refused:
no merchant's state changes, no revoke is confirmed, nothing is given up on, and every kind of
work waits to be retried; once the credentials work again, it completes.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from devstack.resources import LocalResources
from tests.support.app_gate import AppGate, gated_client
from tests.support.clock import Clock
from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.installs import install, stored_tokens
from tests.support.lambdas import invoke, load_event, sqs_event
from tests.support.observer import published_events
from ucoauth.adapters.installations.model import ACTIVE, UNINSTALLED
from ucoauth.adapters.services import Services
from ucoauth.adapters.table import merchant_key
from ucoauth.base.errors import RevokePendingError
from ucoauth.base.timing import Deadline
from ucoauth.usecases.device import poll_device_authorization, start_device_authorization
from ucoauth.usecases.refresh import plan, refresh_due
from ucoauth.usecases.uninstall import process_uninstall


@pytest.fixture
def gate(services: Services, fake_uc: FakeUltraCart) -> AppGate:
    """The app's calls go through the real client; UltraCart accepts the app until told otherwise."""
    gate = AppGate(fake_uc)
    client = gated_client(gate)
    services.ultracart_factory = lambda: client
    return gate


def raw_item(aws: LocalResources, merchant_id: str) -> dict[str, Any]:
    key = merchant_key(merchant_id)
    item: dict[str, Any] = boto3.client("dynamodb").get_item(TableName=aws.table_name, Key=key)["Item"]
    return item


def uninstall_message(merchant_id: str, services: Services) -> dict[str, Any]:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(services.now() + 1, tz=UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": "webhook:t",
        "source": "webhook",
        "detail-type": "App Uninstalled",
        "time": when,
        "detail": {"merchant_id": merchant_id},
    }


def token_api(merchant_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    event = load_event("tokens-get.json")
    event["rawPath"] = f"/tokens/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    response = invoke("TokenApiFunction", event)
    return response["statusCode"], json.loads(response["body"]), response["headers"]


# -- scheduled refresh --------------------------------------------------------------------------


def test_a_refused_app_changes_no_merchant_and_the_planner_brings_the_refresh_back(
    services: Services, fake_uc: FakeUltraCart, gate: AppGate, aws: LocalResources
) -> None:
    # Given an installation due for refresh, and UltraCart refusing the app's client
    fake_uc.expires_in = 60
    install(services, fake_uc)
    published_events(aws)
    before = services.installations.get("DEMO1")
    assert before is not None and before.due_at is not None
    gate.refuse = True

    # When the worker refreshes it
    result = refresh_due(services, "DEMO1", deadline=a_deadline(services))

    # Then UltraCart was asked once, and nothing about the merchant changed
    assert result != "reauthorization"
    assert gate.statuses("/oauth/token") == [200, 401]  # the install's exchange, then the refusal
    after = services.installations.get("DEMO1")
    assert after is not None
    assert after.status == ACTIVE and after.version == before.version and after.due_at == before.due_at
    assert after.tokens_ciphertext == before.tokens_ciphertext and after.lease_owner is None
    assert "consecutive_failures" not in raw_item(aws, "DEMO1")  # not counted as the merchant's failure
    assert published_events(aws) == []
    assert stored_tokens(services, "DEMO1").refresh_token in fake_uc.live_grants("DEMO1")
    # And it is still due: the planner's next run queues it again, and then it is refreshed
    assert plan(services) == ["DEMO1"]
    gate.refuse = False
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "refreshed"


def test_a_refused_refresh_through_the_worker_is_acknowledged_not_dead_lettered(
    services: Services, fake_uc: FakeUltraCart, gate: AppGate
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    gate.refuse = True
    event = load_event("sqs-refresh.json")
    assert invoke("RefreshWorkerFunction", event) == {"batchItemFailures": []}
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == ACTIVE and installation.due_at is not None


# -- the token API ------------------------------------------------------------------------------


def test_the_token_api_serves_a_valid_stored_token_while_the_app_is_refused(
    services: Services, fake_uc: FakeUltraCart, gate: AppGate
) -> None:
    # Given a token inside the inline refresh margin but still valid
    fake_uc.expires_in = 120
    install(services, fake_uc)
    stored = stored_tokens(services, "DEMO1").access_token
    gate.refuse = True
    status, body, _ = token_api("DEMO1")
    assert (status, body["access_token"]) == (200, stored)


def test_the_token_api_answers_503_with_retry_after_once_the_stored_token_expired(
    services: Services, fake_uc: FakeUltraCart, gate: AppGate, clock: Clock, aws: LocalResources
) -> None:
    fake_uc.expires_in = 120
    install(services, fake_uc)
    stored = stored_tokens(services, "DEMO1").access_token
    published_events(aws)
    gate.refuse = True
    clock.now += 200  # the stored access token has expired
    status, body, headers = token_api("DEMO1")
    assert (status, body) == (503, {"error": "upstream_unavailable"})
    assert int(headers["Retry-After"]) >= 1
    # Never 409: the merchant's grant is fine, and it is still active
    status, _, _ = token_api("DEMO1")
    assert status == 503
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == ACTIVE and installation.due_at is not None
    assert published_events(aws) == []
    # Once the credentials work again, the next call refreshes and serves
    gate.refuse = False
    status, body, _ = token_api("DEMO1")
    assert status == 200 and body["access_token"] != stored


# -- uninstall ----------------------------------------------------------------------------------


def test_an_uninstall_refused_with_the_apps_credentials_is_never_confirmed_nor_given_up(
    services: Services, fake_uc: FakeUltraCart, gate: AppGate, clock: Clock
) -> None:
    # Given an installation, and UltraCart refusing the app while the merchant uninstalls
    install(services, fake_uc)
    tokens = stored_tokens(services, "DEMO1")
    gate.refuse = True
    body = uninstall_message("DEMO1", services)

    # When the revoke worker tries, again and again, for longer than the revoke period
    for _ in range(4):
        with pytest.raises(RevokePendingError) as pending:
            process_uninstall(services, body, deadline=a_deadline(services))
        body = {**body, "retry_since": pending.value.retry_since}
        if getattr(pending.value, "app_refused_at", None) is not None:
            body["app_refused_at"] = pending.value.app_refused_at
        clock.now += services.settings.revoke_retry_seconds  # a day each time

    # Then nothing was confirmed or shredded: the tokens are kept for the revoke, the grant live
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == "uninstalling"
    assert installation.tokens_ciphertext is not None
    assert tokens.refresh_token in fake_uc.live_grants("DEMO1")
    # And once the credentials work, the uninstall completes with a confirmed revoke
    gate.refuse = False
    assert process_uninstall(services, body, deadline=a_deadline(services)) == "removed"
    removed = services.installations.get("DEMO1")
    assert removed is not None and removed.status == UNINSTALLED and removed.revoke_confirmed is True
    assert fake_uc.live_grants("DEMO1") == []


def test_the_revoke_worker_defers_a_refused_uninstall_and_does_not_count_that_time(
    services: Services,
    fake_uc: FakeUltraCart,
    gate: AppGate,
    clock: Clock,
    aws: LocalResources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ucoauth.adapters.queues._MAX_DELAY", 0)  # the re-sent message is visible at once
    install(services, fake_uc)
    gate.refuse = True
    answer = invoke("RevokeWorkerFunction", sqs_event(uninstall_message("DEMO1", services)))
    assert answer == {"batchItemFailures": []}  # re-sent as a new, delayed message
    sqs = boto3.client("sqs", region_name=aws.region)
    (message,) = sqs.receive_message(QueueUrl=aws.revoke_queue_url, MaxNumberOfMessages=10)["Messages"]
    resent = json.loads(message["Body"])
    # Two days refused, then a transient failure: the revoke period has only just begun
    clock.now += 2 * 86_400
    gate.refuse = False
    fake_uc.fail_next.append(transient())
    with pytest.raises(RevokePendingError) as pending:
        process_uninstall(services, resent, deadline=a_deadline(services))
    assert services.now() - pending.value.retry_since < 60
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == "uninstalling"


# -- a replaced grant's revoke --------------------------------------------------------------------


def test_a_replaced_grant_is_not_counted_revoked_while_the_app_is_refused(
    services: Services,
    fake_uc: FakeUltraCart,
    gate: AppGate,
    aws: LocalResources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ucoauth.adapters.queues._MAX_DELAY", 0)  # the re-sent message is visible at once
    install(services, fake_uc)
    first = stored_tokens(services, "DEMO1")
    install(services, fake_uc)  # a reinstall: the first grant is queued for revocation
    sqs = boto3.client("sqs", region_name=aws.region)
    (queued,) = sqs.receive_message(QueueUrl=aws.revoke_queue_url, MaxNumberOfMessages=10)["Messages"]
    sqs.delete_message(QueueUrl=aws.revoke_queue_url, ReceiptHandle=queued["ReceiptHandle"])
    gate.refuse = True
    answer = invoke("RevokeWorkerFunction", sqs_event(json.loads(queued["Body"])))
    assert answer == {"batchItemFailures": []}
    (again,) = sqs.receive_message(QueueUrl=aws.revoke_queue_url, MaxNumberOfMessages=10)["Messages"]
    assert first.refresh_token in fake_uc.live_grants("DEMO1")  # still live: not "revoked"
    gate.refuse = False
    assert invoke("RevokeWorkerFunction", sqs_event(json.loads(again["Body"]))) == {"batchItemFailures": []}
    assert first.refresh_token not in fake_uc.live_grants("DEMO1")


# -- the browser callback and the device flow --------------------------------------------------


def test_the_callback_says_the_app_cannot_install_now_not_that_the_merchant_did_wrong(
    services: Services, fake_uc: FakeUltraCart, gate: AppGate, aws: LocalResources
) -> None:
    response = invoke("OAuthBrowserFunction", load_event("install.json"))
    state = response["headers"]["Location"].split("state=")[1].split("&")[0]
    nonce = response["cookies"][0].split(";")[0].split("=", 1)[1]
    gate.refuse = True
    code = fake_uc.new_code("DEMO1")
    event = load_event("callback-success.json", code=code, state=state, nonce=nonce)
    page = invoke("OAuthBrowserFunction", event)
    assert page["statusCode"] == 503
    body = page["body"]
    assert "cannot complete installations right now" in body and "try again later" in body
    assert 'id="retry"' in body
    assert code in fake_uc.codes  # UltraCart did not consume the code
    assert services.installations.get("DEMO1") is None


def test_a_device_poll_refused_with_the_apps_credentials_is_polled_again_later(
    services: Services, fake_uc: FakeUltraCart, gate: AppGate, clock: Clock, aws: LocalResources
) -> None:
    deadline = Deadline(clock() + 60, clock)
    started = start_device_authorization(services, scope=None, deadline=deadline)
    code = list(fake_uc.devices)[-1]
    fake_uc.decide_device(code, "approved", "DEV1")
    gate.refuse = True
    result = poll_device_authorization(services, started.authorization_id, 0, deadline=deadline)
    assert result not in ("failed", "expired", "denied")
    gate.refuse = False
    clock.now += 60
    later = Deadline(clock() + 60, clock)
    again = poll_device_authorization(services, started.authorization_id, 0, deadline=later)
    assert again == "installed"
    installation = services.installations.get("DEV1")
    assert installation is not None and installation.status == ACTIVE


def test_starting_a_device_authorization_while_the_app_is_refused_is_a_503(
    services: Services, gate: AppGate, aws: LocalResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate.refuse = True
    response = invoke("DeviceFlowFunction", load_event("device-start.json"))
    assert response["statusCode"] == 503
    assert json.loads(response["body"]) == {"error": "upstream_unavailable"}
    assert int(response["headers"]["Retry-After"]) >= 1

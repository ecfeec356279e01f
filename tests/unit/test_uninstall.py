"""Uninstall: the signed webhook (real standardwebhooks library) and the revoke worker."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from standardwebhooks.webhooks import Webhook

from devstack.resources import LocalResources
from tests.support.clock import Clock
from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.installs import install
from tests.support.lambdas import invoke, load_event, sqs_event
from tests.support.observer import published_events
from ucoauth.adapters.services import Services
from ucoauth.usecases.install import begin_install, complete_install
from ucoauth.usecases.uninstall import UNINSTALL_CLOCK_SKEW

FN = "UninstallWebhookFunction"
REDIRECT = "https://api.example/oauth/callback"


def body_for(
    merchant_id: str = "DEMO1", *, kind: str = "app.uninstalled", when: datetime | None = None
) -> str:
    when = when or datetime.now(UTC)
    stamp = when.isoformat().replace("+00:00", "Z")
    return json.dumps({"type": kind, "timestamp": stamp, "data": {"merchant_id": merchant_id}})


def signed(
    secret: str, body: str, *, msg_id: str | None = None, at: datetime | None = None
) -> dict[str, Any]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    event = load_event("webhook-uninstall.json")
    event["body"] = body
    event["headers"]["webhook-id"] = msg_id
    event["headers"]["webhook-timestamp"] = str(int(at.timestamp()))
    event["headers"]["webhook-signature"] = Webhook(secret).sign(msg_id, at, body)
    return event


def queued(aws: LocalResources) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=aws.region)
    answer = sqs.receive_message(
        QueueUrl=aws.revoke_queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
    )
    return [dict(m) for m in answer.get("Messages", [])]


def post(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = invoke(FN, event)
    return response["statusCode"], json.loads(response["body"])


def test_a_signed_uninstall_is_queued_once(services: Services, aws: LocalResources) -> None:
    event = signed(aws.webhook_secret_value, body_for())
    assert post(event) == (202, {"status": "queued"})
    assert post(event) == (202, {"status": "duplicate"})
    messages = queued(aws)
    assert len(messages) == 1
    message = json.loads(messages[0]["Body"])
    assert message["detail-type"] == "App Uninstalled" and message["detail"] == {"merchant_id": "DEMO1"}


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda e, s: e.update(body=e["body"].replace("DEMO1", "DEMO2")), 401),  # tampered body
        (lambda e, s: e.update(signed("d2hhdGV2ZXJ3aGF0ZXZlcndoYXRldmVy", e["body"])), 401),  # wrong secret
        (lambda e, s: e["headers"].pop("webhook-signature"), 401),
        (lambda e, s: e["headers"].pop("webhook-id"), 401),
        (lambda e, s: e["headers"].pop("webhook-timestamp"), 401),
        (lambda e, s: e["headers"].update({"webhook-signature": "garbage"}), 401),
        (lambda e, s: e["headers"].update({"webhook-timestamp": "not-a-number"}), 401),
    ],
)
def test_bad_signatures_are_401_and_nothing_is_queued(
    services: Services, aws: LocalResources, mutate: Any, status: int
) -> None:
    event = signed(aws.webhook_secret_value, body_for())
    mutate(event, aws.webhook_secret_value)
    assert post(event)[0] == status
    assert queued(aws) == []


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_stale_and_future_timestamps_are_401(
    services: Services, aws: LocalResources, offset: timedelta
) -> None:
    at = datetime.now(UTC) + offset
    assert post(signed(aws.webhook_secret_value, body_for(), at=at))[0] == 401
    assert queued(aws) == []


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        json.dumps(
            {"type": "app.installed", "timestamp": "2026-11-27T20:00:00Z", "data": {"merchant_id": "X1"}}
        ),
        json.dumps({"type": "app.uninstalled", "timestamp": "yesterday", "data": {"merchant_id": "X1"}}),
        json.dumps(
            {"type": "app.uninstalled", "timestamp": "2026-11-27T20:00:00Z", "data": {"merchant_id": "<x>"}}
        ),
        json.dumps({"type": "app.uninstalled", "timestamp": "2026-11-27T20:00:00Z"}),
        json.dumps(["app.uninstalled"]),
    ],
)
def test_signed_but_bad_bodies_are_400(services: Services, aws: LocalResources, body: str) -> None:
    assert post(signed(aws.webhook_secret_value, body))[0] == 400
    assert queued(aws) == []


def test_an_oversize_body_is_413(services: Services, aws: LocalResources) -> None:
    body = json.dumps({"type": "app.uninstalled", "pad": "x" * 9000})
    assert post(signed(aws.webhook_secret_value, body)) == (413, {"error": "body_too_large"})
    assert queued(aws) == []


def test_the_shared_bad_signature_and_stale_events_are_401(services: Services, aws: LocalResources) -> None:
    assert post(load_event("webhook-bad-signature.json"))[0] == 401
    assert post(load_event("webhook-stale.json"))[0] == 401


# -- revoke worker --------------------------------------------------------------------------


def uninstall_message(merchant_id: str = "DEMO1", when: float | None = None) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(when or time.time(), tz=UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": "x",
        "source": "webhook",
        "detail-type": "App Uninstalled",
        "time": stamp,
        "detail": {"merchant_id": merchant_id},
    }


def test_revoke_then_shred_then_tombstone(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, clock: Clock
) -> None:
    install(services, fake_uc)
    published_events(aws)
    tokens = set(fake_uc.access_owner) | set(fake_uc.live_refresh)
    result = invoke("RevokeWorkerFunction", sqs_event(uninstall_message(when=clock.now + 5)))
    assert result == {"batchItemFailures": []}
    assert fake_uc.calls.count("revoke") == 2 and fake_uc.revoked == tokens
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == "uninstalled"
    assert installation.tokens_ciphertext is None and installation.uninstall_reason == "webhook"
    assert [e["detail-type"] for e in published_events(aws)] == ["Installation Removed"]
    status = invoke("TokenApiFunction", load_event("tokens-get.json"))["statusCode"]
    assert status == 404
    # idempotent: a second delivery changes nothing and calls nobody
    assert invoke("RevokeWorkerFunction", sqs_event(uninstall_message(when=clock.now + 6))) == {
        "batchItemFailures": []
    }
    assert fake_uc.calls.count("revoke") == 2


def test_an_uninstall_that_meets_a_busy_lease_comes_back_later_without_spending_a_receive(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, clock: Clock
) -> None:
    from tests.support.roles import harness_boto3_session

    install(services, fake_uc)
    now = services.now()
    services.installations.lease("DEMO1", owner="worker:other", now=now, until=now + 60)
    event = sqs_event(uninstall_message(when=now + 5), receive_count=4)
    assert invoke("RevokeWorkerFunction", event) == {"batchItemFailures": []}  # no receive spent
    sqs = harness_boto3_session(aws.region).client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=aws.revoke_queue_url, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"  # back when it ends
    assert fake_uc.calls.count("revoke") == 0
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == "active"


def test_a_late_uninstall_never_deletes_a_reinstall(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    old = clock.now - UNINSTALL_CLOCK_SKEW - 1  # before the install began, beyond the clock skew
    assert invoke("RevokeWorkerFunction", sqs_event(uninstall_message(when=old))) == {"batchItemFailures": []}
    assert services.installations.get("DEMO1").status == "active"  # type: ignore[union-attr]
    assert "revoke" not in fake_uc.calls


def _install_slowly(services: Services, fake_uc: FakeUltraCart, clock: Clock, merchant_id: str) -> float:
    """An install whose state is issued at T and whose callback writes at T + 8; returns T."""
    start = begin_install(services, redirect_uri=REDIRECT)
    began = clock.now
    state = parse_qs(urlsplit(start.authorize_url).query)["state"][0]
    clock.now += 8
    complete_install(
        services,
        code=fake_uc.new_code(merchant_id),
        state=state,
        browser_nonce=start.browser_nonce,
        redirect_uri=REDIRECT,
        deadline=a_deadline(services, 29),
    )
    return began


@pytest.mark.parametrize("stamped", [3, -30], ids=["after-the-state", "sender-clock-behind"])
def test_an_uninstall_stamped_before_our_write_but_after_the_install_began_uninstalls(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, stamped: int
) -> None:
    began = _install_slowly(services, fake_uc, clock, "DEMO1")
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.began_at == int(began)
    assert installation.installed_at == int(began) + 8
    message = uninstall_message(when=began + stamped)
    assert invoke("RevokeWorkerFunction", sqs_event(message)) == {"batchItemFailures": []}
    assert services.installations.get("DEMO1").status == "uninstalled"  # type: ignore[union-attr]
    assert fake_uc.calls.count("revoke") == 2


def test_an_uninstall_naming_an_installation_acts_on_that_one_only(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    install(services, fake_uc)
    completed = [e for e in published_events(aws) if e["detail-type"] == "Installation Completed"]
    assert completed[-1]["detail"]["installation_id"] == "DEMO1:1"
    clock.now += 600
    install(services, fake_uc)  # generation 2
    # Stamped after the reinstall, but naming generation 1: the reinstall is left alone
    for_first = uninstall_message(when=clock.now + 5)
    for_first["detail"]["installation_id"] = "DEMO1:1"
    assert invoke("RevokeWorkerFunction", sqs_event(for_first)) == {"batchItemFailures": []}
    assert services.installations.get("DEMO1").status == "active"  # type: ignore[union-attr]
    # Stamped long before (a slow sender), but naming the current one: it uninstalls
    for_current = uninstall_message(when=clock.now - 3600)
    for_current["detail"]["installation_id"] = "DEMO1:2"
    assert invoke("RevokeWorkerFunction", sqs_event(for_current)) == {"batchItemFailures": []}
    assert services.installations.get("DEMO1").status == "uninstalled"  # type: ignore[union-attr]


@pytest.mark.parametrize("named", ["DEMO1", "DEMO1:0", "DEMO1:x", "OTHER:1", "DEMO1:1 ", 7, "DEMO1:01"])
def test_a_webhook_with_a_malformed_installation_id_is_400(
    services: Services, aws: LocalResources, named: object
) -> None:
    body = json.loads(body_for())
    body["data"]["installation_id"] = named
    status, answer = post(signed(aws.webhook_secret_value, json.dumps(body)))
    assert status == 400, answer
    assert queued(aws) == []


def test_a_webhook_naming_an_installation_queues_it(services: Services, aws: LocalResources) -> None:
    body = json.loads(body_for())
    body["data"]["installation_id"] = "DEMO1:3"
    assert post(signed(aws.webhook_secret_value, json.dumps(body)))[0] == 202
    (message,) = revoke_messages(aws)
    assert message["detail"] == {"merchant_id": "DEMO1", "installation_id": "DEMO1:3"}


def test_an_uninstall_for_a_merchant_never_installed_is_a_no_op(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    assert invoke("RevokeWorkerFunction", sqs_event(uninstall_message("NOBODY"))) == {"batchItemFailures": []}
    assert fake_uc.calls == [] and services.installations.get("NOBODY") is None


def test_a_failing_revoke_stops_serving_retries_for_the_period_then_shreds_unconfirmed(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    install(services, fake_uc)
    published_events(aws)
    message = uninstall_message(when=clock.now + 1)
    fake_uc.fail_next.append(transient(500))
    # Not a batch item failure (no receive spent toward the DLQ): re-sent as a delayed message.
    assert invoke("RevokeWorkerFunction", sqs_event(message)) == {"batchItemFailures": []}
    sqs = boto3.client("sqs", region_name=aws.region)
    attributes = sqs.get_queue_attributes(QueueUrl=aws.revoke_queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    installation = services.installations.get("DEMO1")
    assert (
        installation is not None
        and installation.status == "uninstalling"
        and installation.lease_owner is None
    )
    assert installation.tokens_ciphertext is not None and installation.due_at is None
    assert invoke("TokenApiFunction", load_event("tokens-get.json"))["statusCode"] == 404
    # Past the retry period with UltraCart still failing: shredded, and the tombstone says so.
    clock.now += services.settings.revoke_retry_seconds + 1
    fake_uc.fail_next.extend([transient(500)])
    retried = {**message, "retry_since": int(clock.now - services.settings.revoke_retry_seconds - 1)}
    assert invoke("RevokeWorkerFunction", sqs_event(retried)) == {"batchItemFailures": []}
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == "uninstalled"
    assert installation.tokens_ciphertext is None and installation.revoke_confirmed is False
    assert installation.uninstall_reason == "webhook;revoke_unconfirmed"
    removed = [e for e in published_events(aws) if e["detail-type"] == "Installation Removed"]
    assert [e["detail"]["revoke_confirmed"] for e in removed] == [False]


def test_reinstall_after_uninstall_starts_a_new_generation(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    invoke("RevokeWorkerFunction", sqs_event(uninstall_message(when=clock.now + 1)))
    clock.now += 10
    install(services, fake_uc)
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == "active" and installation.generation == 2
    assert installation.uninstalled_at is None


def test_an_eventbridge_uninstall_is_handled_the_same_way(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    event = load_event("sqs-revoke-eventbridge.json")
    message = json.loads(event["Records"][0]["body"])
    message["time"] = datetime.fromtimestamp(clock.now + 1, tz=UTC).isoformat()
    event["Records"][0]["body"] = json.dumps(message)
    assert invoke("RevokeWorkerFunction", event) == {"batchItemFailures": []}
    assert services.installations.get("DEMO1").uninstall_reason == "com.example.app"  # type: ignore[union-attr]


def revoke_messages(aws: LocalResources) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in queued(aws)]


def test_a_reinstall_has_the_grant_it_replaced_revoked_by_the_worker(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    install(services, fake_uc)
    first_refresh = next(iter(fake_uc.live_refresh))
    install(services, fake_uc)  # a second install of the same merchant: a second grant
    assert len(fake_uc.live_refresh) == 2
    (message,) = revoke_messages(aws)
    assert message["type"] == "revoke_superseded" and message["merchant_id"] == "DEMO1"
    assert first_refresh not in json.dumps(message)  # the tokens travel encrypted only
    assert invoke("RevokeWorkerFunction", sqs_event(message)) == {"batchItemFailures": []}
    # UltraCart holds exactly the stored grant; the installation is untouched.
    assert first_refresh not in fake_uc.live_refresh and len(fake_uc.live_refresh) == 1
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == "active" and installation.generation == 2
    assert installation.lease_owner is None
    # A redelivery revokes nothing twice and fails nothing.
    assert invoke("RevokeWorkerFunction", sqs_event(message)) == {"batchItemFailures": []}
    assert len(fake_uc.live_refresh) == 1


def test_a_replaced_grant_is_retried_while_ultracart_fails_then_counted_lost(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    install(services, fake_uc)
    install(services, fake_uc)
    (message,) = revoke_messages(aws)
    fake_uc.fail_next.append(transient(500))
    assert invoke("RevokeWorkerFunction", sqs_event(message)) == {"batchItemFailures": []}
    sqs = boto3.client("sqs", region_name=aws.region)
    attributes = sqs.get_queue_attributes(QueueUrl=aws.revoke_queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"  # back later, as a new message
    assert len(fake_uc.live_refresh) == 2
    # Past the retry period, still failing: given up (TokensLost alarms), not retried forever.
    clock.now += services.settings.revoke_retry_seconds + 1
    fake_uc.fail_next.extend([transient(500)])
    late = {**message, "retry_since": int(clock.now - services.settings.revoke_retry_seconds - 1)}
    assert invoke("RevokeWorkerFunction", sqs_event(late)) == {"batchItemFailures": []}
    attributes = sqs.get_queue_attributes(QueueUrl=aws.revoke_queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"  # not deferred again


@pytest.mark.parametrize(
    "body",
    [
        {"type": "revoke_superseded", "merchant_id": "DEMO1", "tokens": "not base64!"},
        {"type": "revoke_superseded", "merchant_id": "../x", "tokens": "AAAA"},
        {"type": "revoke_superseded", "merchant_id": "DEMO1", "tokens": "AAAA"},  # not our ciphertext
        {"type": "revoke_superseded", "merchant_id": "DEMO1"},
    ],
)
def test_a_malformed_replaced_grant_message_is_dropped(
    services: Services, fake_uc: FakeUltraCart, body: dict[str, Any]
) -> None:
    install(services, fake_uc)
    assert invoke("RevokeWorkerFunction", sqs_event(body)) == {"batchItemFailures": []}
    assert fake_uc.calls.count("revoke") == 0
    assert services.installations.get("DEMO1").status == "active"  # type: ignore[union-attr]


def test_the_webhook_secret_is_read_once_while_warm_and_again_after_its_max_age(
    services: Services, aws: LocalResources, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ucoauth.adapters import aws as uc_aws
    from ucoauth.usecases import uninstall

    clock.now = time.time()  # Secrets Manager dates a secret's versions by the real clock
    reads: list[str] = []
    uc_aws.secretsmanager().meta.events.register(
        "before-call.secrets-manager.GetSecretValue", lambda **_: reads.append("read")
    )
    # Given a warm function that verified one webhook with the stack's secret
    now = [1000.0]
    monkeypatch.setattr("ucoauth.usecases.uninstall._secret_clock", lambda: now[0])
    assert post(signed(aws.webhook_secret_value, body_for("ROT1")))[0] == 202
    cold = len(reads)  # the current version (and the previous one, when the current is under a day old)
    assert cold in (1, 2)
    now[0] += uninstall.SECRET_MAX_AGE - 1
    assert post(signed(aws.webhook_secret_value, body_for("ROT2")))[0] == 202
    assert len(reads) == cold  # warm: no Secrets Manager call
    # When the secret is rotated in Secrets Manager
    rotated = "whsec_" + "cm90YXRlZC1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMQ=="
    secrets = boto3.client("secretsmanager", region_name=aws.region)
    secrets.put_secret_value(SecretId=aws.webhook_secret_arn, SecretString=rotated)
    try:
        # Then the cached secret still verifies until its max age has passed, with no read
        assert post(signed(aws.webhook_secret_value, body_for("ROT3")))[0] == 202
        assert len(reads) == cold
        # And then both are read (the new one is current, the old one previous for a day)
        now[0] += 2
        assert post(signed(rotated, body_for("ROT4")))[0] == 202
        assert post(signed(aws.webhook_secret_value, body_for("ROT5")))[0] == 202
        assert len(reads) == cold + 2
    finally:  # moto's secrets outlive the test
        secrets.put_secret_value(SecretId=aws.webhook_secret_arn, SecretString=aws.webhook_secret_value)

"""Telling UltraCart refusing the app apart from a merchant's dead grant, and the app's own secrets
read by version: the client secret re-read when UltraCart refuses it, the webhook secret's previous
version accepted for a day after a rotation. No network: moto in-process and stub sessions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from requests.structures import CaseInsensitiveDict

from devstack.resources import LocalResources
from tests.support.app_gate import AppGate, gated_client
from tests.support.clock import Clock
from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart
from tests.support.installs import install, stored_tokens
from tests.support.lambdas import invoke, signed_webhook_event
from ucoauth.adapters.app_secrets import PREVIOUS_WEBHOOK_SECRET_SECONDS, ClientSecret, SecretVersion
from ucoauth.adapters.services import Services
from ucoauth.adapters.ultracart import UltraCartClient
from ucoauth.base.errors import (
    AppCredentialsRejectedError,
    PermanentUltraCartError,
    RetryLaterError,
    UltraCartError,
    refuses_the_app,
)
from ucoauth.base.observability import metrics
from ucoauth.usecases.refresh import refresh_due

# -- the classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "the_app"),
    [
        (401, "invalid_client", True),
        (400, "invalid_client", True),
        (400, "unauthorized_client", True),
        (401, None, True),  # a bare 401 on an endpoint the app authenticates to
        (401, "invalid_request", True),
        (401, "invalid_grant", False),  # the grant, not the app
        (400, "invalid_grant", False),
        (410, None, False),  # "Authorized Application Disabled": this merchant's grant
        (400, "invalid_request", False),
        (400, "invalid_scope", False),
    ],
)
def test_only_client_refusals_and_bare_401s_refuse_the_app(
    status: int, error: str | None, the_app: bool
) -> None:
    assert refuses_the_app(status, error) is the_app


@pytest.mark.parametrize(
    ("status", "error", "dead"),
    [(400, "invalid_grant", True), (401, "invalid_grant", True), (410, None, True), (401, None, False)],
)
def test_only_invalid_grant_and_410_mean_the_grant_is_gone(
    status: int, error: str | None, dead: bool
) -> None:
    assert PermanentUltraCartError("refused", status=status, error=error).requires_reauthorization is dead


class Answering:
    """A ``requests.Session`` stand-in answering every request with one status and JSON body."""

    def __init__(self, status: int, body: dict[str, Any] | None) -> None:
        self.status, self.body = status, body
        self.headers: dict[str, str] = {}

    def request(self, method: str, url: str, **_: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = self.status
        response.url = url
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response._content = json.dumps(self.body).encode() if self.body is not None else b""
        return response


def answering(status: int, body: dict[str, Any] | None) -> UltraCartClient:
    return UltraCartClient("https://uc.example/rest/v2", "cid", session=Answering(status, body))  # type: ignore[arg-type]


CALLS = {
    "refresh": lambda c: c.refresh("r" * 30),
    "exchange": lambda c: c.exchange_code("c" * 30, "https://app.example/cb"),
    "revoke": lambda c: c.revoke("t" * 30),
    "device_authorize": lambda c: c.device_authorize("crm"),
    "poll_device": lambda c: c.poll_device("d" * 30),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"error": "invalid_client", "error_description": "Client authentication failed."}),
        (400, {"error": "unauthorized_client"}),
        (401, None),
        (200, {"error": "invalid_client"}),
    ],
)
def test_the_client_raises_a_typed_app_refusal_on_every_endpoint_the_app_authenticates_to(
    call: str, status: int, body: dict[str, Any] | None
) -> None:
    with pytest.raises(AppCredentialsRejectedError) as refused:
        CALLS[call](answering(status, body))
    assert refused.value.status == status
    assert isinstance(refused.value, RetryLaterError) and isinstance(refused.value, UltraCartError)
    assert not isinstance(refused.value, PermanentUltraCartError)
    assert refused.value.retry_after >= 1


@pytest.mark.parametrize(("status", "error"), [(400, "invalid_grant"), (401, "invalid_grant"), (410, None)])
def test_a_dead_grant_stays_a_permanent_error_that_needs_reauthorization(
    status: int, error: str | None
) -> None:
    body = {"error": error} if error else None
    with pytest.raises(PermanentUltraCartError) as refused:
        answering(status, body).refresh("r" * 30)
    assert refused.value.requires_reauthorization


def test_a_401_on_oauth_me_is_the_access_tokens_not_the_apps() -> None:
    with pytest.raises(PermanentUltraCartError) as refused:
        answering(401, None).me("a" * 30)
    assert refused.value.status == 401 and not refused.value.requires_reauthorization


# -- the client secret, read again when UltraCart refuses it ------------------------------------


@pytest.fixture
def client_secret(aws: LocalResources) -> str:
    """A client secret in Secrets Manager (moto), first version ``v1-secret``; returns its ARN."""
    sm = boto3.client("secretsmanager", region_name=aws.region)
    name = f"uc-client-secret-{uuid.uuid4().hex}"  # moto's secrets outlive a test
    arn: str = sm.create_secret(Name=name, SecretString="v1-secret")["ARN"]
    return arn


def put_version(aws: LocalResources, arn: str, value: str) -> None:
    boto3.client("secretsmanager", region_name=aws.region).put_secret_value(SecretId=arn, SecretString=value)


@pytest.fixture
def gate_with_secret(services: Services, fake_uc: FakeUltraCart, client_secret: str) -> AppGate:
    gate = AppGate(fake_uc)
    client = gated_client(gate, client_secret=ClientSecret(client_secret))
    services.ultracart_factory = lambda: client
    return gate


def test_a_rotated_client_secret_is_picked_up_without_a_redeploy(
    services: Services,
    fake_uc: FakeUltraCart,
    gate_with_secret: AppGate,
    client_secret: str,
    aws: LocalResources,
) -> None:
    # Given a warm client that sent v1, and the secret rotated at UltraCart and in Secrets Manager
    fake_uc.expires_in = 60
    gate = gate_with_secret
    install(services, fake_uc)
    assert gate.seen[-1][1] == "v1-secret"
    gate.expected_secret = "v2-secret"
    put_version(aws, client_secret, "v2-secret")
    used_before = services.budget.used(services.now())[0]

    # When the next refresh is refused with v1
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "refreshed"

    # Then the secret was read again and the same call sent once more with v2 (a budget unit each)
    assert [(sent, status) for _, sent, status in gate.seen[-2:]] == [("v1-secret", 401), ("v2-secret", 200)]
    assert services.budget.used(services.now())[0] == used_before + 2
    assert stored_tokens(services, "DEMO1").refresh_token in fake_uc.live_grants("DEMO1")
    # And v2 is used from then on, without reading the secret again
    sent_before = len(gate.seen)
    refresh_token = stored_tokens(services, "DEMO1").refresh_token or ""
    services.ultracart_for("background", a_deadline(services)).refresh(refresh_token)
    assert [(sent, status) for _, sent, status in gate.seen[sent_before:]] == [("v2-secret", 200)]


def test_a_refusal_with_the_current_secret_is_not_retried_and_is_counted(
    services: Services, fake_uc: FakeUltraCart, gate_with_secret: AppGate, aws: LocalResources
) -> None:
    fake_uc.expires_in = 60
    gate = gate_with_secret
    install(services, fake_uc)
    gate.expected_secret = "a-secret-nobody-stored"
    metrics.clear_metrics()
    sent_before = len(gate.seen)
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "app_refused"
    assert [status for _, _, status in gate.seen[sent_before:]] == [401]  # no second call
    assert metrics.metric_set["AppCredentialsRejected"]["Value"] == [1.0]
    metrics.clear_metrics()


def test_a_renewal_already_made_by_another_caller_is_used_without_reading_again() -> None:
    reads: list[str] = []
    versions = iter([SecretVersion("v1", "one"), SecretVersion("v2", "two")])

    def read(secret_id: str) -> SecretVersion:
        reads.append(secret_id)
        return next(versions)

    secret = ClientSecret("arn:secret", read=read)
    assert secret.current().value == "one"
    assert secret.renew("v1") is True  # read again: v2
    assert secret.renew("v1") is True  # refused with v1 too, but v2 is already in use
    assert secret.current().value == "two" and len(reads) == 2
    assert "two" not in repr(secret) and "two" not in repr(secret.current())


def test_an_unreadable_secret_leaves_the_refusal_standing(aws: LocalResources) -> None:
    secret = ClientSecret("arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf")
    assert secret.renew(None) is False


# -- the webhook secret's previous version ---------------------------------------------------------


def post(event: dict[str, Any]) -> int:
    status: int = invoke("UninstallWebhookFunction", event)["statusCode"]
    return status


ROTATED = "whsec_" + "cm90YXRlZC1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMQ=="


@pytest.fixture
def webhook_secret_restored(aws: LocalResources) -> Iterator[None]:
    """The stack's webhook secret is current again after the test (moto's secrets outlive it)."""
    yield
    put_version(aws, aws.webhook_secret_arn, aws.webhook_secret_value)


def test_after_a_rotation_both_secrets_are_accepted_for_a_day_then_only_the_new_one(
    services: Services,
    aws: LocalResources,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    webhook_secret_restored: None,
) -> None:
    clock.now = time.time()  # Secrets Manager dates a version by the real clock
    monotonic = [1000.0]
    monkeypatch.setattr("ucoauth.usecases.uninstall._secret_clock", lambda: monotonic[0])
    old = aws.webhook_secret_value
    assert post(signed_webhook_event(old, "W1")) == 202
    # When the secret is rotated and the sender switches right away, before this process re-reads
    put_version(aws, aws.webhook_secret_arn, ROTATED)
    rotated_by = time.time()  # the new version's date is no later (a loaded machine may be seconds on)
    monotonic[0] += 60
    assert post(signed_webhook_event(ROTATED, "W2")) == 202  # read again on the failure: not refused
    # A sender still signing with the previous secret is accepted during the switch-over
    assert post(signed_webhook_event(old, "W3")) == 202
    # A day after the rotation only the current secret is
    clock.now = rotated_by + PREVIOUS_WEBHOOK_SECRET_SECONDS + 1
    monotonic[0] += 3600
    assert post(signed_webhook_event(old, "W4")) == 401
    assert post(signed_webhook_event(ROTATED, "W5")) == 202


def test_a_bad_signature_reads_the_secret_again_at_most_every_few_seconds(
    services: Services, aws: LocalResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ucoauth.adapters import app_secrets
    from ucoauth.usecases import uninstall

    monotonic = [1000.0]
    monkeypatch.setattr("ucoauth.usecases.uninstall._secret_clock", lambda: monotonic[0])
    reads: list[str] = []
    real = app_secrets.read_secret

    def counting(secret_id: str, stage: str = app_secrets.CURRENT) -> SecretVersion:
        reads.append(stage)
        return real(secret_id, stage)

    monkeypatch.setattr(app_secrets, "read_secret", counting)
    forged = "whsec_" + "Zm9yZ2VkLXNlY3JldC1mb3ItdGhlLXRlc3RzLTAwMQ=="
    assert post(signed_webhook_event(aws.webhook_secret_value, "B0")) == 202
    first = len(reads)
    for i in range(5):
        assert post(signed_webhook_event(forged, f"B{i + 1}")) == 401
    assert len(reads) == first  # all within SECRET_REREAD_AFTER_FAILURE of the first read
    monotonic[0] += uninstall.SECRET_REREAD_AFTER_FAILURE
    assert post(signed_webhook_event(forged, "B9")) == 401
    assert len(reads) > first

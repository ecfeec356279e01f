"""Never lose a grant, never drop an uninstall: the review's findings, one test each.

Each test drives the package the way its callers do (the Lambda handlers, with a context whose
remaining time is the template's Timeout unless a test says otherwise), with a strict-rotation
fake UltraCart and an injected clock, and judges the end state the way the merchant lives it:
by the grants UltraCart still holds (``FakeUltraCart.live_grants``), not by our own table.
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from devstack.resources import LocalResources
from tests.support import faults
from tests.support.clock import Clock
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.installs import install, stored_refresh_token
from tests.support.lambdas import call_handler, load_event, signed_webhook_event
from tests.support.observer import published_events
from ucoauth.adapters import aws as uc_aws
from ucoauth.adapters.services import Services
from ucoauth.base.settings import Settings
from ucoauth.usecases.uninstall import UNINSTALL_CLOCK_SKEW

REAUTH = "reauthorization_required"


def refresh_event(merchant_id: str = "DEMO1") -> dict[str, Any]:
    event = load_event("sqs-refresh.json")
    event["Records"][0]["body"] = json.dumps({"merchant_id": merchant_id})
    return event


def revoke_event(merchant_id: str, when: float, receive_count: int = 1) -> dict[str, Any]:
    event = load_event("sqs-revoke-webhook.json")
    stamp = datetime.fromtimestamp(when, tz=UTC).isoformat().replace("+00:00", "Z")
    event["Records"][0]["body"] = json.dumps(
        {
            "id": f"webhook:msg_{merchant_id}",
            "source": "webhook",
            "detail-type": "App Uninstalled",
            "time": stamp,
            "detail": {"merchant_id": merchant_id},
        }
    )
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    return event


def status_of(services: Services, merchant_id: str = "DEMO1") -> str:
    installation = services.installations.get(merchant_id)
    assert installation is not None
    return installation.status


# -- 1. a lease that expires while its holder can still write -------------------------------------


def test_a_slow_refresher_keeps_the_rotated_grant_when_the_token_api_comes_after_40_seconds(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    fake_uc.expires_in = 50  # due, and inside the token API's 60 s inline margin
    install(services, fake_uc)
    seen: dict[str, Any] = {}

    def token_api_meanwhile() -> None:
        clock.now += 40  # the worker is slow to write: past the old 30 s lease
        seen["response"] = call_handler("TokenApiFunction", load_event("tokens-get.json"))

    fake_uc.during_refresh = token_api_meanwhile
    assert call_handler("RefreshWorkerFunction", refresh_event()) == {"batchItemFailures": []}

    assert seen["response"]["statusCode"] == 200, seen["response"]
    assert status_of(services) == "active"
    # The grant UltraCart holds is the one we store: nobody has to reinstall.
    assert fake_uc.live_grants("DEMO1") == [stored_refresh_token(services)]


def test_no_ultracart_call_starts_without_the_time_to_store_its_answer(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    before = services.installations.get("DEMO1")
    # A worker whose invocation ends in 20 s: UltraCart may take 13 s, the writes longer.
    answer = call_handler("RefreshWorkerFunction", refresh_event(), timeout_seconds=20)
    assert answer == {"batchItemFailures": []}  # handed back for later, no receive spent
    assert fake_uc.calls == ["exchange"]
    after = services.installations.get("DEMO1")
    assert after is not None and before is not None and after.version == before.version
    assert after.lease_owner is None


# -- 2. an acknowledged uninstall must be queued, whatever point the function dies at -----------


class Killed(BaseException):
    """The function stopped here (its timeout): nothing after this line runs, not even `finally`."""


@pytest.mark.parametrize(
    ("service", "hook"),
    [
        ("dynamodb", "before-call.dynamodb.PutItem"),
        ("dynamodb", "after-call.dynamodb.PutItem"),
        ("sqs", "before-call.sqs.SendMessage"),
        ("sqs", "after-call.sqs.SendMessage"),
    ],
)
def test_a_webhook_retried_after_the_function_died_is_queued(
    services: Services, aws: LocalResources, service: str, hook: str
) -> None:
    event = signed_webhook_event(aws.webhook_secret_value)
    fired: list[str] = []

    def die(**_: Any) -> None:
        if not fired:
            fired.append(hook)
            raise Killed

    uc_aws.client(service).meta.events.register(hook, die)
    with pytest.raises(Killed):
        call_handler("UninstallWebhookFunction", event)
    retry = call_handler("UninstallWebhookFunction", event)  # the sender had no answer: it retries
    assert retry["statusCode"] == 202
    sqs = boto3.client("sqs", region_name=aws.region)
    bodies = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=aws.revoke_queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
    ]
    assert bodies, "the sender was told 202 but no uninstall is queued"
    assert {b["detail"]["merchant_id"] for b in bodies} == {"DEMO1"}


# -- 3. a KMS configuration or availability fault is not a data fault ----------------------------


@pytest.mark.parametrize(
    "code",
    ["IncorrectKeyException", "AccessDeniedException", "DisabledException", "KMSInvalidStateException"],
)
def test_kms_faults_answer_503_and_change_no_state(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, code: str
) -> None:
    install(services, fake_uc)
    published_events(aws)
    with faults.aws_faults(faults.AwsFault("kms", "Decrypt", code)):
        response = call_handler("TokenApiFunction", load_event("tokens-get.json"))
        worker = call_handler("RefreshWorkerFunction", refresh_event())
    assert response["statusCode"] == 503, response
    assert json.loads(response["body"]) == {"error": "temporarily_unavailable"}
    assert worker == {"batchItemFailures": []} or len(worker["batchItemFailures"]) == 1
    assert status_of(services) == "active"
    assert published_events(aws) == []


def test_an_undecryptable_blob_changes_state_only_on_evidence_that_the_key_works(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    install(services, fake_uc)
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.tokens_ciphertext is not None
    stored = installation.tokens_ciphertext
    # KMS refuses every Decrypt: we cannot tell a damaged row from a broken key. No state change.
    with faults.aws_faults(faults.AwsFault("kms", "Decrypt", "InvalidCiphertextException")):
        assert call_handler("TokenApiFunction", load_event("tokens-get.json"))["statusCode"] == 503
    assert status_of(services) == "active"
    # Only the stored blob fails while the key still decrypts a fresh probe for this merchant:
    # the row itself is damaged, and the merchant must install again.
    # (KMS sees the stored envelope's wrapped data key: a part of the stored blob, never the probe's.)
    only_stored = faults.AwsFault(
        "kms",
        "Decrypt",
        "InvalidCiphertextException",
        match=lambda p: bool(p.get("CiphertextBlob")) and bytes(p["CiphertextBlob"]) in stored,
    )
    with faults.aws_faults(only_stored):
        assert call_handler("TokenApiFunction", load_event("tokens-get.json"))["statusCode"] == 409
    assert status_of(services) == REAUTH


# -- 4. a refresh racing an uninstall must not leave a live grant --------------------------------


def test_a_refresh_racing_an_uninstall_leaves_no_live_grant(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    published_events(aws)
    uninstalled_at = clock.now + 1

    def uninstall_meanwhile() -> None:
        clock.now += 40
        call_handler("RevokeWorkerFunction", revoke_event("DEMO1", uninstalled_at))

    fake_uc.during_refresh = uninstall_meanwhile
    call_handler("RefreshWorkerFunction", refresh_event())
    # The revoke queue brings the uninstall back (after a busy lease, or as a duplicate).
    clock.now += 300
    call_handler("RevokeWorkerFunction", revoke_event("DEMO1", uninstalled_at, receive_count=2))

    assert status_of(services) == "uninstalled"
    assert fake_uc.live_grants("DEMO1") == []
    removed = [e for e in published_events(aws) if e["detail-type"] == "Installation Removed"]
    assert len(removed) == 1 and removed[0]["detail"]["revoke_confirmed"] is True


# -- 5. events in generation order ------------------------------------------------------------------


def test_an_older_generations_parked_event_never_follows_a_newer_one(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    published_events(aws)
    # Uninstall while EventBridge refuses: "Installation Removed" (generation 1) is parked.
    with faults.aws_faults(faults.throttle("events", "PutEvents")):
        call_handler("RevokeWorkerFunction", revoke_event("DEMO1", clock.now + 1))
    clock.now += 10
    install(services, fake_uc)  # generation 2
    clock.now += 3600  # the refresh worker and the planner relay what is parked
    call_handler("RefreshPlannerFunction", load_event("schedule-refresh.json"))
    call_handler("RefreshWorkerFunction", refresh_event())
    seen = [(e["detail"]["generation"], e["detail-type"]) for e in published_events(aws)]
    assert (1, "Installation Removed") in seen
    assert seen == sorted(seen, key=lambda pair: pair[0]), seen


# -- 6 and 7. one UltraCart budget for every call, with a reserve for merchants in the browser -------


def budget_settings(aws: LocalResources, **env: str) -> Settings:
    return Settings.from_env(aws.every_function_environment(overrides=env))


def use_settings(services: Services, settings: Settings) -> None:
    """Rebuild ``services`` (in place: handlers use it) from ``settings``, keeping the test's clock
    and fake UltraCart."""
    rebuilt = Services.from_settings(settings)
    for name in ("clock", "sleep", "ultracart_factory"):
        setattr(rebuilt, name, getattr(services, name))
    for field in dataclasses.fields(Services):
        setattr(services, field.name, getattr(rebuilt, field.name))


def test_a_spent_budget_and_an_expired_token_answer_503_with_retry_after(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    # A small budget, spent: the same refusal as 900 calls an hour, without making 810 of them.
    use_settings(services, budget_settings(aws, ULTRACART_HOURLY_LIMIT="20", ULTRACART_DAILY_LIMIT="100"))
    install(services, fake_uc)
    clock.now += 3601  # the stored token has expired
    spend_the_background_budget(services)
    response = call_handler("TokenApiFunction", load_event("tokens-get.json"))
    assert response["statusCode"] == 503, response
    assert int(response["headers"]["Retry-After"]) > 0
    assert fake_uc.calls == ["exchange"]  # nothing sent to UltraCart past its limits


def spend_the_background_budget(services: Services) -> None:
    hourly, _ = services.budget.limits("background")
    for _ in range(hourly):
        services.budget.take(services.clock(), "background")


def test_every_ultracart_call_counts_and_callbacks_keep_a_reserve(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    use_settings(
        services,
        budget_settings(
            aws, ULTRACART_HOURLY_LIMIT="4", ULTRACART_DAILY_LIMIT="100", ULTRACART_CALLBACK_RESERVE="0.25"
        ),
    )
    fake_uc.expires_in = 60
    for merchant in ("M1", "M2", "M3"):
        install(services, fake_uc, merchant)  # three code exchanges: 3 of the 4 calls this hour
    answer = call_handler("RefreshWorkerFunction", refresh_event("M1"))
    assert answer == {"batchItemFailures": []}
    assert fake_uc.calls.count("refresh") == 0  # background work stops at 3 (25% is kept back)
    install(services, fake_uc, "M4")  # a merchant in the browser still gets through
    assert status_of(services, "M4") == "active"


# -- 8. revokes outlast an outage -----------------------------------------------------------------


def test_an_hour_of_ultracart_failures_does_not_shred_an_unrevoked_grant(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    install(services, fake_uc)
    published_events(aws)
    uninstalled_at = clock.now + 1
    for attempt in range(1, 6):
        fake_uc.fail_next.append(transient(503))
        clock.now += 720
        call_handler("RevokeWorkerFunction", revoke_event("DEMO1", uninstalled_at, receive_count=attempt))
        shredded = status_of(services) == "uninstalled"
        assert not (shredded and fake_uc.live_grants("DEMO1")), f"shredded with a live grant at {attempt}"
    # UltraCart is back: the next delivery revokes and shreds.
    fake_uc.fail_next.clear()
    clock.now += 720
    call_handler("RevokeWorkerFunction", revoke_event("DEMO1", uninstalled_at, receive_count=1))
    assert status_of(services) == "uninstalled" and fake_uc.live_grants("DEMO1") == []
    removed = [e for e in published_events(aws) if e["detail-type"] == "Installation Removed"]
    assert [e["detail"]["revoke_confirmed"] for e in removed] == [True]


def test_a_reinstall_during_a_pending_revoke_still_revokes_the_old_grant(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    install(services, fake_uc)
    old_grant = fake_uc.live_grants("DEMO1")
    uninstalled_at = clock.now + 1
    fake_uc.fail_next.append(transient(503))  # UltraCart is down: the revoke is pending
    call_handler("RevokeWorkerFunction", revoke_event("DEMO1", uninstalled_at))
    assert status_of(services) == "uninstalling"
    # The merchant comes back before UltraCart does (beyond the clock-skew allowance: an uninstall
    # stamped less than that before an install began counts as that install's own).
    clock.now += UNINSTALL_CLOCK_SKEW + 60
    install(services, fake_uc)
    assert status_of(services) == "active"
    # The pending uninstall comes back: it is older than the reinstall, and still revokes the
    # uninstalled generation's grant, which nobody else holds.
    call_handler("RevokeWorkerFunction", revoke_event("DEMO1", uninstalled_at, receive_count=2))
    assert status_of(services) == "active"
    live = fake_uc.live_grants("DEMO1")
    assert not set(old_grant) & set(live)
    assert live == [stored_refresh_token(services)]


def test_idle_merchants_are_refreshed_only_before_their_grant_could_lapse(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    fake_uc.expires_in = 3600
    install(services, fake_uc, "BUSY")
    install(services, fake_uc, "IDLE")
    settings = services.settings
    clock.now += 7 * 86_400 + 10  # a week later: both tokens long expired
    # BUSY's token is asked for (refreshed inline), twice; IDLE's by nobody.
    assert call_handler("TokenApiFunction", _token_event("BUSY"))["statusCode"] == 200
    call_handler("RefreshWorkerFunction", refresh_event("IDLE"))
    busy = services.installations.get("BUSY")
    # One read a week predicts no use: the new lifetime is refreshed on its next read...
    assert busy is not None and busy.due_at is not None and busy.due_at > (busy.access_expires_at or 0)
    clock.now += 60
    assert call_handler("TokenApiFunction", _token_event("BUSY"))["statusCode"] == 200
    busy, idle = services.installations.get("BUSY"), services.installations.get("IDLE")
    assert busy is not None and idle is not None
    # ...and read again within it, it is in use: refreshed ahead of its next expiry.
    assert busy.due_at is not None and busy.due_at < (busy.access_expires_at or 0)
    # Idle: its next refresh only a day before an unused refresh token could lapse.
    lapse = clock.now + settings.refresh_token_lapse_seconds - 86_400
    assert idle.due_at is not None and idle.due_at >= lapse - 3600
    # The next use brings it back to being refreshed ahead of expiry.
    clock.now += 60
    assert call_handler("TokenApiFunction", _token_event("IDLE"))["statusCode"] == 200
    idle = services.installations.get("IDLE")
    assert idle is not None and idle.due_at is not None and idle.due_at < (idle.access_expires_at or 0)


def _token_event(merchant_id: str) -> dict[str, Any]:
    event = load_event("tokens-get.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/tokens/{merchant_id}"
    event["pathParameters"] = {"merchant_id": merchant_id}
    return event


# keep the module importable on its own
_ = time

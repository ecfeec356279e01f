"""Refresh and token access rules, with a fake UltraCart and moto (no network)."""

from __future__ import annotations

import pytest

from devstack.resources import LocalResources
from tests.support.clock import Clock
from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.installs import install, stored_refresh_token
from tests.support.observer import published_events
from ucoauth.adapters.installations.model import REAUTHORIZATION_REQUIRED
from ucoauth.adapters.services import Services
from ucoauth.base.errors import (
    NotInstalledError,
    PaceExceededError,
    PermanentUltraCartError,
    ReauthorizationRequiredError,
    TransientUltraCartError,
    UpstreamUnavailableError,
)
from ucoauth.base.timing import (
    IN_PROCESS_LEAD,
    MIN_READ_TIMEOUT,
    RETURN_MARGIN,
    WRITE_RESERVE,
    Deadline,
    call_needs,
    ultracart_call_max,
)
from ucoauth.core.issued import refresh_window
from ucoauth.usecases.refresh import plan, refresh_due
from ucoauth.usecases.tokens import access_token, get_access_token

REDIRECT = "https://api.example/oauth/callback"


def test_the_refresh_window_is_the_larger_of_the_minimum_and_a_fraction() -> None:
    assert refresh_window(900, 0.2, 60) == 900
    assert refresh_window(900, 0.2, 86_400) == 17_280
    assert refresh_window(900, 0.2, None) == 900


def test_a_token_that_expires_in_60s_is_due_and_one_that_lasts_a_day_is_not(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc, "SHORT")
    fake_uc.expires_in = 86_400
    install(services, fake_uc, "LONG")
    assert list(plan(services)) == ["SHORT"]


def test_a_due_installation_is_refreshed_once_and_leaves_the_window(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    fake_uc.expires_in = 200  # within the 240 s window: due now
    install(services, fake_uc)
    before = services.installations.get("DEMO1")
    old_refresh = stored_refresh_token(services)
    fake_uc.expires_in = 86_400  # the refreshed token lasts a day: no longer due
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "refreshed"
    after = services.installations.get("DEMO1")
    assert before is not None and after is not None
    assert after.version == before.version + 1 and after.lease_owner is None
    assert stored_refresh_token(services) != old_refresh and fake_uc.calls == ["exchange", "refresh"]
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "not_due"
    assert fake_uc.calls == ["exchange", "refresh"]


def test_a_refresh_that_is_not_due_calls_nobody(services: Services, fake_uc: FakeUltraCart) -> None:
    fake_uc.expires_in = 86_400
    install(services, fake_uc)
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "not_due"
    assert fake_uc.calls == ["exchange"]


def test_without_rotation_the_old_refresh_token_is_kept(services: Services, fake_uc: FakeUltraCart) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    old = stored_refresh_token(services)
    fake_uc.rotate = False
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "refreshed"
    assert stored_refresh_token(services) == old


def test_invalid_grant_marks_reauthorization_with_an_event(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    published_events(aws)
    fake_uc.live_refresh.clear()  # the merchant removed the app at UltraCart
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "reauthorization"
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.status == REAUTHORIZATION_REQUIRED
    assert installation.due_at is None and installation.lease_owner is None
    events = published_events(aws)
    assert [e["detail-type"] for e in events] == ["Reauthorization Required"]
    assert events[0]["detail"]["merchant_id"] == "DEMO1"
    with pytest.raises(ReauthorizationRequiredError):
        access_token(services, "DEMO1", deadline=a_deadline(services, 29))
    assert list(plan(services)) == []


# A 401 without invalid_grant refuses the app itself, not the grant: tests/unit/test_app_refusal.py.
@pytest.mark.parametrize(("status", "error"), [(410, None), (400, "invalid_grant"), (401, "invalid_grant")])
def test_410_and_invalid_grant_mean_reauthorization(
    services: Services, fake_uc: FakeUltraCart, status: int, error: str | None
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    fake_uc.fail_next.append(PermanentUltraCartError("refused", status=status, error=error))
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "reauthorization"


@pytest.mark.parametrize("status", [429, 500, 502])
def test_transient_failures_keep_the_tokens_and_raise(
    services: Services, fake_uc: FakeUltraCart, status: int
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    before = services.installations.get("DEMO1")
    fake_uc.fail_next.append(transient(status))
    with pytest.raises(TransientUltraCartError) as raised:
        refresh_due(services, "DEMO1", deadline=a_deadline(services))
    assert raised.value.status == status  # UltraCart's own answer, raised for the message's retry
    after = services.installations.get("DEMO1")
    assert before is not None and after is not None
    assert after.tokens_ciphertext == before.tokens_ciphertext and after.version == before.version
    assert after.lease_owner is None  # released for the retry
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "refreshed"


def test_a_spent_pace_sends_the_message_back_without_calling(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    fake_uc.expires_in = 60
    install(services, fake_uc)
    for _ in range(services.settings.refresh_pace_limit):
        services.pace.try_take(services.clock())
    with pytest.raises(PaceExceededError):
        refresh_due(services, "DEMO1", deadline=a_deadline(services))
    assert fake_uc.calls == ["exchange"]
    assert services.installations.get("DEMO1").lease_owner is None  # type: ignore[union-attr]
    # The rest of the window is known to be spent: the next message is refused without AWS calls.
    calls: list[str] = []
    services.installations._ddb().meta.events.register(
        "before-call.dynamodb", lambda **kw: calls.append(kw["event_name"])
    )
    with pytest.raises(PaceExceededError):
        refresh_due(services, "DEMO1", deadline=a_deadline(services))
    assert calls == []
    clock.now += services.settings.refresh_pace_window_seconds
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "refreshed"


def test_token_access_serves_a_fresh_token_without_calling(
    services: Services, fake_uc: FakeUltraCart
) -> None:
    install(services, fake_uc)
    token = access_token(services, "DEMO1", deadline=a_deadline(services, 29))
    assert token.access_token in fake_uc.access_owner and fake_uc.calls == ["exchange"]
    body = token.as_json()
    assert body["merchant_id"] == "DEMO1" and str(body["expires_at"]).endswith("Z")


def test_token_access_refreshes_inline_near_expiry(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    first = access_token(services, "DEMO1", deadline=a_deadline(services, 29))
    clock.now += 3600 - 30  # within the 60 s margin
    second = access_token(services, "DEMO1", deadline=a_deadline(services, 29))
    assert second.access_token != first.access_token and fake_uc.calls == ["exchange", "refresh"]


class _LambdaContext:
    """The part of a Lambda context ``get_access_token`` reads."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_get_access_token_with_little_time_left_starts_no_refresh_and_serves_the_stored_token(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    # Given a token within the inline-refresh margin, still valid
    install(services, fake_uc)
    first = access_token(services, "DEMO1", deadline=a_deadline(services, 29))
    clock.now += 3600 - 30  # within the 60 s margin
    # When the caller's Lambda has 3 s left / Then no refresh is sent, the stored token is served
    token = get_access_token("DEMO1", cache_seconds=0, context=_LambdaContext(3_000))
    assert token.access_token == first.access_token
    assert fake_uc.calls == ["exchange"]


def test_get_access_token_with_little_time_left_and_an_expired_token_is_upstream_unavailable(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    clock.now += 3601
    with pytest.raises(UpstreamUnavailableError):
        get_access_token("DEMO1", cache_seconds=0, context=_LambdaContext(3_000))
    assert fake_uc.calls == ["exchange"]


def test_get_access_token_with_time_left_refreshes_within_the_callers_time(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    clock.now += 3600 - 30  # within the 60 s margin
    get_access_token("DEMO1", cache_seconds=0, context=_LambdaContext(60_000))
    assert fake_uc.calls == ["exchange", "refresh"]


def test_the_in_process_deadline_is_bounded_with_or_without_a_context(services: Services) -> None:
    settings = services.settings
    bound = call_needs(settings) + IN_PROCESS_LEAD
    # Without a context: one short UltraCart call and the write that stores its answer
    alone = Deadline.in_process(settings, services.clock)
    assert alone.remaining() == pytest.approx(bound)
    assert bound <= ultracart_call_max(settings, MIN_READ_TIMEOUT) + WRITE_RESERVE + 1.0
    # With one: never past the caller's remaining time (less the return margin), never longer
    short = Deadline.in_process(settings, services.clock, context=_LambdaContext(4_000))
    assert short.remaining() == pytest.approx(4.0 - RETURN_MARGIN)
    long = Deadline.in_process(settings, services.clock, context=_LambdaContext(900_000))
    assert long.remaining() == pytest.approx(bound)


def test_token_access_serves_the_stored_token_when_ultracart_fails_before_expiry(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    first = access_token(services, "DEMO1", deadline=a_deadline(services, 29))
    clock.now += 3600 - 30  # within the 60 s margin
    fake_uc.fail_next.append(transient(503))
    assert (
        access_token(services, "DEMO1", deadline=a_deadline(services, 29)).access_token == first.access_token
    )


def test_token_access_is_upstream_unavailable_when_expired_and_failing(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    clock.now += 3601
    fake_uc.fail_next.append(transient(500))
    with pytest.raises(UpstreamUnavailableError):
        access_token(services, "DEMO1", deadline=a_deadline(services, 29))


def test_token_access_waits_for_a_sibling_holding_the_lease(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    install(services, fake_uc)
    clock.now += 3600 - 30  # within the 60 s margin
    services.installations.lease("DEMO1", owner="other", now=int(clock.now), until=int(clock.now) + 30)
    # the lease never moves: serve the stored token
    token = access_token(services, "DEMO1", deadline=a_deadline(services, 29))
    assert token.access_token in fake_uc.access_owner
    assert fake_uc.calls == ["exchange"] and sum(clock.slept) >= 5


def test_unknown_merchants_are_not_installed(services: Services) -> None:
    with pytest.raises(NotInstalledError):
        access_token(services, "NOBODY", deadline=a_deadline(services, 29))


def test_the_worker_requeues_what_the_pace_refused_for_the_next_window(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    import json

    import boto3

    from tests.support.lambdas import invoke, load_event

    fake_uc.expires_in = 60
    install(services, fake_uc)
    for _ in range(services.settings.refresh_pace_limit):
        services.pace.try_take(services.clock())
    event = load_event("sqs-refresh.json")
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "4"
    assert invoke("RefreshWorkerFunction", event) == {"batchItemFailures": []}  # no receive spent
    assert fake_uc.calls == ["exchange"]
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=aws.refresh_queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"  # a fresh message, for the next window
    assert json.loads(event["Records"][0]["body"]) == {"merchant_id": "DEMO1"}


def _delayed_messages(aws: LocalResources, queue_url: str) -> int:
    from tests.support.roles import harness_boto3_session

    sqs = harness_boto3_session(aws.region).client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesDelayed"])


def test_a_recovery_message_that_meets_a_busy_lease_is_kept_and_comes_back_without_spending_a_receive(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources
) -> None:
    import json

    from tests.support.lambdas import invoke, load_event
    from ucoauth.adapters.crypto import TokenSet
    from ucoauth.adapters.installations.model import Recovery
    from ucoauth.core.rotation import recovery_to_json

    install(services, fake_uc)
    now = services.now()
    services.installations.lease("DEMO1", owner="worker:other", now=now, until=now + 60)
    kept = Recovery(
        services.cipher.encrypt("DEMO1", TokenSet("access-2", "refresh-2")),
        generation=1,
        issued_at=now + 1,
        expires_in=3600,
        token_type="bearer",
        scope="",
    )
    event = load_event("sqs-refresh.json")
    event["Records"][0]["body"] = json.dumps({"merchant_id": "DEMO1", "recovery": recovery_to_json(kept)})
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "4"
    assert invoke("RefreshWorkerFunction", event) == {"batchItemFailures": []}  # no receive spent
    assert _delayed_messages(aws, aws.refresh_queue_url) == 1  # back when the lease ends
    on_item = services.installations.get("DEMO1")
    assert on_item is not None and on_item.recovery_of(1) == kept  # the holder's re-read finds it

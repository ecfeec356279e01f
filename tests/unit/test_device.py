"""The device flow's worker with a fake UltraCart and moto in-process: what it asks UltraCart, what
it queues (and how late), what it stores, and that a redelivered message never polls twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devstack.resources import LocalResources
from tests.support.clock import Clock
from tests.support.fake_ultracart import FakeUltraCart, transient
from tests.support.installs import install, stored_tokens
from ucoauth.adapters import devices
from ucoauth.adapters.services import Services
from ucoauth.base.errors import (
    BudgetExhaustedError,
    DeadlineTooCloseError,
    DeviceAuthorizationNotFoundError,
    PermanentUltraCartError,
    QueueSendError,
)
from ucoauth.base.timing import Deadline, call_needs
from ucoauth.usecases import device
from ucoauth.usecases.device import (
    device_status,
    parse_poll_message,
    poll_device_authorization,
    start_device_authorization,
)
from ucoauth.usecases.install import store_new_installation


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """Every poll the code queues, as (authorization id, seq, delay in seconds)."""
    sent: list[tuple[str, int, int]] = []
    real = device._send_poll

    def record(queue_url: str, authorization_id: str, seq: int, delay: float) -> None:
        real(queue_url, authorization_id, seq, delay)
        sent.append((authorization_id, seq, int(delay)))

    monkeypatch.setattr(device, "_send_poll", record)
    return sent


def deadline(clock: Clock, seconds: float = 60) -> Deadline:
    return Deadline(clock() + seconds, clock)


def the_code(fake_uc: FakeUltraCart) -> str:
    """The device code UltraCart issued last."""
    return list(fake_uc.devices)[-1]


def poll(services: Services, clock: Clock, aid: str, seq: int) -> str:
    return poll_device_authorization(services, aid, seq, deadline=deadline(clock))


@pytest.fixture
def started(services: Services, clock: Clock, queued: list[tuple[str, int, int]]) -> str:
    answer = start_device_authorization(services, scope=None, deadline=deadline(clock))
    return answer.authorization_id


def test_start_asks_ultracart_once_stores_no_code_and_queues_poll_zero_at_the_interval(
    services: Services,
    fake_uc: FakeUltraCart,
    started: str,
    queued: list[tuple[str, int, int]],
    aws: LocalResources,
) -> None:
    assert fake_uc.calls == ["device_authorize"]
    (code,) = fake_uc.devices
    assert fake_uc.devices[code]["scope"] == "crm"
    assert queued == [(started, 0, 5)]
    raw = services.installations._ddb().get_item(
        TableName=aws.table_name, Key=devices.DeviceAuthorizationStore.key(started)
    )["Item"]
    dumped = json.dumps(raw, default=str)
    assert code not in dumped and str(fake_uc.devices[code]["user_code"]) not in dumped
    assert "status" not in raw  # never in StatusIndex
    assert device_status(services, started) == {"status": "pending"}


def test_pending_then_slow_down_then_approval(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
    queued: list[tuple[str, int, int]],
) -> None:
    code = the_code(fake_uc)
    assert poll(services, clock, started, 0) == "pending"
    assert queued[-1] == (started, 1, 5)
    fake_uc.decide_device(code, "slow_down")
    clock.now += 5
    assert poll(services, clock, started, 1) == "slow_down"
    assert queued[-1] == (started, 2, 10)  # interval + 5
    clock.now += 10
    assert poll(services, clock, started, 2) == "pending"
    assert queued[-1] == (started, 3, 10)  # the longer interval stays
    fake_uc.decide_device(code, "approved", "DEVU1")
    clock.now += 10
    assert poll(services, clock, started, 3) == "installed"
    assert len(queued) == 4  # no poll after the install
    assert device_status(services, started) == {"status": "installed", "merchant_id": "DEVU1"}
    installation = services.installations.get("DEVU1")
    assert installation is not None and installation.status == "active" and installation.generation == 1
    assert installation.due_at is not None and installation.due_at > services.now()
    assert stored_tokens(services, "DEVU1").refresh_token in fake_uc.live_grants("DEVU1")
    assert fake_uc.calls.count("poll_device") == 4


def test_a_redelivered_poll_message_never_polls_twice(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
    queued: list[tuple[str, int, int]],
) -> None:
    assert poll(services, clock, started, 0) == "pending"
    assert poll(services, clock, started, 0) == "stale"
    fake_uc.decide_device(the_code(fake_uc), "approved", "DEVU2")
    assert poll(services, clock, started, 1) == "installed"
    assert poll(services, clock, started, 1) == "done"
    assert fake_uc.calls.count("poll_device") == 2
    installation = services.installations.get("DEVU2")
    assert installation is not None and installation.generation == 1


def test_a_message_ahead_of_the_authorization_waits_for_it(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
    queued: list[tuple[str, int, int]],
) -> None:
    assert poll(services, clock, started, 3) == "early"
    assert queued[-1] == (started, 3, 5)
    assert "poll_device" not in fake_uc.calls


def test_denial_and_expiry_end_it_and_delete_the_device_code(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
    queued: list[tuple[str, int, int]],
) -> None:
    fake_uc.decide_device(the_code(fake_uc), "denied")
    assert poll(services, clock, started, 0) == "denied"
    item = device.device_store(services).get(started)
    assert item is not None and item.ciphertext is None
    assert device_status(services, started) == {"status": "denied"}
    assert len(queued) == 1
    # A second one simply runs out of time: no UltraCart call after its expiry
    other = start_device_authorization(services, scope="ultraship", deadline=deadline(clock))
    clock.now += 900
    calls = fake_uc.calls.count("poll_device")
    assert poll(services, clock, other.authorization_id, 0) == "expired"
    assert fake_uc.calls.count("poll_device") == calls
    assert device_status(services, other.authorization_id) == {"status": "expired"}


def test_expired_token_from_ultracart_ends_it_expired(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
) -> None:
    fake_uc.decide_device(the_code(fake_uc), "expired")
    assert poll(services, clock, started, 0) == "expired"


def test_a_spent_budget_or_no_time_sends_nothing_and_the_same_poll_comes_later(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
    queued: list[tuple[str, int, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def spent(now: float, tier: str, merchant_id: str | None = None, *, hold: float | None = None) -> None:
        raise BudgetExhaustedError(120)

    with monkeypatch.context() as patch:
        patch.setattr(services.budget, "take", spent)
        assert poll(services, clock, started, 0) == "deferred"
    assert queued[-1] == (started, 0, 120)
    assert poll_device_authorization(services, started, 0, deadline=deadline(clock, seconds=3)) == "deferred"
    assert queued[-1] == (started, 0, 5)
    assert "poll_device" not in fake_uc.calls
    assert poll(services, clock, started, 0) == "pending"


def test_a_redelivery_after_a_crash_past_the_install_ends_installed(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_uc.decide_device(the_code(fake_uc), "approved", "DEVU3")

    def crash(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the worker died")

    with monkeypatch.context() as patch:
        patch.setattr(devices.DeviceAuthorizationStore, "finish", crash)
        with pytest.raises(RuntimeError):
            poll(services, clock, started, 0)
    # The message comes back after its visibility timeout, the claim has lapsed by then
    clock.now += 400
    assert poll(services, clock, started, 0) == "installed"
    assert device_status(services, started) == {"status": "installed", "merchant_id": "DEVU3"}
    installation = services.installations.get("DEVU3")
    assert installation is not None and installation.generation == 1


def test_an_approval_over_an_active_installation_is_a_reinstall(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
) -> None:
    install(services, fake_uc, "DEVU4")
    fake_uc.decide_device(the_code(fake_uc), "approved", "DEVU4")
    assert poll(services, clock, started, 0) == "installed"
    installation = services.installations.get("DEVU4")
    assert installation is not None and installation.generation == 2 and installation.status == "active"
    assert stored_tokens(services, "DEVU4").refresh_token in fake_uc.live_grants("DEVU4")


def test_a_poll_that_cannot_be_queued_leaves_nothing_pending(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any) -> None:
        raise QueueSendError("no")

    monkeypatch.setattr(device, "_send_poll", refuse)
    with pytest.raises(QueueSendError):
        start_device_authorization(services, scope=None, deadline=deadline(clock))
    items = services.installations._ddb().scan(TableName=services.settings.table_name)["Items"]
    devices = [i for i in items if i["pk"]["S"].startswith("DEVICE#")]
    assert [i["device_status"]["S"] for i in devices] == ["expired"]
    assert all("device_code" not in i for i in devices)


def test_unknown_ids_and_malformed_messages(services: Services) -> None:
    with pytest.raises(DeviceAuthorizationNotFoundError):
        device_status(services, "A" * 43)
    assert parse_poll_message("{}") is None
    assert parse_poll_message('{"authorization_id": "short", "seq": 0}') is None
    assert parse_poll_message(json.dumps({"authorization_id": "A" * 43, "seq": True})) is None
    assert parse_poll_message(json.dumps({"authorization_id": "A" * 43, "seq": 2})) == ("A" * 43, 2)


def test_a_retried_claim_whose_first_attempt_landed_is_ours(
    services: Services, clock: Clock, started: str
) -> None:
    store = device.device_store(services)
    now = services.now()
    first = store.claim(started, seq=0, owner="me", now=now, until=now + 60)
    again = store.claim(started, seq=0, owner="me", now=now, until=now + 60)
    assert again.poll_seq == first.poll_seq == 0 and again.claim_owner == "me"
    with pytest.raises(devices.PollSkipped) as other:
        store.claim(started, seq=0, owner="someone else", now=now, until=now + 60)
    assert other.value.reason == "busy"


# -- an approval whose tokens cannot be stored: stored anyway, or revoked, never orphaned -----------


def _me_fails(fake_uc: FakeUltraCart, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """UltraCart's answer names no merchant, and the call that would ask whose it is fails."""
    fake_uc.include_merchant_id = False

    def failing(access_token: str) -> Any:
        fake_uc.calls.append("me")
        raise error

    monkeypatch.setattr(fake_uc, "me", failing)


def test_a_failed_note_of_the_merchant_still_stores_the_approved_grant(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_uc.decide_device(the_code(fake_uc), "approved", "DEVN1")

    def throttled(*args: Any, **kwargs: Any) -> bool:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem")

    monkeypatch.setattr(devices.DeviceAuthorizationStore, "note_merchant", throttled)
    assert poll(services, clock, started, 0) == "installed"
    assert stored_tokens(services, "DEVN1").refresh_token in fake_uc.live_grants("DEVN1")
    assert device_status(services, started) == {"status": "installed", "merchant_id": "DEVN1"}


@pytest.mark.parametrize(
    "error",
    [
        transient(503),
        PermanentUltraCartError("refused", status=401),
        BudgetExhaustedError(30.0),
        DeadlineTooCloseError(2.0),
    ],
    ids=["transient", "refused", "budget", "deadline"],
)
def test_an_approval_whose_merchant_cannot_be_asked_revokes_the_grant(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    fake_uc.decide_device(the_code(fake_uc), "approved", "DEVM1")
    _me_fails(fake_uc, monkeypatch, error)
    assert poll(services, clock, started, 0) == "failed"
    # UltraCart's grant is revoked (both tokens), not left live with nobody holding it
    assert fake_uc.live_grants("DEVM1") == []
    assert fake_uc.calls[-2:] == ["revoke", "revoke"]
    assert services.installations.get("DEVM1") is None
    assert device_status(services, started)["status"] == "expired"


def test_an_approval_with_too_little_time_to_ask_the_merchant_still_revokes(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    started: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The poll's answer takes a second: too little time is left for a second call and a write,
    # so /oauth/me is not sent; the revoke (nothing is written after it) may use the write's time.
    fake_uc.decide_device(the_code(fake_uc), "approved", "DEVM2")
    fake_uc.include_merchant_id = False
    real_poll = fake_uc.poll_device

    def slow_poll(device_code: str) -> Any:
        answer = real_poll(device_code)
        clock.now += 1
        return answer

    monkeypatch.setattr(fake_uc, "poll_device", slow_poll)
    room = call_needs(services.settings) + 0.5
    assert poll_device_authorization(services, started, 0, deadline=deadline(clock, room)) == "failed"
    assert "me" not in fake_uc.calls
    assert fake_uc.live_grants("DEVM2") == []


@pytest.mark.parametrize(
    "error",
    [transient(500), BudgetExhaustedError(30.0), DeadlineTooCloseError(2.0)],
    ids=["transient", "budget", "deadline"],
)
def test_a_callback_whose_merchant_cannot_be_asked_revokes_the_grant(
    services: Services,
    fake_uc: FakeUltraCart,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    fake_uc.include_merchant_id = False
    answer = fake_uc.seed("CBM1")
    _me_fails(fake_uc, monkeypatch, error)
    client = services.ultracart_for("callback", deadline(clock, 29))
    with pytest.raises(type(error)):
        store_new_installation(
            services, client, deadline(clock, 29), answer, install_id="x" * 43, began_at=services.now()
        )
    assert fake_uc.live_grants("CBM1") == []
    assert services.installations.get("CBM1") is None


def start_through_the_handler(body: Any) -> dict[str, Any]:
    from tests.support.lambdas import invoke, load_event

    event = load_event("device-start.json")
    event["body"] = json.dumps(body)
    event["isBase64Encoded"] = False
    answer: dict[str, Any] = invoke("DeviceFlowFunction", event)
    return answer


def test_a_device_authorization_links_the_installation_to_the_apps_account(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, queued: list[tuple[str, int, int]]
) -> None:
    answer = start_through_the_handler({"app_account_id": "acct-dev", "metadata": {"seat": "3"}})
    assert answer["statusCode"] == 201, answer
    aid = json.loads(answer["body"])["authorization_id"]
    fake_uc.decide_device(the_code(fake_uc), "approved", "DEVL1")
    assert poll(services, clock, aid, 0) == "installed"
    installation = services.installations.get("DEVL1")
    assert installation is not None and installation.app_account_id == "acct-dev"
    assert installation.account_metadata == {"seat": "3"} and installation.install_session_id is None


def test_an_approval_for_a_merchant_linked_elsewhere_under_refuse_ends_denied_and_gives_back(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, queued: list[tuple[str, int, int]]
) -> None:
    from tests.support.lambdas import invoke, load_event

    services.settings = services.settings.replace(install_relink="refuse")
    first = start_through_the_handler({"app_account_id": "acct-A"})
    fake_uc.decide_device(the_code(fake_uc), "approved", "DEVL2")
    assert poll(services, clock, json.loads(first["body"])["authorization_id"], 0) == "installed"
    before = services.installations.get("DEVL2")
    assert before is not None and before.app_account_id == "acct-A"
    live = fake_uc.live_grants("DEVL2")
    second = start_through_the_handler({"app_account_id": "acct-B"})
    aid = json.loads(second["body"])["authorization_id"]
    fake_uc.decide_device(the_code(fake_uc), "approved", "DEVL2")
    # The merchant approved, the stack's rule refused: not "expired" (nothing timed out, and a
    # device that starts again meets the same rule), "denied", naming the merchant.
    assert poll(services, clock, aid, 0) == "denied"
    event = load_event("device-status.json")
    event["rawPath"] = f"/device/authorizations/{aid}"
    event["pathParameters"] = {"authorization_id": aid}
    answer = invoke("DeviceFlowFunction", event)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"status": "denied", "merchant_id": "DEVL2"}
    after = services.installations.get("DEVL2")
    assert after is not None and after.app_account_id == "acct-A" and after.version == before.version
    assert fake_uc.live_grants("DEVL2") == live  # the refused approval's grant was revoked


@pytest.mark.parametrize(
    "body",
    [
        {"app_account_id": "bad id"},
        {"app_account_id": ""},
        {"app_account_id": "a" * 129},
        {"app_account_id": "a", "metadata": {"k": 1}},
        {"metadata": {"k": "v"}},
        {"app_account_id": "a", "return_url": "https://app.example.com/"},
    ],
)
def test_a_device_authorization_with_a_bad_account_is_refused_before_ultracart(
    services: Services, fake_uc: FakeUltraCart, aws: LocalResources, body: Any
) -> None:
    answer = start_through_the_handler(body)
    assert answer["statusCode"] == 400 and json.loads(answer["body"]) == {"error": "invalid_request"}
    assert fake_uc.calls == []

"""Refresh by demand: which installations the planner refreshes ahead of expiry, which wait for a
read (refreshed inline), and which are only kept alive; and what recording a use costs."""

from __future__ import annotations

from tests.support.calls import AwsCallCounter
from tests.support.clock import Clock
from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart
from tests.support.installs import install
from ucoauth.adapters.installations.model import Installation
from ucoauth.adapters.services import Services
from ucoauth.usecases.refresh import plan, refresh_due
from ucoauth.usecases.tokens import access_token


def _get(services: Services, merchant_id: str) -> Installation:
    installation = services.installations.get(merchant_id)
    assert installation is not None
    return installation


def _refresh_what_the_planner_queues(services: Services) -> list[str]:
    queued = plan(services)
    for merchant_id in queued:
        assert refresh_due(services, merchant_id, deadline=a_deadline(services)) == "refreshed"
    return sorted(queued)


def _to_the_end_of_the_lifetime(services: Services, clock: Clock, *merchants: str) -> None:
    """Just before the latest of the merchants' tokens expires, past every due time ahead of it."""
    latest = max(_get(services, m).access_expires_at or 0 for m in merchants)
    clock.now = latest - services.settings.inline_refresh_margin_seconds - 1


def _installed_and_refreshed_once(services: Services, fake_uc: FakeUltraCart, clock: Clock) -> None:
    """USED, UNUSED and IDLE installed (an install counts as a use of its first lifetime, so the
    planner refreshes all three ahead once); their second lifetimes have no reads yet."""
    fake_uc.expires_in = 3600
    for merchant_id in ("USED", "UNUSED", "IDLE"):
        install(services, fake_uc, merchant_id)
    _to_the_end_of_the_lifetime(services, clock, "USED", "UNUSED", "IDLE")
    assert _refresh_what_the_planner_queues(services) == ["IDLE", "UNUSED", "USED"]


def test_only_a_token_read_in_its_lifetime_is_refreshed_ahead(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    _installed_and_refreshed_once(services, fake_uc, clock)
    clock.now += 600
    assert access_token(services, "USED", deadline=a_deadline(services)).merchant_id == "USED"
    refreshes = fake_uc.calls.count("refresh")
    _to_the_end_of_the_lifetime(services, clock, "USED", "UNUSED", "IDLE")
    assert _refresh_what_the_planner_queues(services) == ["USED"]
    assert fake_uc.calls.count("refresh") == refreshes + 1
    # Nothing more is due this hour: the unread tokens expire unrefreshed.
    clock.now += 600
    assert plan(services) == []
    assert (_get(services, "UNUSED").access_expires_at or 0) < clock.now


def test_an_unread_expired_token_is_refreshed_by_its_next_read_and_then_ahead(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    _installed_and_refreshed_once(services, fake_uc, clock)
    clock.now += 2 * 3600  # UNUSED's token expired an hour ago
    old = _get(services, "UNUSED")
    refreshes = fake_uc.calls.count("refresh")
    token = access_token(services, "UNUSED", deadline=a_deadline(services))
    assert fake_uc.calls.count("refresh") == refreshes + 1  # the read waited on an inline refresh
    new = _get(services, "UNUSED")
    assert new.version == old.version + 1 and token.version == new.version
    assert (token.expires_at or 0) == new.access_expires_at and new.last_used_at == clock.now
    # One read, hours after the last: no use is predicted, the new lifetime waits for a read...
    clock.now = (new.access_expires_at or 0) - 100
    assert "UNUSED" not in plan(services)
    # ...and a second read of it says it is in use: it is refreshed ahead.
    access_token(services, "UNUSED", deadline=a_deadline(services))
    assert plan(services) == ["UNUSED"]


def test_an_idle_token_is_refreshed_only_before_its_refresh_token_could_lapse(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    _installed_and_refreshed_once(services, fake_uc, clock)
    refreshed_at = clock.now
    lapse = services.settings.refresh_token_lapse_seconds
    clock.now = refreshed_at + lapse - 86_400 - 3600
    assert plan(services) == []
    clock.now = refreshed_at + lapse - 86_400 + 1
    assert _refresh_what_the_planner_queues(services) == ["IDLE", "UNUSED", "USED"]
    # Kept alive again, a month on; still not refreshed ahead of its hour.
    idle = _get(services, "IDLE")
    assert (idle.due_at or 0) >= clock.now + lapse - 86_400 - 3600


def test_a_token_read_every_hour_is_refreshed_ahead_every_lifetime_and_never_waits(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    """Use predicted from history: two reads at most a lifetime apart keep the next lifetime
    refreshed ahead even when no read falls inside it."""
    fake_uc.expires_in = 3600
    install(services, fake_uc, "HOURLY")
    waits = 0
    next_read = clock.now + 1800
    end = clock.now + 12 * 3600
    while clock.now < end:
        # The planner's next run (once a minute) that finds something due, or the next read.
        due = _get(services, "HOURLY").due_at or end
        clock.now = max(clock.now + 60, min(next_read, due + 59 - (due - clock.now - 1) % 60))
        _refresh_what_the_planner_queues(services)
        if clock.now >= next_read:
            before = fake_uc.calls.count("refresh")
            access_token(services, "HOURLY", deadline=a_deadline(services))
            waits += fake_uc.calls.count("refresh") - before
            next_read += 3600
    assert waits == 0
    assert 12 <= fake_uc.calls.count("refresh") <= 13


def test_a_read_records_its_use_once_per_token_lifetime(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    _installed_and_refreshed_once(services, fake_uc, clock)
    counter = AwsCallCounter()
    for _ in range(3):
        clock.now += 60
        access_token(services, "USED", deadline=a_deadline(services))
    # The first read of the lifetime: its read, its decrypt, one conditional write; the others
    # only their read (the data key is cached).
    assert counter.by_operation() == {"dynamodb.GetItem": 3, "kms.Decrypt": 1, "dynamodb.UpdateItem": 1}
    used = _get(services, "USED")
    assert used.used_until == used.access_expires_at


def test_two_first_reads_of_one_lifetime_record_one_use(
    services: Services, fake_uc: FakeUltraCart, clock: Clock
) -> None:
    _installed_and_refreshed_once(services, fake_uc, clock)
    seen = _get(services, "USED")
    expires = seen.access_expires_at or 0
    marks = services.installations
    now = int(clock.now)
    assert marks.mark_used("USED", now=now, expires=expires, previous_used_at=seen.last_used_at)
    assert not marks.mark_used("USED", now=now + 1, expires=expires, previous_used_at=seen.last_used_at)
    assert _get(services, "USED").last_used_at == now
    # A lifetime a refresh replaced meanwhile is not marked.
    assert not marks.mark_used("USED", now=now, expires=expires - 3600, previous_used_at=None)

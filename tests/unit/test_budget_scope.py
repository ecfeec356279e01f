"""The UltraCart budget's scope: where its hourly and daily windows count, and the one-call-at-a-time
line in the scopes where UltraCart's concurrency limit covers the whole application.

``application``: every call of every merchant in one pair of windows, one call at a time.
``merchant``: each merchant's authorization has its own windows (calls made before the merchant is
known count in the application's), and no line beyond each merchant's lease.
``both``: a call needs room in the application's windows and in its merchant's, one at a time.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from devstack.resources import LocalResources
from tests.support.clock import Clock
from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart
from tests.support.faults import Params, aws_faults, ddb_throttling, expression
from tests.support.installs import store_installation
from ucoauth.adapters.budget import DAY, UltraCartBudget
from ucoauth.adapters.services import Services
from ucoauth.base.errors import (
    BudgetExhaustedError,
    ConfigurationError,
    TransientUltraCartError,
    UltraCartBusyError,
)
from ucoauth.base.settings import BUDGET_SCOPES, BudgetScope, Settings
from ucoauth.base.timing import read_timeout_within, ultracart_call_max
from ucoauth.usecases.refresh import plan

NOW = 1_800_000_000.0  # 10:40 UTC


def a_budget(
    aws: LocalResources, scope: BudgetScope, *, hourly: int = 2, daily: int = 100
) -> UltraCartBudget:
    return UltraCartBudget(aws.table_name, hourly=hourly, daily=daily, callback_reserve=0.0, scope=scope)


def budget_items(aws: LocalResources) -> dict[str, dict[str, Any]]:
    """Every budget item in the table: pk -> item (one UTC day is simulated per test)."""
    table = boto3.client("dynamodb", region_name=aws.region)
    items = table.scan(TableName=aws.table_name)["Items"]
    return {item["pk"]["S"]: item for item in items if item["pk"]["S"].startswith("BUDGET#")}


# -- the windows, per scope -----------------------------------------------------------------------


def test_application_scope_counts_every_merchant_in_one_window(aws: LocalResources) -> None:
    budget = a_budget(aws, "application")
    budget.take(NOW, "background", "M1")
    budget.take(NOW, "background", "M2")
    with pytest.raises(BudgetExhaustedError):
        budget.take(NOW, "background", "M3")
    assert budget.used(NOW) == (2, 2)
    assert set(budget_items(aws)) == {"BUDGET#ultracart"}


def test_merchant_scope_gives_each_merchants_authorization_its_own_windows(aws: LocalResources) -> None:
    budget = a_budget(aws, "merchant")
    budget.take(NOW, "background", "M1")
    budget.take(NOW + 1, "background", "M1")
    with pytest.raises(BudgetExhaustedError) as refused:
        budget.take(NOW + 2, "background", "M1")
    # M1's hour ends at 11:00 UTC; M2 has its own windows meanwhile.
    assert refused.value.retry_after == pytest.approx(3600 - NOW % 3600 - 2)
    budget.take(NOW + 3, "background", "M2")
    assert budget.used(NOW, "M1") == (2, 2)
    assert budget.used(NOW, "M2") == (1, 1)
    assert budget.used(NOW) == (0, 0)  # calls for a known merchant leave the application's alone
    items = budget_items(aws)
    assert set(items) == {"BUDGET#M#M1", "BUDGET#M#M2"}
    assert items["BUDGET#M#M1"]["sk"]["S"] == str(int(NOW // DAY * DAY))
    assert int(items["BUDGET#M#M1"]["ttl"]["N"]) == int(NOW // DAY * DAY) + 2 * DAY


def test_merchant_scope_counts_calls_made_before_the_merchant_is_known_in_the_applications_windows(
    aws: LocalResources,
) -> None:
    budget = a_budget(aws, "merchant")
    budget.take(NOW, "callback", None)  # a code exchange: whose authorization it is comes back with it
    budget.take(NOW, "callback", None)
    with pytest.raises(BudgetExhaustedError):
        budget.take(NOW, "callback", None)
    budget.take(NOW, "background", "M1")  # the merchants' own windows are untouched
    assert budget.used(NOW) == (2, 2)


def test_a_merchants_daily_window_resets_with_the_utc_day(aws: LocalResources) -> None:
    budget = a_budget(aws, "merchant", hourly=10, daily=3)
    for hour in range(3):
        budget.take(NOW + hour * 3600, "background", "M1")
    later = NOW + 3 * 3600
    with pytest.raises(BudgetExhaustedError) as refused:
        budget.take(later, "background", "M1")
    assert refused.value.retry_after == pytest.approx(DAY - later % DAY)
    budget.take(NOW // DAY * DAY + DAY, "background", "M1")  # the next UTC day


def test_both_scope_needs_room_in_the_applications_windows(aws: LocalResources) -> None:
    budget = a_budget(aws, "both")
    budget.take(NOW, "background", "M1")
    budget.take(NOW, "background", "M2")
    with pytest.raises(BudgetExhaustedError):
        budget.take(NOW, "background", "M3")
    assert budget.used(NOW) == (2, 2)
    assert budget.used(NOW, "M1") == (1, 1)
    assert budget.used(NOW, "M3") == (0, 0)  # refused by the application's window: M3's untouched


def test_both_scope_needs_room_in_the_merchants_windows_and_gives_back_the_applications_unit(
    aws: LocalResources,
) -> None:
    # M1 spent its own windows (counted in the merchant scope, the application's untouched).
    merchant_only = a_budget(aws, "merchant")
    merchant_only.take(NOW, "background", "M1")
    merchant_only.take(NOW, "background", "M1")
    both = a_budget(aws, "both")
    with pytest.raises(BudgetExhaustedError):
        both.take(NOW, "background", "M1")
    assert both.used(NOW) == (0, 0)  # the application's unit was given back
    assert both.used(NOW, "M1") == (2, 2)
    both.take(NOW, "background", "M2")
    assert both.used(NOW) == (1, 1)


def test_both_scope_counts_calls_made_before_the_merchant_is_known_in_the_applications_windows(
    aws: LocalResources,
) -> None:
    budget = a_budget(aws, "both")
    budget.take(NOW, "callback", None)
    assert budget.used(NOW) == (1, 1)
    assert set(budget_items(aws)) == {"BUDGET#ultracart"}


# -- one call at a time for the application (scopes application and both) -------------------------


@pytest.mark.parametrize("scope", ["application", "both"])
def test_a_call_holding_the_line_keeps_the_next_one_out_until_it_is_released(
    aws: LocalResources, scope: BudgetScope
) -> None:
    budget = a_budget(aws, scope, hourly=10)
    claim = budget.take(NOW, "background", "M1", hold=13.05)
    assert claim is not None
    with pytest.raises(UltraCartBusyError) as busy:
        budget.take(NOW + 0.2, "background", "M2", hold=13.05)
    assert busy.value.busy_for == pytest.approx(12.85)
    assert budget.used(NOW) == (1, 1)  # a refused claim takes no unit
    budget.release(claim)
    assert budget.take(NOW + 0.3, "background", "M2", hold=13.05) is not None
    assert budget.used(NOW) == (2, 2)


def test_a_line_whose_holder_died_is_free_once_its_hold_ends(aws: LocalResources) -> None:
    budget = a_budget(aws, "application", hourly=10)
    budget.take(NOW, "background", "M1", hold=5)  # never released
    with pytest.raises(UltraCartBusyError):
        budget.take(NOW + 4.9, "background", "M2", hold=5)
    assert budget.take(NOW + 5.1, "background", "M2", hold=5) is not None


def test_the_line_holds_across_midnight_utc(aws: LocalResources) -> None:
    budget = a_budget(aws, "application", hourly=10)
    midnight = (NOW // DAY + 1) * DAY
    claim = budget.take(midnight - 2, "background", "M1", hold=13.05)  # on the old day's item
    assert claim is not None
    with pytest.raises(UltraCartBusyError):
        budget.take(midnight + 1, "background", "M2", hold=13.05)
    budget.release(claim)
    late = budget.take(midnight + 1, "background", "M2", hold=13.05)
    assert late is not None
    with pytest.raises(UltraCartBusyError):  # held on both days' items
        budget.take(midnight - 1, "background", "M3", hold=13.05)
    budget.release(late)
    assert budget.take(midnight + 2, "background", "M3", hold=13.05) is not None


def test_a_spent_window_is_reported_as_spent_even_while_the_line_is_held(aws: LocalResources) -> None:
    budget = a_budget(aws, "application", hourly=1)
    budget.take(NOW, "background", "M1", hold=13.05)
    with pytest.raises(BudgetExhaustedError) as refused:
        budget.take(NOW + 1, "background", "M2", hold=13.05)
    assert not isinstance(refused.value, UltraCartBusyError)  # waiting for the line would not help


def test_merchant_scope_has_no_line_beyond_each_merchants_lease(aws: LocalResources) -> None:
    budget = a_budget(aws, "merchant", hourly=10)
    assert budget.take(NOW, "background", "M1", hold=13.05) is None
    assert budget.take(NOW, "background", "M2", hold=13.05) is None


# -- the budgeted client: waits for the line, releases it, whatever the call's outcome ------------


def scoped(services: Services, aws: LocalResources, scope: str, **env: str) -> Services:
    """``services`` (the test's clock and fake UltraCart) rebuilt with the budget's scope set."""
    overrides = {"ULTRACART_BUDGET_SCOPE": scope, **env}
    rebuilt = Services.from_settings(Settings.from_env(aws.every_function_environment(overrides=overrides)))
    rebuilt.clock, rebuilt.sleep, rebuilt.ultracart_factory = (
        services.clock,
        services.sleep,
        services.ultracart_factory,
    )
    return rebuilt


def test_the_budgeted_client_waits_for_the_line_then_calls(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    services = scoped(services, aws, "application")
    tokens = fake_uc.seed("M1")
    services.budget.take(clock(), "background", "M9", hold=3)  # another call holds it for 3 s
    started = clock()
    services.ultracart_for("background", a_deadline(services), merchant_id="M1").refresh(
        tokens.refresh_token or ""
    )
    assert fake_uc.calls == ["refresh"]
    assert 3 <= clock() - started < 3.5  # short pauses until the other call's hold ended
    assert services.budget.take(clock(), "background", "M1", hold=3) is not None  # released


def test_the_budgeted_client_gives_up_on_a_line_held_longer_than_a_call_can_take(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    services = scoped(services, aws, "application")
    tokens = fake_uc.seed("M1")
    services.budget.take(clock(), "background", "M9", hold=600)
    started = clock()
    with pytest.raises(UltraCartBusyError):
        services.ultracart_for("background", a_deadline(services), merchant_id="M1").refresh(
            tokens.refresh_token or ""
        )
    assert fake_uc.calls == []  # nothing sent
    # It waited no longer than one call may hold the line (connect + read timeout + 1 s).
    settings = services.settings
    assert clock() - started <= settings.ultracart_connect_timeout + settings.ultracart_read_timeout + 1


def test_the_line_is_released_when_the_call_fails(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    services = scoped(services, aws, "application")
    tokens = fake_uc.seed("M1")
    fake_uc.fail_next.append(TransientUltraCartError("UltraCart answered 503", status=503))
    with pytest.raises(TransientUltraCartError):
        services.ultracart_for("background", a_deadline(services), merchant_id="M1").refresh(
            tokens.refresh_token or ""
        )
    assert services.budget.take(clock(), "background", "M2", hold=3) is not None


def is_line_release(params: Params) -> bool:
    return expression(params).startswith("REMOVE #line")


def test_a_release_that_fails_does_not_lose_ultracarts_answer(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    services = scoped(services, aws, "application")
    tokens = fake_uc.seed("M1")
    with aws_faults(ddb_throttling("UpdateItem", match=is_line_release)) as (fault,):
        answer = services.ultracart_for("background", a_deadline(services), merchant_id="M1").refresh(
            tokens.refresh_token or ""
        )
    assert fault.hits == 1
    assert answer.access_token in fake_uc.access_owner  # UltraCart's answer, the caller's to store
    with pytest.raises(UltraCartBusyError):  # the line stays until its hold ends
        services.budget.take(clock(), "background", "M2", hold=3)
    clock.now += 15
    assert services.budget.take(clock(), "background", "M2", hold=3) is not None


def test_a_call_that_leaves_only_the_time_to_store_its_answer_leaves_the_line_to_its_hold(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    services = scoped(services, aws, "application")
    tokens = fake_uc.seed("M1")
    # A 29 s invocation whose refresh takes 9.5 s: 19.5 s are left, less than the write reserve
    # and one more AWS call for giving the line back.
    fake_uc.during_refresh = lambda: setattr(clock, "now", clock.now + 9.5)
    deadline = a_deadline(services, 29)
    read = read_timeout_within(services.settings, deadline)
    assert read is not None
    hold_ends = clock() + ultracart_call_max(services.settings, read)
    answer = services.ultracart_for("background", deadline, merchant_id="M1").refresh(
        tokens.refresh_token or ""
    )
    assert answer.access_token in fake_uc.access_owner
    with pytest.raises(UltraCartBusyError):  # not given back: it ends with its hold
        services.budget.take(clock(), "background", "M2", hold=3)
    clock.now = hold_ends + 0.01
    assert services.budget.take(clock(), "background", "M2", hold=3) is not None


def test_a_rotation_counts_its_refresh_in_its_merchants_window(
    services: Services, fake_uc: FakeUltraCart, clock: Clock, aws: LocalResources
) -> None:
    from tests.support.installs import install
    from ucoauth.usecases.refresh import refresh_due

    services = scoped(services, aws, "merchant")
    fake_uc.expires_in = 60
    install(services, fake_uc, "M1")  # the code exchange: before the merchant is known
    clock.now += 61
    assert refresh_due(services, "M1", deadline=a_deadline(services)) == "refreshed"
    assert services.budget.used(clock(), "M1") == (1, 1)
    assert services.budget.used(clock()) == (1, 1)  # the code exchange only


# -- the planner ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("scope", "queued"), [("application", 1), ("both", 1), ("merchant", 5)])
def test_the_planner_is_capped_by_the_applications_windows_only_where_refreshes_count_there(
    services: Services, clock: Clock, aws: LocalResources, scope: str, queued: int
) -> None:
    # An hourly limit of 2: the background share (90%) is one call an hour.
    services = scoped(services, aws, scope, ULTRACART_HOURLY_LIMIT="2")
    for n in range(5):
        store_installation(services, f"M{n}", expires_in=60)
    clock.now += 61
    assert len(plan(services)) == queued


# -- the setting ----------------------------------------------------------------------------------


def test_the_scope_defaults_to_the_application_and_accepts_the_three_readings(aws: LocalResources) -> None:
    every = aws.every_function_environment()
    assert every["ULTRACART_BUDGET_SCOPE"] == "application"  # the template's default
    env = {k: v for k, v in every.items() if k != "ULTRACART_BUDGET_SCOPE"}
    assert Settings.from_env(env).ultracart_budget_scope == "application"
    assert BUDGET_SCOPES == ("application", "merchant", "both")
    for scope in BUDGET_SCOPES:
        assert Settings.from_env({**env, "ULTRACART_BUDGET_SCOPE": scope}).ultracart_budget_scope == scope
    with pytest.raises(ConfigurationError, match="ULTRACART_BUDGET_SCOPE"):
        Settings.from_env({**env, "ULTRACART_BUDGET_SCOPE": "ip"}).section("ultracart")

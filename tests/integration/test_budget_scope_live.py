"""The UltraCart budget's scope over real HTTP (moto's server, the UltraCart sandbox), through the
real handlers: which calls a spent window stops, judged by the requests the sandbox received; and,
with the sandbox refusing concurrent calls per application as UltraCart documents, no 429 when
the stack serialises its calls (scopes ``application`` and ``both``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from tests.support.deadlines import a_deadline
from tests.support.installs import seed_installation, stored_tokens
from tests.support.lambdas import invoke, load_event
from tests.support.processes import results_of, start_processes
from tests.support.roles import harness_boto3_session
from ucoauth.adapters.services import Services
from ucoauth.usecases.refresh import refresh_due
from ucsandbox import Sandbox

pytestmark = pytest.mark.integration

Scoped = Callable[..., Services]


def refresh_event(*merchants: str) -> dict[str, object]:
    event = load_event("sqs-refresh.json")
    template = event["Records"][0]
    event["Records"] = [
        {**template, "messageId": f"m-{merchant}", "body": json.dumps({"merchant_id": merchant})}
        for merchant in merchants
    ]
    return event


def refreshed_merchants(sandbox: Sandbox) -> list[str]:
    return sorted(r.merchant_id or "" for r in sandbox.requests("token") if r.grant_type == "refresh_token")


def deferred(services: Services) -> int:
    """Refresh messages re-queued for later (nothing was sent: the budget said no)."""
    sqs = harness_boto3_session(services.settings.region).client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=services.settings.refresh_queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesDelayed"])


def seeded(services: Services, sandbox: Sandbox, *merchants: str) -> dict[str, str]:
    """Due installations with tokens the sandbox issued: merchant -> stored refresh token."""
    return {merchant: seed_installation(services, sandbox, merchant)[1] for merchant in merchants}


# An hourly limit of 2 keeps one call an hour for background work (10% is kept for the callback).
SMALL = {"ULTRACART_HOURLY_LIMIT": "2"}


def test_merchant_scope_a_merchant_that_spent_its_window_does_not_hold_up_another(
    live_in_scope: Scoped, sandbox: Sandbox
) -> None:
    services = live_in_scope("merchant", **SMALL)
    before = seeded(services, sandbox, "SCOPE1", "SCOPE2")
    services.budget.take(services.clock(), "background", "SCOPE1")  # SCOPE1's hour is spent
    sandbox.clear_requests()

    assert invoke("RefreshWorkerFunction", refresh_event("SCOPE1", "SCOPE2")) == {"batchItemFailures": []}

    assert refreshed_merchants(sandbox) == ["SCOPE2"]
    assert stored_tokens(services, "SCOPE1").refresh_token == before["SCOPE1"]  # re-queued, untouched
    assert stored_tokens(services, "SCOPE2").refresh_token != before["SCOPE2"]
    assert deferred(services) == 1
    assert services.budget.used(services.clock(), "SCOPE2")[0] == 1
    assert services.budget.used(services.clock()) == (0, 0)


def test_application_scope_one_spent_window_holds_up_every_merchant(
    live_in_scope: Scoped, sandbox: Sandbox
) -> None:
    services = live_in_scope("application", **SMALL)
    before = seeded(services, sandbox, "SCOPE3", "SCOPE4")
    services.budget.take(services.clock(), "background", "SCOPE3")
    sandbox.clear_requests()

    assert invoke("RefreshWorkerFunction", refresh_event("SCOPE3", "SCOPE4")) == {"batchItemFailures": []}

    assert sandbox.requests() == []
    assert {m: stored_tokens(services, m).refresh_token for m in before} == before
    assert deferred(services) == 2


def test_both_scope_a_call_needs_room_in_its_merchants_window_and_the_applications(
    live_in_scope: Scoped, sandbox: Sandbox
) -> None:
    four = {"ULTRACART_HOURLY_LIMIT": "4"}  # three background calls an hour, in each window
    services = live_in_scope("merchant", **four)
    before = seeded(services, sandbox, "SCOPE5", "SCOPE6", "SCOPE7", "SCOPE8")
    now = services.clock()
    for _ in range(3):
        services.budget.take(now, "background", "SCOPE5")  # SCOPE5's own window is spent
    services = live_in_scope("both", **four)
    services.budget.take(now, "callback", None)  # one of the application's three: a code exchange
    sandbox.clear_requests()

    event = refresh_event("SCOPE5", "SCOPE6", "SCOPE7", "SCOPE8")
    assert invoke("RefreshWorkerFunction", event) == {"batchItemFailures": []}

    # SCOPE5: its merchant's window says no (the application's unit is given back); SCOPE6 and
    # SCOPE7 fit both; SCOPE8 finds the application's window spent.
    assert refreshed_merchants(sandbox) == ["SCOPE6", "SCOPE7"]
    for merchant in ("SCOPE5", "SCOPE8"):
        assert stored_tokens(services, merchant).refresh_token == before[merchant]
    assert deferred(services) == 2
    assert services.budget.used(services.clock())[0] == 3
    assert [services.budget.used(services.clock(), m)[0] for m in ("SCOPE6", "SCOPE7", "SCOPE8")] == [1, 1, 0]


# -- one call at a time for the application ---------------------------------------------------------


@pytest.mark.parametrize("scope", ["application", "both"])
def test_concurrent_refreshes_of_different_merchants_meet_no_429_when_the_application_serialises(
    live_in_scope: Scoped, sandbox: Sandbox, scope: str
) -> None:
    services = live_in_scope(scope)
    merchants = [f"LINE{n}" for n in range(4)]
    for merchant in merchants:
        seed_installation(services, sandbox, merchant)
    # UltraCart answers 429 to a call made while another of the application's is in flight.
    sandbox.configure(concurrency_scope="application", latency_ms=300)
    sandbox.clear_requests()
    start_at = time.time() + 1.0
    results: dict[str, str] = {}

    def worker(merchant: str) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        results[merchant] = refresh_due(services, merchant, deadline=a_deadline(services, 60))

    threads = [threading.Thread(target=worker, args=(merchant,)) for merchant in merchants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert results == dict.fromkeys(merchants, "refreshed")
    assert [r.status for r in sandbox.requests()] == [200] * 4  # no 429: one call at a time
    for merchant in merchants:
        assert sandbox.refresh_token_is_valid(stored_tokens(services, merchant).refresh_token or "")


@pytest.mark.xdist_group("processes")
def test_refreshes_in_separate_processes_meet_no_429_in_the_application_scope(
    live_in_scope: Scoped, live_env: dict[str, str], sandbox: Sandbox
) -> None:
    # Each process is a Lambda execution environment of its own: the line is the table's, not a
    # process's.
    services = live_in_scope("application")
    merchants = [f"PROC{n}" for n in range(4)]
    for merchant in merchants:
        seed_installation(services, sandbox, merchant)
    sandbox.configure(concurrency_scope="application", latency_ms=300)
    sandbox.clear_requests()
    start_at = time.time() + 4.0
    env = {**live_env, "ULTRACART_BUDGET_SCOPE": "application"}
    processes = [process for m in merchants for process in start_processes(env, m, 1, start_at)]

    assert results_of(processes) == ["refreshed"] * 4
    assert [r.status for r in sandbox.requests()] == [200] * 4
    assert refreshed_merchants(sandbox) == merchants
